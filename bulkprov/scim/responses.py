"""Classify SCIM responses without I/O.

:func:`classify` turns a status, headers and body into the parsed JSON document, or raises
the :mod:`bulkprov.errors` class that decides what happens next:

=============  ======================  =============================================
status         raises                  what the workers do
=============  ======================  =============================================
2xx            (returns the body)      success
401, 403       TargetAuthError         stop the whole run with one message
429            TargetThrottled         pause every worker (Retry-After) and retry
5xx            TargetUnavailable       retry with backoff, capped
other 4xx      TargetRejected          this user is a Failure with the reason
=============  ======================  =============================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from bulkprov import _json, redact
from bulkprov.errors import (
    TargetAuthError,
    TargetError,
    TargetRejected,
    TargetThrottled,
    TargetUnavailable,
)
from bulkprov.redact import clip
from bulkprov.retry import parse_retry_after

#: RFC 7644 §3.3: a created resource answers 201 (some services answer 200).
CREATED = frozenset({200, 201})
_MAX_DETAIL = 300


def _error_detail(body: bytes) -> tuple[str, str | None]:
    """The SCIM error ``detail`` and ``scimType`` (RFC 7644 §3.12), or a short body excerpt."""
    if not body:
        return "", None
    try:
        doc = _json.loads(body)
    except _json.JSONDecodeError:
        text = _short(body[: _MAX_DETAIL * 8].decode("utf-8", "replace").strip())
        return text, None
    if isinstance(doc, dict):
        detail = doc.get("detail") or doc.get("message") or ""
        err = doc.get("error")
        if not detail and isinstance(err, dict):
            detail = err.get("message") or ""
        scim_type = doc.get("scimType")
        return _short(str(detail)), (str(scim_type) if scim_type else None)
    return _short(str(doc)), None


#: credentials a target may echo back in an error (a debugging proxy's habit): never kept
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")


def _short(detail: str) -> str:
    """An error text with every registered secret and any echoed credential masked, then
    cut to :data:`_MAX_DETAIL` (masked first: a cut secret would no longer match)."""
    return clip(_CREDENTIALS.sub(lambda m: f"{m.group(1)} {redact.MASK}", detail), _MAX_DETAIL)


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Return the JSON body of a successful response (``None`` when empty), else raise."""
    if 200 <= status < 300:
        if not body:
            return None
        try:
            return _json.loads(body)
        except _json.JSONDecodeError as exc:
            raise TargetUnavailable(
                "the target answered success with a body that is not JSON", status=status
            ) from exc
    detail, scim_type = _error_detail(body)
    if status in (401, 403):
        raise TargetAuthError(detail or "authentication failed", status=status)
    if status == 429:
        raise TargetThrottled(
            detail or "too many requests", retry_after=parse_retry_after(headers.get("retry-after"))
        )
    if status >= 500 or status == 408:
        raise TargetUnavailable(detail or "server error", status=status)
    if 400 <= status < 500:
        raise TargetRejected(detail or "request rejected", status=status, scim_type=scim_type)
    if 300 <= status < 400:
        # never followed (bulkprov.transport: follow_redirects=False): a redirect could carry
        # the bearer token to another host
        where = urlsplit(headers.get("location") or "").hostname or "an unnamed place"
        raise TargetRejected(
            f"the target redirected to {where} ({status}); redirects are never followed: "
            "point target.base_url at the service itself",
            status=status,
        )
    raise TargetError(f"unexpected HTTP status {status}", status=status)


def is_uniqueness_conflict(exc: TargetError) -> bool:
    """409, or a 400 whose scimType is ``uniqueness``: the account already exists."""
    return exc.status == 409 or (exc.scim_type or "").lower() == "uniqueness"


def list_resources(doc: Any) -> tuple[list[dict[str, Any]], int]:
    """``Resources`` and ``totalResults`` of a ListResponse (lenient on missing keys)."""
    if not isinstance(doc, dict):
        raise TargetUnavailable("the target's list answer is not a SCIM ListResponse")
    resources = doc.get("Resources") or []
    if not isinstance(resources, list):
        raise TargetUnavailable("the target's ListResponse has no Resources list")
    total = doc.get("totalResults")
    return [r for r in resources if isinstance(r, dict)], (
        int(total) if isinstance(total, int | str) and str(total).isdigit() else len(resources)
    )
