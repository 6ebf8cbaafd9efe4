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
   they run now (PATCH ``active=false``, or DELETE for a hard delete when configured);
3. provisions groups: create (matched by displayName first), rename, and membership
   add/remove PATCHes diffed against the members recorded in SQLite, in chunks of
   ``groups.member_chunk``, halved when the target answers 400/413.

A read that failed (a 503 halfway, an expired page link) never reaches this module, so a
partial read deprovisions nothing; the staged rows wait for the resumed run to complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import anyio

from . import _json
from .checkpoint.lifecycle import DELETE_GROUP, GROUPS_DELTA, LifecycleStore, Staged
from .checkpoint.store import Run, StateStore, UserWrite
from .config import Config
from .errors import TargetAuthError, TargetError, TargetRejected
from .graph.client import GraphClient
from .graph.directory import ScopeSources, SourceGroup
from .graph.groups_delta import read_groups_delta
from .scim import groups as rg
from .scim import requests as rq
from .scim.client import ScimClient
from .scim.responses import list_resources


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
        self, cfg: Config, store: StateStore, scim: ScimClient, counts: dict[str, int]
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.ls = LifecycleStore(store)
        self.scim = scim
        self.counts = counts
        self.dialect = cfg.target.patch_dialect

    def _bump(self, key: str, n: int = 1) -> None:
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
            group_writes = [
                UserWrite(
                    gid,
                    name,
                    "group",
                    "skipped",
                    reason="staged: group no longer assigned or no longer in Microsoft Graph",
                    scim_id=sid,
                    stage=DELETE_GROUP,
                )
                for gid, sid, name in leaving
            ]
            if group_writes:
                await self.ls.log_outcomes(run, group_writes)
                self._bump("staged", len(group_writes))
        if full_read:
            gone = await self.ls.unseen_managed(run)
            writes = [
                UserWrite(
                    gid,
                    name,
                    "disable",
                    "skipped",
                    reason="staged: no longer listed by Microsoft Graph (deleted)",
                    scim_id=sid,
                    stage="disable",
                )
                for gid, sid, name in gone
            ]
            if writes:
                await self.ls.log_outcomes(run, writes)
                self._bump("staged", len(writes))
        await self.ls.supersede(run, full=full_read)
        pending = await self.ls.staged(status=("pending",), run_id=run.id)
        if not pending:
            return None
        dp = self.cfg.deprovision
        if dp.prevent_accidental_deletion and len(pending) > dp.threshold:
            await self.ls.set_staged_status((s.id for s in pending), "held")
            self._bump("held", len(pending))
            return (
                f"{len(pending)} disables/deletes exceed the accidental-deletion threshold "
                f"({dp.threshold}); none were sent. Review them with `bulkprov staged` and "
                "run them with `bulkprov approve`"
            )
        await self.execute(run, pending)
        return None

    async def execute(self, run: Run, items: Sequence[Staged]) -> None:
        """Send staged disables/deletes (concurrently), log each, mark each done or failed."""
        states = await self.store.lookup_users(
            [s.graph_id for s in items if s.action != DELETE_GROUP]
        )
        groups = await self.ls.groups() if any(s.action == DELETE_GROUP for s in items) else {}
        limiter = anyio.CapacityLimiter(self.cfg.target.concurrency)
        writes: list[UserWrite] = []
        done: list[int] = []
        failed: list[int] = []
        forget: list[str] = []
        forget_groups: list[str] = []

        async def one_group(item: Staged) -> None:
            known = groups.get(item.graph_id)
            if known is None or known.scim_id != item.scim_id:
                done.append(item.id)  # deleted or relinked since: nothing to do
                return
            async with limiter:
                try:
                    try:
                        await self.scim.send(rg.delete_group(item.scim_id))
                    except TargetRejected as exc:
                        if exc.status != 404:  # already gone is what we wanted
                            raise
                except TargetAuthError:
                    raise
                except TargetError as exc:
                    failed.append(item.id)
                    self._bump("failed")
                    writes.append(
                        UserWrite(
                            item.graph_id,
                            item.user_name,
                            "group",
                            "failure",
                            str(exc),
                            item.scim_id,
                        )
                    )
                    return
            done.append(item.id)
            forget_groups.append(item.graph_id)
            self._bump("groups deleted")
            reason = (item.reason or "").removeprefix("staged: ") + "; group deleted"
            writes.append(
                UserWrite(item.graph_id, item.user_name, "group", "success", reason, item.scim_id)
            )

        async def one(item: Staged) -> None:
            if item.action == DELETE_GROUP:
                await one_group(item)
                return
            state = states.get(item.graph_id)
            if state is None or state.scim_id != item.scim_id:
                done.append(item.id)  # deleted or relinked since: nothing to do
                return
            if item.action == "disable" and not state.active:
                done.append(item.id)
                return
            async with limiter:
                try:
                    if item.action == "delete":
                        try:
                            await self.scim.send(rq.delete_user(item.scim_id))
                        except TargetRejected as exc:
                            if exc.status != 404:  # already gone is what we wanted
                                raise
                    else:
                        await self.scim.send(rq.set_active(item.scim_id, False, self.dialect))
                except TargetAuthError:
                    raise
                except TargetError as exc:
                    failed.append(item.id)
                    self._bump("failed")
                    writes.append(
                        UserWrite(
                            item.graph_id,
                            item.user_name,
                            item.action,
                            "failure",
                            reason=str(exc),
                            scim_id=item.scim_id,
                        )
                    )
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
            attrs = dict(state.attrs or {})
            attrs["active"] = False
            self._bump("disabled")
            writes.append(
                UserWrite(
                    item.graph_id,
                    item.user_name,
                    "disable",
                    "success",
                    reason=reason,
                    scim_id=item.scim_id,
                    attrs=_json.dumps(attrs),
                    active=False,
                    modified='{"active":false}',
                    link=True,
                )
            )

        try:
            async with anyio.create_task_group() as tg:
                for item in items:
                    tg.start_soon(one, item)
        finally:
            with anyio.CancelScope(shield=True):
                if writes:
                    await self.ls.log_outcomes(run, writes)
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
            await self.ls.log_outcomes(run, writes)

    async def _group(self, group: SourceGroup, state: Any) -> list[UserWrite]:
        out: list[UserWrite] = []
        name = group.display_name
        if state is None:
            found, _ = list_resources(await self.scim.send(rg.find_group(name)))
            if found:
                scim_id, how = str(found[0]["id"]), "group matched by displayName"
            else:
                doc = await self.scim.send(rg.create_group(name, group.graph_id))
                scim_id, how = str(doc["id"]), "group created"
                self._bump("groups created")
            await self.ls.put_group(group.graph_id, scim_id, name)
            out.append(UserWrite(group.graph_id, name, "group", "success", how, scim_id))
            current: frozenset[str] = frozenset()
        else:
            scim_id, current = state.scim_id, state.members
            if state.display_name != name:
                await self.scim.send(rg.rename_group(scim_id, name, self.dialect))
                await self.ls.put_group(group.graph_id, scim_id, name)
                out.append(
                    UserWrite(
                        group.graph_id,
                        name,
                        "group",
                        "success",
                        f"renamed from {state.display_name!r}",
                        scim_id,
                        modified=_json.dumps({"displayName": name}).decode(),
                    )
                )
        wanted = set((await self.ls.scim_ids(group.members)).values())
        add = sorted(wanted - current)
        remove = sorted(current - wanted)
        for kind, ids in (("add", add), ("remove", remove)):
            if ids:
                await self._members(group.graph_id, scim_id, kind, ids)
                self._bump(f"members {'added' if kind == 'add' else 'removed'}", len(ids))
                out.append(
                    UserWrite(
                        group.graph_id,
                        name,
                        "group",
                        "success",
                        f"{len(ids)} member(s) {'added' if kind == 'add' else 'removed'}",
                        scim_id,
                    )
                )
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
    life = Lifecycle(cfg, store, scim, counts)
    for run_id, items in by_run.items():
        run = await ls.run_by_id(run_id)
        assert run is not None
        await life.execute(run, items)
    return counts
