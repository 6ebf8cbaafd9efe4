"""Read Microsoft Graph: client-credentials token and paged ``/users``.

Facts relied on (facts.md §7):

* token: ``POST {authority}/{tenant}/oauth2/v2.0/token`` with ``grant_type=client_credentials``
  and ``scope=https://graph.microsoft.com/.default``;
* ``GET /users`` returns 100 users by default, at most 999 with ``$top``; properties beyond the
  default set (``accountEnabled``, ``department``…) need ``$select``; follow the absolute
  ``@odata.nextLink`` (it carries ``$skiptoken``) until it is absent;
* 429 comes with ``Retry-After``, possibly fractional ("Retry-After: 2.128"); without one,
  back off exponentially (https://learn.microsoft.com/graph/throttling).

Graph's answers are classified without I/O by :mod:`bulkprov.graph.responses`; this module
sends, refreshes the token and runs the retry loop.

The retry waits, the pause gate, the retry budget and the token's expiry read the ``clock``
given (:class:`bulkprov.retry.Clock`; the system's by default), so tests run them on a fake one.

Reads are paced by a :class:`~bulkprov.scim.rate.RatePacer` of their own, the SCIM client's
kind: unbounded (no wait at all) until Graph answers 429; from then on at the rate the reads
achieved, adapted like the target's. Graph's limits are per app and tenant, shared by every
reader (facts.md §7.5): after a 429 the readers (users, groups, deltas) no longer go back at
full speed together the moment the ``Retry-After`` ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from pydantic import SecretStr

from bulkprov.config import Config
from bulkprov.credentials.oauth import read_token
from bulkprov.credentials.target import TokenSource
from bulkprov.errors import BulkProvError, SourceError, SourceTLSError
from bulkprov.graph.responses import (
    Retry,
    StaleToken,
    classify,
    page_parts,
    token_refused,
    user_count,
)
from bulkprov.retry import SYSTEM_CLOCK, Clock, PauseGate, RetryPolicy
from bulkprov.scim.rate import RatePacer
from bulkprov.transport import AnswerTooLarge, Bounds, describe, fetch

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def endpoint(url: str, base_url: str) -> str | None:
    """Which of bulkprov's Graph reads ``url`` is: ``users``, ``groups/delta``,
    ``groups/{id}``, ``servicePrincipals/{id}``, or Entra's provisioning job
    (``synchronization``; ``synchronization/write`` to pause or start it) (``None`` for
    another URL)."""
    path = url.split("?", 1)[0]
    base = base_url.rstrip("/") + "/"
    if not path.startswith(base):
        return None
    path = path[len(base) :]
    if path == "groups/delta":
        return "groups/delta"
    if path.startswith("servicePrincipals/") and "/synchronization/" in path:
        return "synchronization/write" if path.endswith(("/pause", "/start")) else "synchronization"
    for prefix in ("users", "groups", "servicePrincipals"):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix if prefix == "users" else prefix + "/{id}"
    return None


def read_purposes(cfg: Config | None = None) -> dict[str, str]:
    """Why each Graph endpoint is read (with ``cfg``: the setting that asks for it) and
    the application permission it needs (facts.md §7: User.Read.All for users and
    ``users/delta``; GroupMember.Read.All or Group.Read.All for groups and members;
    ``appRoleAssignedTo`` is likely Application.Read.All — Microsoft's page includes its
    table from elsewhere, facts.md §7.4)."""
    groups = "groups/delta is read"
    if cfg is None:
        groups += ' for groups.enabled = true or scope.mode = "assigned"'
    elif cfg.groups.enabled:
        groups += (
            " because groups.enabled = true (groups and their members are provisioned; "
            "false provisions users only)"
        )
    elif cfg.scope.mode == "assigned":
        groups += ' because scope.mode = "assigned" (members of assigned groups are in scope)'
    sp = 'servicePrincipals/{id} is read because scope.mode = "assigned"'
    if cfg is not None and cfg.scope.service_principal_id:
        sp += f" (scope.service_principal_id = {cfg.scope.service_principal_id!r})"
    owned = "or Application.ReadWrite.OwnedBy when this app owns the enterprise application"
    return {
        "users": "users are read to provision them: the permission is User.Read.All",
        "groups/delta": f"{groups}: the permission is GroupMember.Read.All (or Group.Read.All)",
        "groups/{id}": "groups/{id} is read for the groups assigned to the app (scope.mode = "
        '"assigned"): the permission is GroupMember.Read.All (or Group.Read.All)',
        "servicePrincipals/{id}": f"{sp}: it must be the object id of the enterprise "
        "application (Enterprise applications → the app → Properties → Object ID), not of "
        "the app registration; the permission is Application.Read.All",
        # GRAPH api/synchronization-synchronizationjob-list.md, -get.md, -pause.md, -start.md
        "synchronization": "Entra's provisioning job is read to migrate from it (bulkprov "
        "migrate --service-principal: the object id of the enterprise application, Enterprise "
        "applications → the app → Properties → Object ID): the permission is "
        f"Synchronization.Read.All (Synchronization.ReadWrite.All to pause or start it), {owned}",
        "synchronization/write": "Entra's provisioning job is paused or started (bulkprov "
        "migrate --pause-entra / --resume-entra): the permission is "
        f"Synchronization.ReadWrite.All, {owned}",
    }


@dataclass(frozen=True, slots=True)
class Page:
    """One page of users: the URL it was read from and the link to the next one."""

    number: int
    link: str
    users: list[dict[str, Any]]
    next_link: str | None
    #: ``@odata.deltaLink`` of the last page of a delta round (the next round's start)
    delta_link: str | None = None


class GraphClient:
    def __init__(
        self,
        *,
        authority: str,
        tenant_id: str,
        client_id: str,
        client_secret: SecretStr,
        base_url: str,
        http: httpx.AsyncClient,
        policy: RetryPolicy | None = None,
        token_source: TokenSource | None = None,
        clock: Clock = SYSTEM_CLOCK,
        bounds: Bounds | None = None,
    ) -> None:
        #: msal for https authorities (bulkprov.credentials.graph); else the POST below
        self._source = token_source
        self._token_url = f"{authority.rstrip('/')}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"
        self._client_id = client_id
        self._secret = client_secret
        self.base_url = base_url.rstrip("/")
        self._http = http
        self.policy = policy or RetryPolicy()
        #: the most an answer may take: bytes (a page, or a token) and seconds
        self.bounds = bounds or Bounds()
        self.clock = clock
        self.gate = PauseGate(clock)
        #: unbounded until Graph throttles (bulkprov.scim.rate)
        self.pacer = RatePacer()
        self._token: SecretStr | None = None
        self._token_expires = 0.0
        self.requests = 0
        self.throttled = 0
        #: why each endpoint is read and the permission it needs, for error texts
        #: (:func:`read_purposes`; the pipeline gives the config's, naming its settings)
        self.purposes = read_purposes()

    def __repr__(self) -> str:
        return f"GraphClient({self.base_url!r})"

    def purpose_of(self, url: str) -> str | None:
        """Why bulkprov reads ``url``, for an error text (``None``: not one of its reads)."""
        kind = endpoint(url, self.base_url)
        return self.purposes.get(kind) if kind else None

    async def token(self, *, force: bool = False) -> SecretStr:
        """A bearer token, refreshed five minutes before it expires."""
        if self._source is not None:
            return SecretStr(await self._source.token(force=force))
        if not force and self._token is not None and self.clock.now() < self._token_expires:
            return self._token
        form = {
            "client_id": self._client_id,
            "client_secret": self._secret.get_secret_value(),
            "scope": GRAPH_SCOPE,
            "grant_type": "client_credentials",
        }
        try:
            status, _, content = await fetch(
                self._http,
                self._http.build_request("POST", self._token_url, data=form),
                limit=self.bounds.resource_bytes,
                deadline=self.bounds.deadline,
            )
        except AnswerTooLarge as exc:
            raise SourceError(f"the token endpoint {self._token_url}: {exc}") from exc
        except httpx.HTTPError as exc:
            failure = describe(exc, self._token_url)
            hint = "; give its CA in graph.ca_file" if failure.cause == "certificate" else ""
            raise (SourceTLSError if failure.cause in ("certificate", "tls") else SourceError)(
                f"cannot reach the token endpoint {self._token_url}: {failure.text}{hint}"
            ) from exc
        token, lifetime = read_token(
            status, content, default_lifetime=3599.0, refused=token_refused
        )
        self._token = SecretStr(token)
        self._token_expires = self.clock.now() + max(60.0, lifetime - 300.0)
        return self._token

    async def _pace(self) -> float | None:
        """Wait for the pacer's next slot (none while unbounded); return the send time, or
        ``None`` when a ``Retry-After`` paused every reader meanwhile."""
        clock, pacer = self.clock, self.pacer
        now = clock.now()
        delay = pacer.reserve(now)
        if delay > 0:
            await clock.sleep(delay)
            now = clock.now()
            if self.gate.paused:
                return None
        wait = pacer.admit(now)
        while wait > 0:
            await clock.sleep(wait)
            now = clock.now()
            wait = pacer.admit(now)
        return now

    async def get_json(self, url: str, *, headers: dict[str, str] | None = None) -> Any:
        """GET a Graph URL with auth and the retry policy; return the parsed JSON."""
        return await self.send("GET", url, headers=headers)

    async def post(self, url: str) -> Any:
        """POST an action without a body (a synchronization job's ``pause`` or ``start``):
        ``None`` for Graph's ``204 No Content`` (or 202), else the JSON of a 200. The same
        auth and retry policy as a read: both actions may be sent twice (pausing a paused
        job, or starting a running one, changes nothing)."""
        return await self.send("POST", url)

    async def send(self, method: str, url: str, *, headers: dict[str, str] | None = None) -> Any:
        """Send ``method`` to a Graph URL with auth and the retry policy; the parsed JSON
        (``None`` for a 202 or 204 to anything but a GET)."""
        started = self.clock.now()
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            await self.gate.wait()
            sent = await self._pace()
            if sent is None:
                attempt -= 1  # the slot fell in a pause: not an attempt
                continue
            token = await self.token()
            hdrs = {"Authorization": f"Bearer {token.get_secret_value()}"}
            if headers:
                hdrs.update(headers)
            retry_after: float | None = None
            self.requests += 1
            cause: BaseException | None = None
            try:
                status, rheaders, content = await fetch(
                    self._http,
                    self._http.build_request(method, url, headers=hdrs),
                    limit=self.bounds.page_bytes,
                    deadline=self.bounds.deadline,
                )
                if status != 429:
                    self.pacer.on_success()
                if status == 200 or status == 429 or status >= 500:  # the hot path: no text
                    return classify(status, rheaders, content, refreshed=refreshed)
                if method != "GET" and status in (202, 204):
                    return None
                return classify(
                    status,
                    rheaders,
                    content,
                    refreshed=refreshed,
                    request=f"{method} {url.split('?', 1)[0]}",
                    purpose=self.purpose_of(url),
                )
            except StaleToken:
                refreshed = True  # revoked or expired early: one new token, one more read
                await self.token(force=True)
                continue
            except Retry as exc:
                retry_after = exc.retry_after
                if exc.throttled:
                    self.throttled += 1
                    self.pacer.on_throttle(sent, self.clock.now(), retry_after)
                if retry_after is not None:
                    self.gate.pause(retry_after)  # every reader waits, not just this one
                error = str(exc)
            except AnswerTooLarge as exc:
                raise SourceError(
                    f"Graph read failed: {method} {url.split('?', 1)[0]}: {exc}"
                ) from exc
            except httpx.TransportError as exc:  # timeouts included
                failure = describe(exc, url)
                cause, error = exc, failure.text
                if not failure.retryable:  # TLS, or the proxy refused: no retry can help
                    hint = (
                        "; give its CA in graph.ca_file" if failure.cause == "certificate" else ""
                    )
                    kind = (
                        SourceTLSError if failure.cause in ("certificate", "tls") else SourceError
                    )
                    raise kind(f"Graph read failed: {error}{hint}") from exc
            wait = self.policy.backoff(attempt, retry_after)
            if self.policy.gives_up(attempt, started, wait, self.clock):
                raise SourceError(
                    f"Graph read failed after {attempt} attempt(s): {error}"
                ) from cause
            if retry_after is None:
                await self.clock.sleep(wait)

    async def user_count(self) -> int | None:
        """The tenant's user count (``GET /users/$count``), or ``None`` if it cannot be had.

        Only a progress total: one attempt, no retries, and any failure gives ``None`` so
        the run never depends on it. Counting is an advanced query and needs
        ``ConsistencyLevel: eventual``; the answer is plain text, not JSON
        (https://learn.microsoft.com/graph/aad-advanced-queries).
        """
        try:
            await self.gate.wait()
            token = await self.token()
            self.requests += 1
            status, rheaders, content = await fetch(
                self._http,
                self._http.build_request(
                    "GET",
                    f"{self.base_url}/users/$count",
                    headers={
                        "Authorization": f"Bearer {token.get_secret_value()}",
                        "ConsistencyLevel": "eventual",
                    },
                ),
                limit=self.bounds.resource_bytes,
                deadline=self.bounds.deadline,
            )
        except (BulkProvError, httpx.HTTPError, AnswerTooLarge):
            return None
        try:
            return user_count(status, rheaders, content)
        except Retry as exc:  # 429
            self.throttled += 1
            if exc.retry_after is not None:
                self.gate.pause(exc.retry_after)  # the page reads that follow honour it
            return None

    def users_url(self, select: Iterable[str], top: int) -> str:
        query = urlencode({"$select": ",".join(sorted(set(select))), "$top": str(top)}, safe="$,")
        return f"{self.base_url}/users?{query}"

    async def pages(
        self,
        first_link: str,
        *,
        first_number: int = 0,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[Page]:
        """Follow ``@odata.nextLink`` from ``first_link`` until the last page."""
        link: str | None = first_link
        number = first_number
        while link is not None:
            users, next_link, delta_link = page_parts(
                await self.get_json(link, headers=headers), number
            )
            yield Page(number, link, users, next_link, delta_link)
            link = next_link
            number += 1


def latest_per_id(users: list[Any]) -> list[Any]:
    """A users page with each ``id`` once, at its last occurrence, merged with the earlier.

    Graph's delta query may return an object more than once ("replays and duplicates
    possible", delta-query overview; facts.md §7.3); the last one is the newest. Processed
    twice, a new user would be POSTed twice (the second answered 409 and matched back). An
    entry may carry only the properties that changed (``Prefer: return=minimal``, or
    "at least the properties that have been updated"): a repeat then adds to the earlier
    one, so the properties of both are kept, the later one winning (an ``@removed`` repeat
    replaces the user; a user back after an ``@removed`` drops it). Not for groups pages:
    a large group's members are split over repeats that must be merged differently.
    Items without a string ``id`` are kept as they are (they fail validation later).
    """
    last: dict[str, int] = {}
    for i, user in enumerate(users):
        key = user.get("id") if isinstance(user, dict) else None
        if isinstance(key, str):
            last[key] = i
    if len(last) == len(users):
        return users  # the usual case: every id once, nothing copied
    merged: dict[str, dict[str, Any]] = {}
    for user in users:
        key = user.get("id") if isinstance(user, dict) else None
        if isinstance(key, str):
            earlier = merged.get(key)
            if earlier is None or "@removed" in user:
                merged[key] = user
            else:
                both = {k: v for k, v in earlier.items() if k != "@removed"}
                both.update(user)
                merged[key] = both
    kept = []
    for i, user in enumerate(users):
        key = user.get("id") if isinstance(user, dict) else None
        if not isinstance(key, str):
            kept.append(user)
        elif last[key] == i:
            kept.append(merged[key])
    return kept
