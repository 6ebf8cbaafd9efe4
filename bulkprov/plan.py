"""``bulkprov plan`` and ``bulkprov apply``: see what a sync would do, then do exactly that.

A plan is computed the way a sync decides, with the same pieces and from the same reads:

* the cycle's sources (:func:`~bulkprov.lifecycle.read_cycle_sources`): the app's
  assignments (scope mode "assigned") and the groups to provision, from the same Graph
  ``groups/delta`` round a sync reads — overlaid in memory on the state's mirror instead
  of applied to it;
* the same users read (:func:`~bulkprov.pipeline.choose_read`): a ``users/delta`` round
  from the deltaLink the last cycle saved — only the users changed since, so a plan on a
  large tenant with few changes is cheap — plus, in scope mode "assigned", the users whose
  assignment changed; or a full round where a sync would read everything (the first run,
  a scope or mapping change, an expired delta token), followed by the sweep of managed
  accounts the full read did not list;
* each user through :meth:`~bulkprov.pipeline.Engine.entry` and
  :meth:`~bulkprov.pipeline.Engine.decide` (scope, mapping, hard deletes from
  ``@removed`` entries, ``deprovision.delete_hard_deleted``), with the state database and
  — when a sync would match (first run, ``--rematch``) — the target's listing, held in
  memory;
* each group through :func:`~bulkprov.lifecycle.plan_group`, against the members the
  target would hold once the users' operations ran (a member the same sync creates shows
  with its placeholder id).

It sends no write to the target (it reads: the user listing when matching, and
``GET /Groups?filter=displayName eq …`` for a group not provisioned yet) and writes nothing
to the state: no deltaLink, no mirror, no run.

The plan file (JSON) holds:

* ``read``: ``full`` or ``incremental`` (the users/delta round a sync would read);
* ``counts``: users per action (create, update, link, disable, delete, skip, failed);
* ``operations``: one entry per user a sync would write for — action, reason, the SCIM id
  (a placeholder ``new:N`` for creates), and the values a POST or the changes a PATCH would
  carry (values of ``Redact`` mappings shown as ``[Redact]``); a ``delete`` (a user
  hard-deleted in Entra, with ``deprovision.delete_hard_deleted``) is a DELETE;
* ``group_counts`` and ``group_operations``: per group, the action (``create`` with a
  placeholder ``new-group:N``, ``link`` to a target group of the same displayName,
  ``update``, ``delete`` for a provisioned group that left scope), a rename, and the
  members to add and to remove (Graph id and SCIM id or placeholder of each);
* ``note``: set when the disables, deletes and group deletes exceed the
  accidental-deletion threshold (a sync would stage and hold them for ``bulkprov approve``);
* fingerprints: one per operation (a digest of the user's mapped values, or of the scope
  decision for a disable or delete; a digest of the group operation), a digest over every
  user and group operation (so a change that makes a sync do anything else — to a user the
  plan skips too — is noticed; a change a sync ignores, or one undone before ``apply``,
  is not), the state's last run, its managed users and provisioned groups, and a digest of
  the config parts that shape decisions.

No secret is in it: not the Graph client secret, not the SCIM token, not a token URL.

``apply`` recomputes the plan (the same reads, from the same deltaLinks) and refuses
(:class:`~bulkprov.errors.PlanStale`, exit 7) unless everything matches; then it runs the
sync with guards that let through only the plan's own user and group operations, so a
user or group that changes in the seconds between the check and the write is held back
(logged as skipped), never sent something the plan did not show.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import _json
from .checkpoint.lifecycle import GroupState, LifecycleStore
from .checkpoint.store import StateStore
from .clients import open_clients
from .config import Config
from .decide import Decision
from .errors import DeltaExpired, PlanStale, StateError, UserDataError
from .graph.client import GraphClient
from .graph.directory import ScopeSources
from .lifecycle import (
    GONE_REASON,
    GROUP_LEAVING_REASON,
    GroupGuard,
    GroupOp,
    plan_group,
    read_cycle_sources,
)
from .mapping import MappedUser
from .mapping.compiler import REDACTED
from .pipeline import (
    Engine,
    Evaluated,
    Guard,
    Secrets,
    _active,
    assignment_changes,
    choose_read,
    fetch_users,
    page_headers,
)
from .retry import RetryPolicy
from .scim import groups as rg
from .scim import requests as rq
from .scim.client import ScimClient
from .scim.paths import get_value
from .scim.responses import list_resources

PLAN_FORMAT = "bulkprov-plan/2"
ACTIONS = ("create", "update", "link", "disable", "delete", "skip", "failed")
GROUP_ACTIONS = ("create", "link", "update", "delete")


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(_json.dumps_sorted(list(parts)), digest_size=16).hexdigest()


def user_fingerprint(graph_id: str, mapped: MappedUser | None, scope_reason: str) -> str:
    """What the plan saw of one user: its mapped values, or why it is out of scope."""
    if mapped is not None:
        return _digest(graph_id, mapped.values, mapped.update_values)
    return _digest(graph_id, "out of scope", scope_reason)


def config_fingerprint(cfg: Config) -> str:
    """The config parts that shape decisions (mappings, scope, the target and its dialect)."""
    return _digest(
        [m.model_dump(mode="json") for m in cfg.mappings],
        cfg.scope.model_dump(mode="json"),
        cfg.deprovision.model_dump(mode="json"),
        cfg.groups.model_dump(mode="json"),
        cfg.target.base_url,
        cfg.target.patch_dialect,
        cfg.graph.base_url,
        cfg.graph.tenant_id,
    )


def _groups_fingerprint(known: dict[str, GroupState]) -> str:
    return _digest(
        sorted((g.graph_id, g.scim_id, g.display_name, sorted(g.members)) for g in known.values())
    )


@dataclass(slots=True)
class _Planner:
    engine: Engine
    store: StateStore
    index: dict[str, tuple[str, dict[str, Any]]] | None
    sources: ScopeSources
    ops: list[dict[str, Any]] = field(default_factory=list)
    #: Graph id → digest of its decision, for every user read (failed ones too)
    seen: dict[str, str] = field(default_factory=dict)
    #: users read and evaluated (a sync's ``seen``: not fetched again for assignments)
    read: set[str] = field(default_factory=set)
    skipped: int = 0
    names: set[str] = field(default_factory=set)
    hard_deleted: set[str] = field(default_factory=set)
    #: Graph id → whether its account is active once its create/link/update ran
    active_after: dict[str, bool] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget a partial read (a delta token that expired: a full round follows)."""
        self.ops.clear()
        self.seen.clear()
        self.read.clear()
        self.skipped = 0
        self.names.clear()
        self.hard_deleted.clear()
        self.active_after.clear()

    async def read_round(self, graph: GraphClient, first: str) -> None:
        headers = page_headers(self.engine.cfg)
        async for page in graph.pages(first, headers=headers):
            await self.page(page.users)

    def _failed(self, key: str, reason: str, user_name: str | None = None) -> None:
        self.seen[key] = _digest(key, "failed", reason)
        self.ops.append(
            {"graph_id": key, "action": "failed", "reason": reason, "user_name": user_name}
        )

    async def page(self, users: list[Any]) -> None:
        engine = self.engine
        evaluated: list[Evaluated] = []
        for user in users:
            gid = user.get("id") if isinstance(user, dict) else None
            try:
                if not isinstance(user, dict):
                    raise UserDataError("the Graph page holds something that is not a user")
                item, hard = engine.entry(user, self.sources)
            except UserDataError as exc:
                self._failed(
                    str(gid) if isinstance(gid, str) else f"(unreadable #{len(self.seen)})",
                    str(exc),
                )
                continue
            if hard:
                self.hard_deleted.add(item[0])
            self.read.add(item[0])
            evaluated.append(item)
        states = await self.store.lookup_users([e[0] for e in evaluated])
        redacted = engine.mapper.redacted_paths
        for item in evaluated:
            graph_id, _, reason, mapped = item
            state = states.get(graph_id)
            fingerprint = user_fingerprint(graph_id, mapped, reason)
            user_name = mapped.user_name if mapped else (state.user_name if state else None)
            if mapped is not None and mapped.user_name:
                low = mapped.user_name.lower()
                if low in self.names:
                    why = f"userName {mapped.user_name!r} is mapped from another user too"
                    self._failed(graph_id, why, user_name)
                    continue
                self.names.add(low)
            match = None
            if mapped is not None and self.index is not None and state is None:
                for key in engine.match_keys(mapped):
                    if key in self.index:
                        match = self.index[key]
                        break
            d = engine.decide(item, state, match, hard_deleted=graph_id in self.hard_deleted)
            self.seen[graph_id] = _digest(fingerprint, d.kind, d.scim_id, d.changes)
            if d.kind == "skip":
                self.skipped += 1
                continue
            self.ops.append(self._entry(graph_id, user_name, d, mapped, fingerprint, redacted))

    def _entry(
        self,
        graph_id: str,
        user_name: str | None,
        d: Decision,
        mapped: MappedUser | None,
        fingerprint: str,
        redacted: frozenset[str],
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "graph_id": graph_id,
            "user_name": user_name,
            "action": d.kind,
            "reason": d.reason,
            "scim_id": d.scim_id,
            "fingerprint": fingerprint,
        }
        if d.kind == "create":
            assert mapped is not None
            entry["values"] = {
                k: (REDACTED if k in redacted else v) for k, v in mapped.values.items()
            }
            self.active_after[graph_id] = _active(mapped.values)
        elif d.kind != "delete":
            entry["changes"] = {k: (REDACTED if k in redacted else v) for k, v in d.changes.items()}
            if mapped is not None:
                self.active_after[graph_id] = _active(mapped.update_values)
        return entry

    async def sweep(self) -> None:
        """After a full read: managed accounts the read did not list are disabled."""
        for graph_id, scim_id, user_name in await self.store.active_managed():
            if graph_id in self.seen:
                continue
            fingerprint = user_fingerprint(graph_id, None, GONE_REASON)
            self.seen[graph_id] = _digest(fingerprint, "disable", scim_id)
            self.ops.append(
                {
                    "graph_id": graph_id,
                    "user_name": user_name,
                    "action": "disable",
                    "reason": GONE_REASON,
                    "scim_id": scim_id,
                    "fingerprint": fingerprint,
                    "changes": {"active": False},
                }
            )


async def _target_index(
    engine: Engine, scim: ScimClient, page_size: int
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The target's accounts by matching key (in memory: a plan writes no state)."""
    index: dict[str, tuple[str, dict[str, Any]]] = {}
    start = 1
    while True:
        resources, total = list_resources(await scim.send(rq.list_users(start, page_size)))
        for res in resources:
            scim_id = res.get("id")
            if not isinstance(scim_id, str):
                continue
            for path in engine.mapper.matching:
                value = get_value(res, path)
                if isinstance(value, str) and value:
                    index[f"{path}\x00{value.lower()}"] = (scim_id, res)
        start += len(resources)
        if not resources or start > total:
            return index


async def _plan_groups(
    store: StateStore,
    scim: ScimClient,
    sources: ScopeSources,
    known: dict[str, GroupState],
    planner: _Planner,
    held: bool,
) -> list[dict[str, Any]]:
    """The group operations a sync would send after its users' operations.

    Deletes of provisioned groups that left scope (the deprovisioning phase), then per
    group in scope: create or link, rename, and members added and removed — diffed, as
    the sync does, against the members the target would hold once the users' operations
    ran (created and linked users join; disabled and deleted ones leave unless the
    threshold holds them).
    """
    out: list[dict[str, Any]] = []
    in_scope = {g.graph_id for g in sources.groups}
    for gone in sorted(known.values(), key=lambda g: (g.display_name, g.graph_id)):
        if gone.graph_id not in in_scope:
            delete = GroupOp(gone.graph_id, gone.display_name, "delete", gone.scim_id)
            out.append(_group_entry(delete, GROUP_LEAVING_REASON, {}, {}))
    if not sources.groups:
        return out
    after: dict[str, str | None] = {}
    forgotten: set[str] = set()
    for user_op in planner.ops:
        action, graph_id = user_op["action"], user_op["graph_id"]
        if action in ("create", "link", "update"):
            active = planner.active_after.get(graph_id)
            after[graph_id] = user_op["scim_id"] if active else None
        elif action in ("disable", "delete") and not held:
            after[graph_id] = None
            if action == "delete":
                forgotten.add(user_op["scim_id"])  # its group memberships are forgotten too
    members = sorted({m for g in sources.groups for m in g.members})
    linked = await LifecycleStore(store).scim_ids(members)
    new = itertools.count(1)
    for group in sources.groups:
        state = known.get(group.graph_id)
        found = None
        if state is None:
            matched, _ = list_resources(await scim.send(rg.find_group(group.display_name)))
            found = str(matched[0]["id"]) if matched else None
        current = state.members - forgotten if state is not None else frozenset()
        wanted = {}
        for m in group.members:
            sid = after[m] if m in after else linked.get(m)
            if sid:
                wanted[m] = sid
        op, add, remove = await plan_group(store, group, state, found, wanted, current)
        if op.action == "skip":
            continue
        reason = {
            "create": "group created",
            "link": "group matched by displayName",
            "update": "group changed",
        }[op.action]
        entry = _group_entry(op, reason, add, remove)
        if op.action == "create":
            entry["scim_id"] = f"new-group:{next(new)}"
        out.append(entry)
    return out


def _group_entry(
    op: GroupOp, reason: str, add: dict[str, str], remove: dict[str, str]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "graph_id": op.graph_id,
        "display_name": op.display_name,
        "action": op.action,
        "reason": reason,
        "scim_id": op.scim_id,
        "fingerprint": op.fingerprint(),
    }
    if op.renamed_from is not None:
        entry["renamed_from"] = op.renamed_from
    if op.action != "delete":
        entry["members"] = {
            "add": [{"graph_id": k, "scim_id": add[k]} for k in op.add],
            "remove": [
                {"graph_id": k if k != remove[k] else None, "scim_id": remove[k]} for k in op.remove
            ],
        }
    return entry


async def make_plan(
    cfg: Config,
    secrets: Secrets,
    *,
    rematch: bool = False,
    engine: Engine | None = None,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    scim_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Compute what a sync would do now (reads only)."""
    engine = engine or Engine(cfg)
    async with await StateStore.open(cfg.state.path) as store:
        last = await store.last_run()
        if last is not None and last.status == "running":
            raise StateError(
                f"run {last.id} is in progress or was interrupted: finish it with "
                "`bulkprov sync` (it resumes), then make the plan"
            )
        users, updated_at = await store.users_fingerprint()
        matching = rematch or not await store.has_completed_run()
        ls = LifecycleStore(store)
        known = await ls.groups()
        async with open_clients(
            cfg,
            secrets,
            graph_transport=graph_transport,
            scim_transport=scim_transport,
            policy=policy,
            rate_limit=cfg.target.rate_limit,
        ) as (graph, scim):
            sources, _ = await read_cycle_sources(graph, ls, cfg, dry_run=True)
            link = await choose_read(ls, cfg, sources)
            index = None
            if matching:
                index = await _target_index(engine, scim, cfg.target.list_page_size)
            planner = _Planner(engine, store, index, sources)
            full_round = engine.delta_url(graph.base_url)
            read = "full" if link is None else "incremental"
            try:
                await planner.read_round(graph, link or full_round)
            except DeltaExpired:
                if link is None:
                    raise
                # Graph forgot the sync state: a sync reads everything again, so does the plan
                planner.reset()
                read = "full"
                await planner.read_round(graph, full_round)
            if read == "incremental" and sources.assigned is not None:
                old = await ls.assigned()
                ids = assignment_changes(old, sources.snapshot(), planner.read)
                if ids:
                    await planner.page(await fetch_users(graph, ids, engine.select))
            if read == "full":
                await planner.sweep()
            ops = planner.ops
            counts = Counter(dict.fromkeys(ACTIONS, 0))
            counts.update(op["action"] for op in ops)
            counts["skip"] = planner.skipped
            new = itertools.count(1)
            for op in ops:
                if op["action"] == "create":
                    op["scim_id"] = f"new:{next(new)}"
            dp = cfg.deprovision
            in_scope = {g.graph_id for g in sources.groups}
            leaving = sum(1 for g in known if g not in in_scope) if cfg.groups.enabled else 0
            staged = counts["disable"] + counts["delete"] + leaving
            held = dp.prevent_accidental_deletion and staged > dp.threshold
            group_ops: list[dict[str, Any]] = []
            if cfg.groups.enabled:
                group_ops = await _plan_groups(store, scim, sources, known, planner, held)
    group_counts = Counter(dict.fromkeys(GROUP_ACTIONS, 0))
    group_counts.update(op["action"] for op in group_ops)
    group_counts["members_added"] = sum(
        len(op.get("members", {}).get("add", ())) for op in group_ops
    )
    group_counts["members_removed"] = sum(
        len(op.get("members", {}).get("remove", ())) for op in group_ops
    )
    return {
        "format": PLAN_FORMAT,
        "note": (
            f"{staged} disables/deletes exceed the accidental-deletion threshold "
            f"({dp.threshold}): a sync would stage and hold them for `bulkprov approve`"
            if held
            else None
        ),
        "rematch": rematch,
        "matching": matching,
        "read": read,
        "counts": dict(counts),
        "group_counts": dict(group_counts),
        "fingerprints": {
            "config": config_fingerprint(cfg),
            "source": _digest(sorted(planner.seen[op["graph_id"]] for op in ops)),
            "groups": _digest(sorted(op["fingerprint"] for op in group_ops)),
            "source_users": len(planner.seen),
            "state": {
                "last_run": last.id if last else None,
                "last_run_status": last.status if last else None,
                "users": users,
                "users_updated_at": updated_at,
                "groups": _groups_fingerprint(known),
            },
        },
        "operations": ops,
        "group_operations": group_ops,
    }


def _comparable(ops: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {
        (op["graph_id"], op["action"], op.get("fingerprint"), _json.dumps(op.get("changes")))
        for op in ops
    }


def check_plan(plan: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Why ``plan`` no longer describes ``fresh`` (an empty list: it does)."""
    if plan.get("format") != PLAN_FORMAT:
        return [f"not a {PLAN_FORMAT} file (format {plan.get('format')!r})"]
    old, new = plan["fingerprints"], fresh["fingerprints"]
    problems = []
    if old["config"] != new["config"]:
        problems.append(
            "the configuration (mappings, scope, deprovisioning, groups or target) changed"
        )
    if old["state"] != new["state"]:
        problems.append(
            f"the state moved on (last run {old['state']['last_run']} → "
            f"{new['state']['last_run']}, managed users {old['state']['users']} → "
            f"{new['state']['users']})"
        )
    if old["source"] != new["source"]:
        a, b = _comparable(plan["operations"]), _comparable(fresh["operations"])
        changed = sorted({x[0] for x in a ^ b})
        detail = f"; operations differ for {len(changed)} user(s)" if changed else ""
        problems.append(
            f"the source changed ({old['source_users']} → {new['source_users']} users read{detail})"
        )
    if old["groups"] != new["groups"]:
        a = {(op["graph_id"], op["fingerprint"]) for op in plan["group_operations"]}
        b = {(op["graph_id"], op["fingerprint"]) for op in fresh["group_operations"]}
        changed = sorted({x[0] for x in a ^ b})
        problems.append(
            f"the groups or their memberships changed (operations differ for {len(changed)} "
            "group(s))"
        )
    return problems


def plan_guard(plan: dict[str, Any], engine: Engine) -> Guard:
    """A guard for ``run_sync`` that lets through only the plan's own user operations."""
    expected = {op["graph_id"]: (op["action"], op["fingerprint"]) for op in plan["operations"]}

    def guard(graph_id: str, decision: Decision, mapped: MappedUser | None) -> str | None:
        want = expected.get(graph_id)
        if want is None:
            return f"not in the plan (would {decision.kind}): held back; make a new plan"
        reason = decision.reason if mapped is None else ""
        got = (decision.kind, user_fingerprint(graph_id, mapped, reason))
        if got != want:
            return f"changed since the plan (would {decision.kind}): held back; make a new plan"
        return None

    return guard


def plan_group_guard(plan: dict[str, Any]) -> GroupGuard:
    """A guard for ``run_sync`` that lets through only the plan's own group operations."""
    expected = {
        op["graph_id"]: (op["action"], op["fingerprint"]) for op in plan["group_operations"]
    }

    def guard(op: GroupOp) -> str | None:
        want = expected.get(op.graph_id)
        if want is None:
            return f"not in the plan (would {op.action} the group): held back; make a new plan"
        if (op.action, op.fingerprint()) != want:
            return (
                f"changed since the plan (would {op.action} the group): held back; make a new plan"
            )
        return None

    return guard


async def verify_plan(
    cfg: Config, secrets: Secrets, plan: dict[str, Any], **options: Any
) -> dict[str, Any]:
    """Recompute the plan and raise :class:`PlanStale` unless it still holds."""
    if plan.get("format") != PLAN_FORMAT:
        raise PlanStale(f"not a {PLAN_FORMAT} file (format {plan.get('format')!r})")
    fresh = await make_plan(cfg, secrets, rematch=bool(plan.get("rematch")), **options)
    problems = check_plan(plan, fresh)
    if problems:
        raise PlanStale(
            "the plan is out of date, nothing was sent: "
            + "; ".join(problems)
            + " — run `bulkprov plan` again"
        )
    return fresh


def summary(plan: dict[str, Any]) -> str:
    c = plan["counts"]
    text = ", ".join(f"{k} {c.get(k, 0):,}" for k in ACTIONS)
    g = plan.get("group_counts") or {}
    if any(g.values()):
        text += "; groups: " + ", ".join(
            f"{k} {g.get(k, 0):,}" for k in (*GROUP_ACTIONS, "members_added", "members_removed")
        ).replace("_", " ")
    return text
