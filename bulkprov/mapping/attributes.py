"""Source attributes: how ``[name]`` is read from a Graph user and what to ``$select``.

Besides Graph user properties by their exact (case-sensitive) name, Entra exposes:

* ``[IsSoftDeleted]`` and ``[appRoleAssignments]``: computed per user; here they come from
  the :class:`~bulkprov.mapping.context.MappingContext`;
* ``[objectId]``: Graph's ``id`` (Entra's mapping UI still uses Azure AD Graph names);
* ``[extensionAttribute1]`` … ``[extensionAttribute15]``: the on-premises extension
  attributes, which Graph nests in ``onPremisesExtensionAttributes``;
* ``[a.b]``: any nested property (``onPremisesExtensionAttributes.extensionAttribute1``,
  ``employeeOrgData.division``);
* ``[extension_<appId>_<name>]``: directory extensions, top-level properties in Graph;
* a few other Azure AD Graph names Entra's attribute list shows (``mobile``,
  ``telephoneNumber``, ``physicalDeliveryOfficeName``, …) mapped to their Graph names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from bulkprov.mapping.context import MappingContext
from bulkprov.mapping.values import FALSE, TRUE, normalize

#: ``reader(user, ctx)`` → a normalised value
Reader = Callable[[Mapping[str, Any], MappingContext], Any]

#: computed attributes that come from the context, not from the Graph user
CONTEXT_ATTRIBUTES = frozenset({"IsSoftDeleted", "appRoleAssignments"})

#: Azure AD Graph names shown in Entra's source-attribute list → Microsoft Graph names
ALIASES: dict[str, str] = {
    "objectId": "id",
    "mobile": "mobilePhone",
    "facsimileTelephoneNumber": "faxNumber",
    "physicalDeliveryOfficeName": "officeLocation",
    "immutableId": "onPremisesImmutableId",
    "dirSyncEnabled": "onPremisesSyncEnabled",
    "lastDirSyncTime": "onPremisesLastSyncDateTime",
}

#: ``telephoneNumber`` is the first of Graph's ``businessPhones``
_FIRST_OF = {"telephoneNumber": "businessPhones"}

_EXTENSION_ATTRIBUTE = re.compile(r"extensionAttribute(?:[1-9]|1[0-5])\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*\Z")


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def graph_name(name: str) -> str:
    """The Graph property path an attribute reads (``objectId`` → ``id``)."""
    if _EXTENSION_ATTRIBUTE.match(name):
        return f"onPremisesExtensionAttributes.{name}"
    if name in _FIRST_OF:
        return _FIRST_OF[name]
    return ALIASES.get(name, name)


def select_names(name: str) -> frozenset[str]:
    """The top-level Graph properties to ``$select`` for ``[name]``."""
    if name in CONTEXT_ATTRIBUTES:
        return frozenset()
    return frozenset({graph_name(name).split(".", 1)[0]})


def raw_reader(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """A reader of the Graph JSON value itself (no normalisation); not for context names.

    An alias (``objectId``, ``mobile``, ``telephoneNumber``, …) reads a property of exactly
    that name when the user has one, and the Graph property otherwise.
    """
    if name in _FIRST_OF:
        source = _FIRST_OF[name]

        def first(user: Mapping[str, Any]) -> Any:
            value = user.get(name)
            if value is not None:
                return value
            values = user.get(source)
            if isinstance(values, list):
                return values[0] if values else None
            return values

        return first
    path = graph_name(name)
    if "." not in path:
        if path != name:

            def aliased(user: Mapping[str, Any]) -> Any:
                value = user.get(name)
                return user.get(path) if value is None else value

            return aliased

        def top(user: Mapping[str, Any]) -> Any:
            return user.get(path)

        return top
    parts = tuple(path.split("."))

    def nested(user: Mapping[str, Any]) -> Any:
        value: Any = user
        for part in parts:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    return nested


def reader(name: str) -> Reader:
    """The evaluator of ``[name]``: the normalised value for one user and context."""
    if name == "IsSoftDeleted":

        def soft_deleted(user: Mapping[str, Any], ctx: MappingContext) -> Any:
            return TRUE if ctx.is_soft_deleted else FALSE

        return soft_deleted
    if name == "appRoleAssignments":

        def assignments(user: Mapping[str, Any], ctx: MappingContext) -> Any:
            return list(ctx.app_role_assignments) or None

        return assignments
    path = graph_name(name)
    if path == name and "." not in path:
        # The hot path of every Direct mapping: one dict lookup, a class check.
        def direct(user: Mapping[str, Any], ctx: MappingContext) -> Any:
            value = user.get(path)
            if value is None or value.__class__ is str:
                return value
            return normalize(value)

        return direct
    raw = raw_reader(name)

    def computed(user: Mapping[str, Any], ctx: MappingContext) -> Any:
        return normalize(raw(user))

    return computed
