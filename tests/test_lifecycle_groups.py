"""Group lifecycle over loopback HTTP: groups leaving scope, and Graph ``groups/delta``.

A provisioned group that is unassigned or deleted in Entra is deleted in the target
(``DELETE /Groups/{id}``, facts.md §2.3) through the accidental-deletion threshold, as
"Groups evaluated for deletion count towards the deletion threshold" (facts.md §2.5).
"""

from __future__ import annotations

from typing import Any

import pytest

from bulkprov.checkpoint.staging import DELETE_GROUP, GROUPS_DELTA, LifecycleStore
from bulkprov.checkpoint.store import StateStore, UserWrite
from bulkprov.errors import SourceError
from bulkprov.graph.groups_delta import merge
from bulkprov.pipeline import open_clients
from bulkprov.pipeline.deprovision import approve
from bulkprov.sim import GraphTenant, SimResponse
from bulkprov.sim.http import SimRequest, json_response

from .conftest import FAST_RETRY, GRAPH_SECRET, SECRETS
from .test_lifecycle import Spy, _unwrap, assigned_config, enabled, sync


class FailingTenant(GraphTenant):
    """Answers 503 to every request whose path contains ``fail_on`` (when set)."""

    fail_on: str | None = None

    async def handle(self, req: SimRequest) -> SimResponse:
        if self.fail_on is not None and self.fail_on in req.path:
            return json_response(503, {"error": {"code": "serviceNotAvailable"}})
        return await super().handle(req)


@pytest.fixture
def tenant() -> GraphTenant:
    return FailingTenant(user_count=300, seed=5, client_secret=GRAPH_SECRET)


async def _memberships(path: Any) -> dict[str, Any]:
    async with await StateStore.open(path) as store:
        return {g: s.members for g, s in (await LifecycleStore(store).groups()).items()}


async def test_unassigned_group_is_deleted_and_forgotten(servers, tenant, scim, tmp_path):
    d = tenant.directory
    users = enabled(tenant)[:6]
    for u in users:
        d.assign(u["id"])  # members stay assigned directly: only the group leaves scope
    keep = d.add_group("Zoom Basic", [u["id"] for u in users[:3]])
    gone = d.add_group("Zoom Pro", [u["id"] for u in users[3:]])
    d.assign(keep["id"])
    d.assign(gone["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    pro = scim.groups.find("Zoom Pro")
    assert pro is not None and len(scim.groups.member_ids(pro["id"])) == 3
    assert len((await _memberships(tmp_path / "s.db"))[gone["id"]]) == 3

    d.unassign(gone["id"])
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["groups deleted"] == 1 and result.counts["held"] == 0
    assert [(m, p) for m, p, _ in spy.writes()] == [("DELETE", f"/scim2/Groups/{pro['id']}")]
    assert scim.groups.find("Zoom Pro") is None
    assert scim.groups.find("Zoom Basic") is not None
    assert all(scim.find(u["userPrincipalName"])["active"] for u in users)  # users untouched
    states = await _memberships(tmp_path / "s.db")
    assert gone["id"] not in states and len(states[keep["id"]]) == 3

    spy.seen.clear()
    await sync(cfg)
    assert spy.writes() == []  # deleted once, not again


async def test_group_deleted_in_entra_over_threshold_is_held_then_approved(
    servers, tenant, scim, tmp_path
):
    d = tenant.directory
    users = enabled(tenant)[:2]
    for u in users:
        d.assign(u["id"])
    groups = [d.add_group(f"G{i}", [users[i % 2]["id"]]) for i in range(3)]
    for g in groups:
        d.assign(g["id"])
    cfg = assigned_config(servers, tenant, tmp_path, deprovision__threshold=2)
    await sync(cfg)
    assert len(scim.groups.groups) == 3

    for g in groups:
        d.delete_group(g["id"])  # gone from Entra (its assignments with it)
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["held"] == 3 and "threshold" in (result.message or "")
    assert spy.writes() == [] and len(scim.groups.groups) == 3

    async with await StateStore.open(tmp_path / "s.db") as store:
        held = await LifecycleStore(store).staged()
        assert sorted((s.action, s.user_name) for s in held) == [
            (DELETE_GROUP, "G0"),
            (DELETE_GROUP, "G1"),
            (DELETE_GROUP, "G2"),
        ]
    # a later cycle decides again: still 3, still held, no duplicates
    result = await sync(cfg)
    assert result.counts["held"] == 3 and spy.writes() == []
    async with await StateStore.open(tmp_path / "s.db") as store:
        assert len(await LifecycleStore(store).staged()) == 3
        async with open_clients(cfg, SECRETS, policy=FAST_RETRY) as (_, client):
            counts = await approve(store, client, cfg)
    assert counts["groups deleted"] == 3
    assert sorted(m for m, _, _ in spy.writes()) == ["DELETE"] * 3
    assert scim.groups.groups == {}
    assert await _memberships(tmp_path / "s.db") == {}
    spy.seen.clear()
    await sync(cfg)
    assert spy.writes() == []


async def test_group_back_in_scope_supersedes_its_held_delete(servers, tenant, scim, tmp_path):
    d = tenant.directory
    u = enabled(tenant)[0]
    d.assign(u["id"])
    g = d.add_group("Back", [u["id"]])
    d.assign(g["id"])
    cfg = assigned_config(servers, tenant, tmp_path, deprovision__threshold=0)
    await sync(cfg)
    d.unassign(g["id"])
    assert (await sync(cfg)).counts["held"] == 1
    d.assign(g["id"])
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["held"] == 0 and spy.writes() == []
    async with await StateStore.open(tmp_path / "s.db") as store:
        assert await LifecycleStore(store).staged() == []


@pytest.mark.parametrize("fail_on", ["/appRoleAssignedTo", "/groups/delta"])
async def test_failed_group_read_deletes_nothing(servers, tenant, scim, tmp_path, fail_on):
    d = tenant.directory
    users = enabled(tenant)[:4]
    for u in users:
        d.assign(u["id"])
    a = d.add_group("A", [users[0]["id"]])
    b = d.add_group("B", [users[1]["id"]])
    d.assign(a["id"])
    d.assign(b["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    d.unassign(b["id"])
    spy = Spy()
    scim.faults = spy
    tenant.fail_on = fail_on
    with pytest.raises(BaseException) as info:
        await sync(cfg)
    assert isinstance(_unwrap(info.value), SourceError)
    assert spy.writes() == []
    assert len(scim.groups.groups) == 2
    assert set(await _memberships(tmp_path / "s.db")) == {a["id"], b["id"]}

    tenant.fail_on = None
    result = await sync(cfg)
    assert result.counts["groups deleted"] == 1
    assert [m for m, _, _ in spy.writes()] == ["DELETE"]


async def test_groups_not_created_by_bulkprov_are_never_deleted(servers, tenant, scim, tmp_path):
    d = tenant.directory
    u = enabled(tenant)[0]
    d.assign(u["id"])
    foreign = scim.groups.handle(
        SimRequest("POST", "/scim2/Groups", {}, {}, b'{"displayName":"Finance (Zoom only)"}'),
        "/Groups",
        lambda *a, **k: SimResponse(400),
        "",
    )
    assert foreign.status == 201
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    await sync(cfg)
    assert scim.groups.find("Finance (Zoom only)") is not None


# -- Graph groups/delta ----------------------------------------------------------------------


def test_merge_joins_a_group_split_over_pages_and_applies_removals():
    pages = [
        [
            {"id": "g1", "displayName": "Big", "members@delta": [{"id": "u1"}, {"id": "u2"}]},
        ],
        [
            {"id": "g1", "members@delta": [{"id": "u3"}, {"id": "u1", "@removed": {}}]},
            {"id": "g2", "@removed": {"reason": "deleted"}},
            {
                "id": "g3",
                "displayName": "Nested",
                "members@delta": [{"id": "g1", "@odata.type": "#microsoft.graph.group"}],
            },
        ],
    ]
    delta = merge(pages, full=False)
    assert delta.names == {"g1": "Big", "g3": "Nested"}
    assert delta.added["g1"] == {"u2": "user", "u3": "user"}
    assert delta.removed["g1"] == {"u1"}
    assert delta.added["g3"] == {"g1": "group"}
    assert delta.deleted == {"g2"}


async def test_incremental_cycle_reads_no_group_members(servers, tenant, scim, tmp_path):
    d = tenant.directory
    users = enabled(tenant)[:12]
    d.assign(d.add_group("One", [u["id"] for u in users[:6]])["id"])
    d.assign(d.add_group("Two", [u["id"] for u in users[6:]])["id"])
    d.add_group("Not assigned", [users[0]["id"]])
    cfg = assigned_config(servers, tenant, tmp_path)
    first = await sync(cfg)
    assert first.counts["created"] == 12
    assert tenant.counters["group_member_reads"] == 0  # the first round of groups/delta
    pages = tenant.counters["groups_delta_pages"]
    scim.reset_counters()
    await sync(cfg)
    assert tenant.counters["group_member_reads"] == 0
    assert tenant.counters["groups_delta_pages"] == pages + 1  # one empty round
    assert scim.counters()["total"] == 0


async def test_member_added_and_removed_in_entra_is_one_patch_each(servers, tenant, scim, tmp_path):
    d = tenant.directory
    users = enabled(tenant)[:5]
    for u in users:
        d.assign(u["id"])
    g = d.add_group("Licensed", [u["id"] for u in users[:3]])
    d.assign(g["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    scim_id = scim.groups.find("Licensed")["id"]
    spy = Spy()
    scim.faults = spy

    d.add_member(g["id"], users[4]["id"])
    await sync(cfg)
    d.remove_member(g["id"], users[0]["id"])
    await sync(cfg)
    ops = [(b["Operations"][0]["op"], b["Operations"][0]["value"]) for _, _, b in spy.writes()]
    new, old = scim.find(users[4]["userPrincipalName"]), scim.find(users[0]["userPrincipalName"])
    assert ops == [("add", [{"value": new["id"]}]), ("remove", [{"value": old["id"]}])]
    assert all(p == f"/scim2/Groups/{scim_id}" for _, p, _ in spy.writes())
    assert tenant.counters["group_member_reads"] == 0
    assert set(scim.groups.member_ids(scim_id)) == {
        scim.find(u["userPrincipalName"])["id"] for u in (users[1], users[2], users[4])
    }


async def test_large_group_split_over_delta_pages_is_merged(servers, tenant, scim, tmp_path):
    d = tenant.directory
    members = [u["id"] for u in enabled(tenant)[:250]]
    assert len(members) == 250
    g = d.add_group("Everyone", members)
    d.assign(g["id"])
    d.assign(d.add_group("Small", members[:2])["id"])
    cfg = assigned_config(servers, tenant, tmp_path, graph__page_size=40)
    result = await sync(cfg)
    assert result.counts["created"] == 250
    assert tenant.counters["groups_delta_pages"] >= 7  # 250 members / 40 per page
    assert len(scim.groups.member_ids(scim.groups.find("Everyone")["id"])) == 250
    assert len(scim.groups.member_ids(scim.groups.find("Small")["id"])) == 2
    async with await StateStore.open(tmp_path / "s.db") as store:
        found = await LifecycleStore(store).source_group(g["id"])
    assert found is not None and sorted(m for m, _ in found[1]) == sorted(members)


async def test_expired_groups_token_reads_everything_again_without_change(
    servers, tenant, scim, tmp_path
):
    d = tenant.directory
    users = enabled(tenant)[:4]
    g = d.add_group("G", [u["id"] for u in users])
    d.assign(g["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    async with await StateStore.open(tmp_path / "s.db") as store:
        link = await LifecycleStore(store).get(GROUPS_DELTA)
    assert link is not None and "groups/delta" in link
    d.expire_delta_tokens()
    d.remove_member(g["id"], users[1]["id"])
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["held"] == 0
    group_ops = [b["Operations"][0]["op"] for _, p, b in spy.writes() if "/Groups/" in p]
    assert group_ops == ["remove"]
    async with await StateStore.open(tmp_path / "s.db") as store:
        assert await LifecycleStore(store).get(GROUPS_DELTA) != link


async def test_state_v3_gains_the_group_mirror(tmp_path):
    import sqlite3

    path = tmp_path / "s.db"
    async with await StateStore.open(path):
        pass
    con = sqlite3.connect(path)
    con.executescript(
        "DROP TABLE source_groups; DROP TABLE source_group_members;"
        "UPDATE meta SET value='3' WHERE key='schema_version';"
    )
    con.close()
    async with await StateStore.open(path) as store:
        ls = LifecycleStore(store)
        assert await ls.source_group_names() == {}
        assert await ls.source_group("g") is None


async def test_a_failed_group_is_not_escrowed_and_old_group_entries_go(tmp_path):
    """Groups are diffed again every cycle, never retried through escrow: an entry for a
    group (none is made now; an older version made them) would hold every later cycle's
    watermarks back once the group left scope, since no success would ever clear it."""
    async with await StateStore.open(tmp_path / "s.db") as store:
        run = await store.start_run()
        group = UserWrite("g1", "Sales", "group", "failure", "409 exists")
        user = UserWrite("u1", "ann@x.test", "create", "failure", "400 bad")
        await store.write_batch(run, [(None, group), (None, user)], {"failed": 2}, None)
        assert set(await store.escrow_entries()) == {"u1"}
        await store._conn.execute(  # an entry an older version left
            "INSERT INTO escrow(graph_id, user_name, first_failed, last_failed, failures, "
            "next_retry, reason) VALUES('g1', 'Sales', 1, 1, 1, 2, 'x')"
        )
        await LifecycleStore(store).drop_group_escrow()
        assert set(await store.escrow_entries()) == {"u1"}
