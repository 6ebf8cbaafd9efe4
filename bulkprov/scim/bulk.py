"""SCIM Bulk (RFC 7644 §3.7) without I/O: discovery, packing, and reading the results.

A Bulk request carries many operations in one HTTP request, so a target that offers it
(``/ServiceProviderConfig`` says ``bulk.supported``) is provisioned with ~1/1000 of the
requests: what matters against a per-request rate limit. Zoom offers neither
``/ServiceProviderConfig`` nor ``/Bulk`` (facts.md §6.2), so Bulk is opt-in
(``target.bulk = true``); scim2-server offers up to 1,000 operations (facts.md §9).

* :func:`bulk_support` reads the ``bulk`` block of a ServiceProviderConfig;
* :class:`BulkBatch` packs operations into one request body within ``maxOperations`` and
  ``maxPayloadSize`` (RFC 7644 §3.7.4), splicing already serialised bodies (no re-encoding);
* :func:`read_results` maps each operation's answer back to the ``bulkId`` it was sent with
  (the client gives every operation one), and classifies failures with the same error
  classes as a single request (:func:`bulkprov.scim.responses.classify`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from bulkprov import _json
from bulkprov.errors import TargetError, TargetUnavailable
from bulkprov.scim.paths import BULK_REQUEST, PATCH_OP
from bulkprov.scim.requests import ScimRequest
from bulkprov.scim.responses import classify

#: at most this many operations per request, whatever the target allows (bounds the memory
#: of a batch and the work lost to one failed request)
MAX_OPERATIONS = 1000
#: Bulk requests in flight at once: a few large requests keep client and target busy
IN_FLIGHT = 4

_HEAD = b'{"schemas":["' + BULK_REQUEST.encode() + b'"],"Operations":['
_TAIL = b"]}"


@dataclass(frozen=True, slots=True)
class BulkSupport:
    """What the target's ServiceProviderConfig says about Bulk."""

    supported: bool
    max_operations: int = 0
    max_payload_size: int = 0


def bulk_support(doc: Any) -> BulkSupport:
    """Read ``bulk`` of a ServiceProviderConfig (RFC 7643 §5); lenient on types."""
    bulk = doc.get("bulk") if isinstance(doc, dict) else None
    if not isinstance(bulk, dict) or bulk.get("supported") is not True:
        return BulkSupport(False)

    def number(key: str) -> int:
        value = bulk.get(key)
        if isinstance(value, int | str) and str(value).isdigit():
            return int(value)
        return 0

    ops, size = number("maxOperations"), number("maxPayloadSize")
    if ops < 1 or size < 1:
        return BulkSupport(False)  # "supported" with no room for an operation is not usable
    return BulkSupport(True, ops, size)


def service_provider_config() -> ScimRequest:
    return ScimRequest("GET", "/ServiceProviderConfig")


def post_operation(bulk_id: str, path: str, body: bytes) -> bytes:
    """One ``POST`` operation whose ``data`` is an already serialised resource."""
    return (
        b'{"method":"POST","path":'
        + _json.dumps(path)
        + b',"bulkId":'
        + _json.dumps(bulk_id)
        + b',"data":'
        + body
        + b"}"
    )


def patch_operation(bulk_id: str, path: str, operations: list[dict[str, Any]]) -> bytes:
    """One ``PATCH`` operation; the bulkId lets its answer be found without trusting order."""
    return _json.dumps(
        {
            "method": "PATCH",
            "path": path,
            "bulkId": bulk_id,
            "data": {"schemas": [PATCH_OP], "Operations": operations},
        }
    )


def delete_operation(bulk_id: str, path: str) -> bytes:
    """One ``DELETE`` operation (no ``data``, RFC 7644 §3.7.1)."""
    return _json.dumps({"method": "DELETE", "path": path, "bulkId": bulk_id})


class BulkBatch:
    """Operations packed for one Bulk request, within the target's two limits."""

    __slots__ = ("_parts", "_size", "bulk_ids", "max_operations", "max_payload_size")

    def __init__(self, max_operations: int, max_payload_size: int) -> None:
        self.max_operations = max_operations
        self.max_payload_size = max_payload_size
        self._parts: list[bytes] = []
        self._size = len(_HEAD) + len(_TAIL)
        self.bulk_ids: list[str] = []

    def __len__(self) -> int:
        return len(self._parts)

    def fits(self, operation: bytes) -> bool:
        """Would ``operation`` fit? (An empty batch takes any one operation: a lone
        operation over the payload limit is then refused by the target, for that user.)"""
        if not self._parts:
            return True
        return (
            len(self._parts) < self.max_operations
            and self._size + 1 + len(operation) <= self.max_payload_size
        )

    def add(self, bulk_id: str, operation: bytes) -> None:
        self._size += len(operation) + (1 if self._parts else 0)
        self._parts.append(operation)
        self.bulk_ids.append(bulk_id)

    @property
    def full(self) -> bool:
        return len(self._parts) >= self.max_operations

    def request(self) -> ScimRequest:
        """``POST /Bulk``; marked ``creates`` so an unknown outcome is resolved by matching."""
        body = _HEAD + b",".join(self._parts) + _TAIL
        return ScimRequest("POST", "/Bulk", body=body, creates=True)


@dataclass(frozen=True, slots=True)
class BulkResult:
    """One operation's outcome: the resource id (from ``location``) or the error."""

    status: int
    scim_id: str | None = None
    error: TargetError | None = None


def _status(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    # RFC 7644 §3.7.3 puts a string; some servers nest it: {"code": "201"}
    if isinstance(value, Mapping):
        return _status(value.get("code"))
    return 0


def _id_from(location: Any, response: Any) -> str | None:
    if isinstance(response, Mapping) and isinstance(response.get("id"), str):
        return str(response["id"])
    if isinstance(location, str) and "/" in location:
        tail = location.rstrip("/").rsplit("/", 1)[1]
        return unquote(tail) or None
    return None


def read_results(doc: Any, bulk_ids: list[str]) -> dict[str, BulkResult]:
    """Map a BulkResponse to ``bulkId → result``.

    Operations are found by their ``bulkId``; an answer without one is matched by position
    (RFC 7644 keeps the request's order). Operations the target did not answer (it stopped
    at ``failOnErrors``, or answered fewer) are absent: the caller retries them one by one.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("Operations"), list):
        raise TargetUnavailable("the target's Bulk answer has no Operations list")
    wanted = set(bulk_ids)
    out: dict[str, BulkResult] = {}
    for position, op in enumerate(doc["Operations"]):
        if not isinstance(op, dict):
            continue
        bulk_id = op.get("bulkId")
        if not isinstance(bulk_id, str) or bulk_id not in wanted:
            if position >= len(bulk_ids):
                continue
            bulk_id = bulk_ids[position]
        status = _status(op.get("status"))
        response = op.get("response")
        if 200 <= status < 300:
            out[bulk_id] = BulkResult(status, _id_from(op.get("location"), response))
            continue
        body = _json.dumps(response) if isinstance(response, dict) else b""
        try:
            classify(status or 500, {}, body)
        except TargetError as exc:
            out[bulk_id] = BulkResult(status, None, exc)
        else:  # pragma: no cover - classify raises for every non-2xx status
            raise AssertionError(status)
    return out
