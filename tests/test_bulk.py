"""SCIM Bulk: the sans-I/O packing and result mapping, then end to end against the simulator."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from bulkprov.checkpoint.staging import LifecycleStore
from bulkprov.checkpoint.store import StateStore
from bulkprov.errors import TargetRejected, TargetThrottled, TargetUnavailable
from bulkprov.pipeline import open_clients
from bulkprov.pipeline.deprovision import approve
from bulkprov.pipeline.run import run_sync
from bulkprov.scim import bulk
from bulkprov.scim.bulk import BulkBatch, BulkSupport, bulk_support, read_results
from bulkprov.scim.paths import BULK_REQUEST, BULK_RESPONSE
from bulkprov.scim.responses import is_uniqueness_conflict
from bulkprov.sim import GraphTenant, NoFaults, ScimService, SimRequest, SimResponse
from bulkprov.sim.server import serve_simulators

from .conftest import FAST_RETRY, SCIM_TOKEN, SECRETS, make_config
from .e2e import expected_values, store_problems

# -- discovery ------------------------------------------------------------------------------


def test_bulk_support_reads_the_limits() -> None:
    doc = {"bulk": {"supported": True, "maxOperations": 1000, "maxPayloadSize": "1048576"}}
    assert bulk_support(doc) == BulkSupport(True, 1000, 1048576)


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        {"bulk": {"supported": False, "maxOperations": 10, "maxPayloadSize": 10}},
        {"bulk": {"supported": "true", "maxOperations": 10, "maxPayloadSize": 10}},
        {"bulk": {"supported": True, "maxOperations": 0, "maxPayloadSize": 1000}},
    ],
)
def test_bulk_is_not_used_unless_clearly_supported(doc: object) -> None:
    assert not bulk_support(doc).supported


# -- packing --------------------------------------------------------------------------------


def test_batch_body_is_a_bulk_request_with_spliced_resources() -> None:
    batch = BulkBatch(10, 10_000)
    batch.add("0", bulk.post_operation("0", "/Users", b'{"userName":"a@x"}'))
    ops = [{"op": "replace", "path": "active", "value": False}]
    batch.add("1", bulk.patch_operation("1", "/Users/k&1", ops))
    req = batch.request()
    assert (req.method, req.path, req.creates) == ("POST", "/Bulk", True)
    doc = orjson.loads(req.body or b"")
    assert doc["schemas"] == [BULK_REQUEST]
    assert doc["Operations"][0] == {
        "method": "POST",
        "path": "/Users",
        "bulkId": "0",
        "data": {"userName": "a@x"},
    }
    assert doc["Operations"][1]["path"] == "/Users/k&1"
    assert doc["Operations"][1]["data"]["Operations"] == ops


def test_batch_respects_max_operations_and_max_payload() -> None:
    op = bulk.post_operation("0", "/Users", b'{"userName":"' + b"x" * 80 + b'"}')
    by_count = BulkBatch(3, 1_000_000)
    for n in range(3):
        assert by_count.fits(op)
        by_count.add(str(n), op)
    assert by_count.full and not by_count.fits(op)

    by_size = BulkBatch(1000, 400)
    added = 0
    while by_size.fits(op):
        by_size.add(str(added), op)
        added += 1
    assert added == 2
    assert len(by_size.request().body or b"") <= 400
    # a lone operation larger than the limit still goes (the target answers for that user)
    assert BulkBatch(10, 10).fits(op)


# -- results --------------------------------------------------------------------------------


def test_results_map_to_bulk_ids_with_ids_and_classified_errors() -> None:
    doc = {
        "schemas": [BULK_RESPONSE],
        "Operations": [
            # out of order, as a server may answer
            {
                "method": "POST",
                "bulkId": "b",
                "status": "409",
                "response": {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "status": "409",
                    "scimType": "uniqueness",
                    "detail": "exists",
                },
            },
            {
                "method": "POST",
                "bulkId": "a",
                "status": "201",
                "location": "https://t.example/scim2/Users/k%26Kd9",
            },
            {
                "method": "PATCH",
                "bulkId": "c",
                "status": 400,
                "response": {"status": "400", "scimType": "invalidValue", "detail": "bad title"},
            },
            {"method": "POST", "bulkId": "d", "status": {"code": "429"}},
            {"method": "POST", "bulkId": "e", "status": "503"},
        ],
    }
    got = read_results(doc, ["a", "b", "c", "d", "e", "f"])
    assert got["a"].scim_id == "k&Kd9" and got["a"].error is None
    assert isinstance(got["b"].error, TargetRejected) and is_uniqueness_conflict(got["b"].error)
    assert isinstance(got["c"].error, TargetRejected) and "bad title" in str(got["c"].error)
    assert isinstance(got["d"].error, TargetThrottled)
    assert isinstance(got["e"].error, TargetUnavailable)
    assert "f" not in got  # unanswered: the caller retries it alone


def test_results_without_bulk_ids_match_by_position_and_prefer_the_response_id() -> None:
    doc = {
        "Operations": [
            {"method": "PATCH", "status": "204", "location": "/Users/one"},
            {"method": "POST", "status": "201", "response": {"id": "two"}, "location": "/x/y"},
        ]
    }
    got = read_results(doc, ["p", "q"])
    assert got["p"].scim_id == "one" and got["q"].scim_id == "two"


def test_an_answer_that_is_not_a_bulk_response_is_an_unknown_outcome() -> None:
    with pytest.raises(TargetUnavailable):
        read_results({"detail": "oops"}, ["a"])


# -- end to end against the simulator --------------------------------------------------------


@pytest.fixture
def bulk_scim() -> ScimService:
    return ScimService(SCIM_TOKEN, id_seed=5, bulk_max_operations=40, bulk_max_payload=30_000)


@pytest.fixture
async def bulk_servers(tenant: GraphTenant, bulk_scim: ScimService):
    async with serve_simulators(tenant, bulk_scim) as s:
        yield s


async def test_bulk_sync_creates_and_updates_in_few_requests(
    bulk_servers, tenant, bulk_scim, tmp_path
):
    scim = bulk_scim
    cfg = make_config(bulk_servers, tmp_path / "s.db", target__bulk=True)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    expected = expected_values(cfg, tenant.iter_users())
    assert store_problems(expected, scim.dump()) == []
    assert result.counts["created"] == len(expected) > 200
    c = scim.counters()
    assert c["bulk_operations"] == len(expected)
    assert c["duplicate_posts"] == {}
    # 1 ServiceProviderConfig + 1 list page + bulks of ≤ 40 operations (or ≤ 30 kB)
    assert c["by_method"].get("POST", 0) <= len(expected) / 20
    assert c["total"] / len(expected) < 0.1

    users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    tenant.update_user(users[0]["id"], department="Bulk Research")
    tenant.update_user(users[1]["id"], accountEnabled=False)
    scim.reset_counters()
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert (result.counts["updated"], result.counts["disabled"]) == (1, 1)
    # SPC, one Bulk for the update; the disable is deprovisioned after the read completes,
    # in the lifecycle phase, in a Bulk of its own
    assert scim.counters()["by_method"] == {"GET": 1, "POST": 2}
    dept = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert scim.find(users[0]["userPrincipalName"])[dept]["department"] == "Bulk Research"
    assert scim.find(users[1]["userPrincipalName"])["active"] is False


async def test_staged_disables_and_deletes_go_in_bulk(bulk_servers, tenant, bulk_scim, tmp_path):
    """The deprovisioning after the read sends its disables and deletes in Bulk requests too.
    A 404 inside the Bulk is the user's Failure for a disable and a success for a delete
    (gone already), as with single requests; a 503 operation is sent again alone."""
    scim = bulk_scim
    cfg = make_config(
        bulk_servers, tmp_path / "s.db", target__bulk=True, deprovision__delete_hard_deleted=True
    )
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    leaving, deleted = users[:45], users[45:48]
    for user in leaving:
        tenant.update_user(user["id"], accountEnabled=False)
    for user in deleted:
        tenant.delete_user(user["id"], soft=False)
    # at the target meanwhile: one disabled account and one deleted one are removed by hand
    removed = [scim.find(u["userPrincipalName"]) for u in (leaving[0], deleted[0])]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {SCIM_TOKEN}"}) as http:
        for resource in removed:
            assert resource is not None
            answer = await http.delete(f"{bulk_servers.scim_url}/Users/{resource['id']}")
            assert answer.status_code == 204
    failing = leaving[1]["userPrincipalName"]

    class OneOperationUnavailable(NoFaults):
        """The Bulk with that user's operation answers 503 for it (a transient error)."""

        done = False

        async def after(self, req: SimRequest, resp: SimResponse) -> SimResponse:
            if not req.path.endswith("/Bulk") or self.done:
                return resp
            doc = orjson.loads(resp.body)
            target = scim.find(failing)
            assert target is not None
            for op in doc["Operations"]:
                if op.get("location", "").endswith(target["id"]):
                    op["status"] = "503"
                    op.pop("location")
                    self.done = True
            return SimResponse(resp.status, orjson.dumps(doc), resp.headers)

    scim.faults = OneOperationUnavailable()
    scim.reset_counters()
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert (result.counts["disabled"], result.counts["deleted"]) == (44, 3)
    assert result.counts["failed"] == 1  # the disable whose account was gone (404)
    c = scim.counters()
    # SPC, 48 operations in 2 Bulks of ≤ 40; sent again alone: the 503 operation, and the
    # DELETE answered 404 (a single DELETE's 404 is trusted, one inside a Bulk is not)
    assert c["by_method"] == {"GET": 1, "POST": 2, "PATCH": 1, "DELETE": 1}
    assert c["bulk_operations"] == 48
    async with await StateStore.open(tmp_path / "s.db") as store:
        staged = await LifecycleStore(store).staged(status=("done", "failed"))
    statuses = {s.graph_id: s.status for s in staged if s.run_id == result.run_id}
    assert statuses[leaving[0]["id"]] == "failed"
    assert sum(1 for v in statuses.values() if v == "done") == 47
    for user in leaving[1:]:
        account = scim.find(user["userPrincipalName"])
        assert account is not None and account["active"] is False
    for user in deleted:
        assert scim.find(user["userPrincipalName"]) is None


async def test_a_failed_bulk_of_disables_goes_alone(bulk_servers, tenant, bulk_scim, tmp_path):
    """Every Bulk answered 503 (after its retries): each disable is sent as a single PATCH."""
    scim = bulk_scim
    cfg = make_config(bulk_servers, tmp_path / "s.db", target__bulk=True)
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    for user in users[:30]:
        tenant.update_user(user["id"], accountEnabled=False)

    class BulkDown(NoFaults):
        async def before(self, req: SimRequest) -> SimResponse | None:
            return SimResponse(503, b"unavailable") if req.path.endswith("/Bulk") else None

    scim.faults = BulkDown()
    scim.reset_counters()
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert (result.counts["disabled"], result.counts["failed"]) == (30, 0)
    c = scim.counters()
    assert c["by_method"]["PATCH"] == 30 and c["bulk_operations"] == 0
    assert all(scim.find(u["userPrincipalName"])["active"] is False for u in users[:30])


async def test_approved_held_disables_go_in_bulk(bulk_servers, tenant, bulk_scim, tmp_path):
    """Disables held by the accidental-deletion threshold, approved later: in Bulk too."""
    scim = bulk_scim
    cfg = make_config(bulk_servers, tmp_path / "s.db", target__bulk=True, deprovision__threshold=10)
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    for user in users[:50]:
        tenant.update_user(user["id"], accountEnabled=False)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["held"] == 50 and result.counts["disabled"] == 0
    scim.reset_counters()
    async with (
        await StateStore.open(tmp_path / "s.db") as store,
        open_clients(cfg, SECRETS, policy=FAST_RETRY) as (_, client),
    ):
        counts = await approve(store, client, cfg)
    assert counts["disabled"] == 50
    assert scim.counters()["by_method"] == {"GET": 1, "POST": 2}  # SPC, 2 Bulks of ≤ 40
    assert all(scim.find(u["userPrincipalName"])["active"] is False for u in users[:50])


async def test_bulk_op_failures_fall_back_per_user_without_duplicates(
    bulk_servers, tenant, bulk_scim, tmp_path
):
    """A 409 inside a Bulk (a Zoom-style pending user) is retried alone and becomes that
    user's Failure; a Bulk answered 502 after it ran (outcome unknown) is resolved per user:
    each POST meets 409 and the account is found and linked, never created twice."""
    scim = bulk_scim
    users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    pending = users[3]["userPrincipalName"]
    scim.add_pending_user(pending)
    calls = 0

    class LoseSecondBulkAnswer(NoFaults):
        async def after(self, req: SimRequest, resp: SimResponse) -> SimResponse:
            nonlocal calls
            if req.path.endswith("/Bulk"):
                calls += 1
                if calls == 2:
                    return SimResponse(502, b"bad gateway")
            return resp

    scim.faults = LoseSecondBulkAnswer()
    cfg = make_config(bulk_servers, tmp_path / "s.db", target__bulk=True)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert calls >= 2
    assert scim.counters()["statuses"]["409"] >= 2
    # the lost Bulk's users: created by it, then linked by matching (≤ 40 per Bulk)
    assert 1 <= result.counts["linked"] + result.counts["updated"] <= 40
    assert result.counts["failed"] == 1  # the pending user, with Zoom's reason
    names = [r["userName"].lower() for r in scim.dump()]
    assert len(names) == len(set(names))
    assert pending.lower() not in names
    expected = expected_values(cfg, tenant.iter_users())
    del expected[pending.lower()]
    assert store_problems(expected, scim.dump()) == []


async def test_bulk_off_when_the_target_has_no_service_provider_config(servers, scim, tmp_path):
    """Zoom: no /ServiceProviderConfig (404). bulk = true then means single requests."""
    cfg = make_config(servers, tmp_path / "s.db", target__bulk=True)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    c = scim.counters()
    assert c["statuses"].get("404") == 1
    assert c["by_method"]["POST"] == result.counts["created"]
    assert c["bulk_operations"] == 0


# -- end to end against scim2-server, a third-party SCIM service with Bulk -------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def scim2_server():
    """``scim2-server`` (PyPI) in a child process on loopback; yields its base URL."""
    port = _free_port()
    exe = Path(sys.executable).with_name("scim2-server")
    proc = subprocess.Popen(
        [str(exe), "--port", str(port), "--bearer-token", SCIM_TOKEN],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(
                    f"{url}/ServiceProviderConfig",
                    headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
                    trust_env=False,
                )
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("scim2-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
async def test_bulk_sync_into_scim2_server(tenant, scim2_server, tmp_path):
    async with serve_simulators(tenant, None) as graph:
        servers = dataclasses.replace(graph, scim_url=scim2_server)
        cfg = make_config(servers, tmp_path / "s.db", target__bulk=True)
        result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        expected = expected_values(cfg, tenant.iter_users())
        assert result.counts["failed"] == 0
        assert result.counts["created"] == len(expected)
        # SPC + one list page + Bulk requests of ≤ 1,000 operations, against ~290 POSTs
        assert result.requests <= 4
        headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
        async with httpx.AsyncClient(headers=headers, trust_env=False) as http:
            r = await http.get(f"{scim2_server}/Users", params={"count": "1000"})
            listed = r.json()
        assert store_problems(expected, listed["Resources"]) == []
        # an unchanged re-sync sends nothing; a change goes as one Bulk PATCH
        user = next(u for u in tenant.iter_users() if u.get("accountEnabled") is not False)
        tenant.update_user(user["id"], department="Bulk Research")
        result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        assert result.counts["updated"] == 1 and result.requests == 2
        # deprovisioning: disables and a hard delete in one Bulk, which scim2-server runs
        users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]
        leaving, gone = users[1:6], users[6]
        for u in leaving:
            tenant.update_user(u["id"], accountEnabled=False)
        tenant.delete_user(gone["id"], soft=False)
        cfg = cfg.model_copy(
            update={"deprovision": cfg.deprovision.model_copy(update={"delete_hard_deleted": True})}
        )
        result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        assert (result.counts["disabled"], result.counts["deleted"]) == (5, 1)
        assert result.counts["failed"] == 0 and result.requests == 2  # SPC + one Bulk
        async with httpx.AsyncClient(headers=headers, trust_env=False) as http:
            r = await http.get(f"{scim2_server}/Users", params={"count": "1000"})
            by_name = {x["userName"].lower(): x for x in r.json()["Resources"]}
        for u in leaving:
            assert by_name[u["userPrincipalName"].lower()]["active"] is False
        assert gone["userPrincipalName"].lower() not in by_name
