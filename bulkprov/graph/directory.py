"""Read who is assigned to the app, and the groups to provision, from Microsoft Graph.

"Sync only assigned users and groups" (facts.md §7.4): ``GET /servicePrincipals/{id}/
appRoleAssignedTo`` lists ``appRoleAssignment`` objects; a ``User`` principal is assigned
itself, a ``Group`` principal brings its *direct* members (``GET /groups/{id}/members``) —
Entra "can only read and provision users that are immediate members of an explicitly
assigned group" (HOWWORKS), so nested groups are not expanded unless ``flatten`` is asked.
The role of each assignment is resolved against the service principal's ``appRoles`` so
mappings can use ``[appRoleAssignments]`` (``SingleAppRoleAssignment`` reads ``value``).

Group members and names come from the mirror of Graph ``groups/delta`` kept in SQLite
(:mod:`bulkprov.graph.groups_delta`) when one is given — refreshed by the caller just
before — so a cycle does not read ``/groups/{id}/members`` per group; a group missing from
the mirror (replication lag) is read directly.

Everything is read completely before a cycle decides anything: a read that fails raises
:class:`~bulkprov.errors.SourceError`, and nothing is deprovisioned on partial data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from bulkprov import _json
from bulkprov.errors import SourceError
from bulkprov.graph.client import GraphClient

_USER = "#microsoft.graph.user"
_GROUP = "#microsoft.graph.group"


class GroupMirror(Protocol):
    """Groups as ``groups/delta`` last reported them (``LifecycleStore`` implements it)."""

    async def source_group(self, graph_id: str) -> tuple[str, list[tuple[str, str]]] | None: ...

    async def source_group_names(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class SourceGroup:
    graph_id: str
    display_name: str
    #: Graph ids of the member users (direct, or flattened when configured)
    members: tuple[str, ...]


@dataclass(slots=True)
class ScopeSources:
    """What the assignment scope and group provisioning need, read once per cycle."""

    #: user id → its app role assignments (with the role's ``value``/``displayName``);
    #: ``None`` in scope mode "all" (every user is assigned)
    assigned: dict[str, list[dict[str, Any]]] | None = None
    groups: list[SourceGroup] = field(default_factory=list)

    def roles_of(self, graph_id: str) -> list[dict[str, Any]]:
        return self.assigned.get(graph_id, []) if self.assigned is not None else []

    def snapshot(self) -> dict[str, str]:
        """user id → a canonical text of its roles, to diff against the last cycle's."""
        if self.assigned is None:
            return {}
        return {
            uid: _json.dumps(sorted(str(r.get("appRoleId")) for r in roles)).decode()
            for uid, roles in self.assigned.items()
        }


async def _collection(graph: GraphClient, url: str) -> AsyncIterator[dict[str, Any]]:
    async for page in graph.pages(url):
        for item in page.users:
            if isinstance(item, dict):
                yield item


async def _members(graph: GraphClient, group_id: str) -> list[dict[str, Any]]:
    url = f"{graph.base_url}/groups/{quote(group_id, safe='')}/members?$select=id&$top=999"
    return [m async for m in _collection(graph, url)]


async def _group_users(graph: GraphClient, group_id: str, flatten: bool) -> tuple[str, ...]:
    users: dict[str, None] = {}
    seen = {group_id}
    todo = [group_id]
    while todo:
        gid = todo.pop()
        for m in await _members(graph, gid):
            mid, kind = m.get("id"), m.get("@odata.type")
            if not isinstance(mid, str):
                continue
            if kind == _USER:
                users[mid] = None
            elif kind == _GROUP and flatten and mid not in seen:
                seen.add(mid)
                todo.append(mid)
    return tuple(users)


async def _mirror_users(
    mirror: GroupMirror, group_id: str, flatten: bool
) -> tuple[str, ...] | None:
    """Like :func:`_group_users` from the mirror; ``None`` if a group needed is not in it."""
    users: dict[str, None] = {}
    seen = {group_id}
    todo = [group_id]
    while todo:
        found = await mirror.source_group(todo.pop())
        if found is None:
            return None
        for mid, kind in found[1]:
            if kind == "user":
                users[mid] = None
            elif flatten and mid not in seen:
                seen.add(mid)
                todo.append(mid)
    return tuple(users)


async def read_sources(
    graph: GraphClient,
    *,
    mode: str,
    service_principal_id: str | None,
    groups: bool,
    flatten: bool,
    mirror: GroupMirror | None = None,
) -> ScopeSources:
    """Read assignments (mode "assigned") and the groups to provision (when ``groups``)."""
    out = ScopeSources()
    group_names: dict[str, str] = {}
    cache: dict[str, tuple[str, ...]] = {}

    async def members_of(gid: str) -> tuple[str, ...]:
        if gid not in cache:
            found = await _mirror_users(mirror, gid, flatten) if mirror is not None else None
            cache[gid] = found if found is not None else await _group_users(graph, gid, flatten)
        return cache[gid]

    async def name_of(gid: str) -> object:
        if mirror is not None and (found := await mirror.source_group(gid)) is not None:
            return found[0]
        doc = await graph.get_json(
            f"{graph.base_url}/groups/{quote(gid, safe='')}?$select=id,displayName"
        )
        return doc.get("displayName") if isinstance(doc, dict) else None

    if mode == "assigned":
        assert service_principal_id is not None
        sp = quote(service_principal_id, safe="")
        doc = await graph.get_json(f"{graph.base_url}/servicePrincipals/{sp}?$select=id,appRoles")
        roles = {
            str(r.get("id")): r
            for r in (doc.get("appRoles") or [] if isinstance(doc, dict) else [])
            if isinstance(r, dict)
        }
        assigned: dict[str, list[dict[str, Any]]] = {}
        group_roles: dict[str, list[dict[str, Any]]] = {}
        url = f"{graph.base_url}/servicePrincipals/{sp}/appRoleAssignedTo?$top=999"
        async for a in _collection(graph, url):
            pid, kind = a.get("principalId"), a.get("principalType")
            if not isinstance(pid, str):
                continue
            role = roles.get(str(a.get("appRoleId")), {})
            entry = {
                **a,
                "value": role.get("value"),
                "displayName": role.get("displayName"),
            }
            if kind == "User":
                assigned.setdefault(pid, []).append(entry)
            elif kind == "Group":
                group_roles.setdefault(pid, []).append(entry)
                group_names[pid] = str(a.get("principalDisplayName") or "")
        for gid, entries in group_roles.items():
            for uid in await members_of(gid):
                assigned.setdefault(uid, []).extend(entries)
        out.assigned = assigned
    elif groups and mirror is not None:
        group_names = await mirror.source_group_names()
    elif groups:
        async for g in _collection(
            graph, f"{graph.base_url}/groups?$select=id,displayName&$top=999"
        ):
            if isinstance(g.get("id"), str):
                group_names[g["id"]] = str(g.get("displayName") or "")
    if groups:
        for gid, listed in group_names.items():
            # the mirror's and the /groups listing's names are current; an assignment's
            # principalDisplayName is only read again from the group itself
            name = listed if mode != "assigned" and listed else await name_of(gid)
            if not isinstance(name, str) or not name:
                raise SourceError(f"Graph group {gid} has no displayName")
            out.groups.append(SourceGroup(gid, name, await members_of(gid)))
    return out
