"""Classify Microsoft Graph answers without I/O.

:class:`~bulkprov.graph.client.GraphClient` sends and retries; the functions here read what
Graph answered and say what happens next, by returning the document or raising:

=========================  ===================  ==============================================
a read answered            raises               what the client does
=========================  ===================  ==============================================
200 with JSON              (returns the doc)    success
200, not JSON              Retry                ask again after a backoff
401, token not refreshed   StaleToken           one new token (revoked or expired early), again
401, 403                   SourceAuthError      stop: the app's permissions or admin consent
429                        Retry (throttled)    pause every reader for its Retry-After, again
5xx                        Retry                ask again after a backoff, capped
410, or syncStateNotFound  DeltaExpired         the cycle falls back to a full read
anything else              SourceError(status)  the caller decides (a user that is not there…)
=========================  ===================  ==============================================

Also here: the parts of a users page (:func:`page_parts`), the ``/users/$count`` answer
(:func:`user_count`) and the refusal of a token request (:func:`token_refused`, the error
:func:`bulkprov.credentials.oauth.read_token` raises for Graph). ``Retry-After`` is read by
:func:`bulkprov.retry.parse_retry_after`, as for SCIM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bulkprov import _json
from bulkprov.errors import DeltaExpired, SourceAuthError, SourceError
from bulkprov.redact import clip
from bulkprov.retry import parse_retry_after

_MAX_DETAIL = 200


class Retry(Exception):
    """Asking again may succeed: a 429 (``throttled``; ``retry_after`` in seconds when Graph
    said how long to wait), a 5xx, or a 200 whose body is not JSON.

    Not a :class:`~bulkprov.errors.BulkProvError`: it never leaves the client, whose retry
    loop turns the last one into a :class:`~bulkprov.errors.SourceError`.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, throttled: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled


class StaleToken(Exception):
    """401 on a token not refreshed yet: get a new one and ask once more (never leaves the
    client)."""


def graph_error(body: bytes) -> str:
    """The ``code: message`` of a Graph error body, or a short excerpt of the body."""
    try:
        doc = _json.loads(body)
    except _json.JSONDecodeError:
        # cut after scrubbing (clip): a cut through an echoed token would show its start
        return clip(body[: _MAX_DETAIL * 8].decode("utf-8", "replace"), _MAX_DETAIL)
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        return f"{err.get('code', '')}: {clip(str(err.get('message', '')), _MAX_DETAIL)}"
    return clip(str(doc), _MAX_DETAIL)


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    refreshed: bool,
    request: str | None = None,
    purpose: str | None = None,
) -> Any:
    """The JSON document of a successful read, else raise what decides the next step (the
    table above). ``refreshed``: the token was already renewed once for this read.

    ``request`` (``GET`` and the URL without its query) and ``purpose`` (why bulkprov
    reads it, and the permission it needs: :func:`bulkprov.graph.client.read_purposes`)
    go into the text of a refusal or a final 4xx, so that a 404 on ``groups/delta`` says
    which read failed and which setting asked for it.
    """
    if status == 200:
        try:
            return _json.loads(body)
        except _json.JSONDecodeError as exc:
            raise Retry("Graph answered 200 with a body that is not JSON") from exc
    if status == 401 and not refreshed:
        raise StaleToken
    if status in (401, 403):
        what = "the read" if request is None else request
        hint = (
            "check the app's permissions (User.Read.All) and admin consent"
            if purpose is None
            else f"{purpose}; check that permission and admin consent"
        )
        raise SourceAuthError(f"Graph refused {what} ({status}): {graph_error(body)} — {hint}")
    if status == 429:
        raise Retry(
            "429 Too Many Requests",
            retry_after=parse_retry_after(headers.get("retry-after")),
            throttled=True,
        )
    if status >= 500:
        raise Retry(f"{status} {graph_error(body)}")
    if status == 410 or b"syncStateNotFound" in body:
        # An expired delta token (seven days for directory objects, facts.md §7.3)
        raise DeltaExpired(f"Graph answered {status}: {graph_error(body)}", status=status)
    to = "" if request is None else f" to {request}"
    why = "" if purpose is None else f" — {purpose}"
    raise SourceError(f"Graph answered {status}{to}: {graph_error(body)}{why}", status=status)


def user_count(status: int, headers: Mapping[str, str], body: bytes) -> int | None:
    """The number in a ``/users/$count`` answer (plain text), or ``None`` for any other
    answer: the count is only a progress total. A 429 raises :class:`Retry` (throttled,
    with its Retry-After), so the client can hold the reads that follow."""
    if status == 429:
        raise Retry(
            "429 Too Many Requests",
            retry_after=parse_retry_after(headers.get("retry-after")),
            throttled=True,
        )
    if status != 200:
        return None
    text = body.strip()
    return int(text) if text.isdigit() else None


def page_parts(doc: Any, number: int) -> tuple[list[Any], str | None, str | None]:
    """The items, ``@odata.nextLink`` and ``@odata.deltaLink`` of collection page ``number``.

    A page without a ``value`` list, or with a next link that is not a string, is a
    :class:`~bulkprov.errors.SourceError`: following it could skip pages unseen. A delta
    link that is not a string counts as none.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
        raise SourceError(f"Graph page {number} is not a collection (no 'value' list)")
    next_link = doc.get("@odata.nextLink")
    if next_link is not None and not isinstance(next_link, str):
        raise SourceError(f"Graph page {number} has a malformed @odata.nextLink")
    delta_link = doc.get("@odata.deltaLink")
    return doc["value"], next_link, delta_link if isinstance(delta_link, str) else None


def token_refused(status: int, doc: Mapping[str, Any]) -> SourceAuthError:
    """The error for a refused Graph token request: Entra's ``error`` code and the first
    line of its ``error_description`` (``AADSTS7000215: Invalid client secret…``), never
    the secret."""
    code = doc.get("error", "")
    desc = doc.get("error_description", "")
    desc = clip(str(desc).splitlines()[0], _MAX_DETAIL) if desc else ""
    return SourceAuthError(
        f"Graph token request refused ({status} {code}): {desc} — "
        "check tenant_id, client_id and the client secret"
    )
