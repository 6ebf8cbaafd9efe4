"""Read Microsoft Graph: client-credentials token and paged ``/users``.

Facts relied on (facts.md §7):

* token: ``POST {authority}/{tenant}/oauth2/v2.0/token`` with ``grant_type=client_credentials``
  and ``scope=https://graph.microsoft.com/.default``;
* ``GET /users`` returns 100 users by default, at most 999 with ``$top``; properties beyond the
  default set (``accountEnabled``, ``department``…) need ``$select``; follow the absolute
  ``@odata.nextLink`` (it carries ``$skiptoken``) until it is absent;
* 429 comes with ``Retry-After``, possibly fractional ("Retry-After: 2.128"); without one,
  back off exponentially (https://learn.microsoft.com/graph/throttling).

The retry waits, the pause gate, the retry budget and the token's expiry read the ``clock``
given (:class:`bulkprov.retry.Clock`; the system's by default), so tests run them on a fake one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from pydantic import SecretStr

from bulkprov import _json, redact
from bulkprov.credentials.target import TokenSource
from bulkprov.errors import BulkProvError, DeltaExpired, SourceAuthError, SourceError
from bulkprov.retry import SYSTEM_CLOCK, Clock, PauseGate, RetryPolicy
from bulkprov.scim.responses import parse_retry_after
from bulkprov.transport import tls_failure

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of users: the URL it was read from and the link to the next one."""

    number: int
    link: str
    users: list[dict[str, Any]]
    next_link: str | None
    #: ``@odata.deltaLink`` of the last page of a delta round (the next round's start)
    delta_link: str | None = None


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
    ) -> None:
        #: msal for https authorities (bulkprov.credentials.graph); else the POST below
        self._source = token_source
        self._token_url = f"{authority.rstrip('/')}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"
        self._client_id = client_id
        self._secret = client_secret
        self.base_url = base_url.rstrip("/")
        self._http = http
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.gate = PauseGate(clock)
        self._token: SecretStr | None = None
        self._token_expires = 0.0
        self.requests = 0
        self.throttled = 0

    def __repr__(self) -> str:
        return f"GraphClient({self.base_url!r})"

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
            response = await self._http.post(self._token_url, data=form)
        except httpx.HTTPError as exc:
            if (tls := tls_failure(exc)) is not None:
                raise SourceError(
                    f"cannot verify the certificate of {self._token_url} ({tls}); give its CA "
                    "in graph.ca_file"
                ) from exc
            raise SourceError(
                f"cannot reach the token endpoint {self._token_url}: {type(exc).__name__}"
            ) from exc
        try:
            doc = _json.loads(response.content) if response.content else {}
        except _json.JSONDecodeError:
            doc = {}
        if response.status_code != 200 or "access_token" not in doc:
            code = doc.get("error", "") if isinstance(doc, dict) else ""
            desc = doc.get("error_description", "") if isinstance(doc, dict) else ""
            desc = str(desc).splitlines()[0][:200] if desc else ""
            raise SourceAuthError(
                f"Graph token request refused ({response.status_code} {code}): {desc} — "
                "check tenant_id, client_id and the client secret"
            )
        redact.register(str(doc["access_token"]))
        self._token = SecretStr(str(doc["access_token"]))
        lifetime = float(doc.get("expires_in", 3599))
        self._token_expires = self.clock.now() + max(60.0, lifetime - 300.0)
        return self._token

    async def get_json(self, url: str, *, headers: dict[str, str] | None = None) -> Any:
        """GET a Graph URL with auth and the retry policy; return the parsed JSON."""
        started = self.clock.now()
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            await self.gate.wait()
            token = await self.token()
            hdrs = {"Authorization": f"Bearer {token.get_secret_value()}"}
            if headers:
                hdrs.update(headers)
            retry_after: float | None = None
            self.requests += 1
            try:
                response = await self._http.get(url, headers=hdrs)
                status = response.status_code
                if status == 200:
                    try:
                        return _json.loads(response.content)
                    except _json.JSONDecodeError as exc:
                        raise _Retryable("Graph answered 200 with a body that is not JSON") from exc
                if status == 401 and not refreshed:
                    refreshed = True
                    await self.token(force=True)
                    continue
                if status in (401, 403):
                    raise SourceAuthError(
                        f"Graph refused the read ({status}): {_graph_error(response.content)} — "
                        "check the app's permissions (User.Read.All) and admin consent"
                    )
                if status == 429:
                    self.throttled += 1
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    if retry_after is not None:
                        self.gate.pause(retry_after)
                    raise _Retryable("429 Too Many Requests", retry_after)
                if status >= 500:
                    raise _Retryable(f"{status} {_graph_error(response.content)}")
                if status == 410 or b"syncStateNotFound" in response.content:
                    # An expired delta token (seven days for directory objects, facts.md §7.3)
                    raise DeltaExpired(
                        f"Graph answered {status}: {_graph_error(response.content)}",
                        status=status,
                    )
                raise SourceError(
                    f"Graph answered {status}: {_graph_error(response.content)}", status=status
                )
            except _Retryable as exc:
                error = str(exc)
                retry_after = exc.retry_after
            except httpx.TimeoutException:
                error = "timed out"
            except httpx.TransportError as exc:
                error = f"connection failed ({type(exc).__name__})"
            wait = self.policy.backoff(attempt, retry_after)
            if self.policy.gives_up(attempt, started, wait, self.clock):
                raise SourceError(f"Graph read failed after {attempt} attempt(s): {error}")
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
            response = await self._http.get(
                f"{self.base_url}/users/$count",
                headers={
                    "Authorization": f"Bearer {token.get_secret_value()}",
                    "ConsistencyLevel": "eventual",
                },
            )
        except (BulkProvError, httpx.HTTPError):
            return None
        if response.status_code == 429:
            self.throttled += 1
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                self.gate.pause(retry_after)  # the page reads that follow honour it
            return None
        if response.status_code != 200:
            return None
        text = response.content.strip()
        return int(text) if text.isdigit() else None

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
            doc = await self.get_json(link, headers=headers)
            if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
                raise SourceError(f"Graph page {number} is not a collection (no 'value' list)")
            next_link = doc.get("@odata.nextLink")
            if next_link is not None and not isinstance(next_link, str):
                raise SourceError(f"Graph page {number} has a malformed @odata.nextLink")
            delta_link = doc.get("@odata.deltaLink")
            yield Page(
                number,
                link,
                doc["value"],
                next_link,
                delta_link if isinstance(delta_link, str) else None,
            )
            link = next_link
            number += 1


def latest_per_id(users: list[Any]) -> list[Any]:
    """A users page with each ``id`` once, at its last occurrence.

    Graph's delta query may return an object more than once ("replays and duplicates
    possible", delta-query overview; facts.md §7.3); the last one is the newest. Processed
    twice, a new user would be POSTed twice (the second answered 409 and matched back). Not
    for groups pages: a large group's members are split over repeats that must be merged.
    Items without a string ``id`` are kept as they are (they fail validation later).
    """
    last: dict[str, int] = {}
    for i, user in enumerate(users):
        key = user.get("id") if isinstance(user, dict) else None
        if isinstance(key, str):
            last[key] = i
    if len(last) == len(users):
        return users  # the usual case: every id once, nothing copied
    kept = []
    for i, user in enumerate(users):
        key = user.get("id") if isinstance(user, dict) else None
        if not isinstance(key, str) or last[key] == i:
            kept.append(user)
    return kept


def _graph_error(body: bytes) -> str:
    try:
        doc = _json.loads(body)
    except _json.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        return f"{err.get('code', '')}: {str(err.get('message', ''))[:200]}"
    return str(doc)[:200]
