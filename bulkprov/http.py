"""The one place HTTP clients are made.

bulkprov keeps httpx's API (respx and the simulators' in-process transport plug into it)
but sends over aiohttp's connection pool through the ``httpx-aiohttp`` transport: on these
2-core machines httpx's default transport managed ≈350 POSTs/s at concurrency 32 against
≈1,100 over aiohttp (facts.md §9), and process CPU per request is the throughput limit.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


def make_client(
    *,
    timeout: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | str | bool = True,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient``; ``transport`` replaces the network (tests, simulators)."""
    if transport is None:
        ssl_ctx: ssl.SSLContext | bool
        if isinstance(verify, ssl.SSLContext):
            ssl_ctx = verify
        elif isinstance(verify, str):
            ssl_ctx = ssl.create_default_context(cafile=verify)
        else:
            # True: aiohttp's own default context, built once at its import. A context of
            # ours would load the system CA store again per client (~25 ms of start-up
            # CPU each, measured with benchmarks/profile_sync.py).
            ssl_ctx = verify

        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                limit=max_connections, ssl=ssl_ctx, keepalive_timeout=30
            )
            # aiohttp's own timeout is left to httpx's per-request timeout below.
            return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout())

        transport = AiohttpTransport(client=session)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        # Proxies and netrc from the environment are not for a provisioning engine.
        trust_env=False,
        follow_redirects=False,
    )


def tls_failure(exc: BaseException) -> str | None:
    """The certificate-verification error inside a transport error, or ``None``.

    httpx-aiohttp reports a refused certificate as ``ConnectTimeout``; retrying cannot help
    and "timed out" would mislead, so callers stop with this text instead.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
            return str(getattr(seen, "certificate_error", seen))
        seen = seen.__cause__ or seen.__context__
    return None
