"""End-to-end lifecycle over loopback HTTP: the admin guide's scenarios, cycle after cycle.

Each test drives the Graph simulator (assign, unassign, delete, group members…) between
cycles of the real pipeline and asserts on what reached the SCIM simulator.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest

from bulkprov.checkpoint.staging import USERS_DELTA, LifecycleStore
from bulkprov.checkpoint.store import SCHEMA_VERSION, StateStore
from bulkprov.errors import SourceError
from bulkprov.pipeline import open_clients
from bulkprov.pipeline.deprovision import approve
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant, NoFaults, ScimService, SimResponse
from bulkprov.sim.http import SimRequest, json_response

from .conftest import FAST_RETRY, GRAPH_SECRET, SECRETS, make_config

WRITES = ("POST", "PATCH", "PUT", "DELETE")


class FlakyTenant(GraphTenant):
    """A tenant whose ``users/delta`` pages start answering 503 after ``fail_after`` pages."""

    fail_after: int | None = None
    delta_pages = 0
    #: answer 400 to every page link past the first page (a saved link gone stale)
    reject_links = False

    async def handle(self, req: SimRequest) -> SimResponse:
        if req.path.endswith("/users/delta"):
            self.delta_pages += 1
            if self.fail_after is not None and self.delta_pages > self.fail_after:
                return json_response(503, {"error": {"code": "serviceNotAvailable"}})
            if self.reject_links and "$select" not in req.query:
                return json_response(400, {"error": {"code": "badRequest"}})
        return await super().handle(req)


@pytest.fixture
def tenant() -> GraphTenant:
    return FlakyTenant(user_count=300, seed=3, client_secret=GRAPH_SECRET)


class Spy(NoFaults):
    """Records every SCIM request (method, path, parsed body)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    async def before(self, req: SimRequest) -> SimResponse | None:
        self.seen.append((req.method, req.path, orjson.loads(req.body) if req.body else None))
        return None

    def writes(self) -> list[tuple[str, str, Any]]:
        return [s for s in self.seen if s[0] in WRITES]


def enabled(tenant: GraphTenant) -> list[dict[str, Any]]:
    return [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]


def assigned_config(servers: Any, tenant: GraphTenant, tmp_path: Any, **kw: Any) -> Any:
    return make_config(
        servers,
        tmp_path / "s.db",
        scope__mode="assigned",
        scope__service_principal_id=tenant.directory.service_principal_id,
        **kw,
    )


async def sync(cfg: Any) -> Any:
    return await run_sync(cfg, SECRETS, policy=FAST_RETRY)


async def test_assign_unassign_reassign(servers, tenant, scim, tmp_path):
    """assign → created; unassign → deactivated, data kept; re-assign → reactivated."""
    d = tenant.directory
    a, b = enabled(tenant)[:2]
    d.assign(a["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    result = await sync(cfg)
    assert result.counts["created"] == 1 and len(scim) == 1
    assert result.counts["skipped"] == tenant.user_count - 1  # everyone else: not assigned

    d.assign(b["id"])
    result = await sync(cfg)
    assert result.counts["created"] == 1
    assert scim.find(b["userPrincipalName"])["active"] is True

    d.unassign(a["id"])
    scim.reset_counters()
    result = await sync(cfg)
    assert result.counts["disabled"] == 1
    assert scim.counters()["by_method"] == {"PATCH": 1}
    stored = scim.find(a["userPrincipalName"])
    assert stored["active"] is False
    assert stored["name"]["givenName"] == a["givenName"]  # data kept

    d.assign(a["id"])
    result = await sync(cfg)
    assert result.counts["updated"] == 1
    assert scim.find(a["userPrincipalName"])["active"] is True


async def test_soft_and_hard_delete(servers, tenant, scim, tmp_path):
    """Soft delete → active=false; hard delete → DELETE (configured); restore → active."""
    u1, u2, u3 = enabled(tenant)[:3]
    cfg = make_config(servers, tmp_path / "s.db", deprovision__delete_hard_deleted=True)
    await sync(cfg)
    tenant.delete_user(u1["id"], soft=True)
    tenant.delete_user(u2["id"], soft=False)
    tenant.update_user(u3["id"], accountEnabled=False)
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["disabled"] == 2 and result.counts["deleted"] == 1
    assert scim.find(u1["userPrincipalName"])["active"] is False
    assert scim.find(u3["userPrincipalName"])["active"] is False
    assert scim.find(u2["userPrincipalName"]) is None
    assert sorted(m for m, _, _ in spy.writes()) == ["DELETE", "PATCH", "PATCH"]

    tenant.restore_user(u1["id"])
    result = await sync(cfg)
    assert result.counts["updated"] == 1
    assert scim.find(u1["userPrincipalName"])["active"] is True


async def test_hard_delete_without_delete_flag_only_disables(servers, tenant, scim, tmp_path):
    u = enabled(tenant)[0]
    cfg = make_config(servers, tmp_path / "s.db")
    await sync(cfg)
    tenant.delete_user(u["id"], soft=False)
    result = await sync(cfg)
    assert result.counts["disabled"] == 1 and result.counts["deleted"] == 0
    assert scim.find(u["userPrincipalName"])["active"] is False


async def test_unmanaged_accounts_are_never_touched(servers, tenant, scim, tmp_path):
    """An account the target had before (not in scope, not linked) survives every cycle."""
    other = scim.seed_user({"userName": "ceo@elsewhere.example", "active": True})
    cfg = make_config(
        servers,
        tmp_path / "s.db",
        scope__filters=[
            {"clauses": [{"attribute": "department", "operator": "EQUALS", "value": "Sales"}]}
        ],
    )
    await sync(cfg)
    tenant.directory.expire_delta_tokens()
    await sync(cfg)  # a full read and its sweep
    assert scim.get(other["id"])["active"] is True


async def test_group_assignment_members_and_one_remove(servers, tenant, scim, tmp_path):
    """Group assigned → group + members; a member removed → one remove operation."""
    d = tenant.directory
    users = enabled(tenant)[:4]
    group = d.add_group("Zoom Licensed", [u["id"] for u in users])
    d.assign(group["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    result = await sync(cfg)
    assert result.counts["created"] == 4
    scim_group = scim.groups.find("Zoom Licensed")
    assert scim_group is not None and scim_group["externalId"] == group["id"]
    member_names = {scim.get(m["value"])["userName"] for m in scim_group["members"]}
    assert member_names == {u["userPrincipalName"] for u in users}

    d.remove_member(group["id"], users[3]["id"])
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    group_patches = [s for s in spy.writes() if s[1].startswith("/scim2/Groups/")]
    assert len(group_patches) == 1
    ops = group_patches[0][2]["Operations"]
    gone_id = scim.find(users[3]["userPrincipalName"])["id"]
    assert ops == [{"op": "remove", "path": f'members[value eq "{gone_id}"]'}]  # RFC 7644
    assert len(scim.groups.member_ids(scim_group["id"])) == 3
    # no longer assigned through the group: deactivated, data kept
    assert scim.find(users[3]["userPrincipalName"])["active"] is False

    d.update_group(group["id"], displayName="Zoom Pro")
    spy.seen.clear()
    await sync(cfg)
    assert [(m, b["Operations"][0]["path"]) for m, _, b in spy.writes()] == [
        ("PATCH", "displayName")
    ]
    assert scim.groups.find("Zoom Pro") is not None


async def test_existing_group_is_matched_by_display_name(servers, tenant, scim, tmp_path):
    d = tenant.directory
    u = enabled(tenant)[0]
    group = d.add_group("Sales Team", [u["id"]])
    d.assign(group["id"])
    seeded = scim.groups.handle(
        SimRequest("POST", "/scim2/Groups", {}, {}, b'{"displayName":"sales team"}'),
        "/Groups",
        lambda *a, **k: SimResponse(400),
        "",
    )
    assert seeded.status == 201
    seeded_id = orjson.loads(seeded.body)["id"]
    await sync(assigned_config(servers, tenant, tmp_path))
    assert list(scim.groups.groups) == [seeded_id]  # matched, not created beside it
    account = scim.find(u["userPrincipalName"])
    assert account is not None and scim.groups.member_ids(seeded_id) == [account["id"]]


async def test_member_chunks_split_on_413(servers, tenant, scim, tmp_path):
    d = tenant.directory
    users = enabled(tenant)[:10]
    d.assign(d.add_group("Big", [u["id"] for u in users])["id"])
    scim.groups.max_patch_members = 3
    cfg = assigned_config(servers, tenant, tmp_path, groups__member_chunk=8)
    result = await sync(cfg)
    assert result.counts["failed"] == 0
    assert len(scim.groups.member_ids(scim.groups.find("Big")["id"])) == 10
    assert scim.groups.counters["patches too large"] >= 1


async def test_incremental_cycle_without_change_sends_nothing(servers, tenant, scim, tmp_path):
    d = tenant.directory
    users = enabled(tenant)
    for u in users[:20]:
        d.assign(u["id"])
    d.assign(d.add_group("G", [u["id"] for u in users[20:30]])["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    first = await sync(cfg)
    assert first.counts["created"] == 30
    scim.reset_counters()
    served = tenant.counters["users_served"]
    result = await sync(cfg)
    assert scim.counters()["total"] == 0
    assert result.users == 0  # a delta round with no change lists nobody
    assert tenant.counters["users_served"] == served


async def test_expired_delta_token_resyncs_without_mass_change(servers, tenant, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db", deprovision__threshold=0)
    await sync(cfg)
    tenant.directory.expire_delta_tokens()
    changed = enabled(tenant)[5]
    tenant.update_user(changed["id"], department="Chief Testing")
    scim.reset_counters()
    result = await sync(cfg)
    assert result.counts["updated"] == 1
    assert result.counts["unchanged"] > 250  # a full read …
    assert scim.counters()["by_method"] == {"PATCH": 1}  # … and one write
    assert result.counts["held"] == 0


async def test_failed_read_and_filter_change_over_threshold(servers, tenant, scim, tmp_path):
    """503s halfway → 0 disables sent; the filter change over the threshold is held;
    approve sends exactly the held ones."""
    base = make_config(servers, tmp_path / "s.db", graph__page_size=50, deprovision__threshold=5)
    await sync(base)
    sales_only = make_config(
        servers,
        tmp_path / "s.db",
        graph__page_size=50,
        deprovision__threshold=5,
        scope__filters=[
            {"clauses": [{"attribute": "department", "operator": "EQUALS", "value": "Sales"}]}
        ],
    )
    spy = Spy()
    scim.faults = spy
    tenant.fail_after = tenant.delta_pages + 3  # the full read fails on its 4th page
    with pytest.raises(BaseException) as info:
        await sync(sales_only)
    assert isinstance(_unwrap(info.value), SourceError)
    assert spy.writes() == []  # nothing deprovisioned on a partial read
    async with await StateStore.open(tmp_path / "s.db") as store:
        pending = await LifecycleStore(store).staged(status=("pending",))
    assert len(pending) > 5  # staged with their pages, waiting for the read to complete

    tenant.fail_after = None
    result = await sync(sales_only)  # resumes the read and completes it
    assert result.status == "completed"
    assert spy.writes() == []
    expected = sum(1 for u in enabled(tenant) if u.get("department") != "Sales")
    assert result.counts["held"] == expected
    assert "threshold" in (result.message or "")

    async with await StateStore.open(tmp_path / "s.db") as store:
        held = await LifecycleStore(store).staged()
        assert len(held) == expected
        async with open_clients(sales_only, SECRETS, policy=FAST_RETRY) as (_, client):
            counts = await approve(store, client, sales_only)
    assert counts["disabled"] == expected
    assert [m for m, _, _ in spy.writes()] == ["PATCH"] * expected
    active = [r for r in scim.dump() if r["active"]]
    assert len(active) == sum(1 for u in enabled(tenant) if u.get("department") == "Sales")
    scim.reset_counters()
    await sync(sales_only)
    assert scim.counters()["total"] == 0  # approved actions are not sent again


async def test_watch_deactivates_a_removed_user_within_one_interval(
    servers, tenant, scim, tmp_path
):
    from bulkprov.commands.sync_watch import watch

    cfg = make_config(servers, tmp_path / "s.db")
    victim = enabled(tenant)[7]
    interval = 0.3
    first, disabled = anyio.Event(), anyio.Event()

    def on_result(result: Any) -> None:
        first.set()
        if result.counts["disabled"]:
            disabled.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: watch(
                cfg, SECRETS, interval, on_result=on_result, on_error=print, policy=FAST_RETRY
            )
        )
        with anyio.fail_after(30):
            await first.wait()
        tenant.delete_user(victim["id"])
        deleted_at = anyio.current_time()
        with anyio.fail_after(30):
            await disabled.wait()
        elapsed = anyio.current_time() - deleted_at
        tg.cancel_scope.cancel()
    assert scim.find(victim["userPrincipalName"])["active"] is False
    # the next cycle starts at most one interval after the last one started
    assert elapsed < interval + 5.0


async def test_state_v1_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE runs (id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
            status TEXT NOT NULL, cursor TEXT, cursor_page INTEGER NOT NULL DEFAULT 0,
            resumes INTEGER NOT NULL DEFAULT 0, counts TEXT NOT NULL DEFAULT '{}', message TEXT);
        INSERT INTO runs(started_at, status) VALUES (1.0, 'completed');
        """
    )
    conn.commit()
    conn.close()
    async with await StateStore.open(path) as store:
        run = await store.last_run()
        assert run is not None and run.kind == "full" and run.delta_link is None
        ls = LifecycleStore(store)
        assert await ls.get(USERS_DELTA) is None
        await ls.put(USERS_DELTA, "x")
        assert await ls.get(USERS_DELTA) == "x"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def test_scim_service_unused_reference(scim: ScimService) -> None:
    """The SCIM simulator answers /Groups filters without members when asked to."""
    uid = scim.seed_user({"userName": "x@y.example"})["id"]
    req = SimRequest(
        "POST",
        "/scim2/Groups",
        {},
        {},
        orjson.dumps({"displayName": "A", "members": [{"value": uid}]}),
    )
    resp = scim.groups.handle(req, "/Groups", lambda *a, **k: SimResponse(400), "")
    assert resp.status == 201
    q = SimRequest(
        "GET",
        "/scim2/Groups",
        {"filter": 'displayName eq "a"', "excludedAttributes": "members"},
        {},
    )
    doc = orjson.loads(scim.groups.handle(q, "/Groups", lambda *a, **k: SimResponse(400), "").body)
    assert doc["totalResults"] == 1 and "members" not in doc["Resources"][0]


async def test_full_reads_everyone_again_at_no_request_cost(servers, tenant, scim, tmp_path):
    """``sync --full``: every user read again, unchanged ones skipped by digest (0 requests)."""
    cfg = make_config(servers, tmp_path / "s.db")
    first = await sync(cfg)
    assert first.counts["created"] == len(enabled(tenant))
    scim.reset_counters()
    assert sum((await sync(cfg)).counts.values()) == 0  # a delta round: nothing changed
    changed = enabled(tenant)[0]
    tenant.update_user(changed["id"], givenName="Fullread")
    full = await run_sync(cfg, SECRETS, policy=FAST_RETRY, full=True)
    assert sum(full.counts.values()) == tenant.user_count  # everyone read
    assert full.counts["updated"] == 1
    assert scim.counters()["by_method"] == {"PATCH": 1}  # the one change, nothing else
    async with await StateStore.open(cfg.state.path) as store:
        last = await store.last_run()
        assert last is not None and last.kind == "full"


class ExpiresMidRead(GraphTenant):
    """Once armed: the 2nd ``users/delta`` request answers 410 (the token expired mid-read),
    and the read after it fails with 503 from its ``fail_at``-th request on."""

    armed = False
    calls = 0
    fail_at = 10**9

    async def handle(self, req: SimRequest) -> SimResponse:
        if self.armed and req.path.endswith("/users/delta"):
            self.calls += 1
            if self.calls == 2:
                return json_response(410, {"error": {"code": "syncStateNotFound"}})
            if self.calls >= self.fail_at:
                return json_response(503, {"error": {"code": "serviceNotAvailable"}})
        return await super().handle(req)


async def test_a_token_expiring_mid_read_leaves_a_resumable_cursor(scim, tmp_path):
    """The page lookahead hands the reader's error over once the page before it is done:
    the full read that follows checkpoints its pages as usual (it used to stay stuck on the
    page that was being processed when the error came, for the rest of the run)."""
    from bulkprov.sim.server import serve_simulators

    tenant = ExpiresMidRead(user_count=300, seed=3, client_secret=GRAPH_SECRET)
    async with serve_simulators(tenant, scim) as servers:
        cfg = make_config(servers, tmp_path / "s.db", graph__page_size=50)
        await sync(cfg)
        for user in enabled(tenant)[:120]:  # an incremental read of 3 pages
            tenant.update_user(user["id"], department="Moved")
        tenant.armed = True
        tenant.fail_at = 2 + 5  # the full read fails on its 5th page request
        with pytest.raises(BaseException) as info:
            await sync(cfg)
        assert isinstance(_unwrap(info.value), SourceError)
        async with await StateStore.open(tmp_path / "s.db") as store:
            run = await store.last_run()
        assert run is not None and run.status == "running" and run.kind == "full"
        assert run.cursor_page >= 3  # the full read's pages were checkpointed
        tenant.armed = False
        result = await sync(cfg)  # resumes the full read where it stopped
        assert result.status == "completed"
    moved = {u["id"] for u in enabled(tenant)[:120]}
    assert all(
        scim.find(u["userPrincipalName"])[
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
        ]["department"]
        == "Moved"
        for u in enabled(tenant)
        if u["id"] in moved
    )


async def test_a_saved_page_link_gone_stale_restarts_the_read(servers, tenant, scim, tmp_path):
    """A resumed run whose saved page link Graph no longer takes (a 4xx) says so, forgets
    the cursor, and the next run reads from the first page; nothing is sent twice."""
    cfg = make_config(servers, tmp_path / "s.db", graph__page_size=50)
    tenant.fail_after = tenant.delta_pages + 2  # the first run stops on its 3rd page
    with pytest.raises(BaseException) as first:
        await sync(cfg)
    assert isinstance(_unwrap(first.value), SourceError)
    async with await StateStore.open(tmp_path / "s.db") as store:
        run = await store.last_run()
    assert run is not None and run.cursor is not None and run.cursor_page == 2
    tenant.fail_after, tenant.reject_links = None, True
    with pytest.raises(BaseException) as info:
        await sync(cfg)
    error = _unwrap(info.value)
    assert isinstance(error, SourceError) and "no longer works" in str(error)
    async with await StateStore.open(tmp_path / "s.db") as store:
        run = await store.last_run()
    assert run is not None and run.cursor is None and run.cursor_page == 0
    tenant.reject_links = False
    result = await sync(cfg)
    assert result.status == "completed"
    names = [r["userName"].lower() for r in scim.dump()]
    assert len(names) == len(set(names)) == sum(1 for _ in enabled(tenant))
    assert scim.counters()["duplicate_posts"] == {}


async def test_full_after_an_interrupted_full_read_resumes_it(servers, tenant, scim, tmp_path):
    """`sync --full` after an interrupted full read resumes that read (it is one) instead
    of refusing (issue 20 item 2: "run 1 was interrupted", exit 6): nothing sent twice."""
    cfg = make_config(servers, tmp_path / "s.db", graph__page_size=50)
    tenant.fail_after = tenant.delta_pages + 2  # the first run stops on its 3rd page
    with pytest.raises(BaseException) as info:
        await sync(cfg)
    assert isinstance(_unwrap(info.value), SourceError)
    tenant.fail_after = None
    resumed = await run_sync(cfg, SECRETS, policy=FAST_RETRY, full=True)
    assert resumed.status == "completed" and resumed.resumed  # resumed, not started over
    assert sum(resumed.counts.values()) == tenant.user_count
    assert scim.counters()["duplicate_posts"] == {}
    full = await run_sync(cfg, SECRETS, policy=FAST_RETRY, full=True)
    assert full.status == "completed" and sum(full.counts.values()) == tenant.user_count
    assert full.counts["unchanged"] == len(enabled(tenant))


async def test_two_approvals_add_to_the_run_counts(servers, tenant, scim, tmp_path):
    """`approve` merges into the counts of the run that held the actions (issue 20 item 6):
    two approvals left run 2's counts as ``{"disabled": 2}``, its own counts gone."""
    cfg = make_config(servers, tmp_path / "s.db", deprovision__threshold=2)
    await sync(cfg)
    for u in enabled(tenant)[:5]:
        tenant.delete_user(u["id"], soft=True)
    cycle = await sync(cfg)
    assert cycle.counts["held"] == 5
    async with await StateStore.open(tmp_path / "s.db") as store:
        ids = [s.id for s in await LifecycleStore(store).staged()]
        async with open_clients(cfg, SECRETS, policy=FAST_RETRY) as (_, client):
            first = await approve(store, client, cfg, ids[:2])
            second = await approve(store, client, cfg, ids[2:])
        stored = await LifecycleStore(store).run_by_id(cycle.run_id)
    assert first == {"disabled": 2} and second == {"disabled": 3}
    assert stored is not None
    expected = {k: v for k, v in cycle.counts.items() if v}
    expected["disabled"] = expected.get("disabled", 0) + 5
    assert {k: v for k, v in stored.counts.items() if v} == expected


async def test_watch_goes_on_after_a_quarantined_cycle(servers, tenant, scim, tmp_path):
    """A quarantined cycle under `sync --watch` is reported and the next cycle goes on
    past its reason (issue 20 item 2), instead of the loop stopping."""
    from bulkprov.commands.sync_watch import watch
    from bulkprov.errors import Quarantined
    from bulkprov.sim.scim.service import scim_error

    cfg = make_config(servers, tmp_path / "s.db")
    await sync(cfg)
    users = enabled(tenant)
    for u in users[:60]:
        tenant.update_user(u["id"], department="Moved")
    gone = users[60]
    tenant.delete_user(gone["id"], soft=True)

    class RejectDepartment(NoFaults):
        async def before(self, req: SimRequest) -> SimResponse | None:
            if req.method == "PATCH" and b"department" in req.body:
                return scim_error(400, "department is read-only", "mutability")
            return None

    scim.faults = RejectDepartment()
    errors: list[Any] = []
    results: list[Any] = []
    await watch(
        cfg,
        SECRETS,
        0.05,
        on_result=results.append,
        on_error=errors.append,
        cycles=2,
        policy=FAST_RETRY,
    )
    assert [type(e) for e in errors] == [Quarantined]
    assert [r.status for r in results] == ["completed_with_failures"]
    assert scim.find(gone["userPrincipalName"])["active"] is False
