"""A lean HTTP/1.1 keep-alive client for the SCIM hot path (one POST or PATCH per user).

aiohttp's ``ClientSession.request`` costs ≈ 80 µs of CPU per request on these machines: a
``ClientRequest`` and ``ClientResponse`` object, header merging, a task per request body
write, tracing hooks, timers. The hot path needs none of that: it sends a small JSON body
to one host over a pool of keep-alive connections and reads a small JSON answer. This module
does only that, over :mod:`asyncio` protocols, with `httptools
<https://github.com/MagicStack/httptools>`_ (llhttp, the parser Node.js uses; kept by the
authors of uvloop) parsing the answers. Everything else — list pages, filters, Graph,
OAuth, respx and the simulators' in-process transport — still goes through httpx.

Semantics kept from the aiohttp path it replaces (``AiohttpTransport.exchange``, which
``bulkprov.transport.Direct`` used to call):

* errors are httpx's: ``ConnectError`` (with the ``ssl`` error as ``__cause__``, which
  :func:`bulkprov.transport.tls_failure` finds), ``ReadTimeout``, ``ReadError`` for a reset,
  a disconnect before the answer was complete, or an answer that is not HTTP;
* the client's timeouts: ``connect`` per connection, ``read`` for the whole answer;
* at most ``limit`` connections; idle ones are reused for ``keepalive`` seconds, and one the
  server closed (or answered ``Connection: close`` on) is never reused;
* ``Content-Encoding: gzip``/``deflate`` answers are decoded, although none is asked for
  (no ``Accept-Encoding`` is sent: the answers are a few hundred bytes).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import quote

import httptools
import httpx

__all__ = ["Http1Pool"]

_Key = tuple[str, str, int]  # scheme, host, port


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    __slots__ = (
        "body",
        "closed",
        "headers",
        "idle_since",
        "keep",
        "parser",
        "status",
        "transport",
        "waiter",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.keep = False
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # an answer nobody asked for (a 408 before the server closes an idle
            # connection): never let the next request take it as its own
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            # an answer without Content-Length ends with the connection
            if self.status and exc is None and not self._framed():
                self.keep = False
                self.waiter.set_result(None)
            elif isinstance(exc, OSError):
                self._fail(exc)
            else:  # None, or an error of the TLS layer that is not an OSError
                reason = f": {exc}" if exc is not None else ""
                self._fail(ConnectionResetError(f"the server closed the connection{reason}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim answer: the real one follows
            self.status, self.headers, self.body = 0, [], []
            return
        self.keep = self.parser.should_keep_alive()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _framed(self) -> bool:
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return True
        return False

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Headers(Mapping[str, str]):
    """An answer's headers, looked up case-insensitively, decoded only when asked for.

    The hot path reads one or two of them (``Retry-After`` on a 429); building a
    ``CIMultiDict`` of all of them for every answer cost ≈ 2 % of a sync's CPU.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, key: str, default: Any = None) -> Any:  # first value, as CIMultiDict's
        wanted = key.lower().encode("latin-1")
        for name, value in self._raw:
            if name.lower() == wanted:
                return value.decode("latin-1")
        return default

    def __getitem__(self, key: str) -> str:
        value: str | None = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name, _ in self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"_Headers({[(n.decode('latin-1'), v.decode('latin-1')) for n, v in self._raw]})"


class _Slots:
    """At most ``limit`` holders; a released slot is handed to the oldest waiter.

    ``asyncio.Semaphore.acquire`` builds a generator over its waiters on every call
    (``locked()``); this takes a free slot with one comparison.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over: _free is not touched
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            elif waiter in self._waiters:  # release() may have popped it (and skipped it)
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class Http1Pool:
    """Keep-alive HTTP/1.1 connections, at most ``limit`` of them, to the hosts it is sent to.

    Made by :func:`bulkprov.transport.make_client` beside its aiohttp session; closed with it.
    """

    def __init__(
        self,
        limit: int,
        *,
        ssl_context: ssl.SSLContext | bool = True,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        keepalive: float = 30.0,
    ) -> None:
        self._sem = _Slots(limit) if limit > 0 else None
        self._ssl = ssl_context
        self._ssl_ctx: ssl.SSLContext | None = (
            ssl_context if isinstance(ssl_context, ssl.SSLContext) else None
        )
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive = keepalive
        self._idle: dict[_Key, list[_Conn]] = {}
        self._origins: dict[str, tuple[_Key, bytes]] = {}
        self._head: tuple[Mapping[str, str] | None, bytes] = (None, b"")
        self._open: set[_Conn] = set()

    def _origin(self, url: str) -> tuple[_Key, bytes, str]:
        # "scheme://host[:port]" is split once per origin; the path is what follows it
        cut = url.find("/", url.find("//") + 2)
        if cut < 0:
            cut = len(url)
        origin, target = url[:cut], url[cut:] or "/"
        if not target.isascii():  # as httpx and aiohttp send it: percent-encoded UTF-8
            target = quote(target, safe="/?&=%:@!$'()*+,;~-._")
        known = self._origins.get(origin)
        if known is None:
            parts = httpx.URL(origin)
            if parts.scheme not in ("http", "https") or not parts.host:
                raise httpx.UnsupportedProtocol(f"cannot send to {origin!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host_header = parts.netloc.decode("ascii")
            known = ((parts.scheme, parts.host, port), f"Host: {host_header}\r\n".encode())
            self._origins[origin] = known
        return known[0], known[1], target

    def _headers(self, headers: Mapping[str, str]) -> bytes:
        # the client's headers change only with a new token: render them once per dict
        seen, rendered = self._head
        if seen is not headers:
            for k, v in headers.items():
                if any(c in k + v for c in "\r\n\0"):  # never a header split into two
                    raise httpx.LocalProtocolError(f"header {k!r} holds a line break")
            try:
                rendered = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
            except UnicodeEncodeError:  # the message names no value: it may be a token
                # (and from None: the codec's error quotes the character and where it is)
                names = [k for k, v in headers.items() if not _latin1(k + v)]
                raise httpx.LocalProtocolError(
                    f"header {names[0] if names else '?'!r} is not Latin-1 text"
                ) from None
            self._head = (headers, rendered)
        return rendered

    def _context(self) -> ssl.SSLContext:
        if self._ssl_ctx is None:  # built on first use: an http:// target never pays for it
            ctx = ssl.create_default_context()
            if self._ssl is False:  # verify=False, as the aiohttp session was told
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl_ctx = ctx
        return self._ssl_ctx

    async def _connect(self, key: _Key) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = self._context() if scheme == "https" else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    _Conn, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:  # incl. ssl.SSLError (certificate refused)
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        self._open.add(conn)
        return conn

    def _checkout(self, key: _Key) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if (
                not conn.closed
                and transport is not None
                and not transport.is_closing()
                and now - conn.idle_since < self._keepalive
            ):
                return conn
            self._discard(conn)
        return None

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        self._open.discard(conn)

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request, its whole answer read: (status, headers, body)."""
        key, host, target = self._origin(url)
        payload = body or b""
        head = b"".join(
            (
                f"{method} {target} HTTP/1.1\r\n".encode("latin-1"),
                host,
                self._headers(headers),
                b"Content-Length: %d\r\n\r\n" % len(payload),
            )
        )
        sem = self._sem
        if sem is not None:
            await sem.acquire()
        try:
            conn = self._checkout(key) or await self._connect(key)
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            conn.waiter = waiter
            conn.status, conn.headers, conn.body = 0, [], []
            assert conn.transport is not None
            conn.transport.write(head + payload if len(payload) < 65536 else head)
            if len(payload) >= 65536:
                conn.transport.write(payload)
            # one timer handle per request (asyncio.timeout's context manager costs ≈ 3 µs more)
            timer = (
                loop.call_later(self._read_timeout, _expire, waiter)
                if self._read_timeout is not None
                else None
            )
            try:
                await waiter
            except TimeoutError as exc:
                self._discard(conn)
                raise httpx.ReadTimeout(f"no answer from {key[1]} in time") from exc
            except (OSError, httptools.HttpParserError) as exc:
                self._discard(conn)
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            except BaseException:  # cancelled mid-answer: the connection's state is unknown
                self._discard(conn)
                raise
            finally:
                conn.waiter = None
                if timer is not None:
                    timer.cancel()
            status, raw, content = conn.status, conn.headers, b"".join(conn.body)
            if conn.keep and not conn.closed:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(key, []).append(conn)
            else:
                self._discard(conn)
        finally:
            if sem is not None:
                sem.release()
        answer = _Headers(raw)
        if content:
            encoding = answer.get("content-encoding")
            if encoding:
                content = _decode(encoding, content)
        return status, answer, content

    async def aclose(self) -> None:
        """Close every connection (idle or not)."""
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _decode(encoding: str, content: bytes) -> bytes:
    kind = encoding.strip().lower()
    try:
        if kind in ("gzip", "x-gzip"):
            return zlib.decompress(content, 16 + zlib.MAX_WBITS)
        if kind == "deflate":
            try:
                return zlib.decompress(content)
            except zlib.error:  # raw deflate, as some servers send it
                return zlib.decompress(content, -zlib.MAX_WBITS)
    except zlib.error as exc:  # a transport error, as aiohttp's was: the retry logic's kind
        raise httpx.ReadError(f"bad {kind} body: {exc}") from exc
    if kind in ("identity", ""):
        return content
    raise httpx.ReadError(f"unsupported Content-Encoding {encoding!r}")
