"""The end of a cycle: deprovisioning with accidental-deletion prevention.

A cycle's user phase (:mod:`~bulkprov.pipeline.pages`) creates and updates at once but only
*stages* disables and deletes, in SQLite, in the same transaction as the page that decided
them. When — and only when — the source read completed, this module's
:class:`Deprovisioner`:

1. after a full read, stages a disable for every active managed user the read did not list
   (hard-deleted, or gone while no delta token covered it: mark and sweep); provisioned
   groups that left scope (unassigned, or deleted in Entra) are staged for ``DELETE
   /Groups/{id}`` — Entra's group delete (facts.md §2.3 "Groups") — and, as Entra's "Groups
   evaluated for deletion count towards the deletion threshold" (ACCDEL, facts.md §2.5),
   they count with the users' disables and deletes. A target group is never deleted while
   another Entra group owns it: Entra groups an older bulkprov linked to one target group
   are first released to one owner (:func:`~bulkprov.pipeline.groups.release_shared`);
2. counts the cycle's staged actions: more than ``deprovision.threshold`` (Entra's "Anything
   above the threshold", facts.md §2.5) executes none of them — they become ``held``,
   ``bulkprov staged`` lists them and ``bulkprov approve`` runs them; otherwise they run now
   (PATCH ``active=false``, or DELETE for a hard delete when configured; in SCIM Bulk
   requests when ``target.bulk`` is on and the target offers Bulk).

A read that failed (a 503 halfway, an expired page link) never reaches this module, so a
partial read deprovisions nothing; the staged rows wait for the resumed run to complete.

``bulkprov plan`` decides groups through the same
:func:`~bulkprov.pipeline.groups.plan_group` and reads the same sources
(:func:`~bulkprov.pipeline.sources.read_cycle_sources` with ``dry_run``); under ``bulkprov
apply`` the guards hold back every sweep disable and group operation
(:class:`~bulkprov.pipeline.groups.GroupOp`) the plan did not show. What is held back is
counted (:data:`~bulkprov.pipeline.stats.HELD_BACK`, with the users the read held back) and
counts toward the threshold as if it were staged: a held-back operation may be a
deprovision, or stand for one the plan showed, so apply never sends a batch of disables and
deletes that the threshold would have stopped with it included. And when the plan itself
showed the staged actions held by the threshold, apply holds them all (``hold_staged``).
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from bulkprov.checkpoint.staging import DELETE_GROUP, LifecycleStore, Staged
from bulkprov.checkpoint.store import Run, StateStore, UserWrite, disabled
from bulkprov.config import Config
from bulkprov.errors import TargetError, TargetRejected, TargetStop
from bulkprov.graph.directory import ScopeSources
from bulkprov.pipeline.decide import Decision
from bulkprov.pipeline.groups import GroupGuard, GroupOp, release_shared
from bulkprov.pipeline.messages import UserGuard
from bulkprov.pipeline.stats import HELD_BACK, bump
from bulkprov.scim import bulk
from bulkprov.scim import groups as rg
from bulkprov.scim import requests as rq
from bulkprov.scim.bulk import BulkBatch, BulkSupport
from bulkprov.scim.client import ScimClient
from bulkprov.scim.requests import ScimRequest

#: why the sweep after a full read disables a managed user the read did not list
GONE_REASON = "no longer listed by Microsoft Graph (deleted)"
GROUP_LEAVING_REASON = "group no longer assigned or no longer in Microsoft Graph"


class Deprovisioner:
    """Stages, counts against the threshold, and sends a cycle's disables and deletes."""

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

    async def deprovision(
        self, run: Run, *, full_read: bool, sources: ScopeSources | None = None
    ) -> str | None:
        """Sweep (full reads), apply the threshold, run or hold; returns a note when held.

        ``sources`` is the cycle's complete group read (``None`` when groups are not
        provisioned: then no group is ever deleted).
        """
        await self.ls.drop_group_escrow()
        if sources is not None:
            in_scope = {g.graph_id for g in sources.groups}
            group_writes = await self._release_shared(in_scope)
            leaving = await self.ls.groups_leaving(run, in_scope)
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
                bump(self.counts, "staged", sum(1 for w in group_writes if w.stage is not None))
                bump(self.counts, HELD_BACK, sum(1 for w in group_writes if w.held_back))
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
                bump(self.counts, "staged", sum(1 for w in writes if w.stage is not None))
                bump(self.counts, HELD_BACK, sum(1 for w in writes if w.held_back))
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
        bump(self.counts, "held", len(pending))
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
        except TargetStop:
            raise
        except TargetRejected as exc:
            return None if gone_ok and exc.status == 404 else exc
        except TargetError as exc:
            return exc
        return None

    async def _release_shared(self, in_scope: set[str]) -> list[UserWrite]:
        """Release the Entra groups that share a target group with another (an older
        version linked them by displayName); logged, nothing sent."""
        known = await self.ls.groups()
        writes = []
        for gid, keeper in release_shared(known, in_scope)[1].items():
            await self.ls.release_group(gid, keeper)
            sid, owner = known[gid].scim_id, known[keeper].display_name
            reason = (
                f"link to target group {sid} dropped: it belongs to Entra group {owner!r} "
                f"({keeper}) (one target group per Entra group); the target group is kept"
            )
            writes.append(UserWrite(gid, known[gid].display_name, "group", "success", reason, sid))
        return writes

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
        release: list[tuple[str, str]] = []  # (group, the one keeping its target group)

        def fail(item: Staged, action: str, error: TargetError) -> None:
            failed.append(item.id)
            bump(self.counts, "failed")
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
            owner = next(
                (g for g in groups.values() if g.scim_id == item.scim_id and g is not known), None
            )
            if owner is not None:
                # another Entra group owns this target group too: never delete it under it
                done.append(item.id)
                release.append((item.graph_id, owner.graph_id))
                reason = (
                    f"not deleted: target group {item.scim_id} belongs to Entra group "
                    f"{owner.display_name!r} ({owner.graph_id}) too"
                )
                writes.append(
                    UserWrite(
                        item.graph_id, item.user_name, "group", "success", reason, item.scim_id
                    )
                )
                return
            async with limiter:
                error = await self._send_staged(rg.delete_group(item.scim_id), gone_ok=True)
            if error is not None:
                fail(item, "group", error)
                return
            done.append(item.id)
            forget_groups.append(item.graph_id)
            bump(self.counts, "groups deleted")
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
                bump(self.counts, "deleted")
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
            bump(self.counts, "disabled")
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
            except TargetStop:
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
                for gid, keeper in release:  # after the tasks: one transaction at a time
                    await self.ls.release_group(gid, keeper)
                await self.ls.set_staged_status(done, "done")
                await self.ls.set_staged_status(failed, "failed")


async def approve(
    store: StateStore, scim: ScimClient, cfg: Config, ids: Sequence[int] | None = None
) -> dict[str, int]:
    """Run held actions (all, or these ids), logged under the run that staged them.

    Each run's stored counts are added to, never replaced: after two approvals of run 3's
    held actions its counts still hold what the run did plus both approvals. Returns what
    this approval did (summed over the runs).
    """
    ls = LifecycleStore(store)
    held = await ls.staged(status=("held",))
    if ids is not None:
        wanted = set(ids)
        held = [s for s in held if s.id in wanted]
    done: dict[str, int] = {}
    by_run: dict[int, list[Staged]] = {}
    for s in held:
        by_run.setdefault(s.run_id, []).append(s)
    support = await scim.bulk_support() if held and cfg.target.bulk else None
    for run_id, items in by_run.items():
        run = await ls.run_by_id(run_id)
        assert run is not None
        counts = dict(run.counts)  # saved with the outcomes: the run's own, added to
        before = dict(counts)
        await Deprovisioner(cfg, store, scim, counts, bulk_limits=support).execute(run, items)
        for key, value in counts.items():
            if value != before.get(key, 0):
                done[key] = done.get(key, 0) + value - before.get(key, 0)
    return done
