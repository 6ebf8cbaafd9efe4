"""Issue 17: the pacer holds a target's limit whatever the shape of its limiter.

Per shape, on simulated time (:mod:`tests.pacing_model`: the real pacer against the
simulator's real limiters, ScimClient's worker loop, uvloop-like timers and event-loop
stalls, 16 workers, 40 ms per request, 90 s at a limit of 60/s): the steady rate (from 30 s
on) against the issue's goals, the 429s, how soon an unannounced limit is found. Then the
client itself on a :class:`~tests.clock.FakeClock`, and the Graph reads.
"""

from __future__ import annotations

import itertools

import anyio
import httpx
import pytest
import respx
from pydantic import SecretStr

from bulkprov.scim import requests as rq
from bulkprov.scim.client import ScimClient
from bulkprov.scim.rate import RatePacer
from bulkprov.sim.scim.limits import Limiter, limiter

from .clock import FakeClock
from .pacing_model import Run, clean, run
from .test_clients import FAST, GRAPH, TOKEN_URL, graph_client, token_ok

LIMIT = 60.0
SHAPES = {
    # name: (limiter, burst, goal for creates/s ÷ limit): 0.97 where the burst is at least
    # half a second's worth, 0.95 for strict spacing, small bursts and one-second windows
    "bucket-60": ("bucket", 60.0, 0.97),
    "bucket-30": ("bucket", 30.0, 0.97),
    "bucket-1": ("bucket", 1.0, 0.95),
    "gcra-5": ("gcra", 5.0, 0.95),
    "fixed": ("fixed", None, 0.95),
    "sliding": ("sliding", None, 0.95),
}


def model(shape: str, announced: bool, retry_after: bool = False, seed: int = 1) -> Run:
    kind, burst, _ = SHAPES[shape]
    pacer = RatePacer(LIMIT if announced else 0)
    return run(
        limiter(kind, LIMIT, burst, 0.0), pacer, retry_after=retry_after, seed=seed, transit=clean
    )


@pytest.mark.parametrize("announced", [True, False], ids=["announced", "found"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_holds_the_limit_of_every_shape(shape: str, announced: bool) -> None:
    """429 without Retry-After: the steady rate meets the goal, 429s stay under 1 % of the
    requests from 30 s on, and an unannounced limit is reached within 30 s."""
    result = model(shape, announced)
    assert result.rate(30) / LIMIT >= SHAPES[shape][2]
    assert result.share_429(30) <= 0.01
    # over the whole run too, but the first second of a full fixed or sliding window refuses
    # everything the unbounded start sent (it cannot know the limit yet)
    assert result.share_429() <= (0.015 if shape in ("fixed", "sliding") else 0.01)
    if not announced:
        assert result.found_at() <= 30
    if announced and shape not in ("bucket-1", "fixed", "sliding"):
        assert not result.throttle_times  # a burst absorbs the timers' jitter: no 429 at all


@pytest.mark.parametrize("announced", [True, False], ids=["announced", "found"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_with_retry_after_every_429_pauses_everyone_so_they_are_rare(
    shape: str, announced: bool
) -> None:
    """429 with ``Retry-After: 1`` (the simulator's integer seconds), honoured by pausing
    every worker: a second lost per 429, so the pacer probes rarely. Goals: 0.95 (a bucket
    of half a second reaches 0.96-0.97 here: its refill during each pause hides overshoot)."""
    result = model(shape, announced, retry_after=True)
    assert result.rate(30) / LIMIT >= 0.95
    assert result.share_429(30) <= 0.002
    assert result.share_429() <= 0.01
    if not announced:
        assert result.found_at() <= 30


def test_the_old_aimd_kept_three_quarters_of_a_strict_limit() -> None:
    """The issue's figures, in the model: a cut by a sixth on every 429 and a climb of one
    request/s per second kept 0.70-0.76 of a strict limiter announced at its rate."""
    result = model("bucket-1", True)
    old = run(limiter("bucket", LIMIT, 1, 0.0), _OldAimd(LIMIT), transit=clean)
    assert old.rate(30) / LIMIT < 0.85
    assert result.rate(30) / LIMIT >= 0.95


class _OldAimd(RatePacer):
    """The pacer before issue 17: every counted 429 cuts by ``decrease``, every success adds
    ``increase / rate``, sends go at their slots (no admission)."""

    def admit(self, now: float) -> float:
        return 0.0

    def on_success(self) -> None:
        rate = self.rate
        assert rate is not None
        self.rate = min(self.ceiling or rate + 1, rate + self.increase / rate)

    def on_throttle(self, sent_at: float, now: float, retry_after: float | None = None) -> bool:
        if sent_at < self.last_cut or self.rate is None:
            return False
        self.rate *= self.decrease
        self.last_cut = now
        return True


# --------------------------------------------------------------------- behaviours


def test_a_limit_that_halves_is_followed_within_seconds() -> None:
    """Another app starts using the shared limit: 60/s becomes 30/s at 30 s. The pacer
    measures what got through, cuts to it, and the 429s stop."""

    class Halving:
        shape, rate, burst = "bucket", LIMIT, LIMIT

        def __init__(self) -> None:
            self.before = limiter("bucket", LIMIT, None, 0.0)
            self.after: Limiter | None = None

        def take(self, now: float) -> float | None:
            if now < 30:
                return self.before.take(now)
            if self.after is None:
                self.after = limiter("bucket", LIMIT / 2, None, now)
                self.after.take(now)  # the other app drained the burst
                self.after.burst = 1.0
            return self.after.take(now)

    result = run(Halving(), RatePacer(LIMIT), transit=clean)  # type: ignore[arg-type]
    assert result.rate(20, 30) >= 0.97 * LIMIT
    assert 0.9 * LIMIT / 2 <= result.rate(40) <= LIMIT / 2
    late_429s = [t for t in result.throttle_times if t >= 40]
    assert len(late_429s) <= 0.01 * result.rate(40) * 50


def send(pacer: RatePacer, now: float) -> float:
    """One request through the pacer, as ScimClient sends it: the slot, then admission."""
    now += pacer.reserve(now)
    while (wait := pacer.admit(now)) > 0:
        now += wait
    return now


def test_noise_429s_do_not_walk_the_rate_down() -> None:
    """A strict limiter behind a busy machine refuses a few requests whatever the margin:
    one 429 every 5 s (0.3 % of requests) must not cost more than a few percent."""
    pacer = RatePacer(LIMIT)
    now = 0.0
    for second in range(120):
        for _ in range(60):
            now = send(pacer, now)
            pacer.on_success()
        if second % 5 == 4:
            pacer.on_throttle(now - 0.1, now)
    assert pacer.rate is not None and pacer.rate >= 0.97 * LIMIT
    assert pacer.cuts == 24


def test_a_429_near_an_announced_limit_is_a_small_correction_and_recovers() -> None:
    pacer = RatePacer(LIMIT)
    now = 0.0
    for _ in range(600):  # 10 s at the limit
        now = send(pacer, now)
        pacer.on_success()
    assert pacer.on_throttle(now - 0.05, now)
    assert pacer.rate == pytest.approx(0.99 * LIMIT)  # not 0.85 × 60
    assert pacer.events[-1][1] == "jitter"
    for _ in range(120):  # two seconds later it is back
        now = send(pacer, now)
        pacer.on_success()
    assert pacer.rate == pytest.approx(LIMIT, rel=0.002)


def test_429s_in_quick_succession_cut_deeper_each_time() -> None:
    pacer = RatePacer(LIMIT)
    now = 0.0
    rates = []
    for _ in range(5):
        for _ in range(20):  # a third of a second of sending, then a 429
            now = send(pacer, now)
            pacer.on_success()
        pacer.on_throttle(now, now + 0.01)
        rates.append(pacer.rate)
    cuts = [1 - b / a for a, b in zip([LIMIT, *rates], rates, strict=False)]
    assert cuts[1:] == pytest.approx([0.04, 0.08, 0.15, 0.15], abs=0.002)
    assert [e[1] for e in pacer.events] == ["storm"] * 5


def test_admission_spreads_sends_that_wake_together() -> None:
    """Three workers whose slots passed while the loop was busy are not sent back to back."""
    pacer = RatePacer(50)
    assert [pacer.reserve(0.0) for _ in range(3)] == pytest.approx([0.0, 0.02, 0.04])
    assert pacer.admit(0.0) == 0.0
    # the loop was busy for 50 ms: the other two wake together at 0.05
    first = pacer.admit(0.05)
    assert first == 0.0
    wait = pacer.admit(0.05)
    assert wait == pytest.approx(0.99 / 50)
    assert pacer.admit(0.05 + wait) == 0.0


def test_a_retry_after_pause_pushes_the_slots_and_slows_the_probe() -> None:
    pacer = RatePacer(LIMIT)
    now = 0.0
    for _ in range(600):
        now = send(pacer, now)
        pacer.on_success()
    gain_without = pacer.gain
    pacer.on_throttle(now - 0.05, now, retry_after=1.0)
    # nobody is given a slot inside the pause
    assert pacer.reserve(now + 0.1) == pytest.approx(0.9)
    # one 429 costs a second of everyone's time: probing above pays 1 % of the time for it
    assert pacer.gain < gain_without / 10


def test_an_unannounced_limit_is_found_by_slow_start() -> None:
    result = run(limiter("bucket", LIMIT, 1, 0.0), RatePacer(), transit=clean)
    kinds = [e[1] for e in result.pacer.events]
    assert kinds[:1] == ["first"] and "found" in kinds
    assert result.found_at() <= 15


# --------------------------------------------------------------------- the clients


def _limited_target(
    clock: FakeClock, limit: Limiter, latency: float, retry_after: bool, **kw: float
) -> tuple[ScimClient, list[tuple[float, int]]]:
    """A ScimClient on ``clock`` against a target whose limiter decides when the request
    arrives (on the fake clock); the answer comes ``latency`` later."""
    log: list[tuple[float, int]] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        arrived = clock.now()
        wait = limit.take(arrived)
        await clock.sleep(latency)
        if wait is None:
            log.append((arrived, 201))
            return httpx.Response(201, json={"id": "x"})
        log.append((arrived, 429))
        headers = {"Retry-After": "1"} if retry_after else {}
        return httpx.Response(429, headers=headers)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    client = ScimClient(
        "https://scim.test/scim2", SecretStr("tok"), http, policy=FAST, clock=clock, **kw
    )
    return client, log


@pytest.mark.parametrize("shape", ["bucket-1", "fixed"])
async def test_scim_client_finds_and_holds_the_limit_on_a_fake_clock(shape: str) -> None:
    """The whole send loop (gate, slot, admission, retries): 16 workers creating users for
    40 simulated seconds against an unannounced limit of 50/s."""
    clock = FakeClock()
    kind, burst, _ = SHAPES[shape]
    client, log = _limited_target(
        clock, limiter(kind, 50, burst, 0.0), latency=0.04, retry_after=False
    )

    async def worker() -> None:
        while clock.now() < 40:
            await client.send(rq.create_user(b'{"userName":"a"}'))

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(worker)
    steady = [status for arrived, status in log if arrived >= 15]
    assert steady.count(201) / 25 >= 0.95 * 50
    assert steady.count(429) <= 0.01 * len(steady)


async def test_scim_slots_that_fall_in_a_retry_after_pause_wait_for_its_end() -> None:
    """Workers already asleep until their slot when a 429 with Retry-After comes back do not
    send inside the pause: they wait at the gate, then take new slots."""
    clock = FakeClock()
    client, log = _limited_target(
        clock, limiter("fixed", 20, None, 0.0), latency=0.01, retry_after=True, rate_limit=25
    )

    async def worker() -> None:
        for _ in range(5):
            await client.send(rq.create_user(b'{"userName":"a"}'))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(worker)
    refused = [arrived for arrived, status in log if status == 429]
    assert refused and client.gate.pauses >= 1
    first = refused[0]
    paused_until = first + 0.01 + 1.0
    # nothing arrived while the first pause ran (the 429 was answered 10 ms after it arrived)
    assert not [t for t, _ in log if first + 0.01 < t < paused_until - 1e-9]


async def test_graph_reads_are_paced_after_graph_throttles() -> None:
    router = respx.MockRouter(using=None)
    router.post(TOKEN_URL).mock(return_value=token_ok())
    clock = FakeClock()
    sent: list[float] = []
    answers = iter(
        [httpx.Response(429, headers={"Retry-After": "0.5"})]
        + [httpx.Response(200, json={"value": []}) for _ in range(20)]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now())
        return next(answers)

    router.get(f"{GRAPH}/users").mock(side_effect=answer)
    g = graph_client(router, clock)
    assert g.pacer.rate is None  # unbounded: reads are not slowed until Graph throttles
    for _ in range(10):
        await g.get_json(f"{GRAPH}/users")
    assert g.throttled == 1 and g.pacer.cuts == 1
    rate = g.pacer.rate
    assert rate is not None
    # after the pause, reads leave no closer than the pacer's spacing
    gaps = [b - a for a, b in itertools.pairwise(sent[1:])]
    assert min(gaps) >= 0.98 / rate
