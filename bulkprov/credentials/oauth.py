"""The answer of an OAuth 2.0 token endpoint, read without I/O: one reader for both callers.

Zoom's server-to-server OAuth (:class:`bulkprov.credentials.target.ZoomOAuth`) and Graph's
plain client-credentials POST (:meth:`bulkprov.graph.client.GraphClient.token`, the http
loopback path; msal reads its own answers) both get a JSON object back: ``access_token`` and
``expires_in`` when the token is granted (RFC 6749 §5.1), ``error`` (with Entra's
``error_description``, Zoom's ``reason``) when it is refused (§5.2).

:func:`read_token` takes the token and its lifetime out and registers the token with
:mod:`bulkprov.redact` before anyone can print it. A refusal is the caller's own error: each
passes ``refused``, which builds its type and message (a different exit code, a different
hint at what to check).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bulkprov import _json, redact

#: builds the caller's error from the status and the answer's JSON object ({} if none)
Refused = Callable[[int, Mapping[str, Any]], Exception]


def read_token(
    status: int, body: bytes, *, default_lifetime: float, refused: Refused
) -> tuple[str, float]:
    """The access token and its lifetime in seconds (``expires_in``, else
    ``default_lifetime``), the token registered with :mod:`bulkprov.redact`.

    Anything but a 200 whose JSON object holds a non-empty string ``access_token`` raises
    ``refused(status, doc)``; ``doc`` is the answer's JSON object, or ``{}`` when the body is
    empty, not JSON, or not an object.
    """
    try:
        doc = _json.loads(body) if body else {}
    except _json.JSONDecodeError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    token = doc.get("access_token")
    if status != 200 or not isinstance(token, str) or not token:
        raise refused(status, doc)
    redact.register(token)
    return token, float(doc.get("expires_in", default_lifetime))
