"""Groups, after the users: one target group per Entra group, and its members.

When ``groups.enabled`` (or ``scope.mode = "assigned"``) a cycle reads the groups to provision
(:mod:`~bulkprov.pipeline.sources`); once the users are provisioned, :class:`GroupSync` creates
each group (matched by displayName first), and sends each group's changes — a rename, the
members added and removed, diffed against the members recorded in SQLite — in one PATCH
(up to ``groups.member_chunk`` members a PATCH; under the Zoom profile also at most
``[target.zoom] group_patch_chars`` characters, :class:`~bulkprov.scim.groups.PatchBudget`). Groups that left scope are deleted through
the staging and threshold of :mod:`~bulkprov.pipeline.deprovision`.

One target group per Entra group (:func:`name_clashes`, :func:`pick_match`,
:func:`release_shared`): matching by displayName takes only a target group no other Entra
group owns, and two Entra groups whose displayNames differ only in letter case fail the one
that would take the name (``DuplicateSourceEntries``, naming both), never merged into one
target group. A target group that vanished (404) is provisioned again.

What the target refuses is narrowed down, never multiplied (:meth:`GroupSync._refused`): a
PATCH of several kinds of change is split by kind; a refused kind is sent once in the other
dialect's form (a target that refuses Entra's member removal, or RFC's), and the form that
worked is kept for the next cycles (``sync_state`` ``group_forms``); a 400/413 for a form the
target is known to accept halves the members (size, or one bad member). Every change sent is
logged, whatever fails after it in the same group.

``bulkprov plan`` decides groups through the same :func:`plan_group`; under ``bulkprov
apply`` the :data:`GroupGuard` holds back every group operation (:class:`GroupOp`) the plan
did not show.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from bulkprov import _json
from bulkprov.checkpoint.staging import GROUP_FORMS, GroupState, LifecycleStore
from bulkprov.checkpoint.store import Run, StateStore, UserWrite
from bulkprov.config import Config
from bulkprov.errors import TargetError, TargetRejected, TargetStop
from bulkprov.graph.directory import ScopeSources, SourceGroup
from bulkprov.pipeline.stats import HELD_BACK, bump
from bulkprov.scim import groups as rg
from bulkprov.scim.client import ScimClient
from bulkprov.scim.requests import PatchDialect
from bulkprov.scim.responses import list_resources


@dataclass(frozen=True, slots=True)
class GroupOp:
    """What a cycle does to one group, with members named by Graph id.

    ``bulkprov plan`` lists these and ``bulkprov apply`` compares each one the cycle is
    about to send with the plan's (:data:`GroupGuard`): Graph ids, not SCIM ids, because
    a member the same cycle creates has no SCIM id when the plan is made.
    """

    graph_id: str
    display_name: str
    #: "create", "link" (an existing target group matched by displayName), "update",
    #: "delete", or "skip" (nothing to send)
    action: str
    #: the target group (``None`` for a create)
    scim_id: str | None
    renamed_from: str | None = None
    #: member keys (the Graph id of each member; a SCIM id when no user owns it)
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        doc = [
            self.graph_id,
            self.display_name,
            self.action,
            self.scim_id,
            self.renamed_from,
            sorted(self.add),
            sorted(self.remove),
        ]
        return hashlib.blake2b(_json.dumps(doc), digest_size=16).hexdigest()


#: ``guard(op)`` → a reason to hold the group operation back, or ``None``
GroupGuard = Callable[[GroupOp], str | None]


def leaving_members(wanted: dict[str, str], current: frozenset[str]) -> list[str]:
    """The SCIM ids the target holds (``current``) that are no longer ``wanted``, sorted.

    Callers look up who owns these (:meth:`StateStore.owners`) for :func:`plan_group`.
    """
    return sorted(current.difference(wanted.values()))


def release_shared(
    known: Mapping[str, GroupState], in_scope: Collection[str]
) -> tuple[dict[str, GroupState], dict[str, str]]:
    """One Entra group per target group, in a state an older bulkprov left otherwise.

    Before issue 19, a second Entra group of the same displayName (or one differing only in
    letter case) was linked to the target group of the first. Of the Entra groups linked to
    one target group, the first linked (``known`` is in link order) that is still in scope
    keeps it (the first linked, when none is); the others are released: their link is
    dropped and the members recorded for them become the keeper's, since the target group
    holds them (the keeper's next diff removes the ones that do not belong). A released
    group still in scope is then a new group, and fails on the name it shares.

    Returns the groups as they are after the release, and released Graph id → keeper.
    """
    holders: dict[str, list[str]] = {}
    for gid, state in known.items():
        holders.setdefault(state.scim_id, []).append(gid)
    out = dict(known)
    released: dict[str, str] = {}
    for gids in holders.values():
        if len(gids) < 2:
            continue
        keeper = next((g for g in gids if g in in_scope), gids[0])
        members: set[str] = set()
        for gid in gids:
            members |= known[gid].members
            if gid != keeper:
                released[gid] = keeper
                del out[gid]
        out[keeper] = replace(known[keeper], members=frozenset(members))
    return out, released


def _clash_reason(keeper: SourceGroup, group: SourceGroup, renaming: bool) -> str:
    what = "renamed" if renaming else "provisioned"
    return (
        f"DuplicateSourceEntries: Entra groups {keeper.display_name!r} ({keeper.graph_id}) and "
        f"{group.display_name!r} ({group.graph_id}) have the same displayName (letter case "
        f"aside); each Entra group has its own target group, so {group.display_name!r} is not "
        f"{what} until one of them is renamed in Entra"
    )


def name_clashes(groups: Sequence[SourceGroup], known: Mapping[str, GroupState]) -> dict[str, str]:
    """Graph id → why the group may not take its displayName, for each group that may not.

    Entra groups in scope whose displayNames are equal case-insensitively (SCIM compares a
    group's displayName so, RFC 7643 §4.2) would share one target group: the one that
    already has that name in the target keeps it (else the first provisioned, else the
    first listed); every other one that would take the name — a new group (create or
    link), or a rename — fails, its reason naming both. A provisioned group that already
    had the name keeps its own target group.
    """
    by_name: dict[str, list[SourceGroup]] = {}
    for g in groups:
        by_name.setdefault(g.display_name.lower(), []).append(g)
    out: dict[str, str] = {}
    for name, clash in by_name.items():
        if len(clash) < 2:
            continue

        def has_name(g: SourceGroup, name: str = name) -> bool:
            state = known.get(g.graph_id)
            return state is not None and state.display_name.lower() == name

        keeper = next(
            (g for g in clash if has_name(g)),
            next((g for g in clash if g.graph_id in known), clash[0]),
        )
        for g in clash:
            if g is not keeper and not has_name(g):
                out[g.graph_id] = _clash_reason(keeper, g, g.graph_id in known)
    return out


def pick_match(
    group: SourceGroup,
    matched: Sequence[Mapping[str, Any]],
    owners: Mapping[str, str],
    names: Mapping[str, str],
) -> tuple[str | None, str | None]:
    """The target group to link ``group`` to, or why none may be taken.

    ``matched``: the target's answer to the displayName query; ``owners``: SCIM id → Graph
    id of the Entra group that owns each provisioned target group (this cycle's too);
    ``names``: Graph id → displayName of those. Only a target group no other Entra group
    owns may be taken; when every match is owned, the reason names both Entra groups.
    """
    taken: tuple[str, str] | None = None
    for resource in matched:
        scim_id = str(resource.get("id"))
        owner = owners.get(scim_id)
        if owner is None or owner == group.graph_id:
            return scim_id, None
        taken = taken or (scim_id, owner)
    if taken is None:
        return None, None
    scim_id, owner = taken
    return None, (
        f"DuplicateSourceEntries: the target group {scim_id} matching displayName "
        f"{group.display_name!r} belongs to Entra group {names.get(owner, '')!r} ({owner}); "
        f"Entra group {group.display_name!r} ({group.graph_id}) is not linked to it (one "
        "target group per Entra group): rename one of them in Entra"
    )


def plan_group(
    group: SourceGroup,
    state: GroupState | None,
    found: str | None,
    wanted: dict[str, str],
    current: frozenset[str],
    owners: Mapping[str, str],
    *,
    rename: bool = True,
) -> tuple[GroupOp, dict[str, str], dict[str, str]]:
    """One group's operation, and its members to add and to remove (key → SCIM id).

    ``found``: the target group matched by displayName (asked only for a group not
    provisioned yet); ``wanted``: member Graph id → SCIM id, for the members the target
    should hold; ``current``: the SCIM ids the target holds as far as the state knows;
    ``owners``: SCIM id → Graph id of the users owning the :func:`leaving_members` (a
    member no user owns is named by its SCIM id); ``rename=False``: the new displayName
    clashes (:func:`name_clashes`), the target group keeps its name. Pure: sync and plan
    both decide a group through here.
    """
    name = group.display_name
    adding = set(wanted.values()) - current
    add = {gid: sid for gid, sid in wanted.items() if sid in adding}
    remove = {owners.get(sid, sid): sid for sid in leaving_members(wanted, current)}
    scim_id: str | None = found
    renamed: str | None = None
    if state is None:
        action = "link" if found else "create"
    else:
        scim_id = state.scim_id
        if rename and state.display_name != name:
            renamed = state.display_name
        else:
            name = state.display_name
        action = "update" if renamed is not None or add or remove else "skip"
    op = GroupOp(
        group.graph_id, name, action, scim_id, renamed, tuple(sorted(add)), tuple(sorted(remove))
    )
    return op, add, remove


@dataclass(slots=True)
class Part:
    """One kind of change in a group PATCH: a rename, or members added or removed."""

    kind: str
    #: SCIM ids (none for a rename)
    members: list[str] = field(default_factory=list)


def pack(
    rename: bool,
    add: Sequence[str],
    remove: Sequence[str],
    chunk: int,
    budget: rg.PatchBudget | None = None,
) -> list[list[Part]]:
    """The PATCHes of one group's changes: as few as ``chunk`` members a PATCH allow.

    A rename, the adds and the removals share a PATCH (RFC 7644 §3.5.2: several operations,
    applied in order, all or none): a changed group of up to ``chunk`` changed members costs
    one request. With a ``budget`` (Zoom: a body of at most 100,000 characters, facts.md
    §6.8) a PATCH also ends where the next member would take it past the budget.
    """
    out: list[list[Part]] = []
    cur: list[Part] = [Part(rg.RENAME)] if rename else []
    room = chunk
    if budget is None:
        for kind, ids in ((rg.ADD, add), (rg.REMOVE, remove)):
            i = 0
            while i < len(ids):
                if room == 0:
                    out.append(cur)
                    cur, room = [], chunk
                take = list(ids[i : i + room])
                cur.append(Part(kind, take))
                room -= len(take)
                i += len(take)
        if cur:
            out.append(cur)
        return out
    used = budget.empty() + (budget.opening(rg.RENAME) if rename else 0)
    for kind, ids in ((rg.ADD, add), (rg.REMOVE, remove)):
        part: Part | None = None
        for member in ids:
            cost = budget.member(kind, member) + (budget.opening(kind) if part is None else 0)
            if cur and (room == 0 or used + cost > budget.max_chars):
                out.append(cur)
                cur, room, used, part = [], chunk, budget.empty(), None
                cost = budget.member(kind, member) + budget.opening(kind)
            if part is None:
                part = Part(kind)
                cur.append(part)
            part.members.append(member)
            room -= 1
            used += cost
    if cur:
        out.append(cur)
    return out


class _Vanished(Exception):
    """The target answered 404 for a provisioned group: it was deleted there."""


_VERBS = {rg.ADD: "added", rg.REMOVE: "removed"}


class _GroupLog:
    """One group's log entries in one cycle: what was done, and what failed after it."""

    def __init__(self, group: SourceGroup, writes: list[UserWrite], counts: dict[str, int]):
        self.group = group
        self.writes = writes
        self.counts = counts
        self.scim_id: str | None = None
        self.tally = {rg.ADD: 0, rg.REMOVE: 0}
        self.failures: dict[tuple[str, str], int] = {}
        self.failed = False

    def entry(self, status: str, reason: str, modified: str | None = None) -> None:
        g = self.group
        self.writes.append(
            UserWrite(
                g.graph_id, g.display_name, "group", status, reason, self.scim_id, modified=modified
            )
        )

    def done(self, reason: str, modified: str | None = None) -> None:
        self.entry("success", reason, modified)

    def fail(self, reason: str) -> None:
        if not self.failed:
            bump(self.counts, "failed")
            self.failed = True
        self.entry("failure", reason)

    def members_failed(self, kind: str, count: int, reason: str) -> None:
        key = (kind, reason)
        self.failures[key] = self.failures.get(key, 0) + count

    def flush(self) -> None:
        """The members' entries: the changes sent, then the ones that failed."""
        for kind, n in self.tally.items():
            if n:
                verb = _VERBS[kind]
                bump(self.counts, f"members {verb}", n)
                self.done(f"{n} member(s) {verb}")
        self.tally = {rg.ADD: 0, rg.REMOVE: 0}
        for (kind, reason), n in self.failures.items():
            self.fail(f"{n} member(s) not {_VERBS[kind]}: {reason}")
        self.failures = {}


def _other(form: PatchDialect) -> PatchDialect:
    return "entra" if form == "rfc" else "rfc"


def _drop(queue: deque[list[Part]], kind: str) -> int:
    """Take every part of ``kind`` out of ``queue``; returns how many members they held."""
    dropped = 0
    kept = []
    for parts in queue:
        dropped += sum(len(p.members) for p in parts if p.kind == kind)
        rest = [p for p in parts if p.kind != kind]
        if rest:
            kept.append(rest)
    queue.clear()
    queue.extend(kept)
    return dropped


class GroupSync:
    """Provisions a cycle's groups once its users are done (:meth:`sync`)."""

    def __init__(
        self,
        cfg: Config,
        store: StateStore,
        scim: ScimClient,
        counts: dict[str, int],
        *,
        group_guard: GroupGuard | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.ls = LifecycleStore(store)
        self.scim = scim
        self.counts = counts
        self.dialect = cfg.target.patch_dialect
        #: ``bulkprov apply``: group operations the plan did not show are held back
        self.group_guard = group_guard
        #: the form each kind of change is sent in (learned over cycles when the target
        #: refuses the dialect's: ``sync_state`` ``group_forms``), and the kinds the target
        #: accepted in their form this cycle
        self.forms: dict[str, PatchDialect] = {}
        self.confirmed: set[str] = set()
        self._forms_saved: str | None = None
        #: SCIM id → Graph id of the Entra group owning each provisioned target group
        self.owners: dict[str, str] = {}
        self.names: dict[str, str] = {}

    async def _load_forms(self) -> None:
        """The forms learned for this target and dialect; none is taken as accepted yet.

        What a form earns by being accepted (a later 400 then means "too large" or "a
        member refused": halving) holds for this cycle only: a target that changes what it
        accepts gets the form fallback again, never a halving of a form it refuses.
        """
        self.forms = dict.fromkeys((rg.RENAME, rg.ADD, rg.REMOVE), self.dialect)
        self.confirmed = set()
        raw = self._forms_saved = await self.ls.get(GROUP_FORMS)
        try:
            doc = _json.loads(raw) if raw else None
        except _json.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or doc.get("key") != self._forms_key():
            return  # learned for another target or dialect: start from the configured one
        learned = doc.get("forms")
        for kind, form in (learned if isinstance(learned, dict) else {}).items():
            if kind in self.forms and form in ("rfc", "entra"):
                self.forms[kind] = form

    def _forms_key(self) -> list[str]:
        return [self.cfg.target.base_url.rstrip("/"), self.dialect]

    async def _save_forms(self) -> None:
        forms = {k: f for k, f in sorted(self.forms.items()) if f != self.dialect}
        text = _json.dumps({"key": self._forms_key(), "forms": forms}).decode()
        if (forms or self._forms_saved is not None) and text != self._forms_saved:
            await self.ls.put(GROUP_FORMS, text)
            self._forms_saved = text

    async def sync(self, run: Run, sources: ScopeSources) -> None:
        """Provision every group of ``sources``; a group's target error is its failure.

        Provisioned groups go first (renames, members), then new ones: a target group
        renamed away this cycle frees its old name for an Entra group that takes it.
        Everything done is logged, also when a later request stops the run.
        """
        await self._load_forms()
        known = await self.ls.groups()
        clashes = name_clashes(sources.groups, known)
        self.owners = {s.scim_id: gid for gid, s in known.items()}
        self.names = {gid: s.display_name for gid, s in known.items()}
        writes: list[UserWrite] = []
        try:
            for group in sorted(sources.groups, key=lambda g: g.graph_id not in known):
                log = _GroupLog(group, writes, self.counts)
                try:
                    await self._group(group, known.get(group.graph_id), clashes, log)
                except TargetStop:
                    raise
                except TargetError as exc:
                    log.fail(str(exc))
        finally:
            with anyio.CancelScope(shield=True):
                if writes:
                    await self.ls.log_outcomes(run, writes, self.counts)
                await self._save_forms()

    async def _group(
        self,
        group: SourceGroup,
        state: GroupState | None,
        clashes: Mapping[str, str],
        log: _GroupLog,
    ) -> None:
        try:
            await self._provision(group, state, clashes, log)
        except _Vanished as exc:
            if state is None:
                raise TargetRejected(
                    f"the target group {log.scim_id} answered 404 as soon as it was created or linked",
                    status=404,
                ) from exc
            log.flush()
            log.done(f"target group {state.scim_id} no longer exists (404): provisioned again")
            await self.ls.forget_group(group.graph_id)
            self.owners.pop(state.scim_id, None)
            log.scim_id = None
            try:
                await self._provision(group, None, clashes, log)
            except _Vanished as exc:
                raise TargetRejected("the target group vanished again", status=404) from exc
        finally:
            log.flush()

    async def _provision(
        self,
        group: SourceGroup,
        state: GroupState | None,
        clashes: Mapping[str, str],
        log: _GroupLog,
    ) -> None:
        gid, name = group.graph_id, group.display_name
        clash = clashes.get(gid)
        found = None
        if state is None:
            if clash is not None:
                log.fail(clash)
                return
            matched, _ = list_resources(await self.scim.send(rg.find_group(name)))
            found, taken = pick_match(group, matched, self.owners, self.names)
            if taken is not None:
                log.fail(taken)
                return
        else:
            log.scim_id = state.scim_id
        current = state.members if state is not None else frozenset()
        wanted = await self.ls.scim_ids(group.members)
        leaving = leaving_members(wanted, current)
        owners = await self.store.owners(leaving) if leaving else {}
        op, adds, removes = plan_group(
            group, state, found, wanted, current, owners, rename=clash is None
        )
        if self.group_guard is not None and op.action != "skip":
            held = self.group_guard(op)
            if held is not None:
                bump(self.counts, HELD_BACK)
                log.scim_id = op.scim_id
                log.writes.append(
                    UserWrite(gid, name, "group", "skipped", held, op.scim_id, held_back=True)
                )
                return
        if op.action == "link":
            assert found is not None
            scim_id = log.scim_id = found
            await self._own(gid, scim_id, name)
            log.done("group matched by displayName")
        elif op.action == "create":
            doc = await self.scim.send(rg.create_group(name, gid))
            scim_id = log.scim_id = str(doc["id"])
            bump(self.counts, "groups created")
            await self._own(gid, scim_id, name)
            log.done("group created")
        else:
            assert state is not None
            scim_id = state.scim_id
            if clash is not None and state.display_name != name:
                log.fail(clash)  # the members are still sent
        target = self.cfg.target
        patches = pack(
            op.renamed_from is not None,
            sorted(set(adds.values())),
            sorted(removes.values()),
            self.cfg.groups.member_chunk,
            # Zoom refuses group PATCH bodies over 100,000 characters: chunk by size too
            rg.PatchBudget(target.zoom.group_patch_chars, scim_id, dict(self.forms), name)
            if target.zoom_profile
            else None,
        )
        await self._send(group, scim_id, op.renamed_from, patches, log)

    async def _own(self, graph_id: str, scim_id: str, name: str) -> None:
        await self.ls.put_group(graph_id, scim_id, name)
        self.owners[scim_id] = graph_id
        self.names[graph_id] = name

    def _operations(self, part: Part, name: str, form: PatchDialect) -> list[dict[str, Any]]:
        if part.kind == rg.RENAME:
            return rg.rename_operations(name, form)
        return rg.member_operations(part.kind, part.members, form)

    async def _patch(
        self, scim_id: str, parts: Sequence[Part], name: str, form: PatchDialect | None = None
    ) -> None:
        ops = [op for p in parts for op in self._operations(p, name, form or self.forms[p.kind])]
        try:
            await self.scim.send(rg.patch_group(scim_id, ops))
        except TargetRejected as exc:
            if exc.status == 404:
                raise _Vanished from exc
            raise

    async def _sent(
        self, group: SourceGroup, scim_id: str, part: Part, renamed_from: str | None, log: _GroupLog
    ) -> None:
        """Record a change the target accepted (after each PATCH: a retry resends nothing)."""
        if part.kind == rg.RENAME:
            await self._own(group.graph_id, scim_id, group.display_name)
            modified = _json.dumps({"displayName": group.display_name}).decode()
            log.done(f"renamed from {renamed_from!r}", modified)
        elif part.kind == rg.ADD:
            await self.ls.change_members(group.graph_id, part.members, ())
            log.tally[rg.ADD] += len(part.members)
        else:
            await self.ls.change_members(group.graph_id, (), part.members)
            log.tally[rg.REMOVE] += len(part.members)

    async def _send(
        self,
        group: SourceGroup,
        scim_id: str,
        renamed_from: str | None,
        patches: list[list[Part]],
        log: _GroupLog,
    ) -> None:
        """Send a group's PATCHes; what the target refuses is narrowed down (:meth:`_refused`)."""
        queue = deque(patches)
        while queue:
            parts = queue.popleft()
            try:
                await self._patch(scim_id, parts, group.display_name)
            except TargetRejected as exc:
                if len(parts) > 1:
                    # all or none: which kind was refused? each alone
                    queue.extendleft(reversed([[p] for p in parts]))
                    continue
                await self._refused(group, scim_id, renamed_from, parts[0], exc, queue, log)
                continue
            for part in parts:
                self.confirmed.add(part.kind)
                await self._sent(group, scim_id, part, renamed_from, log)

    async def _refused(
        self,
        group: SourceGroup,
        scim_id: str,
        renamed_from: str | None,
        part: Part,
        exc: TargetRejected,
        queue: deque[list[Part]],
        log: _GroupLog,
    ) -> None:
        """One kind of change, refused alone: never the same refused body again and again.

        * a removal answered ``noTarget``: the member is not in the group (removed there);
          of several members, the half that holds it is found by halving;
        * a 400 for a form the target has not accepted yet this cycle: the same change once
          in the other form (Entra's, or RFC's); if that one is accepted, it is the form from
          now on (kept for the next cycles). If both are refused, one member alone is tried
          in the first form: accepted, the form is fine and the rest is halved (a member is
          refused). Refused in both forms even for one member, this kind of change fails
          for the group, the rest of it unsent (at most three refused requests a cycle);
        * a 400 or 413 for a form the target accepted this cycle: the change is too large or
          carries a member the target refuses: the members are halved, a single one fails;
        * anything else (a 409 on a rename…) fails that change.
        """
        kind, name = part.kind, group.display_name

        def halve(members: list[str]) -> None:
            half = len(members) // 2
            queue.extendleft([[Part(kind, members[half:])], [Part(kind, members[:half])]])

        def fail(members: int, reason: str) -> None:
            if kind == rg.RENAME:
                log.fail(f"not renamed from {renamed_from!r}: {reason}")
            else:
                log.members_failed(kind, members, reason)

        if kind == rg.REMOVE and rg.member_absent(exc):
            if len(part.members) == 1:
                await self._sent(group, scim_id, part, renamed_from, log)
            else:
                halve(part.members)
            return
        if exc.status == 400 and kind not in self.confirmed:
            form = self.forms[kind]
            other = _other(form)
            try:
                await self._patch(scim_id, [part], name, other)
            except TargetRejected as second:
                if kind == rg.REMOVE and rg.member_absent(second):
                    # the other form is understood, and a member is not there
                    self.forms[kind] = other
                    self.confirmed.add(kind)
                    if len(part.members) == 1:
                        await self._sent(group, scim_id, part, renamed_from, log)
                    else:
                        halve(part.members)
                    return
                both = f"{exc} ({form} form); {second} ({other} form)"
                if len(part.members) > 1:
                    probe = Part(kind, part.members[:1])
                    try:
                        await self._patch(scim_id, [probe], name)
                    except TargetRejected:
                        pass
                    else:
                        self.confirmed.add(kind)
                        await self._sent(group, scim_id, probe, renamed_from, log)
                        rest = part.members[1:]
                        if len(rest) > 1:
                            halve(rest)
                        else:
                            queue.appendleft([Part(kind, rest)])
                        return
                # refused in both forms, even for one member: the rest of this kind would
                # be too; it is not sent (the next cycle tries again)
                fail(len(part.members) + _drop(queue, kind), both)
                return
            self.forms[kind] = other
            self.confirmed.add(kind)
            await self._sent(group, scim_id, part, renamed_from, log)
            return
        if exc.status in (400, 413) and len(part.members) > 1:
            halve(part.members)
            return
        fail(len(part.members), str(exc))
