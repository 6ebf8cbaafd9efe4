"""``bulkprov plan`` / ``apply`` against the simulators: hard deletes, groups, delta reads.

The plan reads what a sync reads and writes nothing (the target gets no write, the state
database is byte-for-byte the same dump); ``apply`` sends exactly the plan's operations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from bulkprov.checkpoint.staging import USERS_DELTA, LifecycleStore
from bulkprov.checkpoint.store import StateStore
from bulkprov.commands.demo import write_demo_config
from bulkprov.graph.client import latest_per_id
from bulkprov.pipeline.clients import open_clients
from bulkprov.pipeline.decide import Engine, UserNames
from bulkprov.pipeline.plan import apply_options, make_plan
from bulkprov.pipeline.run import run_sync
from bulkprov.pipeline.sources import fetch_users
from bulkprov.sim import GraphTenant, ScimService, SimResponse
from bulkprov.sim.http import SimRequest
from bulkprov.sim.server import serve_simulators

from .cli_support import Cli, SimThread
from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN, SECRETS, make_config
from .test_lifecycle import Spy, enabled


class RecordingTenant(GraphTenant):
    """Records the path and query of every Graph request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def handle(self, req: SimRequest) -> SimResponse:
        self.requests.append((req.path, dict(req.query)))
        return await super().handle(req)


@pytest.fixture(name="pcli")
def pcli_fixture(tmp_path: Path) -> Iterator[Cli]:
    """The CLI against a small recording tenant, with hard deletes configured."""
    tenant = RecordingTenant(user_count=40, seed=21, client_secret=GRAPH_SECRET)
    scim = ScimService(SCIM_TOKEN, id_seed=9)
    with SimThread(tenant, scim) as servers:
        config, state = tmp_path / "bulkprov.toml", tmp_path / "state.sqlite3"
        write_demo_config(config, servers.as_json(), state, concurrency=4, rate_limit=0)
        text = config.read_text(encoding="utf-8")
        assert "delete_hard_deleted = false" in text
        config.write_text(text.replace("delete_hard_deleted = false", "delete_hard_deleted = true"))
        yield Cli(config, state, tenant, scim, servers)


def dump(path: Path) -> list[str]:
    """Every row of the state database, as SQL."""
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def plan_of(cli: Cli, tmp_path: Path) -> dict[str, Any]:
    out = cli("plan", "--out", str(tmp_path / "plan.json"))
    assert out.exit_code == 0, out.output
    plan: dict[str, Any] = orjson.loads((tmp_path / "plan.json").read_bytes())
    return plan


def sent(spy: Spy) -> list[tuple[str, str, Any]]:
    return sorted((m, p, orjson.dumps(b).decode() if b else "") for m, p, b in spy.writes())


def test_plan_shows_a_hard_delete_and_apply_sends_exactly_it(pcli: Cli, tmp_path):
    assert pcli("sync", "--quiet").exit_code == 0
    gone, soft = enabled(pcli.tenant)[:2]
    gone_id = pcli.scim.find(gone["userPrincipalName"])["id"]
    soft_id = pcli.scim.find(soft["userPrincipalName"])["id"]
    pcli.tenant.delete_user(gone["id"], soft=False)
    pcli.tenant.delete_user(soft["id"], soft=True)
    before = dump(pcli.state)
    spy = Spy()
    pcli.scim.faults = spy

    plan = plan_of(pcli, tmp_path)
    assert plan["read"] == "incremental"
    ops = {op["graph_id"]: op for op in plan["operations"]}
    assert {g: op["action"] for g, op in ops.items()} == {
        gone["id"]: "delete",
        soft["id"]: "disable",
    }
    assert ops[gone["id"]]["scim_id"] == gone_id
    assert ops[gone["id"]]["reason"] == "deleted permanently in Entra ID"
    assert plan["counts"]["delete"] == 1 and plan["counts"]["disable"] == 1
    assert spy.writes() == [] and dump(pcli.state) == before  # the plan wrote nothing

    out = pcli("apply", str(tmp_path / "plan.json"), "--quiet")
    assert out.exit_code == 0, out.output
    assert [(m, p) for m, p, _ in sent(spy)] == sorted(
        [("DELETE", f"/scim2/Users/{gone_id}"), ("PATCH", f"/scim2/Users/{soft_id}")]
    )
    assert pcli.scim.find(gone["userPrincipalName"]) is None
    assert pcli.scim.find(soft["userPrincipalName"])["active"] is False


def test_plan_lists_group_operations_and_apply_sends_exactly_them(pcli: Cli, tmp_path):
    t, d = pcli.tenant, pcli.tenant.directory
    a, b, c, x, e = enabled(t)[:5]
    sales = d.add_group("Sales", [a["id"], b["id"], c["id"]])
    legacy = d.add_group("Legacy", [x["id"]])
    assert pcli("sync", "--quiet").exit_code == 0

    def sid(u: dict[str, Any]) -> str:
        return str(pcli.scim.find(u["userPrincipalName"])["id"])

    sales_id = pcli.scim.groups.find("Sales")["id"]
    legacy_id = pcli.scim.groups.find("Legacy")["id"]
    assert set(pcli.scim.groups.member_ids(sales_id)) == {sid(a), sid(b), sid(c)}

    newcomer = t.add_user(accountEnabled=True)
    d.add_group("Support", [a["id"], newcomer["id"]])
    d.remove_member(sales["id"], b["id"])
    d.add_member(sales["id"], e["id"])
    d.delete_group(legacy["id"])
    before = dump(pcli.state)
    spy = Spy()
    pcli.scim.faults = spy

    plan = plan_of(pcli, tmp_path)
    assert spy.writes() == [] and dump(pcli.state) == before  # the plan wrote nothing
    (create,) = [op for op in plan["operations"] if op["action"] == "create"]
    assert create["graph_id"] == newcomer["id"] and create["scim_id"] == "new:1"
    groups = {op["display_name"]: op for op in plan["group_operations"]}
    assert set(groups) == {"Sales", "Legacy", "Support"}
    assert groups["Legacy"]["action"] == "delete" and groups["Legacy"]["scim_id"] == legacy_id
    support = groups["Support"]
    assert support["action"] == "create" and support["scim_id"] == "new-group:1"
    assert support["members"] == {
        "add": sorted(
            [
                {"graph_id": a["id"], "scim_id": sid(a)},
                {"graph_id": newcomer["id"], "scim_id": "new:1"},  # created by the same sync
            ],
            key=lambda m: m["graph_id"],
        ),
        "remove": [],
    }
    assert groups["Sales"]["action"] == "update" and groups["Sales"]["scim_id"] == sales_id
    assert groups["Sales"]["members"] == {
        "add": [{"graph_id": e["id"], "scim_id": sid(e)}],
        "remove": [{"graph_id": b["id"], "scim_id": sid(b)}],
    }
    assert plan["group_counts"] == {
        "create": 1,
        "link": 0,
        "update": 1,
        "delete": 1,
        "members_added": 3,
        "members_removed": 1,
    }

    # a membership moves on after the plan: apply refuses and sends nothing
    d.remove_member(sales["id"], c["id"])
    stale = pcli("apply", str(tmp_path / "plan.json"))
    assert stale.exit_code == 7, stale.output
    assert "groups or their memberships changed" in stale.output
    assert spy.writes() == []
    d.add_member(sales["id"], c["id"])  # undone: the plan holds again

    out = pcli("apply", str(tmp_path / "plan.json"), "--quiet")
    assert out.exit_code == 0, out.output
    new_id = sid(newcomer)
    support_id = pcli.scim.groups.find("Support")["id"]
    writes = [(m, p) for m, p, _ in spy.writes()]
    assert sorted(writes) == sorted(
        [
            ("POST", "/scim2/Users"),
            ("DELETE", f"/scim2/Groups/{legacy_id}"),
            ("POST", "/scim2/Groups"),
            ("PATCH", f"/scim2/Groups/{support_id}"),
            ("PATCH", f"/scim2/Groups/{sales_id}"),  # its add and its remove: one PATCH
        ]
    )
    member_ops = sorted(
        (p, [(op["op"], op["path"], op.get("value")) for op in body["Operations"]])
        for m, p, body in spy.writes()
        if m == "PATCH"
    )
    assert member_ops == sorted(
        [
            (
                f"/scim2/Groups/{support_id}",
                [("add", "members", [{"value": v} for v in sorted([sid(a), new_id])])],
            ),
            (
                f"/scim2/Groups/{sales_id}",
                [
                    ("add", "members", [{"value": sid(e)}]),
                    ("remove", f'members[value eq "{sid(b)}"]', None),
                ],
            ),
        ]
    )
    assert pcli.scim.groups.find("Legacy") is None
    assert set(pcli.scim.groups.member_ids(sales_id)) == {sid(a), sid(c), sid(e)}


def test_plan_reads_only_the_changes_after_a_sync(pcli: Cli, tmp_path):
    t = pcli.tenant
    first = plan_of(pcli, tmp_path)  # no sync yet: a full round, as a first sync reads
    assert first["read"] == "full"
    rounds = [q for p, q in t.requests if p.endswith("/users/delta")]
    assert rounds and "$deltatoken" not in rounds[0]
    assert pcli("sync", "--quiet").exit_code == 0

    users = enabled(t)
    t.update_user(users[3]["id"], department="Quantum Research")
    t.requests.clear()
    before = dump(pcli.state)
    plan = plan_of(pcli, tmp_path)
    assert plan["read"] == "incremental"
    assert [(op["graph_id"], op["action"]) for op in plan["operations"]] == [
        (users[3]["id"], "update")
    ]
    assert list(plan["operations"][0]["changes"].values()) == ["Quantum Research"]
    assert plan["fingerprints"]["source_users"] == 1 and plan["counts"]["skip"] == 0
    paths = [p for p, _ in t.requests]
    assert not any(p.endswith("/v1.0/users") for p in paths)  # no listing of every user
    deltas = [q for p, q in t.requests if p.endswith("/users/delta")]
    assert deltas and all("$deltatoken" in q or "$skiptoken" in q for q in deltas)
    assert dump(pcli.state) == before  # no deltaLink stored: the next read sees it again
    again = plan_of(pcli, tmp_path)
    assert again["operations"] == plan["operations"]

    # a change to another user between plan and apply: the same delta read sees it
    t.update_user(users[4]["id"], department="Elsewhere")
    stale = pcli("apply", str(tmp_path / "plan.json"))
    assert stale.exit_code == 7 and "source changed" in stale.output
    t.update_user(users[4]["id"], department=users[4].get("department"))
    pcli.scim.reset_counters()
    out = pcli("apply", str(tmp_path / "plan.json"), "--quiet")
    assert out.exit_code == 0, out.output
    assert pcli.scim.counters()["by_method"] == {"PATCH": 1}


def test_plan_full_reads_everyone_and_apply_makes_the_same_read(pcli: Cli, tmp_path):
    t = pcli.tenant
    assert pcli("sync", "--quiet").exit_code == 0
    users = enabled(t)
    t.update_user(users[5]["id"], department="Full Read")
    out = pcli("plan", "--full", "--out", str(tmp_path / "plan.json"))
    assert out.exit_code == 0, out.output
    plan = orjson.loads((tmp_path / "plan.json").read_bytes())
    assert plan["read"] == "full" and plan["full"] is True
    assert plan["counts"]["skip"] == t.user_count - 1  # everyone read; one to update
    assert [(op["graph_id"], op["action"]) for op in plan["operations"]] == [
        (users[5]["id"], "update")
    ]
    pcli.scim.reset_counters()
    applied = pcli("apply", str(tmp_path / "plan.json"), "--quiet")
    assert applied.exit_code == 0, applied.output
    assert pcli.scim.counters()["by_method"] == {"PATCH": 1}

    async def last_kind() -> str:
        async with await StateStore.open(pcli.state) as store:
            run = await store.last_run()
            assert run is not None
            return run.kind

    assert anyio.run(last_kind) == "full"  # apply read what the plan read


async def test_apply_guard_holds_back_a_group_that_changed_after_the_check(
    servers, tenant, scim, tmp_path
):
    """What the plan did not show for a group is not sent, even past the upfront check."""
    d = tenant.directory
    a, b, c = enabled(tenant)[:3]
    one = d.add_group("One", [a["id"]])
    two = d.add_group("Two", [b["id"]])
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    d.add_member(one["id"], b["id"])
    d.add_member(two["id"], c["id"])
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    assert {op["display_name"] for op in plan["group_operations"]} == {"One", "Two"}
    d.add_member(one["id"], c["id"])  # after the check: "One" now differs from the plan
    spy = Spy()
    scim.faults = spy
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY, **apply_options(plan))
    two_id = scim.groups.find("Two")["id"]
    assert [(m, p) for m, p, _ in spy.writes()] == [("PATCH", f"/scim2/Groups/{two_id}")]
    assert result.counts["held back"] == 1
    async with await StateStore.open(tmp_path / "s.db") as store:
        log = await store.log_entries(user=one["id"], run_id=result.run_id)
    assert any("changed since the plan" in (row.get("reason") or "") for row in log)


def test_apply_cli_sends_only_the_planned_group_operations(pcli: Cli, tmp_path, monkeypatch):
    """Past its upfront check, `bulkprov apply` still holds back a group the plan did not show."""
    import bulkprov.pipeline.plan

    d = pcli.tenant.directory
    a, b = enabled(pcli.tenant)[:2]
    d.add_group("Planned", [a["id"]])
    plan_of(pcli, tmp_path)
    unplanned = d.add_group("Unplanned", [b["id"]])

    async def no_check(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(bulkprov.pipeline, "verify_plan", no_check)  # the race, made certain
    out = pcli("apply", str(tmp_path / "plan.json"), "--quiet")
    assert out.exit_code == 10, out.output  # completed with problems: one group held back
    assert "1 operation(s) held back" in out.output and "make a new plan" in out.output
    assert pcli.scim.groups.find("Planned") is not None
    assert pcli.scim.groups.find("Unplanned") is None
    logs = pcli("logs", "--user", unplanned["id"], "--json")
    assert "not in the plan" in logs.output, logs.output


async def test_apply_guard_holds_back_a_sweep_disable_the_plan_did_not_show(
    servers, tenant, scim, tmp_path
):
    a, b = enabled(tenant)[:2]
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    tenant.directory.expire_delta_tokens()  # the next cycle reads everything, then sweeps
    tenant.delete_user(a["id"], soft=False)
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    assert plan["read"] == "full"
    assert [(op["graph_id"], op["action"]) for op in plan["operations"]] == [(a["id"], "disable")]
    tenant.delete_user(b["id"], soft=False)  # after the check: the sweep would disable it too
    spy = Spy()
    scim.faults = spy
    await run_sync(cfg, SECRETS, policy=FAST_RETRY, **apply_options(plan))
    a_id = scim.find(a["userPrincipalName"])["id"]
    assert [(m, p) for m, p, _ in spy.writes()] == [("PATCH", f"/scim2/Users/{a_id}")]
    assert scim.find(b["userPrincipalName"])["active"] is True


async def test_a_held_back_disable_survives_a_crash_before_the_run_finishes(
    servers, tenant, scim, tmp_path, monkeypatch
):
    """The run's ``held back`` count is saved with the sweep's outcomes: a resumed run
    still keeps the deltaLink where it was, so the next cycle reads the held user again."""
    from bulkprov.pipeline.deprovision import Deprovisioner

    a, b = enabled(tenant)[:2]
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    tenant.directory.expire_delta_tokens()  # the next cycle reads everything, then sweeps
    tenant.delete_user(a["id"], soft=False)
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    tenant.delete_user(b["id"], soft=False)  # after the check: held back by apply's guard

    async def killed(self: Deprovisioner, run: Any, items: Any) -> None:
        raise RuntimeError("killed while sending the staged disables")

    monkeypatch.setattr(Deprovisioner, "execute", killed)
    with pytest.raises((RuntimeError, BaseExceptionGroup)):
        await run_sync(cfg, SECRETS, policy=FAST_RETRY, **apply_options(plan))
    monkeypatch.undo()
    async with await StateStore.open(cfg.state.path) as store:
        run = await store.last_run()
        assert run is not None and run.status == "running"
        assert run.counts.get("held back") == 1
    resumed = await run_sync(cfg, SECRETS, policy=FAST_RETRY)  # a's disable goes out
    assert resumed.counts.get("held back") == 1
    assert scim.find(a["userPrincipalName"])["active"] is False
    assert scim.find(b["userPrincipalName"])["active"] is True
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)  # reads b again: disabled now
    assert scim.find(b["userPrincipalName"])["active"] is False


async def test_delta_overlay_answers_what_applying_the_round_would_leave(tmp_path):
    from bulkprov.checkpoint.staging import LifecycleStore
    from bulkprov.graph.groups_delta import DeltaOverlay, merge

    first = merge(
        [
            [
                {"id": "g1", "displayName": "One", "members@delta": [{"id": "u1"}, {"id": "u2"}]},
                {"id": "g2", "displayName": "Two", "members@delta": [{"id": "u3"}]},
                {
                    "id": "g3",
                    "displayName": "Three",
                    "members@delta": [{"id": "g2", "@odata.type": "#microsoft.graph.group"}],
                },
            ]
        ],
        full=True,
    )
    later = merge(
        [
            [
                {"id": "g1", "members@delta": [{"id": "u2", "@removed": {}}, {"id": "u4"}]},
                {"id": "g2", "@removed": {"reason": "deleted"}},
                {"id": "g4", "displayName": "Four", "members@delta": [{"id": "u1"}]},
                {"id": "g3", "displayName": "Three renamed"},
            ]
        ],
        full=False,
    )
    again = merge(
        [[{"id": "g9", "displayName": "Only", "members@delta": [{"id": "u9"}]}]], full=True
    )

    async def view(mirror: Any) -> tuple[Any, ...]:
        names = await mirror.source_group_names()
        groups = {g: await mirror.source_group(g) for g in [*names, "g1", "g2", "g3", "g9"]}
        return names, {g: (v[0], sorted(v[1])) if v else None for g, v in groups.items()}

    async with await StateStore.open(tmp_path / "s.db") as store:
        ls = LifecycleStore(store)
        await ls.apply_group_delta(first)
        for delta in (later, again):
            predicted = await view(DeltaOverlay(ls, delta))
            await ls.apply_group_delta(delta)
            assert predicted == await view(ls)


async def _assigned_and_synced(servers, tenant, tmp_path):
    """Scope "assigned": user a assigned directly, b through the group "Zoom users", c not;
    one sync done. Returns (config, directory, group, (a, b, c))."""
    from .test_lifecycle import assigned_config

    d = tenant.directory
    a, b, c = enabled(tenant)[:3]
    d.assign(a["id"])
    group = d.add_group("Zoom users", [b["id"]])
    d.assign(group["id"])
    cfg = assigned_config(servers, tenant, tmp_path)
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    return cfg, d, group, (a, b, c)


async def test_plan_in_assigned_mode_reads_the_assignment_changes(servers, tenant, scim, tmp_path):
    """An incremental plan fetches the users whose assignment changed, as the sync does."""
    cfg, d, group, (a, _, c) = await _assigned_and_synced(servers, tenant, tmp_path)
    d.unassign(a["id"])
    d.add_member(group["id"], c["id"])  # assigned through the group: no users/delta entry
    before = dump(tmp_path / "s.db")
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    assert plan["read"] == "incremental"
    ops = {op["graph_id"]: op["action"] for op in plan["operations"]}
    assert ops == {a["id"]: "disable", c["id"]: "create"}
    (members,) = [op["members"] for op in plan["group_operations"]]
    assert members == {"add": [{"graph_id": c["id"], "scim_id": "new:1"}], "remove": []}
    assert dump(tmp_path / "s.db") == before
    spy = Spy()
    scim.faults = spy
    await run_sync(cfg, SECRETS, policy=FAST_RETRY, **apply_options(plan))
    c_id = scim.find(c["userPrincipalName"])["id"]
    group_id = scim.groups.find("Zoom users")["id"]
    assert sorted((m, p) for m, p, _ in spy.writes()) == sorted(
        [
            ("POST", "/scim2/Users"),
            ("PATCH", f"/scim2/Users/{scim.find(a['userPrincipalName'])['id']}"),
            ("PATCH", f"/scim2/Groups/{group_id}"),
        ]
    )
    assert c_id in scim.groups.member_ids(group_id)


# -- apply: the threshold, held-back users, escrow, duplicates ------------------------------


async def apply_run(cfg: Any, plan: dict[str, Any]) -> Any:
    """The sync `bulkprov apply` runs once its check passed (the race, made certain)."""
    return await run_sync(cfg, SECRETS, policy=FAST_RETRY, **apply_options(plan))


async def test_a_held_back_deprovision_counts_toward_the_threshold(servers, tenant, scim, tmp_path):
    """Planned 2 disables (threshold 2); a third appears after the check and is held back:
    3 is over the threshold, so the 2 are held too, not sent."""
    a, b, c = enabled(tenant)[:3]
    cfg = make_config(servers, tmp_path / "s.db", deprovision__threshold=2)
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    tenant.delete_user(a["id"])
    tenant.delete_user(b["id"])
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    assert plan["counts"]["disable"] == 2 and not plan["held"] and plan["note"] is None
    tenant.delete_user(c["id"])  # after the check: the guard holds it back
    spy = Spy()
    scim.faults = spy
    result = await apply_run(cfg, plan)
    assert spy.writes() == []
    assert result.counts["held back"] == 1 and result.counts["held"] == 2
    assert "(with 1 held back) exceed the accidental-deletion threshold" in (result.message or "")
    assert all(scim.find(u["userPrincipalName"])["active"] for u in (a, b, c))


async def test_apply_holds_the_staged_actions_a_plan_showed_held(servers, tenant, scim, tmp_path):
    """The plan showed 3 disables held by the threshold (2); one user is back before the run:
    the 2 left are within the threshold, yet apply holds them, as the plan showed."""
    a, b, c = enabled(tenant)[:3]
    cfg = make_config(servers, tmp_path / "s.db", deprovision__threshold=2)
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    for u in (a, b, c):
        tenant.delete_user(u["id"])
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    assert plan["counts"]["disable"] == 3 and plan["held"]
    assert "threshold" in plan["note"]
    tenant.restore_user(c["id"])  # unchanged again: nothing to do for it, nothing held back
    spy = Spy()
    scim.faults = spy
    result = await apply_run(cfg, plan)
    assert spy.writes() == []
    assert result.counts["held back"] == 0 and result.counts["held"] == 2
    assert "the plan showed the disables/deletes held" in (result.message or "")
    async with await StateStore.open(cfg.state.path) as store:
        held = await LifecycleStore(store).staged(status=("held",))
    assert sorted(s.graph_id for s in held) == sorted([a["id"], b["id"]])


async def test_a_held_back_user_is_read_again_by_the_next_sync(servers, tenant, scim, tmp_path):
    """Held back by apply, a user is not lost: the users deltaLink and the assignments
    stay where they were, so the next sync reads it again and provisions it."""
    cfg, d, group, (_, _, c) = await _assigned_and_synced(servers, tenant, tmp_path)
    async with await StateStore.open(cfg.state.path) as store:
        ls = LifecycleStore(store)
        link, assigned = await ls.get(USERS_DELTA), await ls.assigned()
    assert link is not None and c["id"] not in assigned
    d.add_member(group["id"], c["id"])  # assigned through the group
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    assert [(op["graph_id"], op["action"]) for op in plan["operations"]] == [(c["id"], "create")]
    tenant.update_user(c["id"], department="Changed after the plan")
    result = await apply_run(cfg, plan)
    assert result.counts["held back"] == 1 and result.counts["created"] == 0
    assert scim.find(c["userPrincipalName"]) is None
    assert "held back" in (result.message or "") and "make a new plan" in (result.message or "")
    async with await StateStore.open(cfg.state.path) as store:
        ls = LifecycleStore(store)
        assert await ls.get(USERS_DELTA) == link
        assert await ls.assigned() == assigned
    after = await run_sync(cfg, SECRETS, policy=FAST_RETRY)  # the next cycle: no guard
    assert after.counts["created"] == 1
    created = scim.find(c["userPrincipalName"])
    assert created is not None and created["id"] in scim.groups.member_ids(
        scim.groups.find("Zoom users")["id"]
    )


async def test_a_held_back_user_keeps_its_escrow_entry(servers, tenant, scim, tmp_path):
    from .test_reliability import RejectSome

    x = enabled(tenant)[0]
    cfg = make_config(servers, tmp_path / "s.db", escrow__delays_hours=[0, 12])
    scim.faults = RejectSome({x["userPrincipalName"]})
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)  # x fails: escrowed, due at once
    scim.faults = None
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    ops = {op["graph_id"]: op["action"] for op in plan["operations"]}
    assert ops == {x["id"]: "create"}
    tenant.update_user(x["id"], department="Changed after the plan")
    result = await apply_run(cfg, plan)
    assert result.counts["held back"] == 1
    async with await StateStore.open(cfg.state.path) as store:
        assert list(await store.escrow_entries()) == [x["id"]]


async def test_plan_shows_an_escrowed_user_deferred_as_the_sync_does(
    servers, tenant, scim, tmp_path
):
    """A user waiting in escrow is deferred in the plan too: no create, no `new:N` member,
    so the group's operation is the one the sync sends (not held back)."""
    from .test_reliability import RejectSome

    d = tenant.directory
    a, b, x = enabled(tenant)[:3]
    team = d.add_group("Team", [a["id"], x["id"]])
    cfg = make_config(servers, tmp_path / "s.db")
    scim.faults = RejectSome({x["userPrincipalName"]})
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)  # x fails: escrowed for 6 hours
    scim.faults = None
    d.add_member(team["id"], b["id"])
    # changed in Entra: the round lists x (an escrowed user not due is not read by id)
    tenant.update_user(x["id"], department="Changed while escrowed")
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    ops = {op["graph_id"]: op for op in plan["operations"]}
    assert ops[x["id"]]["action"] == "deferred"
    assert "escrowed after 1 failure(s)" in ops[x["id"]]["reason"]
    assert plan["counts"]["deferred"] == 1 and plan["counts"]["create"] == 0
    (group_op,) = plan["group_operations"]
    b_id = scim.find(b["userPrincipalName"])["id"]
    assert group_op["members"]["add"] == [{"graph_id": b["id"], "scim_id": b_id}]
    spy = Spy()
    scim.faults = spy
    result = await apply_run(cfg, plan)
    assert result.counts["held back"] == 0
    team_id = scim.groups.find("Team")["id"]
    assert [(m, p) for m, p, _ in spy.writes()] == [("PATCH", f"/scim2/Groups/{team_id}")]
    assert scim.find(x["userPrincipalName"]) is None


async def test_a_user_listed_twice_is_no_duplicate_for_plan_or_sync(tmp_path):
    """Graph may list a user twice in a read: the same Graph id is not two users."""
    tenant = GraphTenant(user_count=30, seed=4, client_secret=GRAPH_SECRET)
    twice = enabled(tenant)[5]
    tenant.add_raw_user(dict(twice))  # the same user again, on the same page
    scim = ScimService(SCIM_TOKEN, id_seed=2)
    async with serve_simulators(tenant, scim) as servers:
        cfg = make_config(servers, tmp_path / "s.db", graph__page_size=999)
        plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
        result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert plan["counts"]["failed"] == 0, [
        op for op in plan["operations"] if op["action"] == "failed"
    ]
    assert [op["action"] for op in plan["operations"] if op["graph_id"] == twice["id"]] == [
        "create"
    ]  # listed once: the repeat is the same user, taken at its last occurrence
    assert result.counts["failed"] == 0
    assert [u["userName"] for u in scim.dump()].count(twice["userPrincipalName"]) == 1
    assert not scim.duplicate_posts()  # one POST for it, no 409 and match-back
    assert scim.counters()["statuses"].get("409", 0) == 0


def test_latest_per_id_keeps_the_last_occurrence_and_odd_items() -> None:
    a1, b, a2 = {"id": "a", "v": 1}, {"id": "b"}, {"id": "a", "v": 2}
    odd = [{"no": "id"}, "not a dict", {"id": ["unhashable"]}]
    assert latest_per_id([a1, b, a2]) == [b, a2]
    unique = [a1, b]
    assert latest_per_id(unique) is unique  # nothing copied in the usual case
    assert latest_per_id([a1, *odd, a2]) == [*odd, a2]


async def test_user_names_fail_another_user_with_the_same_user_name_not_the_same_user(
    servers, tmp_path
):
    engine = Engine(make_config(servers, tmp_path / "s.db"))
    tenant = GraphTenant(user_count=3, seed=4, client_secret=GRAPH_SECRET)
    one, two = list(tenant.iter_users())[:2]
    _, _, _, first = engine.evaluate(dict(one, accountEnabled=True))
    _, _, _, again = engine.evaluate(dict(one, accountEnabled=True))
    _, _, _, other = engine.evaluate(
        dict(two, accountEnabled=True, userPrincipalName=one["userPrincipalName"].upper())
    )
    names = UserNames()
    assert names.duplicate(one["id"], first) is None
    assert names.duplicate(one["id"], again) is None  # the same user listed again
    assert "is mapped from another user too" in (names.duplicate(two["id"], other) or "")
    assert names.duplicate("anyone", None) is None  # out of scope: nothing is sent
    assert UserNames().duplicate(two["id"], other) is None  # one page's names only


async def test_fetch_users_answers_in_id_order(servers, tenant, tmp_path):
    """Not in the order the fetches complete: plan and sync see the same page."""
    cfg = make_config(servers, tmp_path / "s.db")
    ids = [u["id"] for u in tenant.iter_users()][:12]
    async with open_clients(cfg, SECRETS, policy=FAST_RETRY) as (graph, _):
        users = await fetch_users(graph, [*reversed(ids), "gone-user"], Engine(cfg).select)
    assert [u["id"] for u in users] == sorted(ids)


async def test_plan_shows_a_group_name_clash_as_failed_and_apply_sends_no_merge(
    servers, tenant, scim, tmp_path
):
    """Issue 19: the plan decides groups as the sync does: "Ops" and "OPS" are one create
    and one failure naming both Entra groups; apply creates one target group, merges none."""
    d = tenant.directory
    a, b = enabled(tenant)[:2]
    ops = d.add_group("Ops", [a["id"]])
    upper = d.add_group("OPS", [b["id"]])
    cfg = make_config(servers, tmp_path / "s.db")
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    by_id = {op["graph_id"]: op for op in plan["group_operations"]}
    assert by_id[ops["id"]]["action"] == "create"
    assert by_id[upper["id"]]["action"] == "failed"
    assert ops["id"] in by_id[upper["id"]]["reason"]
    assert plan["group_counts"]["failed"] == 1
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY, **apply_options(plan))
    assert result.counts["failed"] == 1 and result.counts["held back"] == 0
    assert [g["externalId"] for g in scim.groups.groups.values()] == [ops["id"]]
    assert scim.groups.member_ids(scim.groups.find("Ops")["id"]) == [
        scim.find(a["userPrincipalName"])["id"]
    ]
