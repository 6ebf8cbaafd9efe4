"""SCIM Bulk (RFC 7644 §3.7) and ``/ServiceProviderConfig`` for the SCIM simulator.

Zoom offers neither (facts.md §6.2), so the simulator serves them only when configured with
``bulk_max_operations`` (``python -m bulkprov.sim --bulk-max-operations 1000``); otherwise both
paths answer 404 as Zoom does. Each operation runs through the simulator's own single-request
handlers (same validation, uniqueness and counters), in request order; ``bulkId:`` references
between operations are not needed by a provisioning client and are not resolved.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from bulkprov.scim.paths import BULK_RESPONSE, ERROR
from bulkprov.sim.http import SimRequest, SimResponse

SPC = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
_JSON = {"Content-Type": "application/scim+json"}


class BulkTarget(Protocol):
    """The service a Bulk request's operations run against.

    :class:`~bulkprov.sim.scim.service.ScimService` is the one implementation. This module
    names the protocol instead of importing that class because service.py imports this module
    to route ``/Bulk``: naming the class here made the two modules an import cycle. The
    private members are the service's own single-request handlers, so an operation in a Bulk
    request meets the same validation, uniqueness and counters as the request on its own.
    """

    base_path: str
    public_url: str | None
    bulk_max_operations: int
    bulk_max_payload: int
    bulk_operations: int

    def _post(self, req: SimRequest) -> SimResponse: ...

    def _patch(self, req: SimRequest, uid: str) -> SimResponse: ...

    def _put(self, req: SimRequest, uid: str) -> SimResponse: ...

    def _delete(self, uid: str) -> SimResponse: ...


def service_provider_config(max_operations: int, max_payload_size: int) -> SimResponse:
    doc = {
        "schemas": [SPC],
        "patch": {"supported": True},
        "bulk": {
            "supported": True,
            "maxOperations": max_operations,
            "maxPayloadSize": max_payload_size,
        },
        "filter": {"supported": True, "maxResults": 100},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [
            {"type": "oauthbearertoken", "name": "OAuth Bearer Token", "primary": True}
        ],
    }
    return SimResponse(200, orjson.dumps(doc), dict(_JSON))


def _error(status: int, detail: str, scim_type: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def handle_bulk(service: BulkTarget, req: SimRequest) -> SimResponse:
    """Run every operation of a BulkRequest and answer a BulkResponse (200)."""
    max_ops, max_payload = service.bulk_max_operations, service.bulk_max_payload
    if len(req.body) > max_payload:
        body = _error(
            413, f"The size of the bulk operation exceeds maxPayloadSize ({max_payload})."
        )
        return SimResponse(413, orjson.dumps(body), dict(_JSON))
    try:
        doc = orjson.loads(req.body)
    except orjson.JSONDecodeError:
        return SimResponse(
            400, orjson.dumps(_error(400, "Body is not JSON", "invalidSyntax")), dict(_JSON)
        )
    ops = doc.get("Operations") if isinstance(doc, dict) else None
    if not isinstance(ops, list):
        body = _error(400, "A BulkRequest needs an Operations list.", "invalidSyntax")
        return SimResponse(400, orjson.dumps(body), dict(_JSON))
    if len(ops) > max_ops:
        body = _error(413, f"The number of operations exceeds maxOperations ({max_ops}).")
        return SimResponse(413, orjson.dumps(body), dict(_JSON))
    fail_on = doc.get("failOnErrors")
    errors = 0
    results: list[dict[str, Any]] = []
    for op in ops:
        if isinstance(fail_on, int) and fail_on > 0 and errors >= fail_on:
            break
        result = _one(service, req, op)
        if not result["status"].startswith("2"):
            errors += 1
        results.append(result)
    service.bulk_operations += len(results)
    out = {"schemas": [BULK_RESPONSE], "Operations": results}
    return SimResponse(200, orjson.dumps(out), dict(_JSON))


def _one(service: BulkTarget, req: SimRequest, op: Any) -> dict[str, Any]:
    if not isinstance(op, dict):
        return {"status": "400", "response": _error(400, "operation is not an object")}
    method = str(op.get("method", "")).upper()
    path = op.get("path")
    result: dict[str, Any] = {"method": method}
    if isinstance(op.get("bulkId"), str):
        result["bulkId"] = op["bulkId"]
    if method == "POST" and op.get("bulkId") is None:
        return {**result, "status": "400", "response": _error(400, "POST needs a bulkId")}
    data = op.get("data")
    sub = SimRequest(
        method,
        f"{service.base_path}{path}",
        {},
        req.headers,
        orjson.dumps(data) if data is not None else b"",
        req.scheme,
    )
    if not isinstance(path, str):
        resp = SimResponse(400, orjson.dumps(_error(400, "path is required", "invalidPath")))
    elif method == "POST" and path.rstrip("/") == "/Users":
        resp = service._post(sub)
    elif path.startswith("/Users/") and method in ("PATCH", "PUT", "DELETE"):
        uid = path[7:]
        if method == "PATCH":
            resp = service._patch(sub, uid)
        elif method == "PUT":
            resp = service._put(sub, uid)
        else:
            resp = service._delete(uid)
    else:
        body = _error(400, f"{method} {path} is not supported in a bulk request", "invalidPath")
        resp = SimResponse(400, orjson.dumps(body))
    result["status"] = str(resp.status)
    if 200 <= resp.status < 300:
        if method == "POST":
            result["location"] = resp.headers.get("Location")
        elif isinstance(path, str):
            result["location"] = f"{service.public_url or req.base_url}{service.base_path}{path}"
    else:
        result["response"] = orjson.loads(resp.body) if resp.body else _error(resp.status, "")
    return result
