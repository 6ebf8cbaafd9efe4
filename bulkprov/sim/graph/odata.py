"""Graph's OData surface that both halves of the simulated tenant serve.

The user property catalogue (what ``$select`` may name), :func:`parse_select` and
:func:`project` (``$select`` in, the selected user out), and Graph's JSON content type and
error envelope (:func:`graph_error`). :mod:`~bulkprov.sim.graph.tenant` uses them for
``/v1.0/users`` and every error it answers, :mod:`~bulkprov.sim.graph.directory` for the
``$select`` of ``users/delta``. They live here, below both, so that the directory does not
import the tenant that builds it. Sans-IO: strings and dicts in, a
:class:`~bulkprov.sim.http.SimResponse` out at most.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from bulkprov.sim.http import SimResponse, json_response
from bulkprov.sim.users import USER_PROPERTIES

__all__ = ["GRAPH_JSON", "OTHER_PROPERTIES", "graph_error", "now_iso", "parse_select", "project"]

#: the Content-Type of the tenant's Graph answers (directory.py's pages send a shorter one)
GRAPH_JSON = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)

#: Other Graph v1.0 ``user`` properties a client may ``$select``: the generator does not fill
#: them, so they come back as Graph returns an unset property (``null``, or ``[]`` for a
#: collection) unless a test sets them with
#: :meth:`~bulkprov.sim.graph.tenant.GraphTenant.update_user`.
_SCALAR_PROPERTIES = (
    "aboutMe",
    "ageGroup",
    "birthday",
    "companyName",
    "consentProvidedForMinor",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "employeeHireDate",
    "employeeLeaveDateTime",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "faxNumber",
    "hireDate",
    "isResourceAccount",
    "lastPasswordChangeDateTime",
    "legalAgeGroupClassification",
    "mailboxSettings",
    "mySite",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "passwordPolicies",
    "passwordProfile",
    "postalCode",
    "preferredDataLocation",
    "preferredName",
    "securityIdentifier",
    "showInAddressList",
    "signInSessionsValidFromDateTime",
    "state",
    "streetAddress",
)
_COLLECTION_PROPERTIES = (
    "assignedLicenses",
    "assignedPlans",
    "identities",
    "imAddresses",
    "interests",
    "licenseAssignmentStates",
    "onPremisesProvisioningErrors",
    "otherMails",
    "pastProjects",
    "provisionedPlans",
    "proxyAddresses",
    "responsibilities",
    "schools",
    "skills",
)
OTHER_PROPERTIES: dict[str, Any] = {
    **dict.fromkeys(_SCALAR_PROPERTIES),
    **dict.fromkeys(_COLLECTION_PROPERTIES, ()),
    "onPremisesExtensionAttributes": {f"extensionAttribute{i}": None for i in range(1, 16)},
}
_PROPS_CI = {p.lower(): p for p in (*USER_PROPERTIES, *OTHER_PROPERTIES)}
_DIRECTORY_EXTENSION = re.compile(r"^extension_[0-9a-f]{32}_\w+$", re.IGNORECASE)


def now_iso() -> str:
    """UTC now to the second, without a zone (innerError's ``date``; callers add ``Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def project(user: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The selected properties; an unset one reads as Graph's null / empty collection."""
    try:
        return {k: user[k] for k in fields}  # the usual case: all generated properties
    except KeyError:
        pass
    out: dict[str, Any] = {}
    for k in fields:
        if k in user:
            out[k] = user[k]
        else:
            default = OTHER_PROPERTIES.get(k)
            out[k] = (
                list(default)
                if isinstance(default, tuple)
                else dict(default)
                if isinstance(default, dict)
                else None
            )
    return out


def parse_select(text: str | None) -> tuple[str, ...] | None | SimResponse:
    """``$select`` → property tuple (``id`` first, always present), ``None`` when absent."""
    if text is None:
        return None
    out = ["id"]
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        prop = _PROPS_CI.get(name.lower())
        if prop is None and _DIRECTORY_EXTENSION.match(name):
            prop = name  # directory extensions are top-level properties; unset → null
        if prop is None:
            return graph_error(
                400,
                "BadRequest",
                f"Could not find a property named '{name}' on type 'microsoft.graph.user'.",
            )
        if prop not in out:
            out.append(prop)
    return tuple(out)


def graph_error(status: int, code: str, message: str) -> SimResponse:
    """Graph's error envelope, with the innerError Graph adds to every error."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": now_iso(),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }
    return json_response(status, body, GRAPH_JSON)
