"""Classify SCIM responses without I/O.

:func:`classify` turns a status, headers and body into the parsed JSON document, or raises
the :mod:`bulkprov.errors` class that decides what happens next:

=============  ======================  =============================================
status         raises                  what the workers do
=============  ======================  =============================================
2xx            (returns the body)      success
401, 403       TargetAuthError         stop the whole run with one message
429, daily     TargetDailyLimit        stop the run cleanly until the limit resets
429            TargetThrottled         pause every worker (Retry-After) and retry
5xx            TargetUnavailable       retry with backoff, capped
other 4xx      TargetRejected          this user is a Failure with the reason
=============  ======================  =============================================

Zoom's answers that mean something particular (facts.md §6.3, §6.8) are recognised here too,
so the pipeline asks a question instead of parsing text: :func:`is_pending_invitation`,
:func:`is_license_exhausted`, :func:`is_domain_refused`, :func:`advice` (what to do about a
refused value), :func:`kept_values` (what a write Zoom may ignore really changed).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from bulkprov import _json, redact
from bulkprov.errors import (
    TargetAuthError,
    TargetDailyLimit,
    TargetError,
    TargetRejected,
    TargetThrottled,
    TargetUnavailable,
)
from bulkprov.redact import clip
from bulkprov.retry import parse_retry_after
from bulkprov.scim.paths import get_value

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


#: credentials a target may echo back in an error (a debugging proxy's habit): never kept.
#: A Basic credential is base64 (RFC 7617) of at least 8 characters: Zoom's own words
#: ("a maximum of 9,999 basic users.") are not one, and stay readable.
_CREDENTIALS = re.compile(
    r"\b((?i:bearer))\s+[A-Za-z0-9._~+/=-]{6,}|\b((?i:basic))\s+[A-Za-z0-9+/]{8,}={0,2}(?![\w.~-])"
)


def _short(detail: str) -> str:
    """An error text with every registered secret and any echoed credential masked, then
    cut to :data:`_MAX_DETAIL` (masked first: a cut secret would no longer match)."""
    masked = _CREDENTIALS.sub(lambda m: f"{m.group(1) or m.group(2)} {redact.MASK}", detail)
    return clip(masked, _MAX_DETAIL)


#: a 429 that is a *daily* limit, not a per-second one: Zoom's body says "You have exceeded
#: the daily rate limit (…) You may resume these requests at GMT 00:00:00." and its
#: documented headers say ``X-RateLimit-Type: Daily-limit`` (devforum 18928, facts.md §6.8)
_DAILY = re.compile(r"daily(?: rate)? limit|GMT 00:00|00:00(?::00)? GMT", re.IGNORECASE)


def daily_limit_reset(headers: Mapping[str, str], now: float) -> float:
    """When a spent daily limit resets (Unix time): ``Retry-After`` when it names a later
    date (Zoom's documented example: ``2020-05-31T00:00:00Z``), else the next 00:00 GMT."""
    value = (headers.get("retry-after") or "").strip()
    when: datetime | None = None
    if value.replace(".", "", 1).isdigit():
        if float(value) >= 60:
            return now + float(value)
    elif value:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
    if when is not None:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if when.timestamp() > now:
            return when.timestamp()
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=1)).timestamp()


def daily_limit_message(detail: str, resume_at: float, now: float) -> str:
    """The run's stop message: Zoom's text, the resume time, and what to do."""
    when = datetime.fromtimestamp(resume_at, UTC).strftime("%Y-%m-%d %H:%M GMT")
    left = max(0, int(resume_at - now))
    return (
        f"the target's daily request limit is spent ({detail or '429 daily limit'}): the run "
        f"stopped cleanly and is saved; run the same command again after {when} (in "
        f"{left // 3600} h {left % 3600 // 60:02d} min) to resume. Zoom's limits are per "
        "account, shared by every app on it: lower [target.zoom] light_per_second / "
        "medium_per_second if other apps need part of the day's requests"
    )


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Any:
    """Return the JSON body of a successful response (``None`` when empty), else raise.

    ``now`` (Unix time; the system's by default) dates a daily limit's reset."""
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
    if status == 429 and (
        _DAILY.search(detail) or "daily" in (headers.get("x-ratelimit-type") or "").lower()
    ):
        at = time.time() if now is None else now
        resume_at = daily_limit_reset(headers, at)
        raise TargetDailyLimit(daily_limit_message(detail, resume_at, at), resume_at=resume_at)
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


#: Zoom's answer to a lookup of a userName held by a pending (or expired) invitation:
#: 400 "User {email} not exist or not belong to this account." (devforum 7646, facts.md §6.3)
_PENDING = re.compile(r"not exist or not belong to this account", re.IGNORECASE)
#: no seat left for the licence asked (Entra's LicenseLimitExceeded; Zoom's own text is
#: undocumented, facts.md §6.8: these are the likely words)
_NO_LICENSE = re.compile(
    r"licen[cs]e.*(?:not available|no (?:more )?available|exceed|insufficient|not enough|"
    r"in use|limit)|no (?:available )?licen[cs]es?|maximum of [\d,]+ basic users|"
    r"LicenseLimitExceeded",
    re.IGNORECASE,
)
#: an email outside the account's managed (associated) domains (SailPoint's Zoom notes)
_DOMAIN = re.compile(r"domain name doesn.?t match|managed domain|associated domain", re.IGNORECASE)


def is_pending_invitation(exc: TargetError) -> bool:
    """A 400 saying the user does "not exist or not belong to this account": on Zoom, an
    invitation not yet accepted (or expired) holds that userName."""
    return exc.status == 400 and bool(_PENDING.search(exc.detail))


def is_license_exhausted(exc: TargetError) -> bool:
    """A 4xx saying no licence (seat) is left for the user's type."""
    status = exc.status or 0
    return 400 <= status < 500 and status != 429 and bool(_NO_LICENSE.search(exc.detail))


def is_domain_refused(exc: TargetError) -> bool:
    """A 4xx refusing an email outside the account's managed domains."""
    status = exc.status or 0
    return 400 <= status < 500 and bool(_DOMAIN.search(exc.detail))


def advice(exc: TargetError, *, zoom: bool = False) -> str | None:
    """What an admin can do about an answer Zoom gave, or ``None``.

    ``zoom`` (profile "zoom"): every error has advice, a general one when the answer is not
    one of those recognised."""
    text = exc.detail
    if "attributevalidationfailed" in text.lower() or (
        exc.status == 400 and "usertype" in text.lower()
    ):
        return (
            "Zoom accepts userType Basic, Licensed or On-Prem (Pro and Corp are sent as "
            "Licensed and On-Prem); newer plans set licences through the "
            "urn:ietf:params:scim:schemas:extension:zoom:1.0:User attributes, whose values "
            "depend on the plan: fix the app role or the mapping, then run again"
        )
    if is_domain_refused(exc):
        return (
            "add the email's domain to Zoom's managed (associated) domains, or keep the "
            "mail unchanged"
        )
    if is_license_exhausted(exc):
        return "free or buy seats in Zoom, or raise [target.zoom] licensed_seats"
    if exc.status == 406:
        return "the target wants Accept: application/scim+json (bulkprov sends it: a proxy?)"
    if not zoom:
        return None
    status = exc.status or 0
    if status == 409 or (exc.scim_type or "").lower() == "uniqueness":
        return (
            "an account bulkprov cannot see holds this userName (a pending invitation, or "
            "the email in another Zoom account): see `bulkprov duplicates`; the user is "
            "retried in later cycles"
        )
    if status == 429:
        return (
            "Zoom kept answering 429 past target.max_retry_seconds: lower [target.zoom] "
            "light_per_second / medium_per_second (the limits are shared by every app on "
            "the account); the user is retried in a later cycle"
        )
    if status >= 500 or status == 0 or status == 408:
        return "Zoom was unavailable; the user is retried in a later cycle"
    return (
        "Zoom refused the request: check the values it names (`bulkprov mapping test --user "
        "…`) and fix them in Entra or the mapping; the user is retried in a later cycle"
    )


#: attributes a Zoom PUT may answer 200 for and not change (devforum 6248; emails outside a
#: managed domain, or of a pending user: SailPoint's Zoom connector notes; facts.md §6.8),
#: and the likely reason, told in the Warning
MAY_IGNORE: dict[str, str] = {
    "username": "Zoom does not change an account's userName (its sign-in email) by SCIM: "
    "change the email in Zoom's admin portal, or keep the UPN",
    "displayname": "Zoom does not change displayName by SCIM (it shows first and last name)",
    "logintype": "Zoom does not change loginType by SCIM: set it in Zoom's admin portal",
    "emails": "Zoom changes an email only within the account's managed (associated) "
    "domains: add the domain in Zoom, or keep the mail unchanged",
}


def may_ignore(path: str) -> str | None:
    """The reason Zoom may ignore a write of ``path``, when it may."""
    low = path.lower()
    for key, reason in MAY_IGNORE.items():
        if (
            low == key
            or low.startswith((key + "[", key + "."))
            or (":" in low and low.rsplit(":", 1)[1].split(".", 1)[0] == key)
        ):
            return reason
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()  # Zoom may lower-case an email
    return bool(a == b)


def kept_values(sent: Mapping[str, Any], resource: Any) -> dict[str, Any]:
    """Paths of ``sent`` whose value the read-back ``resource`` does not hold: what Zoom
    kept instead (``None`` when the attribute is absent)."""
    if not isinstance(resource, dict):
        return {}
    kept: dict[str, Any] = {}
    for path, value in sent.items():
        have = get_value(resource, path)
        if not _same(have, value):
            kept[path] = have
    return kept
