"""The one HTTP stack: httpx's API over transports from libraries, proxies, and what a failed
connection says.

Every request bulkprov sends goes through an httpx client made here: Graph pages, the Graph
token (msal's requests, and the plain client-credentials POST of an ``http://`` loopback
authority), every SCIM request and Zoom's OAuth token. No HTTP is spoken by bulkprov's own
code.

* :func:`make_client` (async: Graph, SCIM, OAuth): ``httpx.AsyncClient`` over
  ``httpx_aiohttp.AiohttpTransport``, aiohttp's connection pool. Chosen by measurement
  (benchmarks/RESULTS.md, "Issue 14"): at 16 connections httpx's own transport (httpcore)
  cost ≈ 1,000 µs of CPU per POST on these machines, ``httpx-aiohttp`` ≈ 210. At the rates
  real targets allow (Zoom: 60-80 requests/s) either is a few percent of one core; the
  first sync of a large tenant into an unlimited target is where the difference shows.
* :func:`make_sync_client` (msal, which is synchronous and runs in a worker thread): a
  ``httpx.Client`` over httpx's own transport; one token an hour needs nothing faster.

Proxies (:class:`Proxies`): ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY`` by
default, read with the standard library (``urllib.request.getproxies``, which on Windows and
macOS also reads the system's settings), or the config's ``[network]`` section instead.
httpx's own ``trust_env`` stays off: it would also take ``SSL_CERT_FILE`` and friends, and
certificate handling is the config's (``ca_file``), never the environment's (facts.md §9,
§10). ``https://`` URLs go through the proxy with ``CONNECT``; loopback hosts never use a
proxy (as Go's ``http.ProxyFromEnvironment``): a proxy cannot reach this machine's loopback.

Errors: every transport error is an ``httpx.TransportError`` (aiohttp's are mapped by
``httpx-aiohttp``, anything it leaves unmapped by :class:`_Transport`), and
:func:`describe` turns one into a sentence with the host, the port and the cause (DNS,
refused, reset, timeout, TLS, proxy), for the error the caller raises ``from`` it.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import functools
import ipaddress
import socket
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import httpx
import httpx_aiohttp


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bulkprov")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0"


#: hosts that never go through a proxy, whatever NO_PROXY says
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
#: what every request says it comes from
USER_AGENT = f"bulkprov/{_version()}"
#: the request extension naming the proxy a request was sent through (transports ignore
#: extensions they do not know)
PROXY = "bulkprov.proxy"


def show_proxy(url: str) -> str:
    """A proxy URL as it may be shown: scheme, host and port, never its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True, slots=True)
class Proxies:
    """Which proxy a request goes through: one per scheme, and the hosts that bypass it.

    ``no_proxy`` entries follow curl's ``NO_PROXY`` rules (:func:`bypass`). Credentials come in the proxy URL (``HTTPS_PROXY`` as
    ``http://user:password@proxy:3128``) or, from the config, as ``auth`` (a secret source).
    """

    https: str | None = None
    http: str | None = None
    no_proxy: tuple[str, ...] = ()
    #: (user, password) for the proxy, when the URL does not carry them
    auth: tuple[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls) -> Proxies:
        """``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (any case)."""
        env = urllib.request.getproxies()
        every = env.get("all")
        return cls(
            https=env.get("https") or every,
            http=env.get("http") or every,
            no_proxy=split_no_proxy(env.get("no", "")),
        )

    def __bool__(self) -> bool:
        return bool(self.https or self.http)

    def for_url(self, url: str | httpx.URL) -> str | None:
        """The proxy URL a request to ``url`` goes through, or None: straight there."""
        u = url if isinstance(url, httpx.URL) else httpx.URL(url)
        proxy = self.https if u.scheme == "https" else self.http if u.scheme == "http" else None
        if proxy is None or u.host in LOOPBACK:
            return None
        if self.no_proxy and bypass(self.no_proxy, u.host, u.port):
            return None
        return proxy

    def describe(self) -> str:
        """For logs and ``test-connection``: where requests go, without credentials."""
        if not self:
            return "no proxy"
        parts = []
        if self.https:
            parts.append(f"https via {show_proxy(self.https)}")
        if self.http:
            parts.append(f"http via {show_proxy(self.http)}")
        if self.no_proxy:
            parts.append(f"not for {','.join(self.no_proxy)}")
        return "; ".join(parts)

    def _proxy(self, url: str) -> httpx.Proxy:
        """The proxy with its credentials as a ``Proxy-Authorization`` header.

        Credentials from the URL or ``auth`` go in a header rather than httpx's ``auth``:
        ``httpx-aiohttp`` turns ``auth`` into aiohttp's ``BasicAuth``, deprecated since aiohttp
        3.14; both transports send a proxy header with ``CONNECT``.
        """
        parsed = httpx.URL(url)
        auth = self.auth or (
            (parsed.username, parsed.password) if parsed.username or parsed.password else None
        )
        if auth is None:
            return httpx.Proxy(parsed)
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        return httpx.Proxy(
            parsed.copy_with(username=None, password=None),
            headers={"Proxy-Authorization": f"Basic {token}"},
        )

    def urls(self) -> set[str]:
        return {p for p in (self.https, self.http) if p}


def split_no_proxy(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def bypass(no_proxy: tuple[str, ...], host: str, port: int | None) -> bool:
    """Whether ``host`` (``port``) goes direct under ``NO_PROXY`` entries, as curl reads them
    (https://curl.se/libcurl/c/CURLOPT_NOPROXY.html): ``*`` matches every host; a name
    matches itself and its subdomains (``corp.example`` and ``.corp.example`` both match
    ``a.corp.example``); an IP address matches itself, a CIDR block (``10.0.0.0/8``) its
    addresses; ``:port`` after an entry limits it to that port. Case does not matter.
    """
    host = host.lower().strip("[]").rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy:
        entry = raw.strip().lower()
        if entry == "*":
            return True
        want_port: int | None = None
        if entry.startswith("["):  # [v6]:port
            inside, _, rest = entry[1:].partition("]")
            entry = inside
            if rest.startswith(":") and rest[1:].isdigit():
                want_port = int(rest[1:])
        elif entry.count(":") == 1:
            name, _, p = entry.partition(":")
            if p.isdigit():
                entry, want_port = name, int(p)
        if want_port is not None and want_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip(".").rstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


@functools.cache
def _ssl_context(cafile: str | None) -> ssl.SSLContext:
    """One verifying context per CA file per process: loading the system store costs ~25 ms
    of CPU, and every command makes several clients."""
    return ssl.create_default_context(cafile=cafile)


def ssl_context(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext:
    """A verifying context: the given one, a CA bundle's, or the system's. Never unverified."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        raise ValueError("TLS verification is never turned off; give a CA file instead")
    return _ssl_context(verify if isinstance(verify, str) else None)


class _Transport(httpx_aiohttp.AiohttpTransport):
    """``httpx-aiohttp``'s transport, with every aiohttp error the right httpx one.

    ``httpx-aiohttp`` 0.2 maps aiohttp's errors by "the most specific httpx class among the
    matches", which sends every ``ClientConnectionError`` that is not a timeout (a refused
    connection, a reset, a server that hung up) to ``httpx.ConnectTimeout``, and leaves an
    answer aiohttp cannot parse (``ClientResponseError``: a broken or hostile server) as
    aiohttp's own type. Both are corrected here; the aiohttp error stays the ``__cause__``.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            cause = exc.__cause__
            if cause is None or isinstance(cause, TimeoutError):
                raise
            kind: type[httpx.TransportError] = httpx.ReadError
            if isinstance(cause, aiohttp.ClientProxyConnectionError):
                kind = httpx.ProxyError
            elif isinstance(cause, aiohttp.ClientConnectorError):
                kind = httpx.ConnectError
            elif isinstance(cause, aiohttp.ServerDisconnectedError):
                kind = httpx.RemoteProtocolError
            raise kind(str(exc)) from cause
        except httpx.HTTPError:
            raise
        except aiohttp.ClientError as exc:
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc


class _AsyncRouter(httpx.AsyncBaseTransport):
    """Send each request straight, or through the proxy :meth:`Proxies.for_url` names.

    No HTTP here: it only picks which library transport carries the request.
    """

    def __init__(
        self,
        proxies: Proxies,
        make: Callable[[httpx.Proxy | None], httpx.AsyncBaseTransport],
    ) -> None:
        self._for_url = proxies.for_url
        self._direct = make(None)
        self._via = {url: make(proxies._proxy(url)) for url in proxies.urls()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self._for_url(request.url)
        if proxy is None:
            return await self._direct.handle_async_request(request)
        request.extensions[PROXY] = proxy  # for describe(): which proxy it went through
        return await self._via[proxy].handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (self._direct, *self._via.values()):
            await transport.aclose()


class _SyncRouter(httpx.BaseTransport):
    """:class:`_AsyncRouter` for the synchronous client (msal)."""

    def __init__(
        self, proxies: Proxies, make: Callable[[httpx.Proxy | None], httpx.BaseTransport]
    ) -> None:
        self._for_url = proxies.for_url
        self._direct = make(None)
        self._via = {url: make(proxies._proxy(url)) for url in proxies.urls()}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self._for_url(request.url)
        if proxy is None:
            return self._direct.handle_request(request)
        request.extensions[PROXY] = proxy
        return self._via[proxy].handle_request(request)

    def close(self) -> None:
        for transport in (self._direct, *self._via.values()):
            transport.close()


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: no ``Set-Cookie`` is stored or sent back.

    bulkprov's requests are independent (a bearer token authenticates each), and a cookie a
    hostile target sets must not ride along on later requests. It also spares every answer
    httpx's ``http.cookiejar`` pass (a ``urllib`` request built per response: ~10 % of a
    sync's CPU, benchmarks/RESULTS.md, "Issue 14").
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


_NO_COOKIES = _NoCookies()


class _Client(httpx.AsyncClient):
    """``httpx.AsyncClient`` with :class:`_NoCookies` as its (read-only, empty) jar."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("bulkprov's clients keep no cookies")


def make_client(
    *,
    timeout: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | str | bool = True,
    proxies: Proxies | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for Graph or the target.

    ``transport`` replaces the network (tests, the simulators' in-process transport);
    ``proxies`` defaults to the environment's.
    """
    if transport is None:
        ctx = ssl_context(verify)
        limits = httpx.Limits(max_connections=max_connections, keepalive_expiry=30)

        def make(proxy: httpx.Proxy | None) -> httpx.AsyncBaseTransport:
            return _Transport(verify=ctx, limits=limits, trust_env=False, proxy=proxy)

        proxies = Proxies.from_environment() if proxies is None else proxies
        transport = _AsyncRouter(proxies, make) if proxies else make(None)
    return _Client(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": USER_AGENT},
        # certificates and proxies come from the config (or the proxies above), never
        # from SSL_CERT_FILE, REQUESTS_CA_BUNDLE or a netrc (facts.md §9, §10)
        trust_env=False,
        follow_redirects=False,
    )


def make_sync_client(
    *,
    timeout: float,
    verify: ssl.SSLContext | str | bool = True,
    proxies: Proxies | None = None,
) -> httpx.Client:
    """A synchronous ``httpx.Client`` (msal's ``http_client``), same TLS and proxy rules.

    One connection, closed after each request: a token an hour keeps nothing open for the
    callers to close.
    """
    ctx = ssl_context(verify)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)

    def make(proxy: httpx.Proxy | None) -> httpx.BaseTransport:
        return httpx.HTTPTransport(verify=ctx, limits=limits, trust_env=False, proxy=proxy)

    proxies = Proxies.from_environment() if proxies is None else proxies
    return httpx.Client(
        transport=_SyncRouter(proxies, make) if proxies else make(None),
        timeout=httpx.Timeout(timeout),
        trust_env=False,
        follow_redirects=False,
    )


# --- bounded exchanges ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bounds:
    """How much one exchange may take: bytes of its answer, and seconds from the first byte
    sent to the last byte read (httpx's own timeouts are per operation: a server sending one
    byte a second never trips them).

    A list page (Graph's users, a SCIM ListResponse, a Bulk answer) may be large; a single
    resource, a token or an error is small.
    """

    page_bytes: int = 16 * 1024 * 1024
    resource_bytes: int = 1024 * 1024
    deadline: float = 120.0


class AnswerTooLarge(Exception):
    """An answer grew past its :class:`Bounds`; reading stopped there (nothing buffered past
    the limit)."""

    def __init__(self, url: httpx.URL, limit: int) -> None:
        super().__init__(
            f"the answer from {_host_port(url)} is larger than {limit:,} bytes; reading stopped "
            "(a hostile or broken server, or raise the limit in [network])"
        )
        self.limit = limit


async def fetch(
    client: httpx.AsyncClient, request: httpx.Request, *, limit: int, deadline: float
) -> tuple[int, httpx.Headers, bytes]:
    """Send ``request`` and read its whole answer, within ``limit`` bytes and ``deadline``
    seconds: (status, headers, body).

    Raises httpx's ``ReadTimeout`` when the deadline passes (:func:`describe` says
    "timeout"), :class:`AnswerTooLarge` past the limit (announced by ``Content-Length`` or
    counted while reading, decoded bytes: a compressed bomb stops at the limit too), and
    httpx's transport errors.
    """
    chunks: list[bytes] = []
    try:
        # asyncio's own timeout, not anyio.fail_after: a cancel scope per request was 7 % of a
        # sync's CPU (py-spy, benchmarks/RESULTS.md "Issue 14"); bulkprov runs on asyncio
        async with asyncio.timeout(deadline):
            response = await client.send(request, stream=True)
            try:
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > limit:
                    raise AnswerTooLarge(request.url, limit)
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise AnswerTooLarge(request.url, limit)
                    chunks.append(chunk)
            finally:
                await response.aclose()
    except TimeoutError as exc:
        raise httpx.ReadTimeout(
            f"no complete answer within {deadline:g} s", request=request
        ) from exc
    return response.status_code, response.headers, b"".join(chunks)


# --- what a failed connection says ---------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 20:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def tls_failure(exc: BaseException) -> str | None:
    """The certificate-verification error inside a transport error, or ``None``.

    A refused certificate arrives as a connect error; retrying cannot help and "timed out"
    would mislead, so callers stop with this text instead.
    """
    for seen in _chain(exc):
        if isinstance(seen, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
            return str(getattr(seen, "certificate_error", seen))
    return None


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed exchange, described: what to print and whether trying again can help."""

    #: "dns", "refused", "reset", "timeout", "protocol", "connection", "certificate" (not
    #: verified), "tls" (another handshake failure), "proxy" (unreachable or failing),
    #: "proxy-auth" (407: credentials missing or wrong) or "proxy-refused" (another 4xx)
    cause: str
    #: one sentence naming the host and port (and the proxy, for a proxy failure)
    text: str

    @property
    def retryable(self) -> bool:
        """DNS, refused, reset and timeouts may pass; TLS and a proxy's refusal will not."""
        return self.cause not in ("certificate", "tls", "proxy-auth", "proxy-refused")


def _host_port(url: httpx.URL) -> str:
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{port}"


def _os_cause(chain: list[BaseException]) -> str | None:
    for seen in chain:
        if isinstance(seen, socket.gaierror):
            return "dns"
        if isinstance(seen, ConnectionRefusedError):
            return "refused"
        if isinstance(seen, ConnectionResetError | BrokenPipeError):
            return "reset"
        if isinstance(seen, OSError) and seen.errno in (errno.ECONNREFUSED,):
            return "refused"
        if isinstance(seen, OSError) and seen.errno in (errno.ECONNRESET, errno.EPIPE):
            return "reset"
    return None


def describe(exc: BaseException, url: str | httpx.URL | None = None) -> Failure:
    """What went wrong sending a request, as a :class:`Failure` (for ``raise … from exc``).

    The URL and the proxy come from the request httpx attaches to its exceptions; ``url``
    is for an exception that has none.
    """
    request: httpx.Request | None = None
    if isinstance(exc, httpx.RequestError):
        try:
            request = exc.request
        except RuntimeError:  # raised outside a client: no request attached
            request = None
    if request is not None:
        u = request.url
    else:
        u = url if isinstance(url, httpx.URL) else httpx.URL(url or "http://unknown")
    proxy: str | None = None
    if request is not None:
        proxy = request.extensions.get(PROXY)
    where = _host_port(u)
    chain = _chain(exc)
    via = f" through the proxy {show_proxy(proxy)}" if proxy else ""
    if (tls := tls_failure(exc)) is not None:
        return Failure("certificate", f"cannot verify the TLS certificate of {where} ({tls})")
    for seen in chain:
        if isinstance(seen, aiohttp.ClientHttpProxyError):
            return _proxy_answer(seen.status, seen.message, where, proxy)
        if isinstance(seen, aiohttp.ClientProxyConnectionError):
            why = {"dns": "its name does not resolve", "refused": "connection refused"}.get(
                _os_cause(chain) or "", str(seen.os_error)
            )
            name = show_proxy(proxy) if proxy else f"{seen.host}:{seen.port}"
            return Failure("proxy", f"cannot connect to the proxy {name} for {where} ({why})")
    if isinstance(exc, httpx.ProxyError) and proxy:
        # httpcore (the msal client): "407 Proxy Authentication Required" and the like
        status, _, message = str(exc).partition(" ")
        if status.isdigit():
            return _proxy_answer(int(status), message, where, proxy)
        return Failure("proxy", f"the proxy {show_proxy(proxy)} failed for {where}: {exc}")
    for seen in chain:
        if isinstance(seen, ssl.SSLError):
            return Failure("tls", f"TLS handshake with {where} failed{via} ({seen})")
    kind = _os_cause(chain)
    if kind is None:
        if any(isinstance(s, TimeoutError | httpx.TimeoutException) for s in chain):
            kind = "timeout"
        elif any(
            isinstance(s, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError)
            for s in chain
        ):
            kind = "reset"  # hung up before (or in the middle of) the answer
        elif any(
            isinstance(s, httpx.RemoteProtocolError | aiohttp.ClientResponseError) for s in chain
        ):
            kind = "protocol"
        else:
            kind = "connection"
    if kind == "dns" and proxy is None:
        return Failure(
            "dns",
            f"cannot resolve {u.host} (DNS) for {where}; if only a proxy can reach it, set "
            "HTTPS_PROXY or [network] proxy",
        )
    detail = str(exc).strip() or type(exc).__name__
    return Failure(kind, f"{_CAUSE[kind]} {where}{via}: {detail[:200]}")


_CAUSE = {
    "dns": "DNS lookup failed for",
    "refused": "connection refused by",
    "reset": "connection closed or reset by",
    "timeout": "timed out talking to",
    "protocol": "unreadable answer from",
    "connection": "connection failed to",
}


def _proxy_answer(status: int, message: str, where: str, proxy: str | None) -> Failure:
    name = show_proxy(proxy) if proxy else "the proxy"
    said = f"{status} {message}".strip()
    if status == 407:
        return Failure(
            "proxy-auth",
            f"the proxy {name} wants credentials for CONNECT {where} ({said}): give them in "
            "the proxy URL (http://user:password@host:port) or as [network] proxy_username "
            "and proxy_password",
        )
    if 400 <= status < 500:
        return Failure("proxy-refused", f"the proxy {name} refused CONNECT {where} ({said})")
    return Failure("proxy", f"the proxy {name} could not connect to {where} ({said})")
