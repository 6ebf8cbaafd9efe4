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
from bulkprov.scim.paths import CORE_USER, PATCH_OP, ScimPath, parse_path, set_value

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
    changes: Mapping[str, Any],
    dialect: PatchDialect = "rfc",
    known: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The PATCH operations for changed target paths: one ``replace`` per path, as Entra.

    ``rfc``: lowercase ops and JSON booleans (RFC 7644 §3.5.2, what Entra sends with the
    ``aadOptscim062020`` flag). ``entra``: Entra's default capitalised ``Replace`` with
    ``"True"``/``"False"`` strings, for services built against Entra's behaviour.

    A value of ``None`` removes the path (``target.clear_on_null``): a ``remove`` of the
    attribute, or of the whole element of a filtered path (``emails[type eq "work"]``) when
    none of its mapped sub-attributes is left.

    ``known``: the values the target holds for the user's mapped paths, as far as bulkprov
    knows (the last values sent, or what a matched account showed). A filtered path whose
    element the target does not hold (no known value for any path of that element) cannot
    be replaced: RFC 7644 §3.5.2.3 answers that with 400 ``noTarget`` ("If the target
    location is a multi-valued attribute for which a value selection filter has been
    supplied and no record match was made"), as scim2-server does. Such an element is
    sent whole with ``add`` to the attribute: ``{"op": "add", "path": "emails", "value":
    [{"type": "work", "value": …, "primary": true}]}`` (§3.5.2.1). ``None`` (nothing known)
    sends ``replace`` for every path.
    """
    add, replace, remove = (
        ("add", "replace", "remove")
        if dialect == "rfc"
        else (
            "Add",
            "Replace",
            "Remove",
        )
    )
    value_of = _entra_value if dialect == "entra" else _same
    ops: list[dict[str, Any]] = []
    elements: dict[tuple[str | None, str, str, str], dict[str, Any]] = {}
    for path, value in changes.items():
        p = parse_path(path)
        key = _element_key(p)
        if key is None or known is None:
            if value is None:
                ops.append({"op": remove, "path": path})
            else:
                ops.append({"op": replace, "path": path, "value": value_of(value)})
            continue
        held = _element_held(key, known)
        if value is None:
            if _element_left(key, known, changes):
                ops.append({"op": remove, "path": path})
            elif key not in elements:
                elements[key] = {}  # removed whole, once
                ops.append({"op": remove, "path": _element_path(p)})
            continue
        if held:
            ops.append({"op": replace, "path": path, "value": value_of(value)})
            continue
        element = elements.get(key)
        if element is None:
            element = elements[key] = {}
            ops.append({"op": add, "path": _attribute_path(p), "value": [element]})
        _fill_element(element, p, value)
    for op in ops:
        value = op.get("value")
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            _primary_for(op, known or {})
    return ops


def _same(value: Any) -> Any:
    return value


def _element_key(p: ScimPath) -> tuple[str | None, str, str, str] | None:
    """The element a filtered path names: (schema, attribute, filter attribute, filter value)."""
    if p.filter_attr is None:
        return None
    schema = p.schema.lower() if p.schema else None
    return (schema, p.attribute.lower(), p.filter_attr.lower(), str(p.filter_value).lower())


def _element_held(key: tuple[str | None, str, str, str], known: Mapping[str, Any]) -> bool:
    return any(v is not None and _element_key(parse_path(k)) == key for k, v in known.items())


def _element_left(
    key: tuple[str | None, str, str, str],
    known: Mapping[str, Any],
    changes: Mapping[str, Any],
) -> bool:
    """Whether a path of the element keeps a value once ``changes`` are applied."""
    after = {**known, **changes}
    return any(v is not None and _element_key(parse_path(k)) == key for k, v in after.items())


def _attribute_path(p: ScimPath) -> str:
    return f"{p.schema}:{p.attribute}" if p.schema else p.attribute


def _element_path(p: ScimPath) -> str:
    return p.text.split("]", 1)[0] + "]"


def _fill_element(element: dict[str, Any], p: ScimPath, value: Any) -> None:
    """Write one filtered path's value into the element being added, as a POST would."""
    resource: dict[str, Any] = {}
    set_value(resource, p, value)
    holder = resource[p.schema] if p.schema else resource
    element.update(holder[p.attribute][0])


def _primary_for(op: dict[str, Any], known: Mapping[str, Any]) -> None:
    """An added email is the primary one unless the target holds another email of ours.

    Entra marks the work email it creates as primary (SCIMTUT "Create User", facts.md §2.3),
    as :func:`~bulkprov.scim.paths.set_value` does for a POST.
    """
    if str(op.get("path", "")).lower() != "emails":
        return
    if any(
        v is not None and (q := parse_path(k)).schema is None and q.attribute.lower() == "emails"
        for k, v in known.items()
    ):
        op["value"][0].pop("primary", None)


def patch_user(scim_id: str, operations: Iterable[Mapping[str, Any]]) -> ScimRequest:
    body = {"schemas": [PATCH_OP], "Operations": list(operations)}
    return ScimRequest("PATCH", _resource_path("Users", scim_id), body=_json.dumps(body))


def set_active(scim_id: str, active: bool, dialect: PatchDialect = "rfc") -> ScimRequest:
    """Disable (``active=false``, data kept) or re-enable one user."""
    return patch_user(scim_id, patch_operations({"active": active}, dialect))


def diff_values(
    wanted: Mapping[str, Any],
    current: Mapping[str, Any] | None,
    clearable: Iterable[str] = (),
) -> dict[str, Any]:
    """The target paths whose wanted value differs from the current one.

    Paths absent from ``wanted`` are left alone: like Entra, bulkprov never sends nulls
    ("Microsoft Entra ID currently can't provision null attributes", facts.md §2.1), and
    the target keeps its value. Except ``clearable`` ones (``target.clear_on_null``): a
    path of those absent from ``wanted`` but held by ``current`` maps to ``None``, which
    :func:`patch_operations` sends as ``remove``.
    """
    if current is None:
        return dict(wanted)
    changes = {p: v for p, v in wanted.items() if current.get(p) != v}
    for p in clearable:
        if p not in wanted and current.get(p) is not None:
            changes[p] = None
    return changes


def after_patch(known: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """What the target holds once ``changes`` are applied to ``known`` (``None``: removed)."""
    out = dict(known) if known else {}
    for path, value in changes.items():
        if value is None:
            out.pop(path, None)
        else:
            out[path] = value
    return out


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
