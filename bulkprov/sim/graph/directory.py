"""The simulated tenant's lifecycle surface: delta query, groups and app role assignments.

Served by :class:`~bulkprov.sim.graph.tenant.GraphTenant` under ``/v1.0`` (facts.md §7.3,
§7.4):

* ``GET /users/delta``: the initial round lists every live user over pages linked by
  ``@odata.nextLink`` and ends with ``@odata.deltaLink``; a round started from that link
  lists only users changed since, a soft-deleted one as ``{"id", "@removed": {"reason":
  "changed"}}`` and a hard-deleted one with ``"deleted"``. ``$select`` is given once and
  carried inside the (HMAC-signed, opaque) tokens, as Graph does. Page size follows
  ``Prefer: odata.maxpagesize=N`` (default 100). A token older than
  :meth:`Directory.expire_delta_tokens` answers ``410 Gone`` with ``syncStateNotFound``
  and a ``Location`` to restart from, as Graph does for an expired sync state. With
  ``Prefer: return=minimal`` (or the tenant's ``delta_changed_only``), a changed user is
  listed with its id and only the properties changed since the round's token, a property
  cleared as ``null``; a user added or restored since is listed whole.
* ``GET /groups/delta?$select=displayName&$expand=members`` (facts.md §7.3): the initial
  round lists every group with its direct members in ``members@delta``; a large group is
  split over several pages (the same group repeats with the next members; clients merge),
  pages holding about ``odata.maxpagesize`` objects (a group and each member count one). A
  round from the deltaLink lists only groups changed since: property changes, members
  added, members removed (``"@removed": {"reason": "deleted"}``), and deleted groups as
  ``{"id", "@removed": {"reason": "deleted"}}``. Expired tokens answer 410 as for users.
* ``GET /groups`` and ``/groups/{id}``; ``GET /groups/{id}/members``: direct members only
  (users and nested groups, each with its ``@odata.type``), paged with ``$top``.
* ``GET /servicePrincipals/{id}`` (with its ``appRoles``) and
  ``GET /servicePrincipals/{id}/appRoleAssignedTo``: ``appRoleAssignment`` objects for the
  users and groups assigned to the app, paged with ``$top``.

Every change a test makes (:meth:`GraphTenant.update_user`, deletes, restores, adds)
bumps a version; a delta round reports the users whose version is newer than its token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from bulkprov.sim.graph.odata import parse_select
from bulkprov.sim.http import SimRequest, SimResponse, json_response
from bulkprov.sim.users import DEFAULT_SELECT, user_id

#: appRoleId of "Default Access" (an assignment without a specific role)
DEFAULT_ACCESS = "00000000-0000-0000-0000-000000000000"
_MAXPAGESIZE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
_RETURN_MINIMAL = re.compile(r"return\s*=\s*minimal", re.IGNORECASE)


class TenantView(Protocol):
    """What a :class:`Directory` reads (and counts) of the tenant it belongs to.

    :class:`~bulkprov.sim.graph.tenant.GraphTenant` is the one implementation. The directory
    names this protocol instead of importing that class because tenant.py imports this module
    to build its directory: naming the class here made the two modules an import cycle. The
    private members are the tenant's user slots, which the delta rounds page over.
    """

    seed: int
    client_id: str
    counters: dict[str, int]
    #: rounds of changes list changed-only entries even without ``Prefer: return=minimal``
    delta_changed_only: bool
    _key: bytes  # signs the delta tokens, as it signs the tenant's skiptokens
    _slots: int
    _gone: set[int]
    _soft_deleted: dict[int, str]
    _overrides: dict[int, dict[str, Any]]

    def get_user(self, key: str) -> dict[str, Any] | None:
        """A live user by id or UPN, or ``None``."""
        ...

    def served(self, slot: int, select: tuple[str, ...]) -> Any:
        """What a page holds for ``slot``."""
        ...

    def _base(self, req: SimRequest) -> str: ...


class Directory:
    """Groups, assignments and change tracking of one
    :class:`~bulkprov.sim.graph.tenant.GraphTenant`."""

    def __init__(self, tenant: TenantView, service_principal_id: str | None = None) -> None:
        self.tenant = tenant
        self.version = 0
        #: slot → version of its last change
        self.changed: dict[int, int] = {}
        #: slot → property → version of its last change; slot → version it was last
        #: added or restored (listed whole): what a changed-only delta entry holds
        self.changed_props: dict[int, dict[str, int]] = {}
        self.whole: dict[int, int] = {}
        self.hard_deleted: set[int] = set()
        #: delta tokens below this version are expired (410 syncStateNotFound)
        self.floor = 0
        self.groups: dict[str, dict[str, Any]] = {}  # id → {"id","displayName",...,"members"}
        self.service_principal_id = service_principal_id or str(
            uuid.UUID(bytes=hashlib.sha256(f"sp:{tenant.seed}".encode()).digest()[:16], version=4)
        )
        self.app_roles: list[dict[str, Any]] = [
            {
                "id": DEFAULT_ACCESS,
                "value": None,
                "displayName": "Default Access",
                "allowedMemberTypes": ["User"],
                "isEnabled": True,
            }
        ]
        self.assignments: dict[str, dict[str, Any]] = {}  # assignment id → appRoleAssignment
        #: group id → version of its last property change; deleted group id → version
        self.group_changed: dict[str, int] = {}
        self.group_removed: dict[str, int] = {}
        #: (version, group id, member id, added?) — what ``groups/delta`` rounds report
        self.member_log: list[tuple[int, str, str, bool]] = []

    # ------------------------------------------------------------------ Python test API

    def touch(
        self, slot: int, *, hard_delete: bool = False, props: Iterable[str] | None = None
    ) -> None:
        """Record a change to the user in ``slot`` (called by the tenant's mutations).

        ``props``: the properties that changed (an update); ``None``: the whole user (added,
        restored, deleted), which a changed-only delta entry then lists in full.
        """
        self.version += 1
        self.changed[slot] = self.version
        if props is None:
            self.whole[slot] = self.version
        else:
            stamps = self.changed_props.setdefault(slot, {})
            for name in props:
                stamps[name] = self.version
        if hard_delete:
            self.hard_deleted.add(slot)
        else:
            self.hard_deleted.discard(slot)

    def expire_delta_tokens(self) -> None:
        """Every deltaLink handed out so far stops working (Graph keeps them ~7 days)."""
        self.version += 1
        self.floor = self.version

    def add_app_role(self, value: str, display_name: str | None = None) -> dict[str, Any]:
        """Define an app role (``value`` is what ``SingleAppRoleAssignment`` returns)."""
        role = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"role:{value}")),
            "value": value,
            "displayName": display_name or value,
            "allowedMemberTypes": ["User"],
            "isEnabled": True,
        }
        self.app_roles.append(role)
        return role

    def add_group(
        self, display_name: str, members: list[str] | None = None, group_id: str | None = None
    ) -> dict[str, Any]:
        """Create a group with direct ``members`` (user or group ids); returns the group."""
        gid = group_id or str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"group:{len(self.groups)}:{display_name}")
        )
        if gid in self.groups:
            raise ValueError(f"group {gid} exists")
        self.groups[gid] = {
            "id": gid,
            "displayName": display_name,
            "description": None,
            "mailNickname": re.sub(r"\W", "", display_name) or "group",
            "securityEnabled": True,
            "members": list(dict.fromkeys(members or [])),
        }
        self._group_touched(gid)
        for mid in self.groups[gid]["members"]:
            self.member_log.append((self.version, gid, mid, True))
        return self.group(gid)

    def group(self, group_id: str) -> dict[str, Any]:
        g = self.groups.get(group_id)
        if g is None:
            raise KeyError(group_id)
        return {**g, "members": list(g["members"])}

    def update_group(self, group_id: str, **changes: Any) -> dict[str, Any]:
        g = self.groups.get(group_id)
        if g is None:
            raise KeyError(group_id)
        changes.pop("id", None)
        changes.pop("members", None)
        g.update(changes)
        self._group_touched(group_id)
        return self.group(group_id)

    def add_member(self, group_id: str, member_id: str) -> None:
        g = self.groups.get(group_id)
        if g is None:
            raise KeyError(group_id)
        if member_id not in g["members"]:
            g["members"].append(member_id)
            self.version += 1
            self.member_log.append((self.version, group_id, member_id, True))

    def remove_member(self, group_id: str, member_id: str) -> None:
        g = self.groups.get(group_id)
        if g is None:
            raise KeyError(group_id)
        if member_id in g["members"]:
            g["members"].remove(member_id)
            self.version += 1
            self.member_log.append((self.version, group_id, member_id, False))

    def delete_group(self, group_id: str) -> None:
        if self.groups.pop(group_id, None) is None:
            raise KeyError(group_id)
        self.version += 1
        self.group_removed[group_id] = self.version
        self.group_changed.pop(group_id, None)
        for g in self.groups.values():
            if group_id in g["members"]:
                g["members"].remove(group_id)
                self.member_log.append((self.version, g["id"], group_id, False))
        for aid in [a for a, x in self.assignments.items() if x["principalId"] == group_id]:
            del self.assignments[aid]

    def _group_touched(self, group_id: str) -> None:
        self.version += 1
        self.group_changed[group_id] = self.version
        self.group_removed.pop(group_id, None)

    def assign(self, principal_id: str, app_role_id: str = DEFAULT_ACCESS) -> dict[str, Any]:
        """Assign a user or group (by object id) to the app; returns the appRoleAssignment."""
        if principal_id in self.groups:
            kind, name = "Group", self.groups[principal_id]["displayName"]
        else:
            user = self.tenant.get_user(principal_id)
            if user is None:
                raise KeyError(principal_id)
            kind, name = "User", user["displayName"]
        if not any(r["id"] == app_role_id for r in self.app_roles):
            raise ValueError(f"no app role {app_role_id}")
        aid = base64.urlsafe_b64encode(
            hashlib.sha256(f"{principal_id}:{app_role_id}".encode()).digest()[:24]
        ).decode()
        assignment = {
            "id": aid,
            "deletedDateTime": None,
            "appRoleId": app_role_id,
            "createdDateTime": "2026-01-01T00:00:00Z",
            "principalDisplayName": name,
            "principalId": principal_id,
            "principalType": kind,
            "resourceDisplayName": "Zoom",
            "resourceId": self.service_principal_id,
        }
        self.assignments[aid] = assignment
        return dict(assignment)

    def unassign(self, principal_id: str) -> int:
        """Remove every assignment of ``principal_id``; returns how many were removed."""
        gone = [a for a, x in self.assignments.items() if x["principalId"] == principal_id]
        for aid in gone:
            del self.assignments[aid]
        return len(gone)

    # ------------------------------------------------------------------------- HTTP

    def route(self, req: SimRequest, rest: str) -> SimResponse | None:
        """Serve a directory path under ``/v1.0/``, or ``None`` if it is not one."""
        parts = rest.strip("/").split("/")
        if parts == ["users", "delta"]:
            return self._users_delta(req)
        if parts == ["groups", "delta"]:
            return self._groups_delta(req)
        if parts[0] == "groups":
            if len(parts) == 1:
                return self._paged(req, "groups", [_group_doc(g) for g in self.groups.values()])
            g = self.groups.get(parts[1])
            if g is None:
                return _not_found(parts[1])
            if len(parts) == 2:
                return json_response(200, _group_doc(g), _GRAPH_JSON)
            if len(parts) == 3 and parts[2] == "members":
                self.tenant.counters["group_member_reads"] += 1
                return self._paged(req, f"groups/{parts[1]}/members", self._members(g))
        if parts[0] == "servicePrincipals" and len(parts) >= 2:
            if parts[1] != self.service_principal_id:
                return _not_found(parts[1])
            if len(parts) == 2:
                body = {
                    "id": self.service_principal_id,
                    "appId": self.tenant.client_id,
                    "displayName": "Zoom",
                    "appRoles": self.app_roles,
                }
                return json_response(200, body, _GRAPH_JSON)
            if len(parts) == 3 and parts[2] == "appRoleAssignedTo":
                return self._paged(
                    req,
                    f"servicePrincipals/{parts[1]}/appRoleAssignedTo",
                    list(self.assignments.values()),
                )
        return None

    def _members(self, g: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for mid in g["members"]:
            if mid in self.groups:
                out.append(
                    {"@odata.type": "#microsoft.graph.group", **_group_doc(self.groups[mid])}
                )
                continue
            user = self.tenant.get_user(mid)
            if user is not None:
                out.append(
                    {
                        "@odata.type": "#microsoft.graph.user",
                        "id": user["id"],
                        "displayName": user.get("displayName"),
                        "userPrincipalName": user.get("userPrincipalName"),
                    }
                )
        return out

    def _paged(self, req: SimRequest, segment: str, items: list[dict[str, Any]]) -> SimResponse:
        """A collection paged with ``$top`` and a signed ``$skiptoken`` (an offset)."""
        q = req.query
        try:
            top = int(q.get("$top", "100"))
        except ValueError:
            return _bad("Invalid $top")
        if not 1 <= top <= 999:
            return _bad(
                f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."
            )
        start = 0
        if "$skiptoken" in q:
            payload = self._decode(q["$skiptoken"])
            if payload is None or payload.get("k") != segment:
                return _bad("The specified page token value has expired or is invalid.")
            start = int(payload["o"])
        base = self.tenant._base(req)
        body: dict[str, Any] = {
            "@odata.context": f"{base}/v1.0/$metadata#{segment}",
            "value": items[start : start + top],
        }
        if start + top < len(items):
            token = self._encode({"k": segment, "o": start + top})
            body["@odata.nextLink"] = f"{base}/v1.0/{segment}?$top={top}&$skiptoken={token}"
        self.tenant.counters["pages"] += 1
        return json_response(200, body, _GRAPH_JSON)

    # delta -----------------------------------------------------------------------

    def _users_delta(self, req: SimRequest) -> SimResponse:
        q = req.query
        size = 100
        m = _MAXPAGESIZE.search(req.headers.get("prefer", ""))
        if m:
            size = max(1, min(999, int(m.group(1))))
        base = self.tenant._base(req)
        if "$deltatoken" in q or "$skiptoken" in q:
            token = q.get("$deltatoken") or q.get("$skiptoken") or ""
            state = self._decode(token)
            if state is None or state.get("k") != "users/delta":
                return _bad("The specified token value has expired or is invalid.")
            if state["p"] == "d":  # a deltaLink: a new round of changes since its version
                if state["f"] < self.floor:
                    return self._expired(base, state.get("s"), "users")
                state = {**state, "p": "c", "a": 0, "t": self.version}
            elif state["f"] < self.floor:
                return self._expired(base, state.get("s"), "users")
        else:
            fields = parse_select(q.get("$select"))
            if isinstance(fields, SimResponse):
                return fields
            state = {
                "k": "users/delta",
                "s": list(fields) if fields is not None else None,
                "p": "i",
                "a": 0,
                "f": self.version,
                "t": self.version,
            }
        select = tuple(state["s"]) if state.get("s") else DEFAULT_SELECT
        t = self.tenant
        value: list[dict[str, Any]] = []
        slot = int(state["a"])
        if state["p"] == "i":
            end = t._slots
            while slot < end and len(value) < size:
                if slot not in t._gone:
                    value.append(t.served(slot, select))
                slot += 1
            more = any(s not in t._gone for s in range(slot, end))
        else:
            lo, hi = int(state["f"]), int(state["t"])
            pending = sorted(s for s, v in self.changed.items() if lo < v <= hi and s >= slot)
            minimal = t.delta_changed_only or _RETURN_MINIMAL.search(req.headers.get("prefer", ""))
            since = lo if minimal else None
            value.extend(self._delta_item(s, select, since) for s in pending[:size])
            more = len(pending) > size
            slot = pending[size - 1] + 1 if more else slot
        body: dict[str, Any] = {
            "@odata.context": f"{base}/v1.0/$metadata#users(delta)",
            "value": value,
        }
        if more:
            nxt = self._encode({**state, "a": slot})
            body["@odata.nextLink"] = f"{base}/v1.0/users/delta?$skiptoken={nxt}"
        else:
            done = self._encode(
                {"k": "users/delta", "s": state.get("s"), "p": "d", "f": state["t"]}
            )
            body["@odata.deltaLink"] = f"{base}/v1.0/users/delta?$deltatoken={done}"
        t.counters["pages"] += 1
        t.counters["users_served"] += len(value)
        return SimResponse(200, orjson.dumps(body), {"Content-Type": _GRAPH_JSON})

    def _groups_delta(self, req: SimRequest) -> SimResponse:
        q = req.query
        size = 100
        m = _MAXPAGESIZE.search(req.headers.get("prefer", ""))
        if m:
            size = max(2, min(999, int(m.group(1))))
        base = self.tenant._base(req)
        if "$deltatoken" in q or "$skiptoken" in q:
            state = self._decode(q.get("$deltatoken") or q.get("$skiptoken") or "")
            if state is None or state.get("k") != "groups/delta":
                return _bad("The specified token value has expired or is invalid.")
            if state["f"] < self.floor:
                return self._expired(base, None, "groups")
            if state["p"] == "d":
                state = {**state, "p": "c", "a": [0, 0], "t": self.version}
        else:
            fields = [f.strip() for f in q.get("$select", "").split(",") if f.strip()]
            unknown = [f for f in fields if f not in _GROUP_PROPS]
            if unknown:
                return _bad(f"Could not find a property named '{unknown[0]}' on type group.")
            expand = [e.strip() for e in q.get("$expand", "").split(",")]
            state = {
                "k": "groups/delta",
                "s": [f for f in fields if f != "id"] or None,
                "m": "members" in expand,
                "p": "i",
                "a": [0, 0],
                "f": self.version,
                "t": self.version,
            }
        entries = self._group_round(state)
        select = state.get("s") or ["displayName", "description"]
        i, o = state["a"]
        value: list[dict[str, Any]] = []
        budget = size
        while i < len(entries) and budget > 1:
            gid, members = entries[i]
            g = self.groups.get(gid)
            if g is None:
                value.append({"id": gid, "@removed": {"reason": "deleted"}})
                i, o, budget = i + 1, 0, budget - 1
                continue
            doc: dict[str, Any] = {"id": gid, **{f: g.get(f) for f in select}}
            if state.get("m"):
                chunk = members[o : o + budget - 1]
                doc["members@delta"] = chunk
                budget -= 1 + len(chunk)
                o += len(chunk)
                if o >= len(members):
                    i, o = i + 1, 0
            else:
                i, o, budget = i + 1, 0, budget - 1
            value.append(doc)
        body: dict[str, Any] = {
            "@odata.context": f"{base}/v1.0/$metadata#groups(displayName,members)",
            "value": value,
        }
        if i < len(entries):
            nxt = self._encode({**state, "a": [i, o]})
            body["@odata.nextLink"] = f"{base}/v1.0/groups/delta?$skiptoken={nxt}"
        else:
            done = self._encode({**state, "p": "d", "f": state["t"], "a": [0, 0]})
            body["@odata.deltaLink"] = f"{base}/v1.0/groups/delta?$deltatoken={done}"
        self.tenant.counters["pages"] += 1
        self.tenant.counters["groups_delta_pages"] += 1
        return SimResponse(200, orjson.dumps(body), {"Content-Type": _GRAPH_JSON})

    def _group_round(self, state: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        """(group id, its ``members@delta`` entries) of one round, in a stable order.

        The initial round reflects the groups as they are when each page is served (a
        change during the round may show twice, as Graph's replays do); a round of changes
        is fixed by its version window.
        """
        if state["p"] == "i":
            return [(gid, self._member_refs(g["members"])) for gid, g in self.groups.items()]
        lo, hi = int(state["f"]), int(state["t"])
        net: dict[str, dict[str, bool]] = {}
        for v, gid, mid, added in self.member_log:
            if lo < v <= hi:
                net.setdefault(gid, {})[mid] = added
        ids = {gid for gid, v in self.group_changed.items() if lo < v <= hi}
        ids |= {gid for gid, v in self.group_removed.items() if lo < v <= hi}
        ids |= net.keys()
        out = []
        for gid in sorted(ids):
            refs = []
            for mid, added in net.get(gid, {}).items():
                ref = self._member_refs([mid], keep_missing=True)[0]
                if not added:
                    ref["@removed"] = {"reason": "deleted"}
                refs.append(ref)
            out.append((gid, refs))
        return out

    def _member_refs(self, ids: list[str], keep_missing: bool = False) -> list[dict[str, Any]]:
        out = []
        for mid in ids:
            if mid in self.groups or mid in self.group_removed:
                out.append({"@odata.type": "#microsoft.graph.group", "id": mid})
            elif keep_missing or self.tenant.get_user(mid) is not None:
                out.append({"@odata.type": "#microsoft.graph.user", "id": mid})
        return out

    def _delta_item(
        self, slot: int, select: tuple[str, ...], since: int | None = None
    ) -> dict[str, Any]:
        """One entry of a round of changes: removed, whole, or (``since``: the round's
        start, for changed-only entries) the id with only the properties changed since.

        Graph, with ``Prefer: return=minimal``: "If the property has changed, the new value is
        included in the response. This includes properties being set to null value. If the
        property has not changed, the property is not included in the response at all"
        (user: delta, Microsoft Learn); without it "at least the properties that have been
        updated" (delta query overview). A user added or restored since is listed whole.
        """
        t = self.tenant
        if slot in t._gone:
            if slot in t._soft_deleted:
                return {"id": self._id_of(slot), "@removed": {"reason": "changed"}}
            return {"id": self._id_of(slot), "@removed": {"reason": "deleted"}}
        out: dict[str, Any] = t.served(slot, select)
        if since is None or self.whole.get(slot, 0) > since or not isinstance(out, dict):
            return out
        stamps = self.changed_props.get(slot, {})
        return {k: v for k, v in out.items() if k == "id" or stamps.get(k, 0) > since}

    def _id_of(self, slot: int) -> str:
        user = self.tenant._overrides.get(slot)
        return str(user["id"]) if user else user_id(slot, self.tenant.seed)

    def _expired(self, base: str, select: list[str] | None, kind: str) -> SimResponse:
        sel = f"?$select={quote(','.join(select[1:]), safe=',')}" if select else ""
        body = {
            "error": {
                "code": "syncStateNotFound",
                "message": "The sync state for this request has expired; start a new sync.",
            }
        }
        resp = json_response(410, body, _GRAPH_JSON)
        resp.headers["Location"] = f"{base}/v1.0/{kind}/delta{sel}"
        return resp

    def _encode(self, payload: dict[str, Any]) -> str:
        raw = orjson.dumps(payload)
        mac = hmac.new(self.tenant._key, raw, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(mac + raw).rstrip(b"=").decode()

    def _decode(self, token: str) -> dict[str, Any] | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        mac, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(
            mac, hmac.new(self.tenant._key, payload, hashlib.sha256).digest()[:12]
        ):
            return None
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None


_GROUP_PROPS = {"id", "displayName", "description", "mailNickname", "securityEnabled"}
_GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"


def _group_doc(g: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in g.items() if k != "members"}


def _not_found(key: str) -> SimResponse:
    body = {
        "error": {
            "code": "Request_ResourceNotFound",
            "message": f"Resource '{key}' does not exist or one of its queried reference-property "
            "objects are not present.",
        }
    }
    return json_response(404, body, _GRAPH_JSON)


def _bad(message: str) -> SimResponse:
    return json_response(400, {"error": {"code": "BadRequest", "message": message}}, _GRAPH_JSON)
