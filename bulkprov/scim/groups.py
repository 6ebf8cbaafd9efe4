"""Build SCIM ``/Groups`` requests the way Entra sends them (facts.md §2.3 "Groups"), no I/O.

Groups are created with no members and matched by ``displayName`` with
``excludedAttributes=members`` (a group of 50,000 members is not sent back to us). One PATCH
carries every change of a group that fits in it (RFC 7644 §3.5.2: the operations of a
PATCH are applied in order, all or none): a rename (``replace`` of ``displayName``), the
members added (``add`` on ``members`` with a list of ``{"value": id}``), the members removed.

Removal is where the dialects differ (facts.md §2.3, "Quirks and the aadOptscim062020
flag"): ``rfc`` removes each member with a filtered path,
``{"op": "remove", "path": "members[value eq \\"id\\"]"}`` (RFC 7644 §3.5.2.2: a remove
carries no value; what Entra sends with the flag); ``entra`` sends Entra's default
``{"op": "Remove", "path": "members", "value": [{"value": id}]}``, which RFC servers such as
scim2-server refuse (400 ``invalidValue``). Otherwise ``rfc`` sends lowercase ops and
``entra`` Entra's ``Add``/``Replace``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bulkprov import _json
from bulkprov.errors import TargetRejected
from bulkprov.scim.paths import CORE_GROUP, PATCH_OP
from bulkprov.scim.requests import PatchDialect, ScimRequest, _resource_path, filter_eq

#: what one group PATCH may change: its name, or its members
RENAME, ADD, REMOVE = "rename", "add", "remove"


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


def rename_operations(display_name: str, dialect: PatchDialect = "rfc") -> list[dict[str, Any]]:
    return [{"op": _op("replace", dialect), "path": "displayName", "value": display_name}]


def member_path(member_id: str) -> str:
    """``members[value eq "id"]``: the one member a ``remove`` selects (RFC 7644 §3.5.2.2)."""
    return f"members[{filter_eq('value', member_id)}]"


def member_operations(
    kind: str, member_ids: Sequence[str], dialect: PatchDialect = "rfc"
) -> list[dict[str, Any]]:
    """The operations adding (``kind="add"``) or removing (``"remove"``) these member ids.

    Adding is one operation with a value list in both dialects. Removing is one operation
    per member with a filtered path under ``rfc``, one with a value list under ``entra``.
    """
    assert kind in (ADD, REMOVE)
    if kind == REMOVE and dialect == "rfc":
        return [{"op": "remove", "path": member_path(m)} for m in member_ids]
    return [
        {"op": _op(kind, dialect), "path": "members", "value": [{"value": m} for m in member_ids]}
    ]


def patch_group(scim_id: str, operations: Iterable[dict[str, Any]]) -> ScimRequest:
    """One PATCH with these operations, applied by the target in order, all or none."""
    body = {"schemas": [PATCH_OP], "Operations": list(operations)}
    return ScimRequest("PATCH", _path(scim_id), body=_json.dumps(body))


def rename_group(scim_id: str, display_name: str, dialect: PatchDialect = "rfc") -> ScimRequest:
    return patch_group(scim_id, rename_operations(display_name, dialect))


def change_members(
    scim_id: str, kind: str, member_ids: Sequence[str], dialect: PatchDialect = "rfc"
) -> ScimRequest:
    """One PATCH adding (``kind="add"``) or removing (``"remove"``) these member ids."""
    return patch_group(scim_id, member_operations(kind, member_ids, dialect))


#: Zoom: a group PATCH body "must not exceed 100,000 characters" (facts.md §6.4, §6.8)
ZOOM_MAX_PATCH_CHARS = 100_000


@dataclass(frozen=True, slots=True)
class PatchBudget:
    """The most characters one group PATCH may take (Zoom: :data:`ZOOM_MAX_PATCH_CHARS`),
    and what each piece of it costs in the form each kind of change is sent in.

    Counted as UTF-8 bytes (never fewer than the characters); a comma is counted before
    every operation and every member, so an estimate is never below the real body.
    """

    max_chars: int
    scim_id: str
    #: the form each kind (:data:`RENAME`, :data:`ADD`, :data:`REMOVE`) is sent in
    forms: Mapping[str, PatchDialect]
    #: the displayName a rename sends
    name: str = ""

    def empty(self) -> int:
        """A PATCH with no operation."""
        return len(patch_group(self.scim_id, []).body or b"")

    def opening(self, kind: str) -> int:
        """What a kind of change costs before its first member (a rename: all of it)."""
        form = self.forms.get(kind, "rfc")
        if kind == RENAME:
            return len(_json.dumps(rename_operations(self.name, form)[0])) + 1
        if kind == REMOVE and form == "rfc":
            return 0  # one operation per member (member_operations)
        return len(_json.dumps(member_operations(kind, [], form)[0])) + 1

    def member(self, kind: str, member_id: str) -> int:
        """What one more member of ``kind`` adds."""
        form = self.forms.get(kind, "rfc")
        if kind == REMOVE and form == "rfc":
            return len(_json.dumps(member_operations(kind, [member_id], form)[0])) + 1
        return len(_json.dumps({"value": member_id})) + 1


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
    and, with ``max_chars``, bodies of at most that many characters (:class:`PatchBudget`).
    A member too long to fit alone still goes alone: the target's answer then says why."""
    if max_chars is None:
        return [list(member_ids[i : i + count]) for i in range(0, len(member_ids), count)]
    budget = PatchBudget(max_chars, scim_id, {kind: dialect})
    start = budget.empty() + budget.opening(kind)
    chunks: list[list[str]] = []
    chunk: list[str] = []
    size = start
    for member in member_ids:
        cost = budget.member(kind, member)
        if chunk and (len(chunk) >= count or size + cost > max_chars):
            chunks.append(chunk)
            chunk, size = [], start
        chunk.append(member)
        size += cost
    if chunk:
        chunks.append(chunk)
    return chunks


def delete_group(scim_id: str) -> ScimRequest:
    return ScimRequest("DELETE", _path(scim_id))


def member_absent(exc: TargetRejected) -> bool:
    """A 400 ``noTarget``: the filtered path selected no member (RFC 7644 §3.12: "the
    specified path did not yield an attribute or attribute value that could be operated
    on"). For the removal of one member, it means the member is not in the group."""
    return exc.status == 400 and (exc.scim_type or "").lower() == "notarget"
