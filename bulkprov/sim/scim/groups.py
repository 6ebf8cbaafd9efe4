"""``/Groups`` of the simulated SCIM service, shaped by what Entra sends (facts.md §2.3 Groups).

* ``POST /Groups``: ``displayName`` required and unique (case-insensitive, 409 ``uniqueness``),
  ``externalId`` kept; members given at creation are accepted (Entra sends none).
* ``GET /Groups/{id}`` and ``GET /Groups?filter=displayName eq "…"`` (or ``externalId eq``),
  honouring ``excludedAttributes=members``; plain listing with ``startIndex``/``count``.
* ``PATCH /Groups/{id}``: ``add``/``remove`` of ``members`` with a value list, ``remove`` with
  the ``members[value eq "…"]`` path form, ``replace`` of ``displayName`` (with a path or a
  path-less value object); 204 No Content as Entra expects; all operations or none. A member
  that is not a stored user is a 400 ``invalidValue``. ``max_patch_members`` caps the members
  one request may carry (a 413, as a real gateway would) so a client's chunk splitting can
  be tested.
* Strict modes (``member_remove``): ``"rfc"`` refuses a ``remove`` that carries a value, as
  RFC 7644 §3.5.2.2 servers do (scim2-server: 400 ``invalidValue`` "a remove operation
  carries no value, a filter in the path selects what to remove"); ``"entra"`` refuses the
  filtered path, as a service built only for Entra's default requests would (400
  ``invalidPath``); ``"any"`` (the default) takes both. ``no_target`` answers a filtered
  remove that selects no member with 400 ``noTarget`` (RFC 7644 §3.12 allows it).
* ``DELETE /Groups/{id}``: 204.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from bulkprov.scim.paths import CORE_GROUP, LIST_RESPONSE
from bulkprov.sim.http import SimRequest, SimResponse

_FILTER = re.compile(r'^\s*(displayName|externalId)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)
_MEMBER_PATH = re.compile(
    r'^\s*members\s*\[\s*value\s+eq\s+"((?:[^"\\]|\\.)*)"\s*\]\s*$', re.IGNORECASE
)
_HEADERS = {"Content-Type": "application/scim+json"}

ErrorFn = Callable[..., SimResponse]


class GroupStore:
    """The groups of one :class:`~bulkprov.sim.scim.service.ScimService`."""

    def __init__(self, user_exists: Callable[[str], bool], new_id: Callable[[], str]) -> None:
        self._user_exists = user_exists
        self._new_id = new_id
        self.groups: dict[str, dict[str, Any]] = {}
        self.max_patch_members: int | None = None
        #: "any", "rfc" or "entra": which member-removal forms are accepted (module docstring)
        self.member_remove = "any"
        self.no_target = False
        self.counters: Counter[str] = Counter()

    def find(self, display_name: str) -> dict[str, Any] | None:
        low = display_name.lower()
        for g in self.groups.values():
            if str(g["displayName"]).lower() == low:
                return _copy(g)
        return None

    def get(self, group_id: str) -> dict[str, Any] | None:
        g = self.groups.get(group_id)
        return _copy(g) if g is not None else None

    def member_ids(self, group_id: str) -> list[str]:
        g = self.groups.get(group_id)
        return [m["value"] for m in g["members"]] if g else []

    def handle(self, req: SimRequest, rest: str, error: ErrorFn, base: str) -> SimResponse:
        """Serve ``rest`` (``/Groups`` or ``/Groups/{id}``) after auth and rate limiting."""
        method = req.method
        self.counters[f"{method} group"] += 1
        if rest.rstrip("/") == "/Groups":
            if method == "POST":
                return self._post(req, error, base)
            if method == "GET":
                return self._list(req, error)
            return error(405, f"{method} is not supported on /Groups")
        gid = rest[len("/Groups/") :]
        g = self.groups.get(gid)
        if g is None:
            return error(404, f"Resource {gid} not found")
        if method == "GET":
            return SimResponse(200, orjson.dumps(_shown(g, req)), _HEADERS.copy())
        if method == "PATCH":
            return self._patch(req, g, error)
        if method == "DELETE":
            del self.groups[gid]
            return SimResponse(204)
        return error(405, f"{method} is not supported on /Groups/{{id}}")

    def _post(self, req: SimRequest, error: ErrorFn, base: str) -> SimResponse:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return error(400, "Request body is not valid JSON.", "invalidSyntax")
        name = body.get("displayName") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            return error(400, "displayName is required.", "invalidValue")
        if self.find(name) is not None:
            return error(409, "Group already exists", "uniqueness")
        members = body.get("members") or []
        bad = self._unknown(members)
        if bad:
            return error(400, f"Unknown member {bad}.", "invalidValue")
        gid = self._new_id()
        group = {
            "schemas": [CORE_GROUP],
            "id": gid,
            "externalId": body.get("externalId"),
            "displayName": name,
            "members": [{"value": m["value"]} for m in members],
            "meta": {"resourceType": "Group", "location": f"{base}/Groups/{gid}"},
        }
        self.groups[gid] = group
        self.counters["groups created"] += 1
        return SimResponse(201, orjson.dumps(group), _HEADERS.copy())

    def _list(self, req: SimRequest, error: ErrorFn) -> SimResponse:
        q = req.query
        found = list(self.groups.values())
        if "filter" in q:
            m = _FILTER.match(q["filter"])
            if m is None:
                return error(400, f"Unsupported filter: {q['filter']}", "invalidFilter")
            attr, value = m.group(1).lower(), m.group(2).replace('\\"', '"').lower()
            key = "displayName" if attr == "displayname" else "externalId"
            found = [g for g in found if str(g.get(key) or "").lower() == value]
        start = max(1, int(q.get("startIndex", "1")))
        count = max(0, int(q.get("count", "100")))
        page = found[start - 1 : start - 1 + count]
        body = {
            "schemas": [LIST_RESPONSE],
            "totalResults": len(found),
            "startIndex": start,
            "itemsPerPage": len(page),
            "Resources": [_shown(g, req) for g in page],
        }
        return SimResponse(200, orjson.dumps(body), _HEADERS.copy())

    def _unknown(self, members: Any) -> str | None:
        if not isinstance(members, list):
            return "(members must be a list)"
        for m in members:
            value = m.get("value") if isinstance(m, dict) else None
            if not isinstance(value, str) or not self._user_exists(value):
                return repr(value)
        return None

    def _patch(self, req: SimRequest, g: dict[str, Any], error: ErrorFn) -> SimResponse:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return error(400, "Request body is not valid JSON.", "invalidSyntax")
        ops = body.get("Operations") if isinstance(body, dict) else None
        if not isinstance(ops, list) or not ops:
            return error(400, "PATCH needs a non-empty 'Operations' list.", "invalidSyntax")
        carried = sum(
            len(op.get("value") or [])
            if isinstance(op.get("value"), list)
            else int(isinstance(op.get("path"), str) and bool(_MEMBER_PATH.match(op["path"])))
            for op in ops
            if isinstance(op, dict)
        )
        if self.max_patch_members is not None and carried > self.max_patch_members:
            self.counters["patches too large"] += 1
            return error(413, f"Too many members in one request ({carried}).")
        new = {**g, "members": list(g["members"])}
        for op in ops:
            if not isinstance(op, dict):
                return error(400, "Each operation must be an object.", "invalidSyntax")
            kind = str(op.get("op", "")).lower()
            path = op.get("path")
            value = op.get("value")
            if kind in ("add", "remove") and isinstance(path, str) and path.lower() == "members":
                if kind == "remove" and self.member_remove == "rfc":
                    self.counters["refused removes"] += 1
                    return error(
                        400,
                        "a remove operation carries no value, a filter in the path selects "
                        "what to remove",
                        "invalidValue",
                    )
                if not isinstance(value, list):
                    return error(400, "members needs a list value.", "invalidValue")
                ids = [v.get("value") for v in value if isinstance(v, dict)]
                if kind == "add":
                    bad = self._unknown(value)
                    if bad:
                        return error(400, f"Unknown member {bad}.", "invalidValue")
                    have = {m["value"] for m in new["members"]}
                    new["members"] += [{"value": i} for i in ids if i not in have]
                    self.counters["members added"] += len([i for i in ids if i not in have])
                else:
                    before = len(new["members"])
                    new["members"] = [m for m in new["members"] if m["value"] not in ids]
                    self.counters["members removed"] += before - len(new["members"])
                continue
            if kind == "remove" and isinstance(path, str) and _MEMBER_PATH.match(path):
                if self.member_remove == "entra":
                    self.counters["refused removes"] += 1
                    return error(400, f"Unsupported path {path!r}.", "invalidPath")
                quoted = _MEMBER_PATH.match(path).group(1)  # type: ignore[union-attr]
                mid = orjson.loads(f'"{quoted}"')  # the filter's value is a JSON string
                before = len(new["members"])
                new["members"] = [m for m in new["members"] if m["value"] != mid]
                if self.no_target and len(new["members"]) == before:
                    return error(400, f"No member matches {path!r}.", "noTarget")
                self.counters["members removed"] += before - len(new["members"])
                continue
            if kind == "replace":
                name = value if isinstance(path, str) and path.lower() == "displayname" else None
                if path is None and isinstance(value, dict):
                    name = value.get("displayName")
                if isinstance(name, str) and name.strip():
                    other = self.find(name)
                    if other is not None and other["id"] != g["id"]:
                        return error(409, "Group already exists", "uniqueness")
                    new["displayName"] = name
                    continue
            return error(400, f"Unsupported group operation {op!r}.", "invalidPath")
        g.clear()
        g.update(new)
        return SimResponse(204)


def _copy(g: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(g))
    return out


def _shown(g: dict[str, Any], req: SimRequest) -> dict[str, Any]:
    excluded = req.query.get("excludedAttributes", "").lower().split(",")
    if "members" in excluded:
        return {k: v for k, v in g.items() if k != "members"}
    return g
