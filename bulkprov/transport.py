"""The one place HTTP clients are made.

bulkprov keeps httpx's API (respx and the simulators' in-process transport plug into it)
but sends over aiohttp's connection pool: on these 2-core machines httpx's default transport
managed ≈350 POSTs/s at concurrency 32 against ≈1,100 over aiohttp (facts.md §9), and process
CPU per request is the throughput limit.

The transport is our own :class:`AiohttpTransport`, not ``httpx-aiohttp``'s: every answer
bulkprov reads is a small JSON document, so it reads the whole body inside the transport and
hands httpx a finished ``Response`` (no streaming wrapper to close, no exception-mapping
context manager and no new ``ClientTimeout`` per request). ``benchmarks/bench_transport.py``
measures it against ``httpx-aiohttp`` and raw aiohttp (benchmarks/RESULTS.md, "Hot-path CPU").

The SCIM hot path (one POST or PATCH per user) skips both httpx and aiohttp: :class:`Direct`
sends it over :class:`~bulkprov.http1.Http1Pool`, made here beside the aiohttp session.
"""

from __future__ import annotations

import ssl
import weakref
from collections.abc import Callable, Iterable, Mapping

import aiohttp
import httpx

from bulkprov.http1 import Http1Pool


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent over one lazily opened ``aiohttp.ClientSession``.

    Answers are read completely before they are returned (bulkprov never streams), and
    aiohttp's errors become httpx's (``TimeoutException``, ``ConnectError``, ``ReadError``),
    which is all the retry loops look at.
    """

    def __init__(
        self, session: Callable[[], aiohttp.ClientSession], http1: Http1Pool | None = None
    ) -> None:
        self._factory = session
        self._session: aiohttp.ClientSession | None = None
        #: the hot path's own connections (:class:`Direct`), closed with the session
        self.http1 = http1
        #: one ClientTimeout per distinct httpx timeout (in practice: one per client)
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _timeout(self, t: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
        key = (t.get("connect"), t.get("read"), t.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            # as httpx-aiohttp maps them: connect per socket, read per socket read, pool as
            # aiohttp's "connect" (waiting for a free connection included)
            timeout = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
            self._timeouts[key] = timeout
        return timeout

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes | None,
        client_timeout: aiohttp.ClientTimeout,
        request: httpx.Request,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request, its whole answer read: (status, headers, body), the body as sent
        (httpx decodes ``Content-Encoding`` itself: it sent ``Accept-Encoding``).

        aiohttp's errors are raised as httpx's, so callers handle one set of exceptions.
        """
        session = self._session
        if session is None:
            session = self._session = self._factory()
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                auto_decompress=False,
                timeout=client_timeout,
            ) as resp:
                return resp.status, resp.headers, await resp.read()
        except TimeoutError as exc:  # incl. aiohttp.ServerTimeoutError
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:  # reset, disconnect, bad payload
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            data: bytes | None = request.content or None
        except httpx.RequestNotRead:
            data = await request.aread() or None
        status, headers, body = await self.exchange(
            request.method,
            str(request.url),
            request.headers.multi_items(),
            data,
            self._timeout(request.extensions.get("timeout") or {}),
            request,
        )
        return httpx.Response(
            status,
            headers=list(headers.items()),
            content=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self.http1 is not None:
            await self.http1.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None


class Direct:
    """Requests without httpx's request/response model, over a client's own connections.

    The SCIM hot path (one POST or PATCH per user, no query string) sends through this when
    the client is one :func:`make_client` built for the network: httpx's
    ``Request``/``Response`` objects, URL parsing, header merging and cookie extraction cost
    more CPU per request than aiohttp's whole send, and aiohttp's send costs more than
    :class:`~bulkprov.http1.Http1Pool`'s (benchmarks/RESULTS.md, "Hot-path CPU" and "Issue 5
    at full size"). Clients with another transport (respx, the simulators'
    ``SimTransport``) have none, and their callers use httpx as usual.
    """

    __slots__ = ("_pool",)

    def __init__(self, pool: Http1Pool) -> None:
        self._pool = pool

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """(status, headers, body); raises httpx's ``TimeoutException``/``TransportError``."""
        return await self._pool.send(method, url, headers, body)


_DIRECT: weakref.WeakKeyDictionary[httpx.AsyncClient, Direct] = weakref.WeakKeyDictionary()


def direct(client: httpx.AsyncClient) -> Direct | None:
    """The direct sender of a client made by :func:`make_client` over aiohttp, else None."""
    return _DIRECT.get(client)


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

        http1 = Http1Pool(
            max_connections, ssl_context=ssl_ctx, connect_timeout=timeout, read_timeout=timeout
        )
        transport = AiohttpTransport(session, http1)
    client = httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        # Proxies and netrc from the environment are not for a provisioning engine.
        trust_env=False,
        follow_redirects=False,
    )
    if isinstance(transport, AiohttpTransport) and transport.http1 is not None:
        _DIRECT[client] = Direct(transport.http1)
    return client


def tls_failure(exc: BaseException) -> str | None:
    """The certificate-verification error inside a transport error, or ``None``.

    The transport reports a refused certificate as ``ConnectError``; retrying cannot help
    and "timed out" would mislead, so callers stop with this text instead.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
            return str(getattr(seen, "certificate_error", seen))
        seen = seen.__cause__ or seen.__context__
    return None
