"""Groups, after the users: one target group per Entra group, and its members.

When ``groups.enabled`` (or ``scope.mode = "assigned"``) a cycle reads the groups to provision
(:mod:`~bulkprov.pipeline.sources`); once the users are provisioned, :class:`GroupSync` creates
each group (matched by displayName first), renames it, and sends membership add/remove PATCHes
diffed against the members recorded in SQLite, in chunks of ``groups.member_chunk``, halved
when the target answers 400/413. Groups that left scope are deleted through the staging and
threshold of :mod:`~bulkprov.pipeline.deprovision`.

``bulkprov plan`` decides groups through the same :func:`plan_group`; under ``bulkprov
apply`` the :data:`GroupGuard` holds back every group operation (:class:`GroupOp`) the plan
did not show.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bulkprov import _json
from bulkprov.checkpoint.staging import GroupState, LifecycleStore
from bulkprov.checkpoint.store import Run, StateStore, UserWrite
from bulkprov.config import Config
from bulkprov.errors import TargetAuthError, TargetError, TargetRejected
from bulkprov.graph.directory import ScopeSources, SourceGroup
from bulkprov.pipeline.stats import HELD_BACK, bump
from bulkprov.scim import groups as rg
from bulkprov.scim.client import ScimClient
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

    async def sync(self, run: Run, sources: ScopeSources) -> None:
        """Provision every group of ``sources``; a group's target error is its failure."""
        known = await self.ls.groups()
        writes: list[UserWrite] = []
        for group in sources.groups:
            try:
                writes += await self._group(group, known.get(group.graph_id))
            except TargetAuthError:
                raise
            except TargetError as exc:
                bump(self.counts, "failed")
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
                bump(self.counts, HELD_BACK)
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
            bump(self.counts, "groups created")
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
                bump(self.counts, f"members {verb}", len(ids))
                done(f"{len(ids)} member(s) {verb}", scim_id)
        return out

    async def _members(self, graph_id: str, scim_id: str, kind: str, ids: list[str]) -> None:
        """Send in chunks; a 400/413 on a chunk of more than one member halves it."""
        target = self.cfg.target
        todo = rg.member_chunks(
            scim_id,
            kind,
            ids,
            count=self.cfg.groups.member_chunk,
            # Zoom refuses group PATCH bodies over 100,000 characters: chunk by size too
            max_chars=target.zoom.group_patch_chars if target.zoom_profile else None,
            dialect=self.dialect,
        )
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
