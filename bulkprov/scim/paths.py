"""SCIM attribute paths (RFC 7644 §3.5.2 ``path``) without I/O.

Entra's mapping targets and PATCH paths use one small subset of the grammar::

    userName
    name.givenName
    emails[type eq "work"].value
    roles[primary eq "True"].value
    urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department
    urn:us:zoom:scim:schemas:extension:1.0:ZoomUser:loginType.sso

This module parses such a path once (:func:`parse_path`, cached) and reads or writes it in a
resource dict. The mapper uses it to assemble a SCIM payload, the simulators to apply PATCH
operations, and matching to compare a target account with our mapped values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bulkprov.errors import MappingError

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
#: Zoom's user extensions (facts.md §6.4): ``loginType`` (``sso``, ``workEmail``), and the
#: licence attributes (``zoomWhiteboard``, ``zoomOneBizPlus``, … whose values depend on the
#: plan)
ZOOM_USER = "urn:us:zoom:scim:schemas:extension:1.0:ZoomUser"
ZOOM_LICENSES = "urn:ietf:params:scim:schemas:extension:zoom:1.0:User"

#: The types Zoom's attributes are known to have, shaped as SCIM ``/Schemas`` resources (Zoom
#: serves none, facts.md §6.2): the mapper turns the expression language's strings into
#: them. ``loginType``'s flags are JSON booleans in Zoom's samples (facts.md §6.4); the
#: licence attributes' types are not documented and stay as mapped.
ZOOM_SCHEMAS: tuple[dict[str, object], ...] = (
    {
        "id": ZOOM_USER,
        "attributes": [
            {
                "name": "loginType",
                "type": "complex",
                "subAttributes": [
                    {"name": "sso", "type": "boolean"},
                    {"name": "workEmail", "type": "boolean"},
                ],
            }
        ],
    },
)

_NAME = r"[A-Za-z_$][\w$-]*"
_FILTER = re.compile(
    rf'^\s*({_NAME})\s+eq\s+(?:"((?:[^"\\]|\\.)*)"|(true|false|null|-?\d+(?:\.\d+)?))\s*$',
    re.IGNORECASE,
)
_SIMPLE = re.compile(rf"^({_NAME})(?:\[([^\]]*)\])?(?:\.({_NAME}))?$")


@dataclass(frozen=True, slots=True)
class ScimPath:
    """A parsed attribute path.

    Attributes:
        text: the path as written.
        schema: the extension URN for an extension attribute, else ``None``.
        attribute: the top-level attribute (``emails``, ``name``, ``department``).
        filter_attr / filter_value: the value filter (``type``, ``"work"``), if any.
        sub: the sub-attribute (``value``, ``givenName``), if any.
    """

    text: str
    schema: str | None
    attribute: str
    filter_attr: str | None
    filter_value: Any
    sub: str | None

    @property
    def top_key(self) -> str:
        """The key this path writes at the top of a resource."""
        return self.schema if self.schema else self.attribute


@lru_cache(maxsize=4096)
def parse_path(text: str) -> ScimPath:
    """Parse a SCIM attribute path; raise :class:`MappingError` naming the path otherwise."""
    schema: str | None = None
    rest = text.strip()
    if rest.lower().startswith("urn:"):
        head = rest.split("[", 1)[0]
        cut = head.rfind(":")
        if cut <= 4 or cut == len(rest) - 1:
            raise MappingError(f"invalid SCIM path {text!r}: no attribute after the schema URN")
        schema, rest = rest[:cut], rest[cut + 1 :]
        # The core schema prefix is legal but means "no extension".
        if schema.lower() in (CORE_USER.lower(), CORE_GROUP.lower()):
            schema = None
    m = _SIMPLE.match(rest)
    if not m:
        raise MappingError(f"invalid SCIM path {text!r}")
    attribute, filt, sub = m.group(1), m.group(2), m.group(3)
    filter_attr: str | None = None
    filter_value: Any = None
    if filt is not None:
        fm = _FILTER.match(filt)
        if not fm:
            raise MappingError(
                f"invalid SCIM path {text!r}: only 'attr eq \"value\"' filters are supported"
            )
        filter_attr = fm.group(1)
        if fm.group(2) is not None:
            filter_value = fm.group(2).replace('\\"', '"').replace("\\\\", "\\")
        else:
            lit = fm.group(3).lower()
            filter_value = {"true": True, "false": False, "null": None}.get(lit, fm.group(3))
    return ScimPath(text, schema, attribute, filter_attr, filter_value, sub)


def _coerce_filter_value(attr: str, value: Any) -> Any:
    # Entra writes roles[primary eq "True"]: the element it creates carries primary=true.
    if attr.lower() == "primary" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _matches(element: Any, attr: str, value: Any) -> bool:
    if not isinstance(element, dict):
        return False
    have = _get_ci(element, attr)
    want = _coerce_filter_value(attr, value)
    if isinstance(have, str) and isinstance(want, str):
        return have.lower() == want.lower()
    if isinstance(have, bool) and isinstance(want, str):
        return str(have).lower() == want.lower()
    return bool(have == want)


def _get_ci(obj: dict[str, Any], key: str) -> Any:
    """Attribute names are case-insensitive in SCIM (RFC 7643 §2.1)."""
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if k.lower() == low:
            return v
    return None


def _key_ci(obj: dict[str, Any], key: str) -> str:
    if key in obj:
        return key
    low = key.lower()
    for k in obj:
        if k.lower() == low:
            return k
    return key


def _container(resource: dict[str, Any], path: ScimPath, create: bool) -> dict[str, Any] | None:
    if path.schema is None:
        return resource
    key = _key_ci(resource, path.schema)
    ext = resource.get(key)
    if not isinstance(ext, dict):
        if not create:
            return None
        ext = {}
        resource[key] = ext
    return ext


def get_value(resource: dict[str, Any], path: ScimPath | str) -> Any:
    """Read the value at ``path`` (``None`` when absent)."""
    p = parse_path(path) if isinstance(path, str) else path
    obj = _container(resource, p, create=False)
    if obj is None:
        return None
    value = _get_ci(obj, p.attribute)
    if p.filter_attr is not None:
        if not isinstance(value, list):
            return None
        for element in value:
            if _matches(element, p.filter_attr, p.filter_value):
                value = element
                break
        else:
            return None
    if p.sub is not None:
        if not isinstance(value, dict):
            return None
        return _get_ci(value, p.sub)
    return value


def set_value(resource: dict[str, Any], path: ScimPath | str, value: Any) -> None:
    """Write ``value`` at ``path``, creating containers and filtered elements as needed."""
    p = parse_path(path) if isinstance(path, str) else path
    obj = _container(resource, p, create=True)
    assert obj is not None
    key = _key_ci(obj, p.attribute)
    if p.filter_attr is None:
        if p.sub is None:
            obj[key] = value
            return
        inner = obj.get(key)
        if not isinstance(inner, dict):
            inner = {}
            obj[key] = inner
        inner[_key_ci(inner, p.sub)] = value
        return
    elements = obj.get(key)
    if not isinstance(elements, list):
        elements = []
        obj[key] = elements
    for element in elements:
        if _matches(element, p.filter_attr, p.filter_value):
            target = element
            break
    else:
        target = {p.filter_attr: _coerce_filter_value(p.filter_attr, p.filter_value)}
        # Entra marks the work email it creates as primary (SCIMTUT "Create User" sample).
        if p.attribute.lower() == "emails" and not elements:
            target["primary"] = True
        elements.append(target)
    if p.sub is None:
        if isinstance(value, dict):
            target.update(value)
        else:
            target["value"] = value
    else:
        target[_key_ci(target, p.sub)] = value


def remove_value(resource: dict[str, Any], path: ScimPath | str) -> None:
    """Remove the value at ``path`` (no error when it is absent)."""
    p = parse_path(path) if isinstance(path, str) else path
    obj = _container(resource, p, create=False)
    if obj is None:
        return
    key = _key_ci(obj, p.attribute)
    if key not in obj:
        return
    if p.filter_attr is None:
        if p.sub is None:
            del obj[key]
        elif isinstance(obj[key], dict):
            obj[key].pop(_key_ci(obj[key], p.sub), None)
        return
    elements = obj[key]
    if not isinstance(elements, list):
        return
    if p.sub is None:
        obj[key] = [e for e in elements if not _matches(e, p.filter_attr, p.filter_value)]
        return
    for element in elements:
        if _matches(element, p.filter_attr, p.filter_value):
            element.pop(_key_ci(element, p.sub), None)
