"""Group lifecycle over loopback HTTP: groups leaving scope, and Graph ``groups/delta``.

A provisioned group that is unassigned or deleted in Entra is deleted in the target
(``DELETE /Groups/{id}``, facts.md §2.3) through the accidental-deletion threshold, as
"Groups evaluated for deletion count towards the deletion threshold" (facts.md §2.5).
"""

from __future__ import annotations

from typing import Any

import pytest

from bulkprov.checkpoint.lifecycle import DELETE_GROUP, LifecycleStore
from bulkprov.checkpoint.store import StateStore
from bulkprov.errors import SourceError
from bulkprov.lifecycle import approve
from bulkprov.ondemand import _clients
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
    return FailingTenant(user_count=60, seed=5, client_secret=GRAPH_SECRET)


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
        async with _clients(cfg, SECRETS, None, None, FAST_RETRY) as (_, client):
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


@pytest.mark.parametrize("fail_on", ["/appRoleAssignedTo", "/members"])
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
