"""Target credentials: a static bearer token (with a JWT expiry warning) or Zoom's
server-to-server OAuth, refreshed automatically.

* A static token that is a JWT carries its expiry in the payload's ``exp``; PyJWT decodes it
  *without* verification (we only want the date) and a warning is given 30 days ahead — the
  admin guide's worst story is a token that expires and "the sync will silently stop working".
* Zoom server-to-server OAuth (facts.md §6.1): ``POST https://zoom.us/oauth/token`` with
  ``grant_type=account_credentials&account_id=…`` and HTTP Basic ``client_id:client_secret``;
  "The token's time to live is one hour (3600 seconds). There is no refresh token." So a new
  token is fetched five minutes before the old one expires, and once more when the target
  answers 401 (the token was revoked), before the run is stopped.

Every token obtained is registered with :mod:`bulkprov.redact`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any, Protocol

import anyio
import httpx
from pydantic import SecretStr

from bulkprov import redact
from bulkprov.credentials.oauth import read_token
from bulkprov.errors import TargetAuthError, TargetProxyError, TargetTLSError
from bulkprov.transport import AnswerTooLarge, Bounds, describe, fetch

WARN_DAYS = 30
#: fetch a new OAuth token this long before the old one expires (at most a tenth of its life)
REFRESH_MARGIN = 300.0


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` (Unix seconds) of a JWT, unverified; ``None`` if it is not a JWT or its
    ``exp`` is not a date (absent, not a number, or out of range, like JSON's ``Infinity``).
    """
    import jwt  # here, not at the top: PyJWT loads cryptography (~35 ms of start-up)

    try:
        # PyJWT parses it; verify_signature=False also turns off the exp/nbf/aud checks, so an
        # expired token still gives its date (https://pyjwt.readthedocs.io/en/stable/usage.html)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    try:
        time.gmtime(exp)  # the date the warning names
    except (OverflowError, OSError, ValueError):
        return None
    return float(exp)


def expiry_warning(
    token: SecretStr, *, now: float | None = None, days: int = WARN_DAYS
) -> str | None:
    """A warning when a JWT token expires within ``days`` (or has expired); else ``None``."""
    exp = jwt_expiry(token.get_secret_value())
    if exp is None:
        return None
    now = time.time() if now is None else now
    date = time.strftime("%Y-%m-%d", time.gmtime(exp))
    if exp <= now:
        return f"the SCIM token expired on {date}: generate a new one (the target will refuse it)"
    left = (exp - now) / 86400
    if left <= days:
        return (
            f"the SCIM token expires on {date} (in {left:.0f} day(s)): generate a new one "
            "before then, or the sync will stop"
        )
    return None


class TokenSource(Protocol):
    """Where the SCIM client gets its bearer token."""

    async def token(self, *, force: bool = False) -> str: ...

    @property
    def refreshable(self) -> bool: ...


class StaticToken:
    """A token from the config (env or file): nothing to refresh."""

    refreshable = False

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    async def token(self, *, force: bool = False) -> str:
        return self._token.get_secret_value()


def _refused(status: int, doc: Mapping[str, Any]) -> TargetAuthError:
    """Zoom's token endpoint said no: its ``reason`` (or ``error``) and what to check."""
    reason = doc.get("reason") or doc.get("error")
    return TargetAuthError(
        f"the OAuth token request was refused ({status} {reason or ''}): "
        "check target.oauth account_id, client_id and client_secret",
        status=status,
    )


class ZoomOAuth:
    """Zoom server-to-server OAuth (``account_credentials``), refreshed before expiry."""

    refreshable = True

    def __init__(
        self,
        token_url: str,
        account_id: str,
        client_id: str,
        client_secret: SecretStr,
        http: httpx.AsyncClient,
        bounds: Bounds | None = None,
    ) -> None:
        self.token_url = token_url
        self.bounds = bounds or Bounds()
        self._account_id = account_id
        self._basic = base64.b64encode(
            f"{client_id}:{client_secret.get_secret_value()}".encode()
        ).decode()
        redact.register(self._basic)
        self._http = http
        self._token: str | None = None
        self._expires = 0.0
        self._lock = anyio.Lock()
        self.fetched = 0

    def __repr__(self) -> str:
        return f"ZoomOAuth({self.token_url!r})"

    async def token(self, *, force: bool = False) -> str:
        stale = self._token
        async with self._lock:  # one fetch for every worker waiting on it
            fresh = self._token is not None and time.monotonic() < self._expires
            if fresh and self._token is not None and (not force or self._token != stale):
                return self._token
            self._token = await self._fetch()
            return self._token

    async def _fetch(self) -> str:
        try:
            status, _, content = await fetch(
                self._http,
                self._http.build_request(
                    "POST",
                    self.token_url,
                    params={"grant_type": "account_credentials", "account_id": self._account_id},
                    headers={"Authorization": f"Basic {self._basic}"},
                ),
                limit=self.bounds.resource_bytes,
                deadline=self.bounds.deadline,
            )
        except AnswerTooLarge as exc:
            raise TargetAuthError(f"the OAuth token endpoint {self.token_url}: {exc}") from exc
        except httpx.HTTPError as exc:
            failure = describe(exc, self.token_url)
            text = f"cannot reach the OAuth token endpoint {self.token_url}: {failure.text}"
            if failure.cause in ("proxy-auth", "proxy-refused"):
                raise TargetProxyError(text) from exc
            if failure.cause in ("certificate", "tls"):
                raise TargetTLSError(text + "; give its CA in target.ca_file") from exc
            raise TargetAuthError(text) from exc
        token, lifetime = read_token(status, content, default_lifetime=3600.0, refused=_refused)
        self._expires = time.monotonic() + lifetime - min(REFRESH_MARGIN, lifetime / 10)
        self.fetched += 1
        return token
