"""The seeded fault plan: every kind does what it says, reproducibly, over real sockets too."""

from __future__ import annotations

import httpx
import orjson
import pytest

from bulkprov.sim import GraphTenant, ScimService, SimTransport
from bulkprov.sim.faults import ALL_KINDS, FaultPlan
from bulkprov.sim.server import serve_simulators
from bulkprov.transport import make_client

TOKEN = "fault-test-token"
USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "a@b.example"}


def client(scim: ScimService) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=SimTransport(scim.handle),
        base_url="http://scim",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


async def post(c: httpx.AsyncClient) -> httpx.Response:
    return await c.post("/scim2/Users", content=orjson.dumps(USER))


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("429", 429),
        ("429-bare", 429),
        ("500", 500),
        ("502", 502),
        ("503", 503),
        ("504", 504),
        ("401", 401),
        ("409", 409),
    ],
)
async def test_status_kinds(kind, status):
    scim = ScimService(TOKEN)
    scim.faults = FaultPlan(rate=1.0, kinds=(kind,), seed=1)
    async with client(scim) as c:
        seen = {(await post(c)).status_code for _ in range(8)}
        ra = [(await post(c)).headers.get("retry-after") for _ in range(4)]
    assert seen == {status}
    if kind == "429":
        assert set(ra) == {"0.05"}
    if kind == "429-bare":
        assert set(ra) == {None}
    # 5xx and 409 strike before or after processing: some creates happened anyway
    if kind in ("500", "409"):
        assert 0 < scim.posts < 12
    assert scim.faults.injected[kind] == 12


async def test_truncated_and_malformed_bodies_after_processing():
    scim = ScimService(TOKEN)
    scim.faults = FaultPlan(rate=1.0, kinds=("truncated",), seed=1)
    async with client(scim) as c:
        r = await post(c)
        assert r.status_code == 201
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(r.content)
        scim.faults.configure(kinds=["malformed"])
        r = await c.get("/scim2/Users")
        assert r.status_code == 200 and r.content.startswith(b"<html>")
    assert len(scim) == 1  # the create was processed


async def test_pending_only_on_username_filters():
    scim = ScimService(TOKEN)
    scim.faults = FaultPlan(rate=1.0, kinds=("pending",), seed=1)
    async with client(scim) as c:
        r = await c.get("/scim2/Users", params={"filter": 'userName eq "x@y.example"'})
        assert r.status_code == 400 and r.json()["status"] == 400  # a JSON number, as Zoom
        assert "x@y.example" in r.json()["detail"]
        assert (await post(c)).status_code == 201  # not applicable: no fault


async def test_reset_and_timeout_over_sockets():
    scim = ScimService(TOKEN)
    scim.faults = FaultPlan(rate=1.0, kinds=("reset",), seed=2, timeout_seconds=0.3)
    async with serve_simulators(scim=scim) as s, make_client(timeout=0.1, max_connections=2) as c:
        hdrs = {"Authorization": f"Bearer {TOKEN}"}
        with pytest.raises(httpx.TransportError):
            await c.get(f"{s.scim_url}/Users", headers=hdrs)
        scim.faults.configure(kinds=["timeout"])
        with pytest.raises(httpx.TimeoutException):
            await c.get(f"{s.scim_url}/Users", headers=hdrs)
        scim.faults.configure(rate=0.0)
        assert (await c.get(f"{s.scim_url}/Users", headers=hdrs)).status_code == 200


async def test_rate_is_seeded_and_reproducible():
    def run(seed: int) -> list[int]:
        plan = FaultPlan(rate=0.1, seed=seed)
        return [plan._rng.random() < 0.1 for _ in range(1000)].count(True), plan.seed

    assert run(3) == run(3)
    scims = [ScimService(TOKEN) for _ in range(2)]
    outcomes = []
    for scim in scims:
        scim.faults = FaultPlan(rate=0.1, kinds=("500", "503"), seed=9)
        async with client(scim) as c:
            outcomes.append([(await c.get("/scim2/Users")).status_code for _ in range(300)])
    assert outcomes[0] == outcomes[1]
    faulted = sum(1 for s in outcomes[0] if s != 200)
    assert 15 < faulted < 50


async def test_control_endpoint_and_graph_side():
    scim = ScimService(TOKEN)
    tenant = GraphTenant(user_count=10, seed=1)
    async with httpx.AsyncClient(transport=SimTransport(scim.handle), base_url="http://s") as c:
        assert (await c.get("/_sim/faults")).json()["rate"] == 0.0
        r = await c.post("/_sim/faults", json={"rate": 0.5, "kinds": "503,reset", "seed": 4})
        assert r.json()["kinds"] == ["503", "reset"]
        assert (await c.post("/_sim/faults", json={"kinds": ["nope"]})).status_code == 400
    async with httpx.AsyncClient(transport=SimTransport(tenant.handle), base_url="http://g") as c:
        await c.post("/_sim/faults", json={"rate": 1.0, "kinds": ["503"]})
        token = tenant.issue_token()
        r = await c.get("/v1.0/users", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503
        assert (await c.get("/_sim/faults")).json()["injected"] == {"503": 1}


def test_every_kind_is_documented():
    from bulkprov.sim import faults

    for kind in ALL_KINDS:
        assert f"``{kind}``" in (faults.__doc__ or "") or kind.startswith("50")
