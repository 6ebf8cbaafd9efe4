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
from bulkprov.scim.paths import CORE_USER, PATCH_OP, parse_path, set_value

PatchDialect = Literal["rfc", "entra"]
#: Zoom's rate-limit labels the SCIM API uses (facts.md §6.2, §6.6)
RateLabel = Literal["light", "medium"]


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


def zoom_label(request: ScimRequest, post_label: RateLabel = "medium") -> RateLabel:
    """The Zoom rate-limit label one request is counted under (facts.md §6.2).

    Light: GET, PUT, PATCH and DELETE of one user (``/Users/{id}``). Medium: lists and
    filters (``GET /Users``, ``GET /Groups``). POST (create) is undocumented: ``post_label``,
    Medium by default, the safer guess. The group operations other than the list are
    undocumented too: Medium.
    """
    path = request.path
    if path.startswith("/Users/"):
        return "light"
    if request.method == "POST" and path == "/Users":
        return post_label
    return "medium"


#: Zoom's ``userType`` values, and the pre-2020 names Entra's Zoom app roles may still
#: carry (ZOOMTUT change log 10/20/2020: Licensed and On-Prem "replace existing roles Pro
#: and Corp"; facts.md §6.5, §6.8)
ZOOM_USER_TYPES = ("Basic", "Licensed", "On-Prem")
LEGACY_USER_TYPES = {"pro": "Licensed", "corp": "On-Prem", "on prem": "On-Prem"}


def zoom_user_type(value: Any) -> tuple[Any, str | None]:
    """A ``userType`` as Zoom accepts it, and a warning when it had to be renamed.

    Pro and Corp (and the app role's display name "On Prem") are the pre-2020 names of
    Licensed and On-Prem; any other value is sent as it is (Zoom refuses what it does not
    know with ``AttributeValidationFailed``: that user fails with Zoom's detail).
    """
    if not isinstance(value, str):
        return value, None
    renamed = LEGACY_USER_TYPES.get(value.strip().lower())
    if renamed is None or renamed == value:
        return value, None
    return renamed, (
        f"userType {value!r} is Zoom's pre-2020 name: sent as {renamed!r} (rename the app "
        f"role, or map {value!r} to {renamed!r}, to silence this warning)"
    )


def put_fields(changes: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a Zoom PUT: ``schemas`` and only the attributes that change.

    Zoom's "Update a user" takes "only the fields you want to change, and the required
    schemas array" (facts.md §6.8). A changed sub-attribute brings its whole attribute
    along from ``wanted`` (``name.familyName`` sends ``name`` with ``givenName`` too, a
    work email sends every mapped ``emails`` element), so that a PUT which replaces a
    complex or multi-valued attribute as a whole cannot blank its other parts.
    """
    groups = {(p.schema, p.attribute.lower()) for p in map(parse_path, changes)}
    resource: dict[str, Any] = {}
    for path, value in wanted.items():
        if path in changes:
            continue
        p = parse_path(path)
        if (p.schema, p.attribute.lower()) in groups and (p.sub or p.filter_attr):
            set_value(resource, p, value)
    for path, value in changes.items():
        set_value(resource, path, value)
    extensions = sorted(k for k in resource if k.lower().startswith("urn:"))
    return {"schemas": [CORE_USER, *extensions], **resource}


def put_user(scim_id: str, changes: Mapping[str, Any], wanted: Mapping[str, Any]) -> ScimRequest:
    """Zoom's attribute update: ``PUT /Users/{id}`` of :func:`put_fields`."""
    body = put_fields(changes, wanted)
    return ScimRequest("PUT", _resource_path("Users", scim_id), body=_json.dumps(body))


def zoom_updates(
    scim_id: str,
    changes: Mapping[str, Any],
    wanted: Mapping[str, Any],
    dialect: PatchDialect = "rfc",
) -> list[ScimRequest]:
    """Zoom's requests for one user's changes, in order.

    ``active`` goes by PATCH (Zoom documents PATCH of a user only as "activate or
    deactivate a user"); every other change by one PUT of ``schemas`` plus the changed
    fields (facts.md §6.8). A user re-enabled is activated before its PUT; one disabled is
    deactivated after it.
    """
    rest = {p: v for p, v in changes.items() if p != "active"}
    out: list[ScimRequest] = []
    active = changes.get("active")
    if "active" in changes and active is not False:
        out.append(set_active(scim_id, True, dialect))
    if rest:
        out.append(put_user(scim_id, rest, wanted))
    if "active" in changes and active is False:
        out.append(set_active(scim_id, False, dialect))
    return out
