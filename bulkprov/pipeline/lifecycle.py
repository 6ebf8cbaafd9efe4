"""The end of a cycle: deprovisioning with accidental-deletion prevention, then groups.

A cycle's user phase (pipeline.py) creates and updates at once but only *stages* disables
and deletes, in SQLite, in the same transaction as the page that decided them. When — and
only when — the source read completed, this module:

1. after a full read, stages a disable for every active managed user the read did not
   list (hard-deleted, or gone while no delta token covered it: mark and sweep);
   Provisioned groups that left scope (unassigned, or deleted in Entra) are staged for
   ``DELETE /Groups/{id}`` — Entra's group delete (facts.md §2.3 "Groups") — and, as
   Entra's "Groups evaluated for deletion count towards the deletion threshold" (ACCDEL,
   facts.md §2.5), they count with the users' disables and deletes;
2. counts the cycle's staged actions: more than ``deprovision.threshold`` (Entra's
   "Anything above the threshold", facts.md §2.5) executes none of them — they become
   ``held``, ``bulkprov staged`` lists them and ``bulkprov approve`` runs them; otherwise
   they run now (PATCH ``active=false``, or DELETE for a hard delete when configured;
   in SCIM Bulk requests when ``target.bulk`` is on and the target offers Bulk);
3. provisions groups: create (matched by displayName first), rename, and membership
   add/remove PATCHes diffed against the members recorded in SQLite, in chunks of
   ``groups.member_chunk``, halved when the target answers 400/413.

A read that failed (a 503 halfway, an expired page link) never reaches this module, so a
partial read deprovisions nothing; the staged rows wait for the resumed run to complete.

``bulkprov plan`` decides groups through the same :func:`plan_group` and reads the same
sources (:func:`read_cycle_sources` with ``dry_run``); under ``bulkprov apply`` the guards
hold back every sweep disable and group operation (:class:`GroupOp`) the plan did not show.
What is held back is counted (:data:`HELD_BACK`, with the users the read held back) and
counts toward the threshold as if it were staged: a held-back operation may be a
deprovision, or stand for one the plan showed, so apply never sends a batch of disables and
deletes that the threshold would have stopped with it included. And when the plan itself
showed the staged actions held by the threshold, apply holds them all (``hold_staged``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio

from bulkprov import _json
from bulkprov.checkpoint.staging import (
    DELETE_GROUP,
    GROUPS_DELTA,
    GroupState,
    LifecycleStore,
    Staged,
)
from bulkprov.checkpoint.store import Run, StateStore, UserWrite, disabled
from bulkprov.config import Config
from bulkprov.errors import TargetAuthError, TargetError, TargetRejected
from bulkprov.graph.client import GraphClient
from bulkprov.graph.directory import GroupMirror, ScopeSources, SourceGroup, read_sources
from bulkprov.graph.groups_delta import DeltaOverlay, read_groups_delta
from bulkprov.mapping import MappedUser
from bulkprov.pipeline.decide import Decision
from bulkprov.scim import bulk
from bulkprov.scim import groups as rg
from bulkprov.scim import requests as rq
from bulkprov.scim.bulk import BulkBatch, BulkSupport
from bulkprov.scim.client import ScimClient
from bulkprov.scim.requests import ScimRequest
from bulkprov.scim.responses import list_resources


def config_fingerprint(cfg: Config) -> str:
    """Digest of what decides scope and values: a change forces a full read.

    Entra restarts with a full cycle when a scoping filter is saved (SCOPING, facts.md §2.6);
    a delta round would only show users that changed in Entra, not the ones the new filter
    or mapping now treats differently.
    """
    doc = {
        "scope": cfg.scope.model_dump(mode="json"),
        "mappings": [m.model_dump(mode="json") for m in cfg.mappings],
        "flatten": cfg.groups.flatten_nested,
    }
    return hashlib.sha256(_json.dumps_sorted(doc)).hexdigest()


#: why the sweep after a full read disables a managed user the read did not list
GONE_REASON = "no longer listed by Microsoft Graph (deleted)"
GROUP_LEAVING_REASON = "group no longer assigned or no longer in Microsoft Graph"

#: ``guard(graph_id, decision, mapped)`` → a reason to hold the user back, or ``None``
#: (``bulkprov apply`` lets only the plan's own operations through); the sweep asks it too
UserGuard = Callable[[str, Decision, MappedUser | None], str | None]

#: the run count of operations ``bulkprov apply``'s guards held back (users, sweep disables,
#: groups): not sent, not forgotten — the cycle's watermarks do not advance past them
HELD_BACK = "held back"


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


def plan_group(
    group: SourceGroup,
    state: GroupState | None,
    found: str | None,
    wanted: dict[str, str],
    current: frozenset[str],
    owners: Mapping[str, str],
) -> tuple[GroupOp, dict[str, str], dict[str, str]]:
    """One group's operation, and its members to add and to remove (key → SCIM id).

    ``found``: the target group matched by displayName (asked only for a group not
    provisioned yet); ``wanted``: member Graph id → SCIM id, for the members the target
    should hold; ``current``: the SCIM ids the target holds as far as the state knows;
    ``owners``: SCIM id → Graph id of the users owning the :func:`leaving_members` (a
    member no user owns is named by its SCIM id). Pure: sync and plan both decide a group
    through here.
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
        renamed = state.display_name if state.display_name != name else None
        action = "update" if renamed is not None or add or remove else "skip"
    op = GroupOp(
        group.graph_id, name, action, scim_id, renamed, tuple(sorted(add)), tuple(sorted(remove))
    )
    return op, add, remove


async def read_cycle_sources(
    graph: GraphClient, ls: LifecycleStore, cfg: Config, *, dry_run: bool = False
) -> tuple[ScopeSources, str | None]:
    """A cycle's assignments and groups, and its ``groups/delta`` round's deltaLink.

    A sync applies the round to the state's mirror first (the link is saved when the
    cycle completes); ``dry_run`` (``bulkprov plan``) reads the same round and overlays it
    in memory, writing nothing.
    """
    groups_link = None
    mirror: GroupMirror | None = None
    if cfg.scope.mode == "assigned" or cfg.groups.enabled:
        if dry_run:
            delta = await read_groups_delta(
                graph, await ls.get(GROUPS_DELTA), page_size=cfg.graph.page_size
            )
            mirror, groups_link = DeltaOverlay(ls, delta), delta.delta_link
        else:
            groups_link = await refresh_group_mirror(graph, ls, cfg.graph.page_size)
            mirror = ls
    sources = await read_sources(
        graph,
        mode=cfg.scope.mode,
        service_principal_id=cfg.scope.service_principal_id,
        groups=cfg.groups.enabled,
        flatten=cfg.groups.flatten_nested,
        mirror=mirror if groups_link else None,
    )
    return sources, groups_link


async def refresh_group_mirror(
    graph: GraphClient, ls: LifecycleStore, page_size: int
) -> str | None:
    """Bring the SQLite mirror of Entra's groups up to date with one ``groups/delta`` round.

    Starts from the deltaLink saved by the last completed cycle (a first round without
    one, or when it expired); returns the round's deltaLink, for the caller to save only
    when its cycle completes.
    """
    delta = await read_groups_delta(graph, await ls.get(GROUPS_DELTA), page_size=page_size)
    await ls.apply_group_delta(delta)
    return delta.delta_link


class Lifecycle:
    def __init__(
        self,
        cfg: Config,
        store: StateStore,
        scim: ScimClient,
        counts: dict[str, int],
        *,
        guard: UserGuard | None = None,
        group_guard: GroupGuard | None = None,
        hold_staged: bool = False,
        bulk_limits: BulkSupport | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.ls = LifecycleStore(store)
        self.scim = scim
        self.counts = counts
        self.dialect = cfg.target.patch_dialect
        #: ``bulkprov apply``: what the plan did not show is held back (logged as skipped,
        #: counted as :data:`HELD_BACK`)
        self.guard = guard
        self.group_guard = group_guard
        #: ``bulkprov apply`` of a plan whose staged actions exceeded the threshold: hold
        #: every staged action, as the plan showed
        self.hold_staged = hold_staged
        #: the target's Bulk limits (``target.bulk`` and the target offers it): staged user
        #: disables and deletes then go in Bulk requests, as creates and updates do
        self.bulk_limits = bulk_limits

    def _bump(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + n

    # -- deprovisioning --------------------------------------------------------------------

    async def deprovision(
        self, run: Run, *, full_read: bool, sources: ScopeSources | None = None
    ) -> str | None:
        """Sweep (full reads), apply the threshold, run or hold; returns a note when held.

        ``sources`` is the cycle's complete group read (``None`` when groups are not
        provisioned: then no group is ever deleted).
        """
        if sources is not None:
            leaving = await self.ls.groups_leaving(run, (g.graph_id for g in sources.groups))
            group_writes = []
            for gid, sid, name in leaving:
                held: str | None = None
                if self.group_guard is not None:
                    held = self.group_guard(GroupOp(gid, name, "delete", sid))
                if held is not None:
                    group_writes.append(
                        UserWrite(gid, name, "group", "skipped", held, sid, held_back=True)
                    )
                    continue
                group_writes.append(
                    UserWrite(
                        gid,
                        name,
                        "group",
                        "skipped",
                        reason=f"staged: {GROUP_LEAVING_REASON}",
                        scim_id=sid,
                        stage=DELETE_GROUP,
                    )
                )
            if group_writes:
                # counted first: the counts are saved with the outcomes (a resume sees them)
                self._bump("staged", sum(1 for w in group_writes if w.stage is not None))
                self._bump(HELD_BACK, sum(1 for w in group_writes if w.held_back))
                await self.ls.log_outcomes(run, group_writes, self.counts)
        if full_read:
            gone = await self.ls.unseen_managed(run)
            writes = []
            for gid, sid, user_name in gone:
                held = None
                if self.guard is not None:
                    held = self.guard(
                        gid, Decision("disable", GONE_REASON, sid, {"active": False}), None
                    )
                if held is not None:
                    writes.append(
                        UserWrite(gid, user_name, "other", "skipped", held, held_back=True)
                    )
                    continue
                writes.append(
                    UserWrite(
                        gid,
                        user_name,
                        "disable",
                        "skipped",
                        reason=f"staged: {GONE_REASON}",
                        scim_id=sid,
                        stage="disable",
                    )
                )
            if writes:
                self._bump("staged", sum(1 for w in writes if w.stage is not None))
                self._bump(HELD_BACK, sum(1 for w in writes if w.held_back))
                await self.ls.log_outcomes(run, writes, self.counts)
        await self.ls.supersede(run, full=full_read)
        pending = await self.ls.staged(status=("pending",), run_id=run.id)
        if not pending:
            return None
        dp = self.cfg.deprovision
        # What apply's guards held back counts as if staged (it may be a deprovision, or
        # stand for one the plan showed): never send a batch the threshold would have
        # stopped with it. The count is the run's, so a resumed run still sees it.
        held_back = self.counts.get(HELD_BACK, 0)
        over = dp.prevent_accidental_deletion and len(pending) + held_back > dp.threshold
        if not over and not self.hold_staged:
            await self.execute(run, pending)
            return None
        await self.ls.set_staged_status((s.id for s in pending), "held")
        self._bump("held", len(pending))
        if over:
            counted = f" (with {held_back} held back)" if held_back else ""
            why = (
                f"{len(pending)} disables/deletes{counted} exceed the accidental-deletion "
                f"threshold ({dp.threshold})"
            )
        else:
            why = (
                f"the plan showed the disables/deletes held by the accidental-deletion "
                f"threshold; {len(pending)} are held"
            )
        return (
            f"{why}; none were sent. Review them with `bulkprov staged` and run them with "
            "`bulkprov approve`"
        )

    async def _send_staged(self, request: ScimRequest, *, gone_ok: bool) -> TargetError | None:
        """Send one staged disable/delete; the target's refusal is returned (that item
        fails, the others go on), an auth error stops the run. With ``gone_ok`` a 404 is
        success: a DELETE of what is already gone is what was wanted."""
        try:
            await self.scim.send(request)
        except TargetAuthError:
            raise
        except TargetRejected as exc:
            return None if gone_ok and exc.status == 404 else exc
        except TargetError as exc:
            return exc
        return None

    async def execute(self, run: Run, items: Sequence[Staged]) -> None:
        """Send staged disables/deletes (concurrently, or in Bulk requests when the target
        offers Bulk and ``target.bulk`` is on), log each, mark each done or failed."""
        states = await self.store.lookup_users(
            [s.graph_id for s in items if s.action != DELETE_GROUP]
        )
        groups = await self.ls.groups() if any(s.action == DELETE_GROUP for s in items) else {}
        limiter = anyio.CapacityLimiter(self.cfg.target.concurrency)
        bulk_limiter = anyio.CapacityLimiter(min(self.cfg.target.concurrency, bulk.IN_FLIGHT))
        writes: list[UserWrite] = []
        done: list[int] = []
        failed: list[int] = []
        forget: list[str] = []
        forget_groups: list[str] = []

        def fail(item: Staged, action: str, error: TargetError) -> None:
            failed.append(item.id)
            self._bump("failed")
            writes.append(
                UserWrite(
                    item.graph_id, item.user_name, action, "failure", str(error), item.scim_id
                )
            )

        async def one_group(item: Staged) -> None:
            known = groups.get(item.graph_id)
            if known is None or known.scim_id != item.scim_id:
                done.append(item.id)  # deleted or relinked since: nothing to do
                return
            async with limiter:
                error = await self._send_staged(rg.delete_group(item.scim_id), gone_ok=True)
            if error is not None:
                fail(item, "group", error)
                return
            done.append(item.id)
            forget_groups.append(item.graph_id)
            self._bump("groups deleted")
            reason = (item.reason or "").removeprefix("staged: ") + "; group deleted"
            writes.append(
                UserWrite(item.graph_id, item.user_name, "group", "success", reason, item.scim_id)
            )

        def request_for(item: Staged) -> ScimRequest | None:
            """The request a staged user action needs; None: already done, nothing to send."""
            state = states.get(item.graph_id)
            if (
                state is None  # deleted or relinked since: nothing to do
                or state.scim_id != item.scim_id
                or (item.action == "disable" and not state.active)
            ):
                done.append(item.id)
                return None
            if item.action == "delete":
                return rq.delete_user(item.scim_id)
            return rq.set_active(item.scim_id, False, self.dialect)

        def finish(item: Staged, error: TargetError | None) -> None:
            if error is not None:
                fail(item, item.action, error)
                return
            done.append(item.id)
            reason = (item.reason or "").removeprefix("staged: ")
            if item.action == "delete":
                forget.append(item.graph_id)
                self._bump("deleted")
                writes.append(
                    UserWrite(
                        item.graph_id,
                        item.user_name,
                        "delete",
                        "success",
                        reason=reason,
                        scim_id=item.scim_id,
                    )
                )
                return
            self._bump("disabled")
            writes.append(
                disabled(item.graph_id, item.user_name, reason, item.scim_id, states[item.graph_id])
            )

        async def alone(item: Staged, request: ScimRequest) -> None:
            async with limiter:
                error = await self._send_staged(request, gone_ok=item.action == "delete")
            finish(item, error)

        async def one(item: Staged) -> None:
            if item.action == DELETE_GROUP:
                await one_group(item)
                return
            request = request_for(item)
            if request is not None:
                await alone(item, request)

        async def in_bulk(batch: BulkBatch, sent: dict[str, tuple[Staged, ScimRequest]]) -> None:
            """One Bulk request; each operation settles its user by its own result.

            What it leaves open goes alone: an operation answered 429 or 5xx or not at all,
            every operation when the whole Bulk fails or times out, and a DELETE answered
            404. A 404 on a single DELETE means the account is gone (success, and the user
            is forgotten); inside a Bulk it may be a path the target read differently, or an
            answer matched to its operation by position only, and a wrong "gone" would
            leave an account nobody manages any more. PATCH ``active=false`` and DELETE are
            safe to send twice.
            """
            try:
                async with bulk_limiter:
                    doc = await self.scim.send(batch.request())
                results = bulk.read_results(doc, batch.bulk_ids)
            except TargetAuthError:
                raise
            except TargetError:
                results = {}
            async with anyio.create_task_group() as retries:
                for bulk_id, (item, request) in sent.items():
                    result = results.get(bulk_id)
                    error = result.error if result is not None else None
                    if (
                        result is None
                        or not (error is None or isinstance(error, TargetRejected))
                        or (error is not None and error.status == 404 and item.action == "delete")
                    ):
                        retries.start_soon(alone, item, request)
                    else:
                        finish(item, error)

        def pack(
            support: BulkSupport,
        ) -> list[tuple[BulkBatch, dict[str, tuple[Staged, ScimRequest]]]]:
            """The staged user actions with something to send, in Bulk requests."""
            batches = []
            batch = BulkBatch(support.max_operations, support.max_payload_size)
            sent: dict[str, tuple[Staged, ScimRequest]] = {}
            for item in items:
                if item.action == DELETE_GROUP:
                    continue
                request = request_for(item)
                if request is None:
                    continue
                bulk_id, path = str(item.id), f"/Users/{item.scim_id}"  # JSON, not a URL
                op = (
                    bulk.delete_operation(bulk_id, path)
                    if item.action == "delete"
                    else bulk.patch_operation(
                        bulk_id, path, rq.patch_operations({"active": False}, self.dialect)
                    )
                )
                if not batch.fits(op):
                    batches.append((batch, sent))
                    batch = BulkBatch(support.max_operations, support.max_payload_size)
                    sent = {}
                batch.add(bulk_id, op)
                sent[bulk_id] = (item, request)
            if len(batch):
                batches.append((batch, sent))
            return batches

        try:
            async with anyio.create_task_group() as tg:
                if self.bulk_limits is None:
                    for item in items:
                        tg.start_soon(one, item)
                else:
                    for item in items:
                        if item.action == DELETE_GROUP:
                            tg.start_soon(one_group, item)
                    for batch, sent in pack(self.bulk_limits):
                        tg.start_soon(in_bulk, batch, sent)
        finally:
            with anyio.CancelScope(shield=True):
                if writes:
                    await self.ls.log_outcomes(run, writes, self.counts)
                for gid in forget:
                    await self.ls.forget_user(gid)
                for gid in forget_groups:
                    await self.ls.forget_group(gid)
                await self.ls.set_staged_status(done, "done")
                await self.ls.set_staged_status(failed, "failed")

    # -- groups -------------------------------------------------------------------------------

    async def sync_groups(self, run: Run, sources: ScopeSources) -> None:
        known = await self.ls.groups()
        writes: list[UserWrite] = []
        for group in sources.groups:
            try:
                writes += await self._group(group, known.get(group.graph_id))
            except TargetAuthError:
                raise
            except TargetError as exc:
                self._bump("failed")
                writes.append(
                    UserWrite(group.graph_id, group.display_name, "group", "failure", str(exc))
                )
        if writes:
            await self.ls.log_outcomes(run, writes, self.counts)

    async def _group(self, group: SourceGroup, state: GroupState | None) -> list[UserWrite]:
        out: list[UserWrite] = []
        name = group.display_name
        found = None
        if state is None:
            matched, _ = list_resources(await self.scim.send(rg.find_group(name)))
            found = str(matched[0]["id"]) if matched else None
        current = state.members if state is not None else frozenset()
        wanted = await self.ls.scim_ids(group.members)
        leaving = leaving_members(wanted, current)
        owners = await self.store.owners(leaving) if leaving else {}
        op, adds, removes = plan_group(group, state, found, wanted, current, owners)
        add, remove = sorted(set(adds.values())), sorted(removes.values())
        if self.group_guard is not None and op.action != "skip":
            held = self.group_guard(op)
            if held is not None:
                self._bump(HELD_BACK)
                return [
                    UserWrite(
                        group.graph_id, name, "group", "skipped", held, op.scim_id, held_back=True
                    )
                ]

        def done(reason: str, scim_id: str, modified: str | None = None) -> None:
            out.append(
                UserWrite(
                    group.graph_id, name, "group", "success", reason, scim_id, modified=modified
                )
            )

        if op.action == "link":
            assert found is not None
            scim_id = found
            await self.ls.put_group(group.graph_id, scim_id, name)
            done("group matched by displayName", scim_id)
        elif op.action == "create":
            doc = await self.scim.send(rg.create_group(name, group.graph_id))
            scim_id = str(doc["id"])
            self._bump("groups created")
            await self.ls.put_group(group.graph_id, scim_id, name)
            done("group created", scim_id)
        else:
            assert state is not None
            scim_id = state.scim_id
            if op.renamed_from is not None:
                await self.scim.send(rg.rename_group(scim_id, name, self.dialect))
                await self.ls.put_group(group.graph_id, scim_id, name)
                modified = _json.dumps({"displayName": name}).decode()
                done(f"renamed from {state.display_name!r}", scim_id, modified)
        for kind, ids in (("add", add), ("remove", remove)):
            if ids:
                await self._members(group.graph_id, scim_id, kind, ids)
                verb = "added" if kind == "add" else "removed"
                self._bump(f"members {verb}", len(ids))
                done(f"{len(ids)} member(s) {verb}", scim_id)
        return out

    async def _members(self, graph_id: str, scim_id: str, kind: str, ids: list[str]) -> None:
        """Send in chunks; a 400/413 on a chunk of more than one member halves it."""
        size = self.cfg.groups.member_chunk
        todo = [ids[i : i + size] for i in range(0, len(ids), size)]
        while todo:
            chunk = todo.pop(0)
            try:
                await self.scim.send(rg.change_members(scim_id, kind, chunk, self.dialect))
            except TargetRejected as exc:
                if exc.status in (400, 413) and len(chunk) > 1:
                    half = len(chunk) // 2
                    todo[:0] = [chunk[:half], chunk[half:]]
                    continue
                raise
            if kind == "add":
                await self.ls.change_members(graph_id, chunk, ())
            else:
                await self.ls.change_members(graph_id, (), chunk)


async def approve(
    store: StateStore, scim: ScimClient, cfg: Config, ids: Sequence[int] | None = None
) -> dict[str, int]:
    """Run held actions (all, or these ids), logged under the run that staged them."""
    ls = LifecycleStore(store)
    held = await ls.staged(status=("held",))
    if ids is not None:
        wanted = set(ids)
        held = [s for s in held if s.id in wanted]
    counts: dict[str, int] = {}
    by_run: dict[int, list[Staged]] = {}
    for s in held:
        by_run.setdefault(s.run_id, []).append(s)
    support = await scim.bulk_support() if held and cfg.target.bulk else None
    life = Lifecycle(cfg, store, scim, counts, bulk_limits=support)
    for run_id, items in by_run.items():
        run = await ls.run_by_id(run_id)
        assert run is not None
        await life.execute(run, items)
    return counts
