"""Graph tokens from msal (client secret or certificate), refreshed before they expire.

msal is Microsoft's own implementation of the client-credentials flow: it reads the
authority's OpenID configuration, signs certificate assertions (``private_key_jwt``), caches
the token and hands out a new one before the old one expires (``refresh_in``). It is sync,
so every call runs in a worker thread (``anyio.to_thread``), one at a time.

msal accepts only an ``https`` authority (facts.md §9). Decision: an ``https`` authority
(production, and the simulators when served over TLS) always goes through msal; an
``http://`` loopback authority (the simulators in ``bulkprov demo`` and in most tests) keeps
the small hand-written client-credentials POST of :class:`~bulkprov.graph.client.GraphClient`.
``graph.certificate`` needs msal, hence https.

msal's ``http_client`` is a synchronous ``httpx.Client`` from
:func:`bulkprov.transport.make_sync_client` (msal documents its interface as "a subset of
requests, aiohttp and httpx": ``get``/``post`` returning ``status_code``, ``text``,
``headers``, ``raise_for_status``), so the token requests share the other clients' TLS and
proxy rules: ``graph.ca_file`` (else the system's CAs, never ``REQUESTS_CA_BUNDLE``, facts.md
§9) and the proxy of ``[network]`` or the environment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

from bulkprov import redact
from bulkprov.errors import SourceAuthError, SourceError, SourceTLSError
from bulkprov.transport import Proxies, describe, make_sync_client

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class _MsalHttp:
    """msal's ``http_client`` over an ``httpx.Client``.

    msal hands some form values as ``bytes`` (the signed client assertion of a certificate
    credential): ``requests`` sends those as text, httpx as ``"b'…'"``; and a ``str`` body is
    raw content to httpx. Both are passed the way msal means them.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def post(
        self,
        url: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        **kwargs: Any,
    ) -> httpx.Response:
        if isinstance(data, dict):
            form = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
            return self._client.post(url, params=params, data=form, headers=headers, **kwargs)
        return self._client.post(url, params=params, content=data, headers=headers, **kwargs)

    def get(
        self, url: str, params: Any = None, headers: Any = None, **kwargs: Any
    ) -> httpx.Response:
        return self._client.get(url, params=params, headers=headers, **kwargs)

    def close(self) -> None:
        self._client.close()


class MsalToken:
    """A Graph token source backed by ``msal.ConfidentialClientApplication``."""

    refreshable = True

    def __init__(
        self,
        *,
        authority: str,
        tenant_id: str,
        client_id: str,
        secret: SecretStr | None = None,
        private_key: SecretStr | None = None,
        thumbprint: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 60.0,
        proxies: Proxies | None = None,
    ) -> None:
        import msal

        if (secret is None) == (private_key is None):
            raise ValueError("give a client secret or a certificate, not both")
        # A token an hour needs no pooled connection, and none is left open for the
        # callers to close (sync, plan and provision all make one of these).
        session = _MsalHttp(
            make_sync_client(
                timeout=timeout, verify=str(ca_file) if ca_file else True, proxies=proxies
            )
        )
        self._session = session
        credential: Any
        if secret is not None:
            credential = secret.get_secret_value()
        else:
            assert private_key is not None
            credential = {"private_key": private_key.get_secret_value(), "thumbprint": thumbprint}
        # Built on first use, in the worker thread: msal reads the authority's OpenID
        # configuration in its constructor (blocking I/O).
        self._make_app: Any = lambda: msal.ConfidentialClientApplication(
            client_id,
            client_credential=credential,
            authority=f"{authority.rstrip('/')}/{tenant_id}",
            http_client=session,
            timeout=timeout,
            # the authority is the configured one, not discovered (and may be a simulator)
            instance_discovery=False,
            validate_authority=False,
        )
        self._app: Any = None
        self._lock = anyio.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.fetched = 0

    def __repr__(self) -> str:
        return "MsalToken()"

    async def token(self, *, force: bool = False) -> str:
        stale = self._token
        async with self._lock:
            if (
                self._token
                and time.monotonic() < self._expires
                and not (force and self._token == stale)
            ):
                return self._token
            result = await anyio.to_thread.run_sync(self._acquire, force)
            token = result.get("access_token")
            if not isinstance(token, str) or not token:
                codes = result.get("error_codes") or []
                desc = str(result.get("error_description") or "").splitlines()[:1]
                raise SourceAuthError(
                    f"Graph token request refused ({result.get('error', '?')} {codes}): "
                    f"{desc[0][:200] if desc else ''} — check tenant_id, client_id and the "
                    "client secret or certificate"
                )
            redact.register(token)
            lifetime = float(result.get("expires_in", 3599))
            # ask msal again five minutes early: it then refreshes (its own refresh_in)
            self._expires = time.monotonic() + lifetime - min(300.0, lifetime / 10)
            self._token = token
            self.fetched += 1
            return token

    def _acquire(self, force: bool) -> dict[str, Any]:
        try:
            if self._app is None:
                self._app = self._make_app()
            elif force:
                self._app.remove_tokens_for_client()  # a 401: the cached token is bad
            result: dict[str, Any] = self._app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        except httpx.TransportError as exc:
            failure = describe(exc)
            hint = "; give its CA in graph.ca_file" if failure.cause == "certificate" else ""
            kind = SourceTLSError if failure.cause in ("certificate", "tls") else SourceError
            raise kind(
                f"cannot get a Graph token from the authority: {redact.scrub(failure.text)}{hint}"
            ) from exc
        except (httpx.HTTPError, ValueError, OSError) as exc:  # never the secret
            # from None, on purpose: msal's and the key loader's texts are trusted only
            # scrubbed (above); as __cause__ they would reach a traceback as they are
            raise SourceError(
                f"cannot get a Graph token from the authority: {type(exc).__name__}: "
                f"{redact.scrub(str(exc))[:300]}"
            ) from None
        return result

    def close(self) -> None:
        self._session.close()
