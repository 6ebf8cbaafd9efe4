"""The simulated tenant's provisioning jobs: Graph's synchronization API, as ``bulkprov
migrate`` reads and drives it.

Served by :class:`~bulkprov.sim.graph.tenant.GraphTenant` (answers as documented in
``microsoftgraph/microsoft-graph-docs-contrib``; see :mod:`bulkprov.graph.synchronization`):

* ``GET /v1.0/servicePrincipals/{id}/synchronization/jobs``: ``{"value": [synchronizationJob]}``,
  each with ``id``, ``templateId``, ``schedule`` and ``status`` shaped as Microsoft's examples;
* ``GET …/jobs/{jobId}`` and ``GET …/jobs/{jobId}/schema`` (the ``synchronizationSchema``);
* ``POST …/jobs/{jobId}/pause`` and ``…/start``: ``204 No Content``; pause makes the status
  ``Paused`` (and the schedule), start makes it ``Active`` and clears a quarantine;
* ``GET /beta/servicePrincipals/{id}/synchronization/secrets``: the keys Microsoft's
  skip-out-of-scope how-to reads (``SyncAll``, ``SyncNotificationSettings``, ``BaseAddress``,
  ``SkipOutOfScopeDeletions``) and a ``SecretToken`` whose value a client must never keep.

A test denies a kind of request with :attr:`Synchronization.denied` (``"read"``, ``"write"``,
``"secrets"``): Graph's ``403 Authorization_RequestDenied``. :func:`zoom_job_schema` is the
schema of Entra's Zoom connector (facts.md §6.5, the ZOOMTUT table) in the JSON shape of
Microsoft's published examples (``tests/mapping/samples/``).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Protocol

from bulkprov.sim.graph.odata import GRAPH_JSON, graph_error, now_iso
from bulkprov.sim.http import SimRequest, SimResponse, json_response

__all__ = ["ENTERPRISE", "Synchronization", "zoom_job_schema"]

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
#: Entra's Switch expression for ``active`` (SCIMTUT; facts.md §2.6)
ACTIVE_EXPRESSION = 'Switch([IsSoftDeleted], , "False", "True", "True", "False")'
#: Graph's interval for a job without a schedule (.NET TimeSpan.MaxValue, in Microsoft's
#: job examples)
NO_SCHEDULE = "P10675199DT2H48M5.4775807S"


class TenantView(Protocol):
    """What the jobs read of their tenant (:class:`~bulkprov.sim.graph.tenant.GraphTenant`)."""

    seed: int

    def _base(self, req: SimRequest) -> str: ...


def _attribute(name: str) -> dict[str, Any]:
    return {"expression": f"[{name}]", "name": name, "parameters": [], "type": "Attribute"}


def _constant(value: str) -> dict[str, Any]:
    return {"expression": f'"{value}"', "name": value, "parameters": [], "type": "Constant"}


def attribute_mapping(
    target: str,
    source: dict[str, Any] | None,
    *,
    matching: int = 0,
    flow_type: str = "Always",
    default: str | None = None,
) -> dict[str, Any]:
    """One ``attributeMapping`` as Microsoft's examples write it (every key present)."""
    return {
        "defaultValue": default,
        "exportMissingReferences": False,
        "flowBehavior": "FlowWhenChanged",
        "flowType": flow_type,
        "matchingPriority": matching,
        "source": source,
        "targetAttributeName": target,
    }


def zoom_job_schema(
    *,
    excluded_department: str | None = "Human Resources",
    extra_mappings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``synchronizationSchema`` of an Entra provisioning job for Zoom.

    The user mapping is the Zoom connector's table (userName ← userPrincipalName, matched
    on; active ← the IsSoftDeleted switch; emails, given name, family name, department),
    scoped by one filter group (``department NOT_EQUALS excluded_department``: a user
    without a department does not pass either, Entra's null rule); the group mapping is
    there but disabled (Entra's Zoom connector provisions no groups). ``extra_mappings``
    are appended to the user mapping (tests: rows bulkprov cannot express).
    """
    switch = {
        "expression": ACTIVE_EXPRESSION,
        "name": "Switch",
        "parameters": [
            {"key": "source", "value": _attribute("IsSoftDeleted")},
            {"key": "defaultValue", "value": None},
            {"key": "key", "value": _constant("True")},
            {"key": "value", "value": _constant("False")},
            {"key": "key", "value": _constant("False")},
            {"key": "value", "value": _constant("True")},
        ],
        "type": "Function",
    }
    users = [
        attribute_mapping("userName", _attribute("userPrincipalName"), matching=1),
        attribute_mapping("active", switch),
        attribute_mapping('emails[type eq "work"].value', _attribute("mail")),
        attribute_mapping("name.givenName", _attribute("givenName")),
        attribute_mapping("name.familyName", _attribute("surname")),
        attribute_mapping(f"{ENTERPRISE}:department", _attribute("department")),
        *(extra_mappings or []),
    ]
    scope = None
    if excluded_department is not None:
        scope = {
            "categoryFilterGroups": [],
            "groups": [
                {
                    "clauses": [
                        {
                            "operatorName": "NOT_EQUALS",
                            "sourceOperandName": "department",
                            "targetOperand": {"values": [excluded_department]},
                        }
                    ],
                    "name": f"Not {excluded_department}",
                }
            ],
            "inputFilterGroups": [],
        }
    groups = [
        attribute_mapping("displayName", _attribute("displayName"), matching=1),
        attribute_mapping("externalId", _attribute("objectId")),
        attribute_mapping("members", _attribute("members")),
    ]
    return {
        "directories": [
            {
                "id": "66e4a8cc-1b7b-435e-95f8-f06cea133828",
                "name": "Azure Active Directory",
                "objects": [],
            },
            {"id": "0a1b7c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d", "name": "Zoom", "objects": []},
        ],
        "synchronizationRules": [
            {
                "editable": True,
                "id": "4c5ecfa1-a072-4460-b1c3-4adde3479854",
                "metadata": [],
                "name": "USER_OUTBOUND_USER",
                "objectMappings": [
                    {
                        "attributeMappings": users,
                        "enabled": True,
                        "flowTypes": "Add, Update, Delete",
                        "metadata": [],
                        "name": "Provision Microsoft Entra ID Users",
                        "scope": scope,
                        "sourceObjectName": "User",
                        "targetObjectName": "User",
                    },
                    {
                        "attributeMappings": groups,
                        "enabled": False,
                        "flowTypes": "Add, Update, Delete",
                        "metadata": [],
                        "name": "Provision Microsoft Entra ID Groups",
                        "scope": None,
                        "sourceObjectName": "Group",
                        "targetObjectName": "Group",
                    },
                ],
                "priority": 1,
                "sourceDirectoryName": "Azure Active Directory",
                "targetDirectoryName": "Zoom",
            }
        ],
    }


def _execution(escrowed: int, exported: int) -> dict[str, Any]:
    now = now_iso() + "Z"
    return {
        "activityIdentifier": str(uuid.uuid4()),
        "countEntitled": 0,
        "countEntitledForProvisioning": 0,
        "countEscrowed": escrowed,
        "countEscrowedRaw": escrowed,
        "countExported": exported,
        "countExports": exported,
        "countImported": 0,
        "countImportedDeltas": 0,
        "countImportedReferenceDeltas": 0,
        "error": None,
        "state": "Succeeded" if not escrowed else "SucceededWithErrors",
        "timeBegan": now,
        "timeEnded": now,
    }


class Synchronization:
    """The provisioning jobs of the tenant's service principals, and their secrets."""

    def __init__(self, tenant: TenantView) -> None:
        self.tenant = tenant
        #: service principal id → job id → {"job": synchronizationJob, "schema": schema}
        self.jobs: dict[str, dict[str, dict[str, Any]]] = {}
        #: service principal id → synchronizationSecretKeyStringValuePair list
        self.secrets: dict[str, list[dict[str, str]]] = {}
        #: service principals that exist without a job
        self.known: set[str] = set()
        #: kinds of request answered 403: "read", "write", "secrets"
        self.denied: set[str] = set()
        #: (method, job id, action) of every request to a job, in order (tests)
        self.calls: list[tuple[str, str, str]] = []
        #: a pause is accepted (204) but the job goes on reporting Active, as while a
        #: cycle still runs (tests of the wait and of --force)
        self.pause_pending = False

    # ------------------------------------------------------------------ Python test API

    def add_service_principal(self, sp_id: str) -> None:
        """A service principal Graph knows, with no job until :meth:`add_job`."""
        self.known.add(sp_id)

    def add_job(
        self,
        sp_id: str,
        schema: dict[str, Any],
        *,
        template_id: str = "scim",
        code: str = "Active",
        job_id: str | None = None,
        interval: str = "PT40M",
        synchronized: dict[str, int] | None = None,
        escrowed: int = 0,
    ) -> str:
        """A job on ``sp_id``; returns its id (``{templateId}.{hex}.{hex}``, as Graph's)."""
        self.known.add(sp_id)
        digest = hashlib.sha256(f"{sp_id}:{template_id}:{self.tenant.seed}".encode()).hexdigest()
        jid = job_id or f"{template_id}.{digest[:32]}.{digest[32:64]}"
        exported = sum((synchronized or {}).values())
        execution = (
            _execution(escrowed, exported) if code not in ("NotConfigured", "NotRun") else None
        )
        job = {
            "id": jid,
            "templateId": template_id,
            "schedule": {
                "expiration": None,
                "interval": interval if code != "NotConfigured" else NO_SCHEDULE,
                "state": "Active" if code in ("Active", "Quarantine") else "Disabled",
            },
            "status": {
                "code": code,
                "countSuccessiveCompleteFailures": 0,
                "escrowsPruned": False,
                "lastExecution": execution,
                "lastSuccessfulExecution": execution if not escrowed else None,
                "lastSuccessfulExecutionWithExports": execution,
                "progress": [],
                "quarantine": None,
                "steadyStateFirstAchievedTime": "2026-01-05T09:12:44.1234567Z",
                "steadyStateLastAchievedTime": now_iso() + "Z",
                "synchronizedEntryCountByType": [
                    {"key": k, "value": v} for k, v in (synchronized or {}).items()
                ],
                "troubleshootingUrl": None,
            },
            "synchronizationJobSettings": [
                {"name": "AzureIngestionAttributeOptimization", "value": "False"},
                {"name": "LookaheadQueryEnabled", "value": "False"},
            ],
        }
        self.jobs.setdefault(sp_id, {})[jid] = {"job": job, "schema": schema}
        return jid

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's ``synchronizationJob`` document (live: a test may change it)."""
        for jobs in self.jobs.values():
            if job_id in jobs:
                doc: dict[str, Any] = jobs[job_id]["job"]
                return doc
        raise KeyError(job_id)

    def code(self, job_id: str) -> str:
        return str(self.job(job_id)["status"]["code"])

    def quarantine(self, job_id: str, reason: str, error: str | None = None) -> None:
        """Put a job in quarantine with Graph's ``synchronizationQuarantine``."""
        job = self.job(job_id)
        began = now_iso() + "Z"
        job["status"]["code"] = "Quarantine"
        job["status"]["quarantine"] = {
            "currentBegan": began,
            "nextAttempt": began,
            "reason": reason,
            "seriesBegan": began,
            "seriesCount": 1,
            "error": None
            if error is None
            else {
                "code": "SystemForCrossDomainIdentityManagementCredentialValidationUnauthorized",
                "message": error,
            },
        }

    def set_secrets(
        self,
        sp_id: str,
        *,
        sync_all: bool,
        base_address: str = "https://api.zoom.us/scim2",
        delete_threshold: int | None = 500,
        skip_out_of_scope_deletions: bool = False,
        secret_token: str = "eyJzaW0iOiJ6b29tLXNjaW0tdG9rZW4ifQ",
    ) -> None:
        """The service principal's synchronization secrets (what the beta GET returns)."""
        self.known.add(sp_id)
        notify = (
            '{"Enabled":true,"Recipients":"","DeleteThresholdEnabled":'
            + ("true" if delete_threshold is not None else "false")
            + f',"DeleteThresholdValue":{delete_threshold or 0}}}'
        )
        self.secrets[sp_id] = [
            {"key": "BaseAddress", "value": base_address},
            {"key": "SecretToken", "value": secret_token},
            {"key": "SyncNotificationSettings", "value": notify},
            {"key": "SyncAll", "value": "True" if sync_all else "False"},
            {"key": "SkipOutOfScopeDeletions", "value": str(skip_out_of_scope_deletions)},
        ]

    # ------------------------------------------------------------------------- HTTP

    def route(self, req: SimRequest, rest: str, *, beta: bool = False) -> SimResponse | None:
        """Serve ``servicePrincipals/{id}/synchronization/…`` (``None``: not such a path)."""
        parts = rest.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "servicePrincipals" or parts[2] != "synchronization":
            return None
        sp, tail = parts[1], parts[3:]
        if sp not in self.known:
            return graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{sp}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        if beta:
            if tail == ["secrets"] and req.method == "GET":
                if "secrets" in self.denied:
                    return _denied()
                return json_response(200, {"value": self.secrets.get(sp, [])}, GRAPH_JSON)
            return graph_error(400, "BadRequest", "Not served by the simulator's beta endpoint.")
        jobs = self.jobs.get(sp, {})
        base = f"{self.tenant._base(req)}/v1.0/servicePrincipals/{sp}/synchronization"
        if tail == ["jobs"] and req.method == "GET":
            if "read" in self.denied:
                return _denied()
            body = {
                "@odata.context": f"{base.rsplit('/v1.0/', 1)[0]}/v1.0/$metadata#servicePrincipals"
                f"('{sp}')/synchronization/jobs",
                "value": [j["job"] for j in jobs.values()],
            }
            return json_response(200, body, GRAPH_JSON)
        if len(tail) < 2 or tail[0] != "jobs":
            return graph_error(
                400,
                "BadRequest",
                f"Resource not found for the segment '{tail[-1] if tail else 'synchronization'}'.",
            )
        entry = jobs.get(tail[1])
        if entry is None:
            return graph_error(404, "Request_ResourceNotFound", f"Job '{tail[1]}' does not exist.")
        action = tail[2] if len(tail) == 3 else ""
        self.calls.append((req.method, tail[1], action))
        if req.method == "GET" and action in ("", "schema"):
            if "read" in self.denied:
                return _denied()
            return json_response(200, entry["schema" if action else "job"], GRAPH_JSON)
        if req.method == "POST" and action in ("pause", "start"):
            if "write" in self.denied:
                return _denied()
            status, schedule = entry["job"]["status"], entry["job"]["schedule"]
            if action == "pause" and self.pause_pending:
                pass
            elif action == "pause":
                status["code"] = schedule["state"] = "Paused"
            else:
                status["code"] = schedule["state"] = "Active"
                status["quarantine"] = None
            return SimResponse(204)
        return graph_error(
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        )


def _denied() -> SimResponse:
    """Graph's answer to a request the app has no permission for."""
    return graph_error(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )
