"""``bulkprov plan`` and ``bulkprov apply``: see what a sync would do, then do exactly that.

A plan is computed the way a sync decides, with the same pieces and from the same reads:

* the cycle's sources (:func:`~bulkprov.pipeline.sources.read_cycle_sources`): the app's
  assignments (scope mode "assigned") and the groups to provision, from the same Graph
  ``groups/delta`` round a sync reads — overlaid in memory on the state's mirror instead
  of applied to it;
* the same users read (:func:`~bulkprov.pipeline.run.choose_read`): a ``users/delta`` round
  from the deltaLink the last cycle saved — only the users changed since, so a plan on a
  large tenant with few changes is cheap — plus, in scope mode "assigned", the users whose
  assignment changed; or a full round where a sync would read everything (the first run,
  a scope or mapping change, an expired delta token), followed by the sweep of managed
  accounts the full read did not list;
* each user through :meth:`~bulkprov.pipeline.run.Engine.entry`,
  :class:`~bulkprov.pipeline.run.UserNames` (a second user of a page mapped to the same
  userName fails), :meth:`~bulkprov.pipeline.run.Engine.pick_match` and
  :meth:`~bulkprov.pipeline.run.Engine.decide` (scope, mapping, hard deletes from
  ``@removed`` entries, ``deprovision.delete_hard_deleted``), with the state database and
  — when a sync would match (first run, ``--rematch``) — the target's listing, held in
  memory; then :func:`~bulkprov.pipeline.run.escrow_deferral`: a user waiting in escrow for
  its next retry is ``deferred``, as the sync skips it;
* each group through :func:`~bulkprov.pipeline.groups.plan_group`, against the members the
  target would hold once the users' operations ran (a member the same sync creates shows
  with its placeholder id).

It sends no write to the target (it reads: the user listing when matching, and
``GET /Groups?filter=displayName eq …`` for a group not provisioned yet) and writes nothing
to the state: no deltaLink, no mirror, no run.

The plan file (JSON) holds:

* ``read``: ``full`` or ``incremental`` (the users/delta round a sync would read);
* ``counts``: users per action (create, update, link, disable, delete, deferred, skip,
  failed);
* ``operations``: one entry per user a sync would write for — action, reason, the SCIM id
  (a placeholder ``new:N`` for creates), and the values a POST or the changes a PATCH would
  carry (values of ``Redact`` mappings shown as ``[Redact]``); a ``delete`` (a user
  hard-deleted in Entra, with ``deprovision.delete_hard_deleted``) is a DELETE; a
  ``deferred`` user (escrowed, its retry not due) gets nothing, and its reason says when;
* ``group_counts`` and ``group_operations``: per group, the action (``create`` with a
  placeholder ``new-group:N``, ``link`` to a target group of the same displayName,
  ``update``, ``delete`` for a provisioned group that left scope), a rename, and the
  members to add and to remove (Graph id and SCIM id or placeholder of each);
* ``unmanaged`` (only with ``make_plan(unmanaged=True)``: ``bulkprov migrate``): the target
  accounts the listing found that no operation links and the state does not manage — the
  accounts a sync leaves alone — each with its id, userName, emails, externalId, active;
* ``held`` and ``note``: set when the disables, deletes and group deletes exceed the
  accidental-deletion threshold (a sync would stage and hold them for ``bulkprov approve``,
  and so does ``apply``);
* fingerprints: one per operation (a digest of the user's mapped values, or of the scope
  decision for a disable or delete; a digest of the group operation), a digest over every
  user and group operation (so a change that makes a sync do anything else — to a user the
  plan skips too — is noticed; a change a sync ignores, or one undone before ``apply``,
  is not), the state's last run, its managed users and provisioned groups, and a digest of
  the config parts that shape decisions.

No secret is in it: not the Graph client secret, not the SCIM token, not a token URL.

``apply`` recomputes the plan (the same reads, from the same deltaLinks) and refuses
(:class:`~bulkprov.errors.PlanStale`, exit 7) unless everything matches; then it runs the
sync with :func:`apply_options`: guards that let through only the plan's own user and
group operations, so a user or group that changes in the seconds between the check and
the write is held back, never sent something the plan did not show. What is held back is
logged as skipped and counted ("held back"); it keeps its escrow entry, counts toward the
accidental-deletion threshold, and keeps the cycle's watermarks (users deltaLink,
assignments) where they were, so the next sync reads it again; apply then exits 10 and
says to make a new plan. When the plan showed the staged disables and deletes held by the
threshold, apply holds them all for ``bulkprov approve``, whatever the run counts.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bulkprov import _json
from bulkprov.checkpoint.staging import GroupState, LifecycleStore
from bulkprov.checkpoint.store import UNFINISHED, StateStore
from bulkprov.config import Config
from bulkprov.credentials import Secrets
from bulkprov.errors import DeltaExpired, PlanStale, UserDataError
from bulkprov.escrow import EscrowEntry
from bulkprov.graph.client import GraphClient, latest_per_id
from bulkprov.graph.directory import ScopeSources, SourceGroup
from bulkprov.mapping import MappedUser
from bulkprov.mapping.compiler import REDACTED
from bulkprov.pipeline.clients import open_clients
from bulkprov.pipeline.decide import (
    Decision,
    Engine,
    Evaluated,
    UserNames,
    escrow_deferral,
    user_name_of,
)
from bulkprov.pipeline.deprovision import GONE_REASON, GROUP_LEAVING_REASON
from bulkprov.pipeline.groups import (
    GroupGuard,
    GroupOp,
    leaving_members,
    name_clashes,
    pick_match,
    plan_group,
    release_shared,
)
from bulkprov.pipeline.messages import UserGuard
from bulkprov.pipeline.seats import Seats
from bulkprov.pipeline.sources import (
    assignment_changes,
    choose_read,
    complete_entries,
    fetch_users,
    page_headers,
    read_cycle_sources,
)
from bulkprov.pipeline.stats import HELD_BACK
from bulkprov.pipeline.workers import is_active
from bulkprov.retry import RetryPolicy
from bulkprov.scim import groups as rg
from bulkprov.scim import requests as rq
from bulkprov.scim.client import ScimClient
from bulkprov.scim.responses import list_resources

PLAN_FORMAT = "bulkprov-plan/3"
ACTIONS = ("create", "update", "link", "disable", "delete", "deferred", "skip", "failed")
GROUP_ACTIONS = ("create", "link", "update", "delete")


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(_json.dumps_sorted(list(parts)), digest_size=16).hexdigest()


def user_fingerprint(graph_id: str, mapped: MappedUser | None, scope_reason: str) -> str:
    """What the plan saw of one user: its mapped values, or why it is out of scope."""
    if mapped is not None:
        return _digest(graph_id, mapped.values, mapped.update_values)
    return _digest(graph_id, "out of scope", scope_reason)


def plan_config_fingerprint(cfg: Config) -> str:
    """The config parts that shape a plan's decisions (mappings, scope, deprovisioning,
    groups, the target and its dialect, the tenant).

    Not :func:`bulkprov.pipeline.sources.config_fingerprint`, which covers only what forces a
    full read.
    """
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
    #: users waiting in escrow (bulkprov.escrow), as the sync loads them
    escrow: dict[str, EscrowEntry] = field(default_factory=dict)
    ops: list[dict[str, Any]] = field(default_factory=list)
    #: Graph id → digest of its decision, for the users with an operation only
    decided: dict[str, str] = field(default_factory=dict)
    #: users read and evaluated (a sync's ``seen``: not fetched again for assignments; after
    #: a full read, with ``failed``, the users the sweep leaves alone)
    read: set[str] = field(default_factory=set)
    #: users read that failed (their Graph id was readable)
    failed: set[str] = field(default_factory=set)
    #: every entry read, failed ones too
    users_read: int = 0
    skipped: int = 0
    hard_deleted: set[str] = field(default_factory=set)
    #: Graph id → whether its account is active once its create/link/update ran
    active_after: dict[str, bool] = field(default_factory=dict)
    #: a round of changes: partial entries are merged as the sync merges them, over the
    #: state's values and (the plan writes nothing) the entries read earlier in the round
    incremental: bool = False
    merged: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: profile "zoom": the seat guard, as the sync holds users with no seat left
    seats: Seats | None = None

    def reset(self) -> None:
        """Forget a partial read (a delta token that expired: a full round follows)."""
        self.ops.clear()
        self.decided.clear()
        self.read.clear()
        self.failed.clear()
        self.users_read = 0
        self.skipped = 0
        self.hard_deleted.clear()
        self.active_after.clear()
        self.merged.clear()
        self.incremental = False

    async def read_round(self, graph: GraphClient, first: str) -> None:
        headers = page_headers(self.engine.cfg)
        async for page in graph.pages(first, headers=headers):
            users = latest_per_id(page.users)
            if self.incremental:
                users, _ = await complete_entries(graph, users, self.engine.select, self._known)
                for user in users:
                    if (
                        isinstance(user, dict)
                        and isinstance(user.get("id"), str)
                        and "@removed" not in user
                    ):
                        self.merged[user["id"]] = user
            await self.page(users)

    async def _known(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        known = await self.store.lookup_sources(ids)
        known.update({i: self.merged[i] for i in ids if i in self.merged})
        return known

    def _failed(self, key: str, reason: str, user_name: str | None = None) -> None:
        self.failed.add(key)
        self.decided[key] = _digest(key, "failed", reason)
        self.ops.append(
            {"graph_id": key, "action": "failed", "reason": reason, "user_name": user_name}
        )

    async def page(self, users: list[Any]) -> None:
        """One Graph page, decided as :func:`bulkprov.pipeline.pages.produce` decides it."""
        engine = self.engine
        evaluated: list[Evaluated] = []
        for user in users:
            self.users_read += 1
            gid = user.get("id") if isinstance(user, dict) else None
            try:
                if not isinstance(user, dict):
                    raise UserDataError("the Graph page holds something that is not a user")
                item, hard = engine.entry(user, self.sources)
            except UserDataError as exc:
                self._failed(
                    str(gid) if isinstance(gid, str) else f"(unreadable #{self.users_read})",
                    str(exc),
                )
                continue
            if hard:
                self.hard_deleted.add(item[0])
            self.read.add(item[0])
            evaluated.append(item)
        states = await self.store.lookup_users([e[0] for e in evaluated])
        redacted = engine.mapper.redacted_paths
        names = UserNames()
        for item in evaluated:
            graph_id, _, reason, mapped = item
            duplicate = names.duplicate(graph_id, mapped)
            if duplicate is not None:
                assert mapped is not None
                self._failed(graph_id, duplicate, mapped.user_name)
                continue
            state = states.get(graph_id)
            match = engine.pick_match(mapped, state, self.index)
            d = engine.decide(item, state, match, hard_deleted=graph_id in self.hard_deleted)
            if d.kind == "skip":
                self.skipped += 1
                continue
            fingerprint = user_fingerprint(graph_id, mapped, reason)
            user_name = user_name_of(mapped, state)
            waiting = escrow_deferral(self.escrow, graph_id, d.kind)
            if waiting is None and self.seats is not None:
                waiting = self.seats.hold(d, mapped, state)  # LicenseLimitExceeded
            if waiting is not None:
                # the sync skips it until its retry is due: nothing is sent, it stays linked
                # (or not) as it is
                self.decided[graph_id] = _digest(fingerprint, "deferred", d.scim_id, waiting)
                self.ops.append(
                    {
                        "graph_id": graph_id,
                        "user_name": user_name,
                        "action": "deferred",
                        "reason": waiting,
                        "scim_id": d.scim_id,
                        "fingerprint": fingerprint,
                    }
                )
                continue
            self.decided[graph_id] = _digest(fingerprint, d.kind, d.scim_id, d.changes)
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
            self.active_after[graph_id] = is_active(mapped.values)
        elif d.kind != "delete":
            entry["changes"] = {k: (REDACTED if k in redacted else v) for k, v in d.changes.items()}
            if mapped is not None:
                self.active_after[graph_id] = is_active(mapped.update_values)
        return entry

    async def sweep(self) -> None:
        """After a full read: managed accounts the read did not list are disabled."""
        for graph_id, scim_id, user_name in await self.store.active_managed():
            if graph_id in self.read or graph_id in self.failed:
                continue
            fingerprint = user_fingerprint(graph_id, None, GONE_REASON)
            self.decided[graph_id] = _digest(fingerprint, "disable", scim_id)
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
    engine: Engine,
    scim: ScimClient,
    page_size: int,
    accounts: dict[str, dict[str, Any]] | None = None,
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The target's accounts by matching key (in memory: a plan writes no state); every
    account by its id into ``accounts`` when given."""
    index: dict[str, tuple[str, dict[str, Any]]] = {}
    start = 1
    while True:
        resources, total = list_resources(await scim.send(rq.list_users(start, page_size)))
        for res in resources:
            scim_id = res.get("id")
            if not isinstance(scim_id, str):
                continue
            if accounts is not None:
                accounts[scim_id] = res
            for key in engine.resource_keys(res):
                index[key] = (scim_id, res)
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
    clashes = name_clashes(sources.groups, known)
    owners = {s.scim_id: gid for gid, s in known.items()}
    names = {gid: s.display_name for gid, s in known.items()}
    # target groups a provisioned group is renamed away from: a sync renames them first
    renamed_away = {
        s.scim_id
        for g in sources.groups
        if (s := known.get(g.graph_id)) is not None
        and g.graph_id not in clashes
        and s.display_name.lower() != g.display_name.lower()
    }
    for group in sorted(sources.groups, key=lambda g: g.graph_id not in known):
        state = known.get(group.graph_id)
        clash = clashes.get(group.graph_id)
        found = None
        if state is None:
            if clash is not None:
                out.append(_group_failure(group, clash))
                continue
            matched, _ = list_resources(await scim.send(rg.find_group(group.display_name)))
            matched = [r for r in matched if str(r.get("id")) not in renamed_away]
            found, taken = pick_match(group, matched, owners, names)
            if taken is not None:
                out.append(_group_failure(group, taken))
                continue
        elif clash is not None and state.display_name != group.display_name:
            out.append(_group_failure(group, clash))
        current = state.members - forgotten if state is not None else frozenset()
        wanted = {}
        for m in group.members:
            sid = after[m] if m in after else linked.get(m)
            if sid:
                wanted[m] = sid
        leaving = leaving_members(wanted, current)
        member_owners = await store.owners(leaving) if leaving else {}
        op, add, remove = plan_group(
            group, state, found, wanted, current, member_owners, rename=clash is None
        )
        if op.action in ("create", "link"):
            owned = found or f"new-group:{next(new)}"
            owners[owned] = group.graph_id
            names[group.graph_id] = group.display_name
        if op.action == "skip":
            continue
        reason = {
            "create": "group created",
            "link": "group matched by displayName",
            "update": "group changed",
        }[op.action]
        entry = _group_entry(op, reason, add, remove)
        if op.action == "create":
            entry["scim_id"] = owned
        out.append(entry)
    return out


def _group_failure(group: SourceGroup, reason: str) -> dict[str, Any]:
    """A group the sync would fail without sending anything for it (its name clashes)."""
    return {
        "graph_id": group.graph_id,
        "display_name": group.display_name,
        "action": "failed",
        "reason": reason,
        "scim_id": None,
        "fingerprint": _digest(group.graph_id, "failed", reason),
    }


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
    full: bool = False,
    engine: Engine | None = None,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    scim_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
    unmanaged: bool = False,
) -> dict[str, Any]:
    """Compute what a sync would do now (reads only); ``full`` as ``sync --full`` reads.

    ``unmanaged`` (``bulkprov migrate``): when the plan lists the target to match, it also
    lists, under ``"unmanaged"``, every target account that no operation links and the
    state does not manage: the accounts a sync leaves alone (:func:`account_summary`).
    """
    engine = engine or Engine(cfg)
    async with await StateStore.open(cfg.state.path) as store:
        last = await store.last_run()
        # As the sync would: an unfinished full read is resumed (so it reads everyone), any
        # other unfinished run is closed and the changes are read again; either way what
        # was in flight when it stopped is matched (StateStore.start_run).
        unfinished = last is not None and last.status in UNFINISHED
        resumes = last is not None and last.resumable and last.kind == "full"
        users, updated_at = await store.users_fingerprint()
        escrow = await store.escrow_entries()
        matching = rematch or unfinished or not await store.has_completed_run()
        ls = LifecycleStore(store)
        known = await ls.groups()
        async with open_clients(
            cfg,
            secrets,
            graph_transport=graph_transport,
            scim_transport=scim_transport,
            policy=policy,
        ) as (graph, scim):
            sources, _ = await read_cycle_sources(graph, ls, cfg, dry_run=True)
            link = None if full or resumes else await choose_read(ls, cfg, sources)
            index = None
            accounts: dict[str, dict[str, Any]] | None = {} if unmanaged else None
            if matching:
                index = await _target_index(engine, scim, cfg.target.list_page_size, accounts)
            planner = _Planner(engine, store, index, sources, escrow)
            planner.seats = await Seats.load(cfg, store)
            full_round = engine.delta_url(graph.base_url)
            read = "full" if link is None else "incremental"
            planner.incremental = read == "incremental"
            try:
                await planner.read_round(graph, link or full_round)
            except DeltaExpired:
                if link is None:
                    raise
                # Graph forgot the sync state: a sync reads everything again, so does the plan
                planner.reset()
                read = "full"
                await planner.read_round(graph, full_round)
            if read == "incremental":
                ids = []
                if sources.assigned is not None:
                    old = await ls.assigned()
                    ids = assignment_changes(old, sources.snapshot(), planner.read)
                # the users the target held back are read again, as the sync does
                ids = sorted({*ids, *(set(await store.waiting()) - planner.read)})
                if ids:
                    await planner.page(await fetch_users(graph, ids, engine.select))
            if read == "incremental":
                # escrowed users due for a retry, read by id as the sync reads them
                due = [g for g in await store.due_escrowed_users() if g not in planner.read]
                if due:
                    await planner.page(await fetch_users(graph, due, engine.select))
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
            # Entra groups sharing a target group are released first (the sync's deprovision)
            owned = release_shared(known, in_scope)[0]
            leaving = sum(1 for g in owned if g not in in_scope) if cfg.groups.enabled else 0
            staged = counts["disable"] + counts["delete"] + leaving
            held = dp.prevent_accidental_deletion and staged > dp.threshold
            group_ops: list[dict[str, Any]] = []
            if cfg.groups.enabled:
                group_ops = await _plan_groups(store, scim, sources, owned, planner, held)
            left_alone = None
            if accounts is not None and index is not None:
                linked = {op["scim_id"] for op in ops if op["action"] == "link"}
                rest = [sid for sid in accounts if sid not in linked]
                managed = await store.owners(rest) if rest else {}
                left_alone = [account_summary(accounts[s]) for s in rest if s not in managed]
    group_counts = Counter(dict.fromkeys(GROUP_ACTIONS, 0))
    group_counts.update(op["action"] for op in group_ops)
    group_counts["members_added"] = sum(
        len(op.get("members", {}).get("add", ())) for op in group_ops
    )
    group_counts["members_removed"] = sum(
        len(op.get("members", {}).get("remove", ())) for op in group_ops
    )
    plan: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "held": held,
        "note": (
            f"{staged} disables/deletes exceed the accidental-deletion threshold "
            f"({dp.threshold}): a sync would stage and hold them for `bulkprov approve`"
            if held
            else None
        ),
        "rematch": rematch,
        "full": full,
        "matching": matching,
        "read": read,
        "counts": dict(counts),
        "group_counts": dict(group_counts),
        "fingerprints": {
            "config": plan_config_fingerprint(cfg),
            "source": _digest(sorted(planner.decided[op["graph_id"]] for op in ops)),
            "groups": _digest(sorted(op["fingerprint"] for op in group_ops)),
            "source_users": planner.users_read,
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
    if left_alone is not None:
        plan["unmanaged"] = left_alone
    return plan


def account_summary(res: dict[str, Any]) -> dict[str, Any]:
    """What a plan says of a target account nobody manages: its id, userName, whether it
    is active, its email addresses and externalId (what tells whose account it may be)."""
    emails = res.get("emails")
    return {
        "scim_id": res.get("id"),
        "user_name": res.get("userName"),
        "active": res.get("active") not in (False, "false", "False"),
        "emails": [
            e["value"]
            for e in (emails if isinstance(emails, list) else ())
            if isinstance(e, dict) and isinstance(e.get("value"), str)
        ],
        "external_id": res.get("externalId"),
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


def plan_guard(plan: dict[str, Any]) -> UserGuard:
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
        op["graph_id"]: (op["action"], op["fingerprint"])
        for op in plan["group_operations"]
        if op["action"] != "failed"  # nothing is sent for those
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


def apply_options(plan: dict[str, Any]) -> dict[str, Any]:
    """The :func:`~bulkprov.pipeline.run.run_sync` options that make a sync do only what
    ``plan`` shows: its user and group guards, and — when the plan showed the staged
    disables and deletes held by the accidental-deletion threshold — ``hold_staged``.
    """
    return {
        "guard": plan_guard(plan),
        "group_guard": plan_group_guard(plan),
        "hold_staged": bool(plan.get("held")),
        "full": bool(plan.get("full")),  # the same read the plan made
    }


def held_back_message(counts: dict[str, int]) -> str | None:
    """What ``bulkprov apply`` says when its guards held operations back (else ``None``)."""
    n = counts.get(HELD_BACK, 0)
    if not n:
        return None
    return (
        f"{n} operation(s) held back: not in the plan or changed since it was checked, so "
        "nothing was sent for them (see `bulkprov logs --status skipped`); the next sync "
        "reads them again — make a new plan (`bulkprov plan`) and apply it"
    )


async def verify_plan(
    cfg: Config, secrets: Secrets, plan: dict[str, Any], **options: Any
) -> dict[str, Any]:
    """Recompute the plan and raise :class:`PlanStale` unless it still holds."""
    if plan.get("format") != PLAN_FORMAT:
        raise PlanStale(f"not a {PLAN_FORMAT} file (format {plan.get('format')!r})")
    fresh = await make_plan(
        cfg,
        secrets,
        rematch=bool(plan.get("rematch")),
        full=bool(plan.get("full")),
        **options,
    )
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
        failed = ("failed",) if g.get("failed") else ()
        keys = (*GROUP_ACTIONS, *failed, "members_added", "members_removed")
        text += "; groups: " + ", ".join(f"{k} {g.get(k, 0):,}" for k in keys).replace("_", " ")
    return text
