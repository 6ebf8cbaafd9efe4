"""The strict Zoom mode of the simulated SCIM service (``bulkprov sim --zoom``).

What Zoom does differently from RFC 7644, as documented or reported (facts.md §6, §6.8), and
what this mode therefore answers:

* ``Accept: application/scim+json`` is required ("While using the SCIM APIs, set the value of
  the Accept header as application/scim+json", ZOOM-SCIM2): anything else is a 406;
* PATCH of a user only activates or deactivates it (Zoom's "Deactivate a user"): an
  operation on anything but ``active`` is a 400 ("The request json did not contains valid
  active field.", devforum 100447);
* PUT carries ``schemas`` plus only the fields that change (no ``schemas``: 400), merged into
  the account; a change of ``userName``, ``displayName`` or ``loginType`` answers 200 and
  changes nothing (devforum 6248); a work email outside the managed domains is ignored, or
  refused with "Domain name doesn't match…" (SailPoint's Zoom connector notes);
* ``userType`` must be Basic, Licensed or On-Prem (``AttributeValidationFailed`` otherwise,
  devforum 139015); Licensed accounts beyond ``licensed_seats`` and Basic ones beyond
  ``basic_cap`` (9,999, Entra's Zoom tutorial) are refused with "no available licenses"
  (Zoom's own text for it is undocumented: this one is the simulator's);
* rate limits per label, each its own bucket (facts.md §6.6): Light (GET, PUT, PATCH,
  DELETE of one user), Medium (lists and filters; POST unless ``post_label`` says Light);
  their 429s carry no Retry-After unless asked; past ``daily_limit`` requests a 429 whose
  body says to resume at 00:00 GMT (devforum 18928);
* group PATCH bodies longer than 100,000 characters are refused (400);
* pending invitations (:meth:`ScimService.add_pending_user`): a filter on their userName
  answers 400 "User … not exist or not belong to this account.", lists leave them out, a
  POST of them answers 409 (the service's own behaviour, kept in this mode).

No ``/ServiceProviderConfig``, ``/Schemas``, ``/ResourceTypes`` nor ``/Bulk`` (404).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import orjson

from bulkprov.sim.http import SimRequest, SimResponse

__all__ = ["USER_TYPES", "ZoomRules"]

SCIM_JSON = "application/scim+json"
USER_TYPES = ("Basic", "Licensed", "On-Prem")
ZOOM_USER = "urn:us:zoom:scim:schemas:extension:1.0:ZoomUser"
ZOOM_LICENSES = "urn:ietf:params:scim:schemas:extension:zoom:1.0:User"
MAX_GROUP_PATCH = 100_000
PER_SECOND_DETAIL = (
    "You have reached the maximum per-second rate limit for this API. Try again later."
)
DAILY_DETAIL = (
    "You have exceeded the daily rate limit ({limit}) of SCIM API requests permitted for "
    "this account. You may resume these requests at GMT 00:00:00."
)
NOT_ACTIVE_DETAIL = "The request json did not contains valid active field."
DOMAIN_DETAIL = (
    "Domain name doesn't match. Please contact the Zoom Customer Support to set managed "
    "domains for your account."
)
NO_LICENSE_DETAIL = "No available licenses: all {n:,} {kind} seats of the account are in use."

_monotonic = time.monotonic


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> SimResponse:
    # Zoom's errors carry ``status`` as a JSON number (facts.md §6.7)
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "detail": detail,
        "status": status,
    }
    return SimResponse(status, orjson.dumps(body), {"Content-Type": SCIM_JSON, **(headers or {})})


class _Bucket:
    __slots__ = ("last", "rate", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.last = _monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is free."""
        now = _monotonic()
        cap = max(1.0, self.rate)
        self.tokens = min(cap, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def _domain(address: Any) -> str | None:
    if not isinstance(address, str) or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].lower()


def _work_email(resource: dict[str, Any]) -> Any:
    emails = resource.get("emails")
    if not isinstance(emails, list):
        return None
    for e in emails:
        if isinstance(e, dict) and str(e.get("type", "")).lower() == "work":
            return e.get("value")
    for e in emails:
        if isinstance(e, dict):
            return e.get("value")
    return None


def user_type(resource: dict[str, Any] | None) -> str | None:
    if resource is None:
        return None
    value = resource.get("userType")
    return value if isinstance(value, str) else None


class ZoomRules:
    """The strict Zoom behaviour one :class:`~bulkprov.sim.scim.service.ScimService` adds.

    Args:
        light / medium: per-label requests per second (``None``: that label not limited).
        post_label: the label POST /Users counts under ("medium" or "light").
        retry_after: send ``Retry-After`` on per-second 429s (Zoom documents none).
        daily_limit: SCIM requests answered per day before the daily-limit 429 (``None``: no
            daily limit).
        managed_domains: email domains Zoom may set (``None``: any).
        foreign_email: "ignore" (200, email kept) or "refuse" (400 "Domain name doesn't
            match…") for a work email outside ``managed_domains``.
        ignored: attributes whose PUT changes answer 200 and change nothing.
        licensed_seats / basic_cap: the account's seats (``None``: unlimited).
    """

    def __init__(
        self,
        *,
        light: float | None = None,
        medium: float | None = None,
        post_label: str = "medium",
        retry_after: bool = False,
        daily_limit: int | None = None,
        managed_domains: frozenset[str] | None = None,
        foreign_email: str = "ignore",
        ignored: frozenset[str] = frozenset({"username", "displayname", "logintype"}),
        licensed_seats: int | None = None,
        basic_cap: int | None = 9_999,
        max_group_patch: int = MAX_GROUP_PATCH,
    ) -> None:
        if post_label not in ("light", "medium"):
            raise ValueError("post_label must be 'light' or 'medium'")
        if foreign_email not in ("ignore", "refuse"):
            raise ValueError("foreign_email must be 'ignore' or 'refuse'")
        self.buckets: dict[str, _Bucket] = {}
        self.set_limits(light, medium)
        self.post_label = post_label
        self.retry_after = retry_after
        self.daily_limit = daily_limit
        self.daily_used = 0
        #: ``Retry-After`` of the daily-limit 429 (Zoom's documented example is an ISO date,
        #: ``2020-05-31T00:00:00Z``; one was seen without any): ``None`` sends none
        self.daily_retry_after: str | None = None
        self.managed_domains = (
            frozenset(d.lower() for d in managed_domains) if managed_domains is not None else None
        )
        self.foreign_email = foreign_email
        self.ignored = frozenset(a.lower() for a in ignored)
        self.licensed_seats = licensed_seats
        self.basic_cap = basic_cap
        #: the largest group PATCH body accepted, in characters (Zoom: 100,000)
        self.max_group_patch = max_group_patch
        self.group_patch_sizes: list[int] = []
        #: stored users per userType (kept up to date by the service)
        self.user_types: Counter[str] = Counter()
        #: requests per label, and 429s per label
        self.by_label: Counter[str] = Counter()
        self.throttled_by_label: Counter[str] = Counter()
        #: (attribute, kept, wanted) of every write this mode ignored
        self.ignored_writes: list[tuple[str, Any, Any]] = []

    def set_limits(self, light: float | None, medium: float | None) -> None:
        self.buckets = {}
        for label, rate in (("light", light), ("medium", medium)):
            if rate is not None:
                if rate <= 0:
                    raise ValueError(f"{label} must be > 0 or None")
                self.buckets[label] = _Bucket(rate)

    def settings(self) -> dict[str, Any]:
        return {
            "zoom": True,
            "light": self.buckets["light"].rate if "light" in self.buckets else None,
            "medium": self.buckets["medium"].rate if "medium" in self.buckets else None,
            "post_label": self.post_label,
            "daily_limit": self.daily_limit,
            "licensed_seats": self.licensed_seats,
            "basic_cap": self.basic_cap,
            "managed_domains": sorted(self.managed_domains) if self.managed_domains else None,
            "foreign_email": self.foreign_email,
        }

    def counters(self) -> dict[str, Any]:
        return {
            "by_label": dict(self.by_label),
            "throttled_by_label": dict(self.throttled_by_label),
            "daily_used": self.daily_used,
            "user_types": dict(self.user_types),
            "ignored_writes": len(self.ignored_writes),
        }

    # -- the gate every SCIM request passes (after authentication) ------------------------

    def label(self, method: str, rest: str, has_query: bool) -> str:
        """Zoom's rate-limit label of one request (facts.md §6.2)."""
        resource = rest.rstrip("/")
        if resource in ("/Users", "/Groups"):
            if method == "POST":
                return self.post_label if resource == "/Users" else "medium"
            return "medium"  # list and filter
        if resource.startswith("/Users/"):
            return "light"
        return "medium"

    def gate(self, req: SimRequest, rest: str) -> SimResponse | None:
        """406 without the SCIM media type; the daily limit; the label's bucket."""
        accept = req.headers.get("accept", "")
        if SCIM_JSON not in accept.lower():
            return _error(
                406,
                f"Not Acceptable: set the Accept header to {SCIM_JSON} (got {accept or 'none'!r}).",
            )
        if self.daily_limit is not None:
            if self.daily_used >= self.daily_limit:
                extra = {"X-RateLimit-Type": "Daily-limit"}
                if self.daily_retry_after:
                    extra["Retry-After"] = self.daily_retry_after
                return _error(429, DAILY_DETAIL.format(limit=self.daily_limit), extra)
            self.daily_used += 1
        label = self.label(req.method, rest, bool(req.query))
        self.by_label[label] += 1
        bucket = self.buckets.get(label)
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                self.throttled_by_label[label] += 1
                headers = {"X-RateLimit-Category": label.capitalize()}
                if self.retry_after:
                    headers["Retry-After"] = str(max(1, math.ceil(wait)))
                return _error(429, PER_SECOND_DETAIL, headers)
        return None

    # -- users ----------------------------------------------------------------------------

    def check_patch(self, body: Any) -> SimResponse | None:
        """Only ``active`` may be PATCHed (Zoom's "activate or deactivate a user")."""
        ops = body.get("Operations") if isinstance(body, dict) else None
        if not isinstance(ops, list) or not ops:
            return _error(400, NOT_ACTIVE_DETAIL)
        for op in ops:
            if not isinstance(op, dict):
                return _error(400, NOT_ACTIVE_DETAIL)
            path = op.get("path")
            value = op.get("value")
            if isinstance(path, str) and path.strip().lower() == "active":
                continue
            if (
                (path is None or path == "")
                and isinstance(value, dict)
                and [k.lower() for k in value] == ["active"]
            ):
                continue
            return _error(400, NOT_ACTIVE_DETAIL)
        return None

    def merge_put(self, old: dict[str, Any], body: Any) -> dict[str, Any] | SimResponse:
        """The account after a Zoom PUT: the fields given merged in, some silently kept."""
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object.")
        if not isinstance(body.get("schemas"), list) or not body["schemas"]:
            return _error(400, "The request json must contain the schemas field.")
        new: dict[str, Any] = orjson.loads(orjson.dumps(old))
        for key, value in body.items():
            low = key.lower()
            if low in ("schemas", "id", "meta"):
                continue
            if low in self.ignored and value != old.get(key):
                self.ignored_writes.append((key, old.get(key), value))
                continue  # 200, and nothing changes (devforum 6248)
            if low == "emails":
                refused = self._email(old, new, value)
                if refused is not None:
                    return refused
                continue
            current = new.get(key)
            if isinstance(value, dict) and isinstance(current, dict):
                merged = dict(current)
                for sub, sv in value.items():
                    if sub.lower() in self.ignored and sv != current.get(sub):
                        self.ignored_writes.append((f"{key}:{sub}", current.get(sub), sv))
                        continue
                    merged[sub] = sv
                new[key] = merged
            else:
                new[key] = value
        schemas = new.setdefault("schemas", [])
        for schema in body["schemas"]:
            # an extension given for the first time is declared, as a POST would
            if isinstance(schema, str) and schema not in schemas and schema in new:
                schemas.append(schema)
        return new

    def _email(self, old: dict[str, Any], new: dict[str, Any], value: Any) -> SimResponse | None:
        wanted = _work_email({"emails": value})
        domain = _domain(wanted)
        if (
            self.managed_domains is not None
            and wanted != _work_email(old)
            and (domain is None or domain not in self.managed_domains)
        ):
            if self.foreign_email == "refuse":
                return _error(400, DOMAIN_DETAIL)
            self.ignored_writes.append(("emails", _work_email(old), wanted))
            return None  # 200, the email kept
        new["emails"] = value
        return None

    def check_user(self, old: dict[str, Any] | None, new: dict[str, Any]) -> SimResponse | None:
        """userType's allowed values, and the seats left for the new one."""
        kind = new.get("userType")
        if kind is None:
            return None
        if kind not in USER_TYPES:
            return _error(
                400,
                f"AttributeValidationFailed: userType {kind!r} is not valid; "
                f"use one of {', '.join(USER_TYPES)}.",
            )
        if kind == user_type(old):
            return None
        cap = {"Licensed": self.licensed_seats, "Basic": self.basic_cap}.get(str(kind))
        if cap is not None and self.user_types[str(kind)] >= cap:
            return _error(400, NO_LICENSE_DETAIL.format(n=cap, kind=kind))
        return None

    def stored(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Keep :attr:`user_types` counted as accounts are created, changed and deleted."""
        before, after = user_type(old), user_type(new)
        if before == after:
            return
        if before is not None:
            self.user_types[before] -= 1
        if after is not None:
            self.user_types[after] += 1

    def check_group_patch(self, body: bytes) -> SimResponse | None:
        size = len(body.decode("utf-8", "replace"))
        self.group_patch_sizes.append(size)
        if size > self.max_group_patch:
            return _error(
                400, f"The request body must not exceed {self.max_group_patch:,} characters."
            )
        return None
