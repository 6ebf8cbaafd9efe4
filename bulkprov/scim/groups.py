"""Build SCIM ``/Groups`` requests the way Entra sends them (facts.md §2.3 "Groups"), no I/O.

Groups are created with no members and matched by ``displayName`` with
``excludedAttributes=members`` (a group of 50,000 members is not sent back to us); members are
added and removed by PATCH on ``members`` with a list of ``{"value": id}``; a rename is a
``replace`` of ``displayName``. The dialect switch is the users' one: ``rfc`` sends lowercase
ops, ``entra`` Entra's ``Add``/``Remove``/``Replace``.
"""

from __future__ import annotations

from collections.abc import Sequence

from bulkprov import _json
from bulkprov.scim.paths import CORE_GROUP, PATCH_OP
from bulkprov.scim.requests import PatchDialect, ScimRequest, _resource_path, filter_eq


def _path(scim_id: str) -> str:
    return _resource_path("Groups", scim_id)


def _op(name: str, dialect: PatchDialect) -> str:
    return name if dialect == "rfc" else name.capitalize()


def create_group(display_name: str, external_id: str) -> ScimRequest:
    body = {"schemas": [CORE_GROUP], "externalId": external_id, "displayName": display_name}
    return ScimRequest("POST", "/Groups", body=_json.dumps(body), creates=True)


def find_group(display_name: str) -> ScimRequest:
    return ScimRequest(
        "GET",
        "/Groups",
        {"filter": filter_eq("displayName", display_name), "excludedAttributes": "members"},
    )


def rename_group(scim_id: str, display_name: str, dialect: PatchDialect = "rfc") -> ScimRequest:
    op = {"op": _op("replace", dialect), "path": "displayName", "value": display_name}
    body = {"schemas": [PATCH_OP], "Operations": [op]}
    return ScimRequest("PATCH", _path(scim_id), body=_json.dumps(body))


def change_members(
    scim_id: str, kind: str, member_ids: Sequence[str], dialect: PatchDialect = "rfc"
) -> ScimRequest:
    """One PATCH adding (``kind="add"``) or removing (``"remove"``) these member ids."""
    assert kind in ("add", "remove")
    op = {
        "op": _op(kind, dialect),
        "path": "members",
        "value": [{"value": m} for m in member_ids],
    }
    body = {"schemas": [PATCH_OP], "Operations": [op]}
    return ScimRequest("PATCH", _path(scim_id), body=_json.dumps(body))


#: Zoom: a group PATCH body "must not exceed 100,000 characters" (facts.md §6.4, §6.8)
ZOOM_MAX_PATCH_CHARS = 100_000


def member_chunks(
    scim_id: str,
    kind: str,
    member_ids: Sequence[str],
    *,
    count: int,
    max_chars: int | None = None,
    dialect: PatchDialect = "rfc",
) -> list[list[str]]:
    """``member_ids`` split for :func:`change_members` PATCHes of at most ``count`` members
    and, with ``max_chars``, bodies of at most that many characters (counted as UTF-8
    bytes, never fewer than the characters). A member too long to fit alone still goes
    alone: the target's answer then says why."""
    if max_chars is None:
        return [list(member_ids[i : i + count]) for i in range(0, len(member_ids), count)]
    empty = len(change_members(scim_id, kind, [], dialect).body or b"")
    chunks: list[list[str]] = []
    chunk: list[str] = []
    size = empty
    for member in member_ids:
        # one element: {"value":"<id>"} plus the comma before it
        cost = len(_json.dumps({"value": member})) + (1 if chunk else 0)
        if chunk and (len(chunk) >= count or size + cost > max_chars):
            chunks.append(chunk)
            chunk, size = [], empty
            cost -= 1
        chunk.append(member)
        size += cost
    if chunk:
        chunks.append(chunk)
    return chunks


def delete_group(scim_id: str) -> ScimRequest:
    return ScimRequest("DELETE", _path(scim_id))
