"""Build SCIM requests (RFC 7644) without I/O.

Every builder returns a :class:`ScimRequest`: method, path relative to the service's base
URL (already percent-encoded), query parameters and body bytes. The client sends them; the
tests check them byte for byte with no transport at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from bulkprov import _json
from bulkprov.scim.paths import PATCH_OP

PatchDialect = Literal["rfc", "entra"]


@dataclass(frozen=True, slots=True)
class ScimRequest:
    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    #: True when sending it twice could create a second resource (POST)
    creates: bool = False


def _resource_path(kind: str, scim_id: str) -> str:
    # Zoom ids may contain '&' and other reserved characters (facts.md §6.4): encode all.
    return f"/{kind}/{quote(scim_id, safe='')}"


def filter_eq(attribute: str, value: str) -> str:
    """``attribute eq "value"`` with the value escaped as a JSON string (RFC 7644 §3.4.2.2)."""
    return f"{attribute} eq {_json.dumps(value).decode()}"


def create_user(body: bytes) -> ScimRequest:
    """POST /Users with an already serialised resource (the mapper's ``body``)."""
    return ScimRequest("POST", "/Users", body=body, creates=True)


def get_user(scim_id: str) -> ScimRequest:
    return ScimRequest("GET", _resource_path("Users", scim_id))


def find_users(attribute: str, value: str) -> ScimRequest:
    """Query by one attribute, as Entra does when matching (``filter=userName eq "…"``)."""
    return ScimRequest("GET", "/Users", {"filter": filter_eq(attribute, value)})


def list_users(start_index: int, count: int) -> ScimRequest:
    """One page of the full listing (1-based ``startIndex``, RFC 7644 §3.4.2.4)."""
    return ScimRequest("GET", "/Users", {"startIndex": str(start_index), "count": str(count)})


def delete_user(scim_id: str) -> ScimRequest:
    return ScimRequest("DELETE", _resource_path("Users", scim_id))


def _entra_value(value: Any) -> Any:
    # Entra's default dialect sends booleans as the strings "True"/"False" (SCIMCOMPAT,
    # facts.md §2.3 "Quirks and the aadOptscim062020 flag").
    if isinstance(value, bool):
        return "True" if value else "False"
    return value


def patch_operations(
    changes: Mapping[str, Any], dialect: PatchDialect = "rfc"
) -> list[dict[str, Any]]:
    """One ``replace`` operation per changed target path.

    ``rfc``: lowercase ``replace`` and JSON booleans (RFC 7644 §3.5.2.3, what Entra sends with
    the ``aadOptscim062020`` flag). ``entra``: Entra's default capitalised ``Replace`` with
    ``"True"``/``"False"`` strings, for services built against Entra's behaviour.
    """
    if dialect == "rfc":
        return [{"op": "replace", "path": path, "value": value} for path, value in changes.items()]
    return [
        {"op": "Replace", "path": path, "value": _entra_value(value)}
        for path, value in changes.items()
    ]


def patch_user(scim_id: str, operations: Iterable[Mapping[str, Any]]) -> ScimRequest:
    body = {"schemas": [PATCH_OP], "Operations": list(operations)}
    return ScimRequest("PATCH", _resource_path("Users", scim_id), body=_json.dumps(body))


def set_active(scim_id: str, active: bool, dialect: PatchDialect = "rfc") -> ScimRequest:
    """Disable (``active=false``, data kept) or re-enable one user."""
    return patch_user(scim_id, patch_operations({"active": active}, dialect))


def diff_values(wanted: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The target paths whose wanted value differs from the current one.

    Paths absent from ``wanted`` are left alone: like Entra, bulkprov never sends nulls
    ("Microsoft Entra ID currently can't provision null attributes", facts.md §2.1).
    """
    if current is None:
        return dict(wanted)
    return {p: v for p, v in wanted.items() if current.get(p) != v}
