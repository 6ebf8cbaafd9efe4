"""Updates that real inputs make (issue 20): a filtered path with nothing to replace, a
cleared source attribute, delta entries that carry only the changed properties.

Every cycle goes through the real pipeline over loopback HTTP into the SCIM simulator,
whose PATCH is RFC-strict: ``replace`` on a filtered path with no matching element answers
400 ``noTarget`` (RFC 7644 §3.5.2.3), as scim2-server does.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

from bulkprov.pipeline.plan import apply_options, make_plan
from bulkprov.pipeline.run import run_sync
from bulkprov.scim.paths import get_value
from bulkprov.sim import GraphTenant, ScimService
from bulkprov.sim.server import serve_simulators

from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN, SECRETS, make_config
from .e2e import expected_values, store_problems
from .test_lifecycle import Spy, enabled

WORK = 'emails[type eq "work"].value'


async def sync(cfg: Any) -> Any:
    return await run_sync(cfg, SECRETS, policy=FAST_RETRY)


def patches(spy: Spy) -> list[list[dict[str, Any]]]:
    return [body["Operations"] for method, _, body in spy.writes() if method == "PATCH"]


@pytest.mark.parametrize("clear", [False, True], ids=["default", "clear_on_null"])
async def test_a_user_gains_changes_and_loses_a_mail(servers, tenant, scim, tmp_path, clear):
    """Items 3 and 4: gaining a mail adds the whole work email (a ``replace`` would be
    refused: noTarget); changing it replaces it; losing it keeps it (Entra's default) or,
    with ``target.clear_on_null``, removes it; gaining one again then adds or replaces."""
    user = next(u for u in enabled(tenant) if u.get("mail") is None)
    upn = user["userPrincipalName"]
    cfg = make_config(servers, tmp_path / "s.db", target__clear_on_null=clear)
    assert (await sync(cfg)).counts["failed"] == 0
    assert get_value(scim.find(upn), WORK) is None
    spy = Spy()
    scim.faults = spy

    tenant.update_user(user["id"], mail="first.address@corp.example")
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0, result
    email = {"type": "work", "primary": True, "value": "first.address@corp.example"}
    assert patches(spy) == [[{"op": "add", "path": "emails", "value": [email]}]]
    assert scim.find(upn)["emails"] == [email]

    spy.seen.clear()
    tenant.update_user(user["id"], mail="second.address@corp.example")
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0, result
    assert patches(spy) == [
        [{"op": "replace", "path": WORK, "value": "second.address@corp.example"}]
    ]
    assert get_value(scim.find(upn), WORK) == "second.address@corp.example"

    spy.seen.clear()
    tenant.update_user(user["id"], mail=None)
    result = await sync(cfg)
    assert result.counts["failed"] == 0, result
    if clear:
        assert patches(spy) == [[{"op": "remove", "path": 'emails[type eq "work"]'}]]
        assert not scim.find(upn).get("emails")
    else:
        assert spy.writes() == []  # Entra never provisions a null: the old value stays
        assert get_value(scim.find(upn), WORK) == "second.address@corp.example"

    spy.seen.clear()
    tenant.update_user(user["id"], mail="third.address@corp.example")
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0, result
    if clear:
        email = {"type": "work", "primary": True, "value": "third.address@corp.example"}
        assert patches(spy) == [[{"op": "add", "path": "emails", "value": [email]}]]
    else:  # the target kept the old one: replaced, never a second work email
        assert patches(spy) == [
            [{"op": "replace", "path": WORK, "value": "third.address@corp.example"}]
        ]
    assert scim.find(upn)["emails"] == [
        {"type": "work", "primary": True, "value": "third.address@corp.example"}
    ]


async def test_clear_on_null_removes_a_cleared_attribute(servers, tenant, scim, tmp_path):
    """Item 4: a surname cleared in Entra is removed from the target with clear_on_null."""
    user = next(u for u in enabled(tenant) if u.get("surname") and u.get("mail"))
    upn = user["userPrincipalName"]
    cfg = make_config(servers, tmp_path / "s.db", target__clear_on_null=True)
    await sync(cfg)
    spy = Spy()
    scim.faults = spy
    tenant.update_user(user["id"], surname=None)
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0
    assert patches(spy) == [[{"op": "remove", "path": "name.familyName"}]]
    assert "familyName" not in scim.find(upn)["name"]


# ------------------------------------------------------------------ changed-only entries


@pytest.fixture
def minimal_tenant(tenant: GraphTenant) -> GraphTenant:
    """Rounds of changes list a changed user with only its changed properties (Graph's
    ``Prefer: return=minimal``, which Graph may do without it too)."""
    tenant.delta_changed_only = True
    return tenant


async def test_a_changed_only_entry_sends_only_that_change(servers, minimal_tenant, scim, tmp_path):
    """Item 1: ``{"id": …, "department": "Sales"}`` is merged over the values last seen for
    that user: one PATCH with that one operation, no Graph request for it. Before: "the
    mapping gave no userName" for every such entry, and a quarantined cycle."""
    tenant = minimal_tenant
    a, b, c = [u for u in enabled(tenant) if u.get("surname") and u.get("mail")][:3]
    cfg = make_config(servers, tmp_path / "s.db")
    assert (await sync(cfg)).counts["failed"] == 0
    tenant.update_user(a["id"], department="Sales")
    tenant.update_user(b["id"], accountEnabled=False)
    tenant.update_user(c["id"], surname="Newname", mail="new.mail@corp.example")
    tenant._reset_counters()
    spy = Spy()
    scim.faults = spy
    result = await sync(cfg)
    assert result.status == "completed", result
    assert result.counts["updated"] == 2 and result.counts["disabled"] == 1, result
    assert result.counts["failed"] == 0
    assert tenant.counters["user_reads"] == 0  # merged with the state: no fetch by id
    by_user = {path: ops for method, path, ops in ((m, p, b) for m, p, b in spy.writes())}
    dept = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
    assert by_user[f"/scim2/Users/{scim.find(a['userPrincipalName'])['id']}"]["Operations"] == [
        {"op": "replace", "path": dept, "value": "Sales"}
    ]
    assert by_user[f"/scim2/Users/{scim.find(b['userPrincipalName'])['id']}"]["Operations"] == [
        {"op": "replace", "path": "active", "value": False}
    ]
    assert sorted(
        op["path"]
        for op in by_user[f"/scim2/Users/{scim.find(c['userPrincipalName'])['id']}"]["Operations"]
    ) == [WORK, "name.familyName"]
    assert len(spy.writes()) == 3
    # a later entry for the same user merges over what this cycle kept
    tenant.update_user(a["id"], surname="Other")
    spy.seen.clear()
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0
    user = scim.find(a["userPrincipalName"])
    assert get_value(user, dept) == "Sales" and user["name"]["familyName"] == "Other"
    assert [b["Operations"] for _, _, b in spy.writes()] == [
        [{"op": "replace", "path": "name.familyName", "value": "Other"}]
    ]
    spy.seen.clear()
    assert (await sync(cfg)).counts["updated"] == 0 and spy.writes() == []


async def test_a_changed_only_entry_without_kept_values_is_fetched_by_id(
    servers, minimal_tenant, scim, tmp_path
):
    """Item 1: a user whose values the state does not hold (out of scope so far, or kept by
    a state from before schema 5) is read whole with ``GET /users/{id}``: one request."""
    tenant = minimal_tenant
    inside, outside = [
        u for u in enabled(tenant) if u.get("department") != "Sales" and u.get("givenName")
    ][:2]
    filters = [
        {
            "name": "not Sales",
            "clauses": [{"attribute": "department", "operator": "NOT EQUALS", "value": "Sales"}],
        }
    ]
    cfg = make_config(servers, tmp_path / "s.db", scope__filters=filters)
    tenant.update_user(outside["id"], department="Sales")
    await sync(cfg)
    assert scim.find(outside["userPrincipalName"]) is None
    con = sqlite3.connect(cfg.state.path)
    con.execute("UPDATE users SET source=NULL WHERE graph_id=?", (inside["id"],))
    con.commit()
    con.close()
    tenant.update_user(outside["id"], department="Field Ops")  # comes into scope
    tenant.update_user(inside["id"], surname="Fetched")
    tenant._reset_counters()
    result = await sync(cfg)
    assert result.counts["created"] == 1 and result.counts["updated"] == 1, result
    assert result.counts["failed"] == 0
    assert tenant.counters["user_reads"] == 2
    assert scim.find(outside["userPrincipalName"])["name"]["givenName"] == outside["givenName"]
    assert scim.find(inside["userPrincipalName"])["name"]["familyName"] == "Fetched"


DEPARTMENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"


def _change_tenant(tenant: GraphTenant, rng: Any) -> dict[str, Any]:
    """100 users' department/surname/mail changed (10 gain a mail, some lose theirs), 50
    disabled, 20 removed (soft and hard deletes)."""
    users = enabled(tenant)
    rng.shuffle(users)
    gainers = [u for u in users if not u.get("mail")][:10]
    rest = [u for u in users if u.get("mail")]
    changed, disabled, removed = gainers + rest[:90], rest[90:140], rest[140:160]
    cleared: dict[str, dict[str, Any]] = {}  # userName → path → the value the target keeps
    only_cleared = 0  # users whose one change is a cleared mail
    for i, u in enumerate(changed):
        kind = i % 5
        if i < 10:
            tenant.update_user(u["id"], mail=f"gained.{i}@corp.example")
        elif kind == 0:
            tenant.update_user(u["id"], department=f"Dept {i}")
        elif kind == 1:
            tenant.update_user(u["id"], surname=f"Surname{i}", department="Ops")
        elif kind == 2:
            tenant.update_user(u["id"], mail=f"changed.{i}@corp.example")
        elif kind == 3:
            tenant.update_user(u["id"], mail=None)  # cleared: Entra keeps the target's value
            cleared[u["userPrincipalName"].lower()] = {WORK: u["mail"]}
            only_cleared += 1
        else:
            tenant.update_user(u["id"], department=f"Dept {i}", surname=f"S{i}", mail=None)
            cleared[u["userPrincipalName"].lower()] = {WORK: u["mail"]}
    for u in disabled:
        tenant.update_user(u["id"], accountEnabled=False)
    for i, u in enumerate(removed):
        tenant.delete_user(u["id"], soft=i % 2 == 0)
    return {
        "changed": changed,
        "gone": disabled + removed,
        "cleared": cleared,
        "only_cleared": only_cleared,
    }


@pytest.mark.parametrize("clear", [False, True], ids=["default", "clear_on_null"])
async def test_changed_only_cycle_over_5000_users_is_exact(tmp_path, clear):
    """Must-show of issue 20: 5,000 users, then changed-only entries for 100 users whose
    department/surname/mail changed (some cleared), 50 disabled and 20 removed in Graph;
    one incremental cycle leaves the target exactly right, with at most one request per
    changed user and no Graph read by id; the next, unchanged cycle sends nothing."""
    tenant = GraphTenant(user_count=5000, seed=20, client_secret=GRAPH_SECRET)
    tenant.delta_changed_only = True
    scim = ScimService(SCIM_TOKEN, id_seed=20)
    async with serve_simulators(tenant, scim) as servers:
        cfg = make_config(
            servers, tmp_path / "s.db", target__concurrency=16, target__clear_on_null=clear
        )
        first = await sync(cfg)
        assert first.counts["failed"] == 0 and first.status == "completed"
        before = {r["userName"].lower(): r for r in scim.dump()}
        change = _change_tenant(tenant, random.Random(20))
        tenant._reset_counters()
        spy = Spy()
        scim.faults = spy
        result = await sync(cfg)
        assert result.status == "completed", result
        assert result.counts["failed"] == 0
        assert result.counts["disabled"] == 70
        writes = spy.writes()
        per_user = [path for _, path, _ in writes]
        assert len(per_user) == len(set(per_user)), "at most one request per changed user"
        # one request per changed user, none for a mail cleared alone (the target keeps it,
        # facts.md §2.1) unless clear_on_null removes it
        only = change["only_cleared"]
        assert len(writes) == 170 - (0 if clear else only)
        assert all(method == "PATCH" for method, _, _ in writes)
        assert tenant.counters["user_reads"] == 0  # every entry merged, none fetched
        spy.seen.clear()
        again = await sync(cfg)
        assert again.status == "completed" and spy.writes() == []
    store = scim.dump()
    expected = expected_values(cfg, tenant.iter_users())
    if not clear:
        for name, paths in change["cleared"].items():
            expected[name].update(paths)
    gone = {u["userPrincipalName"].lower() for u in change["gone"]}
    inactive = [r for r in store if r["userName"].lower() in gone]
    assert len(inactive) == 70 and all(r["active"] is False for r in inactive)
    for r in inactive:  # disabled, data kept as it was
        old = dict(before[r["userName"].lower()], active=False)
        old.pop("meta", None)
        r = {k: v for k, v in r.items() if k != "meta"}
        assert r == old
    active = [r for r in store if r["userName"].lower() not in gone]
    assert store_problems(expected, active) == []
    if clear:  # removed, not just left out of the comparison
        cleared = [r for r in active if r["userName"].lower() in change["cleared"]]
        assert cleared and not any(get_value(r, WORK) for r in cleared)
    assert get_value(scim.find(change["changed"][10]["userPrincipalName"]), DEPARTMENT) == "Dept 10"
    gained = scim.find(change["changed"][0]["userPrincipalName"])
    assert gained["emails"] == [{"type": "work", "primary": True, "value": "gained.0@corp.example"}]


async def test_plan_and_apply_over_changed_only_entries(servers, minimal_tenant, scim, tmp_path):
    """Item 1 for ``bulkprov plan``/``apply``: the plan merges changed-only entries as the
    sync does (writing nothing), shows one update with the one change, and apply sends
    exactly that (nothing held back)."""
    tenant = minimal_tenant
    a = next(u for u in enabled(tenant) if u.get("surname"))
    cfg = make_config(servers, tmp_path / "s.db")
    await sync(cfg)
    tenant.update_user(a["id"], department="Planned")
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    ops = plan["operations"]
    assert [(op["graph_id"], op["action"]) for op in ops] == [(a["id"], "update")]
    assert ops[0]["changes"] == {DEPARTMENT: "Planned"}
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY, **apply_options(plan))
    assert result.counts["updated"] == 1 and result.counts["held back"] == 0, result
    assert get_value(scim.find(a["userPrincipalName"]), DEPARTMENT) == "Planned"


@pytest.mark.parametrize("schema", [4, 5])
async def test_a_state_from_schema_4_or_5_is_migrated_and_keeps_working(
    servers, minimal_tenant, scim, tmp_path, schema
):
    """Schema 6 (issue 20) on a database written before it, by bulkprov before issue 18
    (schema 4) or with issue 18's ``waiting`` table (schema 5): migrated in place (4 → 5 →
    6, or 5 → 6), its users keep their links, and their first changed-only entries are
    read by id (no values kept yet), after which they are merged."""
    tenant = minimal_tenant
    a = next(u for u in enabled(tenant) if u.get("surname"))
    cfg = make_config(servers, tmp_path / "s.db")
    await sync(cfg)
    con = sqlite3.connect(cfg.state.path)  # back to the shape that schema had
    con.executescript(
        "ALTER TABLE users DROP COLUMN source; ALTER TABLE runs DROP COLUMN target_indexed;"
        "DROP INDEX log_run_page; CREATE INDEX log_run ON log(run_id);"
        + ("DROP TABLE waiting;" if schema == 4 else "")
        + f"UPDATE meta SET value='{schema}' WHERE key='schema_version';"
    )
    con.close()
    tenant.update_user(a["id"], department="After the upgrade")
    tenant._reset_counters()
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0, result
    assert tenant.counters["user_reads"] == 1  # no values kept for it yet: read by id
    assert get_value(scim.find(a["userPrincipalName"]), DEPARTMENT) == "After the upgrade"
    con = sqlite3.connect(cfg.state.path)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("6",)
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "log_run_page" in indexes and "log_run" not in indexes
    assert con.execute("SELECT count(*) FROM waiting").fetchone() == (0,)  # step 5's table
    assert con.execute("SELECT source FROM users WHERE graph_id=?", (a["id"],)).fetchone()[0]
    con.close()
    tenant.update_user(a["id"], surname="Merged")
    tenant._reset_counters()
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and tenant.counters["user_reads"] == 0
