"""Group lifecycle over loopback HTTP: groups leaving scope, and Graph ``groups/delta``.

A provisioned group that is unassigned or deleted in Entra is deleted in the target
(``DELETE /Groups/{id}``, facts.md §2.3) through the accidental-deletion threshold, as
"Groups evaluated for deletion count towards the deletion threshold" (facts.md §2.5).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bulkprov.checkpoint.staging import (
    DELETE_GROUP,
    GROUP_FORMS,
    GROUPS_DELTA,
    GroupState,
    LifecycleStore,
)
from bulkprov.checkpoint.store import StateStore, UserWrite
from bulkprov.errors import SourceError
from bulkprov.graph.directory import SourceGroup
from bulkprov.graph.groups_delta import merge
from bulkprov.pipeline import open_clients
from bulkprov.pipeline.deprovision import approve
from bulkprov.pipeline.groups import name_clashes, pack, pick_match, release_shared
from bulkprov.scim import groups as rg
from bulkprov.sim import GraphTenant, SimResponse
from bulkprov.sim.http import SimRequest, json_response
from bulkprov.sim.scim.service import scim_error

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


@pytest.mark.parametrize("dialect", ["rfc", "entra"])
async def test_member_added_and_removed_in_entra_is_one_patch_each(
    servers, tenant, scim, tmp_path, dialect
):
    """rfc removes with a filtered path (RFC 7644 §3.5.2.2), entra with Entra's value list."""
    d = tenant.directory
    users = enabled(tenant)[:5]
    for u in users:
        d.assign(u["id"])
    g = d.add_group("Licensed", [u["id"] for u in users[:3]])
    d.assign(g["id"])
    cfg = assigned_config(servers, tenant, tmp_path, target__patch_dialect=dialect)
    await sync(cfg)
    scim_id = scim.groups.find("Licensed")["id"]
    spy = Spy()
    scim.faults = spy

    d.add_member(g["id"], users[4]["id"])
    await sync(cfg)
    d.remove_member(g["id"], users[0]["id"])
    await sync(cfg)
    ops = [b["Operations"] for _, _, b in spy.writes()]
    new, old = scim.find(users[4]["userPrincipalName"]), scim.find(users[0]["userPrincipalName"])
    if dialect == "rfc":
        assert ops == [
            [{"op": "add", "path": "members", "value": [{"value": new["id"]}]}],
            [{"op": "remove", "path": f'members[value eq "{old["id"]}"]'}],
        ]
    else:
        assert ops == [
            [{"op": "Add", "path": "members", "value": [{"value": new["id"]}]}],
            [{"op": "Remove", "path": "members", "value": [{"value": old["id"]}]}],
        ]
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


# -- issue 19: member removal forms, one target group per Entra group, every change logged ----


class RefuseRemovals(Spy):
    """A target that refuses every member removal, whatever its form (400 invalidValue)."""

    async def before(self, req: SimRequest) -> SimResponse | None:
        await super().before(req)
        body = orjson.loads(req.body) if req.method == "PATCH" and req.body else {}
        if any(str(op.get("op")).lower() == "remove" for op in body.get("Operations", [])):
            return scim_error(400, "member removal is not allowed here", "invalidValue")
        return None


def _group_patches(spy: Spy) -> list[tuple[int, Any]]:
    return [(i, b) for i, (m, p, b) in enumerate(spy.writes()) if "/Groups/" in p]


def _sid(scim: Any, user: dict[str, Any]) -> str:
    return str(scim.find(user["userPrincipalName"])["id"])


async def _log(path: Any, **filters: Any) -> list[dict[str, Any]]:
    async with await StateStore.open(path) as store:
        return await store.log_entries(limit=None, **filters)


@pytest.mark.parametrize(("strict", "dialect"), [("rfc", "entra"), ("entra", "rfc")])
async def test_a_refused_removal_form_is_replaced_once_and_remembered(
    servers, tenant, scim, tmp_path, strict, dialect
):
    """A target refusing one removal form (for a reason it names) gets the other form, once:
    the refused body is not halved into more refused requests, and later cycles send the
    accepted form straight away."""
    d = tenant.directory
    users = enabled(tenant)[:10]
    for u in users:
        d.assign(u["id"])
    g = d.add_group("Licensed", [u["id"] for u in users])
    d.assign(g["id"])
    scim.groups.member_remove = strict
    cfg = assigned_config(
        servers, tenant, tmp_path, target__patch_dialect=dialect, groups__member_chunk=3
    )
    await sync(cfg)
    for u in users[:7]:
        d.remove_member(g["id"], u["id"])
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and result.counts["members removed"] == 7
    assert scim.groups.counters["refused removes"] == 1  # not one per chunk, nor per member
    scim_id = scim.groups.find("Licensed")["id"]
    assert set(scim.groups.member_ids(scim_id)) == {_sid(scim, u) for u in users[7:]}

    d.remove_member(g["id"], users[7]["id"])
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and scim.groups.counters["refused removes"] == 1
    ((_, body),) = _group_patches(spy)
    want = rg.member_operations(
        "remove", [_sid(scim, users[7])], "rfc" if strict == "rfc" else "entra"
    )
    assert body["Operations"] == want


async def test_adds_are_logged_when_the_removals_of_the_same_group_fail(
    servers, tenant, scim, tmp_path
):
    """The adds reach the target and their log entry is written, though the removals after
    them fail; removals refused in both forms cost a bounded number of requests."""
    d = tenant.directory
    users = enabled(tenant)[:12]
    for u in users:
        d.assign(u["id"])
    g = d.add_group("Mixed", [u["id"] for u in users[:9]])
    d.assign(g["id"])
    cfg = assigned_config(servers, tenant, tmp_path, groups__member_chunk=4)
    await sync(cfg)
    spy = RefuseRemovals()
    scim.faults = spy
    for u in users[:7]:
        d.remove_member(g["id"], u["id"])
    for u in users[9:]:
        d.add_member(g["id"], u["id"])
    result = await sync(cfg)
    assert result.counts["members added"] == 3 and result.counts["failed"] == 1
    scim_id = scim.groups.find("Mixed")["id"]
    assert set(scim.groups.member_ids(scim_id)) == {_sid(scim, u) for u in users}
    entries = await _log(tmp_path / "s.db", run_id=result.run_id, action="group")
    assert [(e["status"], e["reason"].split(":")[0]) for e in entries] == [
        ("success", "3 member(s) added"),
        ("failure", "7 member(s) not removed"),
    ]
    assert "rfc form" in entries[1]["reason"] and "entra form" in entries[1]["reason"]
    # the PATCH of the adds and the first removal (chunks of 4 members), the adds alone, then
    # that removal in the other form: refused in both, the other removal chunks are not sent
    assert len(_group_patches(spy)) == 4

    spy.seen.clear()
    result = await sync(cfg)  # the next cycle tries the removals again, the adds not
    assert result.counts["failed"] == 1 and "members added" not in result.counts
    assert len(_group_patches(spy)) == 3
    assert all(
        op["op"].lower() == "remove" for _, b in _group_patches(spy) for op in b["Operations"]
    )


async def test_a_member_already_gone_from_the_target_group_counts_as_removed(
    servers, tenant, scim, tmp_path
):
    """A removal answered noTarget (RFC 7644 §3.12) means the member is not there."""
    d = tenant.directory
    users = enabled(tenant)[:5]
    for u in users:
        d.assign(u["id"])
    g = d.add_group("Team", [u["id"] for u in users])
    d.assign(g["id"])
    scim.groups.no_target = True
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    scim_id = scim.groups.find("Team")["id"]
    group = scim.groups.groups[scim_id]
    group["members"] = [m for m in group["members"] if m["value"] != _sid(scim, users[0])]
    for u in users[:3]:
        d.remove_member(g["id"], u["id"])
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and result.counts["members removed"] == 3
    assert set(scim.groups.member_ids(scim_id)) == {_sid(scim, u) for u in users[3:]}
    spy = Spy()
    scim.faults = spy
    await sync(cfg)
    assert spy.writes() == []


async def test_rfc_removals_are_split_when_the_target_caps_a_patch(servers, tenant, scim, tmp_path):
    d = tenant.directory
    users = enabled(tenant)[:10]
    for u in users:
        d.assign(u["id"])
    g = d.add_group("Big", [u["id"] for u in users])
    d.assign(g["id"])
    scim.groups.max_patch_members = 3
    cfg = assigned_config(servers, tenant, tmp_path, groups__member_chunk=8)
    await sync(cfg)
    for u in users[:7]:
        d.remove_member(g["id"], u["id"])
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and result.counts["members removed"] == 7
    assert len(scim.groups.member_ids(scim.groups.find("Big")["id"])) == 3


async def test_groups_whose_names_clash_get_one_target_group_each_or_fail(
    servers, tenant, scim, tmp_path
):
    """ "Sales" and "SALES": one target group, for the first; the second fails naming both
    (it is never linked to the first's); renamed in Entra, it gets its own."""
    d = tenant.directory
    users = enabled(tenant)[:6]
    for u in users:
        d.assign(u["id"])
    first = d.add_group("Sales", [u["id"] for u in users[:3]])
    second = d.add_group("SALES", [u["id"] for u in users[3:]])
    d.assign(first["id"])
    d.assign(second["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    result = await sync(cfg)
    assert result.counts["failed"] == 1 and len(scim.groups.groups) == 1
    sales = scim.groups.find("Sales")
    assert sales["externalId"] == first["id"]
    assert set(scim.groups.member_ids(sales["id"])) == {_sid(scim, u) for u in users[:3]}
    (failure,) = await _log(tmp_path / "s.db", status="failure")
    assert failure["graph_id"] == second["id"]
    assert failure["reason"].startswith("DuplicateSourceEntries")
    assert first["id"] in failure["reason"] and second["id"] in failure["reason"]
    assert await _memberships(tmp_path / "s.db") == {
        first["id"]: frozenset(_sid(scim, u) for u in users[:3])
    }

    d.update_group(second["id"], displayName="Sales Ops")
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and result.counts["groups created"] == 1
    ops = scim.groups.find("Sales Ops")
    assert ops["externalId"] == second["id"]
    assert set(scim.groups.member_ids(ops["id"])) == {_sid(scim, u) for u in users[3:]}


async def test_a_rename_into_another_groups_name_fails_and_its_members_still_go(
    servers, tenant, scim, tmp_path
):
    d = tenant.directory
    users = enabled(tenant)[:4]
    for u in users:
        d.assign(u["id"])
    a = d.add_group("Sales", [users[0]["id"]])
    b = d.add_group("Support", [users[1]["id"]])
    d.assign(a["id"])
    d.assign(b["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    support_id = scim.groups.find("Support")["id"]
    d.update_group(b["id"], displayName="sales")
    d.add_member(b["id"], users[2]["id"])
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["failed"] == 1 and result.counts["members added"] == 1
    assert scim.groups.get(support_id)["displayName"] == "Support"
    assert set(scim.groups.member_ids(support_id)) == {_sid(scim, users[1]), _sid(scim, users[2])}
    ((_, body),) = _group_patches(spy)
    assert [op["path"] for op in body["Operations"]] == ["members"]  # no displayName
    failures = await _log(tmp_path / "s.db", run_id=result.run_id, status="failure")
    assert [f["graph_id"] for f in failures] == [b["id"]]
    assert "DuplicateSourceEntries" in failures[0]["reason"] and a["id"] in failures[0]["reason"]


async def _share(path: Any, owner: str, other: str) -> None:
    """Make ``other`` share ``owner``'s target group, as bulkprov before issue 19 did."""
    import sqlite3

    con = sqlite3.connect(path)
    with con:
        (sid,) = con.execute("SELECT scim_id FROM groups WHERE graph_id=?", (owner,)).fetchone()
        con.execute("UPDATE groups SET scim_id=? WHERE graph_id=?", (sid, other))
    con.close()


async def test_a_state_with_two_groups_on_one_target_group_is_repaired(
    servers, tenant, scim, tmp_path
):
    """An older state linked "Team" and "team" to one target group, members merged: the
    first keeps it and its extra members are removed; the other fails on the name; its
    deletion in Entra deletes nothing."""
    d = tenant.directory
    users = enabled(tenant)[:6]
    for u in users:
        d.assign(u["id"])
    a = d.add_group("Team", [u["id"] for u in users[:3]])
    b = d.add_group("Other", [u["id"] for u in users[3:]])
    d.assign(a["id"])
    d.assign(b["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    team, other = scim.groups.find("Team")["id"], scim.groups.find("Other")["id"]
    # what the old version left: b linked to "Team" too, its members added there
    scim.groups.groups[team]["members"] += scim.groups.groups.pop(other)["members"]
    await _share(tmp_path / "s.db", a["id"], b["id"])
    d.update_group(b["id"], displayName="team")

    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["failed"] == 1 and result.counts["members removed"] == 3
    assert [(m, p) for m, p, _ in spy.writes()] == [("PATCH", f"/scim2/Groups/{team}")]
    assert set(scim.groups.member_ids(team)) == {_sid(scim, u) for u in users[:3]}
    assert set(await _memberships(tmp_path / "s.db")) == {a["id"]}

    d.delete_group(b["id"])
    spy.seen.clear()
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and spy.writes() == []
    assert scim.groups.get(team) is not None


async def test_a_group_leaving_scope_never_deletes_a_target_group_another_owns(
    servers, tenant, scim, tmp_path
):
    d = tenant.directory
    users = enabled(tenant)[:4]
    for u in users:
        d.assign(u["id"])
    a = d.add_group("Team", [u["id"] for u in users[:2]])
    b = d.add_group("Other", [u["id"] for u in users[2:]])
    d.assign(a["id"])
    d.assign(b["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    team = scim.groups.find("Team")["id"]
    scim.groups.groups[team]["members"] += scim.groups.groups.pop(scim.groups.find("Other")["id"])[
        "members"
    ]
    await _share(tmp_path / "s.db", a["id"], b["id"])

    d.unassign(b["id"])
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and result.counts.get("groups deleted", 0) == 0
    assert [(m, p) for m, p, _ in spy.writes()] == [("PATCH", f"/scim2/Groups/{team}")]
    assert set(scim.groups.member_ids(team)) == {_sid(scim, u) for u in users[:2]}
    (released,) = await _log(tmp_path / "s.db", run_id=result.run_id, user=b["id"])
    assert "belongs to Entra group 'Team'" in released["reason"]


async def test_an_approved_delete_spares_a_target_group_another_group_owns(
    servers, tenant, scim, tmp_path
):
    d = tenant.directory
    users = enabled(tenant)[:2]
    for u in users:
        d.assign(u["id"])
    a = d.add_group("Gone", [users[0]["id"]])
    d.assign(a["id"])
    cfg = assigned_config(servers, tenant, tmp_path, deprovision__threshold=0)
    await sync(cfg)
    d.unassign(a["id"])
    assert (await sync(cfg)).counts["held"] == 1
    gone = scim.groups.find("Gone")["id"]
    async with await StateStore.open(tmp_path / "s.db") as store:
        await LifecycleStore(store).put_group("another-entra-group", gone, "Gone too")
        spy = Spy()
        scim.faults = spy
        async with open_clients(cfg, SECRETS, policy=FAST_RETRY) as (_, client):
            counts = await approve(store, client, cfg)
    assert counts.get("groups deleted", 0) == 0 and spy.writes() == []
    assert scim.groups.get(gone) is not None
    (entry,) = [
        e
        for e in await _log(tmp_path / "s.db", user=a["id"])
        if "not deleted" in (e["reason"] or "")
    ]
    assert "another-entra-group" in entry["reason"]


async def test_a_group_whose_target_group_vanished_is_provisioned_again(
    servers, tenant, scim, tmp_path
):
    d = tenant.directory
    users = enabled(tenant)[:4]
    for u in users:
        d.assign(u["id"])
    g = d.add_group("Ephemeral", [u["id"] for u in users[:3]])
    d.assign(g["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await sync(cfg)
    del scim.groups.groups[scim.groups.find("Ephemeral")["id"]]  # deleted in the target
    d.add_member(g["id"], users[3]["id"])
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and result.counts["groups created"] == 1
    again = scim.groups.find("Ephemeral")
    assert set(scim.groups.member_ids(again["id"])) == {_sid(scim, u) for u in users}
    reasons = [
        e["reason"] for e in await _log(tmp_path / "s.db", run_id=result.run_id, action="group")
    ]
    assert reasons[0].startswith("target group ") and "no longer exists (404)" in reasons[0]
    assert reasons[1:] == ["group created", "4 member(s) added"]
    spy = Spy()
    scim.faults = spy
    await sync(cfg)
    assert spy.writes() == []


# -- the pure parts ------------------------------------------------------------------------------


def _g(gid: str, name: str, *members: str) -> SourceGroup:
    return SourceGroup(gid, name, tuple(members))


def test_name_clashes_fail_all_but_the_group_that_has_or_takes_the_name():
    known = {"b": GroupState("b", "T-b", "marketing", frozenset())}
    groups = [_g("a", "Marketing"), _g("b", "marketing"), _g("c", "MARKETING"), _g("d", "Sales")]
    clashes = name_clashes(groups, known)
    assert set(clashes) == {"a", "c"}  # "b" already has the name in the target
    assert "'marketing' (b)" in clashes["a"] and "'Marketing' (a)" in clashes["a"]
    assert name_clashes([_g("x", "Dup"), _g("y", "Dup")], {}).keys() == {"y"}


def test_pick_match_takes_only_a_target_group_no_other_entra_group_owns():
    group = _g("b", "Team")
    assert pick_match(group, [{"id": "T1"}, {"id": "T2"}], {"T1": "a"}, {}) == ("T2", None)
    assert pick_match(group, [{"id": "T1"}], {"T1": "b"}, {}) == ("T1", None)
    assert pick_match(group, [], {}, {}) == (None, None)
    found, reason = pick_match(group, [{"id": "T1"}], {"T1": "a"}, {"a": "team"})
    assert found is None and reason is not None
    assert "'team' (a)" in reason and "'Team' (b)" in reason


def test_release_shared_keeps_the_first_linked_in_scope_and_merges_members():
    known = {
        "a": GroupState("a", "T", "Team", frozenset({"u1"})),
        "b": GroupState("b", "T", "team", frozenset({"u2"})),
        "c": GroupState("c", "U", "Other", frozenset({"u3"})),
    }
    after, released = release_shared(known, {"a", "b", "c"})
    assert released == {"b": "a"} and set(after) == {"a", "c"}
    assert after["a"].members == {"u1", "u2"}
    after, released = release_shared(known, {"b", "c"})  # "a" left scope: "b" keeps it
    assert released == {"a": "b"} and after["b"].members == {"u1", "u2"}


def test_pack_puts_a_groups_changes_in_as_few_patches_as_the_chunk_allows():
    def shape(patches):
        return [[(p.kind, len(p.members)) for p in parts] for parts in patches]

    assert shape(pack(True, ["a", "b"], ["c"], 100)) == [[("rename", 0), ("add", 2), ("remove", 1)]]
    assert shape(pack(False, list("abcde"), list("xyz"), 3)) == [
        [("add", 3)],
        [("add", 2), ("remove", 1)],
        [("remove", 2)],
    ]
    assert pack(False, [], [], 3) == []


async def test_the_learned_removal_form_follows_the_target(servers, tenant, scim, tmp_path):
    """A form learned for another target (or dialect) is not used; a target that changes
    what it accepts gets the fallback again (one refused request), not halving."""
    d = tenant.directory
    users = enabled(tenant)[:8]
    for u in users:
        d.assign(u["id"])
    g = d.add_group("Crew", [u["id"] for u in users])
    d.assign(g["id"])
    cfg = assigned_config(servers, tenant, tmp_path, target__patch_dialect="entra")
    await sync(cfg)
    async with await StateStore.open(tmp_path / "s.db") as store:
        learned = {"key": ["http://elsewhere/scim2", "entra"], "forms": {"remove": "rfc"}}
        await LifecycleStore(store).put(GROUP_FORMS, orjson.dumps(learned).decode())
    spy = Spy()
    scim.faults = spy
    d.remove_member(g["id"], users[0]["id"])
    await sync(cfg)
    ((_, body),) = _group_patches(spy)
    assert body["Operations"][0]["op"] == "Remove"  # the dialect's form, not the other target's

    scim.groups.member_remove = "rfc"  # the target now refuses Entra's form
    for u in users[1:6]:
        d.remove_member(g["id"], u["id"])
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and scim.groups.counters["refused removes"] == 1
    scim.groups.member_remove = "entra"  # and then changes its mind
    for u in users[6:]:
        d.remove_member(g["id"], u["id"])
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and scim.groups.counters["refused removes"] == 2
    assert scim.groups.member_ids(scim.groups.find("Crew")["id"]) == []


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
