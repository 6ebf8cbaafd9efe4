"""Read group memberships with Graph ``groups/delta`` instead of one read per group.

``GET /groups/delta?$select=displayName&$expand=members`` (facts.md §7.3) lists every group
with its direct members in ``members@delta`` on the first round, and from the saved
deltaLink only the groups that changed: renamed, deleted (``@removed``), or with members
added or removed (a removed member carries ``"@removed"``). A large group is split over
several pages and the same group repeats with the next members, so pages are merged here
before anything is applied. The merged result is applied to a mirror of the groups in
SQLite (:meth:`~bulkprov.checkpoint.staging.LifecycleStore.apply_group_delta`); a cycle
with no group change therefore costs one delta page and no per-group member read.

:func:`merge` is pure (tested without a network); :func:`read_groups_delta` does the I/O;
:class:`DeltaOverlay` answers what the mirror would hold once a round is applied, without
applying it (``bulkprov plan`` writes no state).
An expired token (410 / ``syncStateNotFound``) falls back to a first round: a full read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bulkprov.errors import DeltaExpired
from bulkprov.graph.client import GraphClient
from bulkprov.graph.directory import GroupMirror

USER, GROUP = "user", "group"


@dataclass(slots=True)
class GroupDelta:
    """The merged outcome of one ``groups/delta`` round."""

    #: a first round: it lists every group, and replaces the mirror
    full: bool
    #: group id → displayName, for groups listed with their properties
    names: dict[str, str] = field(default_factory=dict)
    #: group id → {member id: USER or GROUP} added (all members, on a first round)
    added: dict[str, dict[str, str]] = field(default_factory=dict)
    #: group id → member ids removed
    removed: dict[str, set[str]] = field(default_factory=dict)
    #: groups deleted in Entra
    deleted: set[str] = field(default_factory=set)
    delta_link: str | None = None


def merge(pages: Iterable[list[Any]], *, full: bool) -> GroupDelta:
    """Merge the ``value`` lists of one round, in page order (later entries win)."""
    out = GroupDelta(full)
    for value in pages:
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            gid = item["id"]
            if "@removed" in item:
                out.deleted.add(gid)
                out.names.pop(gid, None)
                out.added.pop(gid, None)
                out.removed.pop(gid, None)
                continue
            out.deleted.discard(gid)
            name = item.get("displayName")
            if isinstance(name, str):
                out.names[gid] = name
            added = out.added.setdefault(gid, {})
            removed = out.removed.setdefault(gid, set())
            for m in item.get("members@delta") or ():
                mid = m.get("id") if isinstance(m, dict) else None
                if not isinstance(mid, str):
                    continue
                if "@removed" in m:
                    removed.add(mid)
                    added.pop(mid, None)
                else:
                    kind = GROUP if m.get("@odata.type") == "#microsoft.graph.group" else USER
                    added[mid] = kind
                    removed.discard(mid)
    return out


def first_round(graph: GraphClient) -> str:
    return f"{graph.base_url}/groups/delta?$select=displayName&$expand=members"


async def read_groups_delta(
    graph: GraphClient, link: str | None, *, page_size: int = 999
) -> GroupDelta:
    """Read one whole round (from ``link``, or a first round); never partially applied."""
    prefer = {"Prefer": f"odata.maxpagesize={page_size}"}

    async def read(start: str, full: bool) -> GroupDelta:
        values: list[list[Any]] = []
        end: str | None = None
        async for page in graph.pages(start, headers=prefer):
            values.append(page.users)
            end = page.delta_link or end
        delta = merge(values, full=full)
        delta.delta_link = end
        return delta

    if link is None:
        return await read(first_round(graph), True)
    try:
        return await read(link, False)
    except DeltaExpired:
        # Graph forgot the sync state (seven days for directory objects, facts.md §7.3):
        # start over; the mirror is replaced by the complete first round.
        return await read(first_round(graph), True)


class DeltaOverlay:
    """A group mirror as it would be once ``delta`` is applied to ``base``, in memory.

    ``bulkprov plan`` reads the same ``groups/delta`` round a sync reads but writes no
    state: this answers what :meth:`~bulkprov.checkpoint.staging.LifecycleStore.
    apply_group_delta` would leave in the mirror (a first round replaces it; deleted groups
    go, with their memberships; names are upserted; members added, then removed).
    """

    def __init__(self, base: GroupMirror, delta: GroupDelta) -> None:
        self.base = base
        self.delta = delta

    async def source_group_names(self) -> dict[str, str]:
        d = self.delta
        names = {} if d.full else await self.base.source_group_names()
        names = {gid: name for gid, name in names.items() if gid not in d.deleted}
        names.update(d.names)
        return names

    async def source_group(self, graph_id: str) -> tuple[str, list[tuple[str, str]]] | None:
        d = self.delta
        if graph_id in d.deleted:
            return None
        found = None if d.full else await self.base.source_group(graph_id)
        name = d.names.get(graph_id, found[0] if found is not None else None)
        if name is None:
            return None
        members = {mid: kind for mid, kind in (found[1] if found else ()) if mid not in d.deleted}
        for mid, kind in d.added.get(graph_id, {}).items():
            members.pop(mid, None)  # INSERT OR REPLACE: the row moves to the end
            members[mid] = kind
        for mid in d.removed.get(graph_id, ()):
            members.pop(mid, None)
        return name, list(members.items())
