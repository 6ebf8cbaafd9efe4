"""The simulator's limiter shapes (bulkprov.sim.scim.limits) at exact times, and how the
SCIM service, its control endpoint and its command line select them."""

from __future__ import annotations

import random

import httpx
import pytest

from bulkprov.sim import ScimService, SimTransport
from bulkprov.sim.__main__ import build_parser
from bulkprov.sim.scim.limits import SHAPES, limiter

from .conftest import SCIM_TOKEN


def admitted(shape: str, rate: float, burst: float | None, times: list[float]) -> list[bool]:
    lim = limiter(shape, rate, burst, 0.0)
    return [lim.take(t) is None for t in times]


def test_token_bucket_bursts_then_refills_at_its_rate() -> None:
    # 10/s, burst 3: three at once, the fourth waits a tenth of a second
    assert admitted("bucket", 10, 3, [0, 0, 0, 0, 0.05, 0.1, 0.2, 0.2]) == [
        True,
        True,
        True,
        False,
        False,
        True,
        True,
        False,
    ]
    lim = limiter("bucket", 10, 3, 0.0)
    for _ in range(3):
        lim.take(0.0)
    assert lim.take(0.02) == pytest.approx(0.08)  # until the next token


def test_strict_spacing_refuses_a_request_a_hair_early() -> None:
    """Burst 1 (and GCRA burst 1): 60/s means every request 1/60 s after the last."""
    for shape in ("bucket", "gcra"):
        t = 1 / 60
        assert admitted(shape, 60, 1, [0, t, 2 * t - 0.0005, 2 * t + 0.001]) == [
            True,
            True,
            False,
            True,
        ], shape


def test_gcra_admits_what_a_token_bucket_of_the_same_burst_admits() -> None:
    rng = random.Random(5)  # arrivals that never fall exactly on a boundary (float rounding)
    times = sorted(i * 0.013 + rng.random() * 0.009 for i in range(400))
    for burst in (1, 2, 5, 30):
        assert admitted("gcra", 50, burst, times) == admitted("bucket", 50, burst, times)
    lim = limiter("gcra", 10, 1, 0.0)
    assert lim.take(0.0) is None
    assert lim.take(0.04) == pytest.approx(0.06)


def test_fixed_window_lets_twice_the_rate_through_around_its_boundary() -> None:
    # 5 per one-second window: five at the end of one, five at the start of the next
    times = [0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1.0, 1.01, 1.02, 1.03, 1.04, 1.05]
    assert admitted("fixed", 5, None, times) == [True] * 5 + [False] + [True] * 5 + [False]
    lim = limiter("fixed", 5, None, 0.0)
    for _ in range(5):
        lim.take(2.3)
    assert lim.take(2.4) == pytest.approx(0.6)  # until the window ends


def test_sliding_window_counts_any_second() -> None:
    times = [0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.5, 1.951, 1.96]
    assert admitted("sliding", 5, None, times) == [True] * 5 + [False, False, True, True]
    lim = limiter("sliding", 5, None, 0.0)
    for t in (0.1, 0.2, 0.3, 0.4, 0.5):
        lim.take(t)
    assert lim.take(0.6) == pytest.approx(0.5)  # until the oldest leaves the window


def test_refused_requests_consume_nothing() -> None:
    for shape in SHAPES:
        lim = limiter(shape, 1, 1, 0.0)
        assert lim.take(0.0) is None
        for _ in range(50):  # hammering does not push the next admission back
            assert lim.take(0.1) is not None
        assert lim.take(1.0) is None, shape


def test_bad_limiter_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown limiter"):
        limiter("leaky", 10, None, 0.0)
    with pytest.raises(ValueError, match="burst"):
        limiter("bucket", 10, 0.5, 0.0)
    with pytest.raises(ValueError):
        limiter("bucket", 0, None, 0.0)


async def test_service_selects_the_shape_and_sends_retry_after_until_admission() -> None:
    scim = ScimService(SCIM_TOKEN, rate_limit=5, limiter="fixed")
    async with httpx.AsyncClient(
        transport=SimTransport(scim.handle),
        base_url="http://sim/scim2",
        headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
    ) as client:
        statuses = [(await client.get("/Users")).status_code for _ in range(6)]
        assert statuses in ([200] * 5 + [429], [200] * 6)  # a window may end in between
        assert scim.settings()["limiter"] == "fixed"
        scim.configure(limiter="sliding", rate_limit=1, retry_after=True)
        assert (await client.get("/Users")).status_code == 200
        refused = await client.get("/Users")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        with pytest.raises(ValueError, match="unknown limiter"):
            scim.configure(limiter="leaky")
        assert scim.settings()["limiter"] == "sliding"  # unchanged by the refused setting


async def test_control_endpoint_changes_the_limiter() -> None:
    scim = ScimService(SCIM_TOKEN)
    async with httpx.AsyncClient(
        transport=SimTransport(scim.handle), base_url="http://sim"
    ) as control:
        resp = await control.post(
            "/_sim/config", json={"rate_limit": 10, "limiter": "gcra", "burst": 1}
        )
        assert resp.status_code == 200
        assert resp.json()["limiter"] == "gcra" and resp.json()["burst"] == 1
        assert (await control.post("/_sim/config", json={"limiter": 7})).status_code == 400


def test_command_line_offers_every_shape() -> None:
    args = build_parser().parse_args(["--rate-limit", "60", "--limiter", "sliding"])
    assert (args.rate_limit, args.limiter, args.burst) == (60, "sliding", None)
    assert build_parser().parse_args([]).limiter == "bucket"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--limiter", "leaky"])
