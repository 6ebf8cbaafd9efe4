"""bulkprov.transport: the one HTTP stack (httpx over httpx-aiohttp) against loopback servers.

An aiohttp app serves the ordinary cases; raw asyncio servers answer with exactly the bytes a
case needs (chunked bodies, ``Connection: close``, garbage, a hang, a reset), so framing,
connection reuse and the error paths are exercised on real sockets, and every failure is an
``httpx`` error that :func:`bulkprov.transport.describe` names with host, port and cause.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme
from aiohttp import web

from bulkprov.transport import Proxies, describe, make_client, make_sync_client, tls_failure

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
NO_PROXY = Proxies()


def client(timeout: float = 5, connections: int = 2, **kw: object) -> httpx.AsyncClient:
    return make_client(timeout=timeout, max_connections=connections, proxies=NO_PROXY, **kw)  # type: ignore[arg-type]


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "query": dict(request.query),
            "body": body.decode(),
            "auth": request.headers.get("Authorization"),
        },
        status=201 if request.method == "POST" else 200,
        headers={"Retry-After": "3"},
    )


async def _gzip(request: web.Request) -> web.Response:
    return web.Response(
        body=gzip.compress(b'{"zipped": true}'),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(text="late")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/gzip", _gzip)
    app.router.add_get("/slow", _slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_httpx_api_over_aiohttp(server: str) -> None:
    async with client() as http:
        r = await http.post(f"{server}/echo", params={"a": "b c"}, content=b"hi")
        assert r.status_code == 201
        assert r.json()["body"] == "hi"
        assert r.json()["query"] == {"a": "b c"}
        assert r.headers["retry-after"] == "3"  # case-insensitive, as httpx's own
        z = await http.get(f"{server}/gzip")  # httpx decodes Content-Encoding once
        assert z.json() == {"zipped": True}


def test_every_client_is_made_of_library_transports() -> None:
    import httpx_aiohttp

    http = client()
    assert isinstance(http._transport, httpx_aiohttp.AiohttpTransport)
    assert not http._trust_env  # certificates never from SSL_CERT_FILE / REQUESTS_CA_BUNDLE
    sync = make_sync_client(timeout=5, proxies=NO_PROXY)
    assert isinstance(sync._transport, httpx.HTTPTransport)
    sync.close()


def test_verification_is_never_turned_off() -> None:
    with pytest.raises(ValueError, match="never turned off"):
        make_client(timeout=5, max_connections=1, verify=False)


async def test_errors_are_httpx_errors_that_say_what_happened(server: str) -> None:
    closed = _closed_port()
    async with client(timeout=0.3) as http:
        with pytest.raises(httpx.ConnectError) as refused:
            await http.get(f"http://127.0.0.1:{closed}/")
        failure = describe(refused.value)
        assert failure.cause == "refused" and failure.retryable
        assert f"127.0.0.1:{closed}" in failure.text and "refused" in failure.text
        assert refused.value.__cause__ is not None  # aiohttp's own error, kept
        with pytest.raises(httpx.TimeoutException) as slow:
            await http.get(f"{server}/slow")
        failure = describe(slow.value)
        assert failure.cause == "timeout" and server.removeprefix("http://") in failure.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- scripted servers ----------------------------------------------------------------------


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request (head + Content-Length body), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def answer(status: int, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> Server:
        srv = Server(handler)
        server = await asyncio.start_server(srv._serve, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        srv.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return srv

    yield start
    for server in servers:
        server.close()


def keepalive(status: int = 201, body: bytes = b'{"id":"1"}', *extra: str) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(answer(status, body, *extra))
            await writer.drain()

    return handler


async def test_keepalive_reuse_and_the_connection_limit(serve) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.01)
            writer.write(answer(200, b"{}"))

    srv = await serve(slow)
    async with client(connections=3) as http:
        results = await asyncio.gather(
            *(http.patch(srv.url + f"/Users/{i}", content=b"{}") for i in range(20))
        )
        again = await http.patch(srv.url + "/Users/x", content=b"{}")
    assert [r.status_code for r in results] == [200] * 20 and again.status_code == 200
    assert srv.max_open <= 3 and srv.connections == 3


async def test_chunked_interim_and_until_close_bodies(serve) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b'{"id":', b'"abc"}'):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.005)
            writer.write(b"0\r\n\r\n")

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":')
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"1}")
        await writer.drain()
        writer.close()

    a, b = await serve(chunked), await serve(until_close)
    async with client() as http:
        for _ in range(2):
            r = await http.post(a.url + "/Users", content=b"{}")
            assert (r.status_code, r.content) == (201, b'{"id":"abc"}')
        assert a.connections == 1
        for _ in range(2):
            r = await http.get(b.url + "/x")
            assert (r.status_code, r.content) == (200, b'{"a":1}')
        assert b.connections == 2  # an answer framed by the close is never reused


async def test_connection_close_and_server_closed_idle_connections(serve) -> None:
    closing = await serve(keepalive(200, b"{}", "Connection: close"))

    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(200, b"{}"))
        await writer.drain()
        writer.close()  # keep-alive promised, then closed while idle

    idler = await serve(one_then_close)
    async with client() as http:
        for _ in range(3):
            assert (await http.patch(closing.url + "/Users/1", content=b"{}")).status_code == 200
        assert closing.connections == 3
        for _ in range(3):
            assert (await http.patch(idler.url + "/Users/1", content=b"{}")).status_code == 200
            await asyncio.sleep(0.05)  # the close reaches the client before the next send
        assert idler.connections == 3


async def test_hostile_answers_are_httpx_errors_and_the_client_recovers(serve) -> None:
    mode = {"n": 0}

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            mode["n"] += 1
            if mode["n"] == 1:
                writer.write(b"this is not HTTP\r\n\r\n")
            elif mode["n"] == 2:
                writer.write(b'HTTP/1.1 201 Created\r\nContent-Length: 50\r\n\r\n{"id"')
                await writer.drain()
                writer.transport.abort()  # reset mid-answer
                return
            elif mode["n"] == 3:
                await asyncio.sleep(5)  # no answer in time
            else:
                writer.write(answer(201, b'{"id":"ok"}'))
            await writer.drain()

    srv = await serve(flaky)
    where = srv.url.removeprefix("http://")
    async with client(timeout=0.3, connections=1) as http:
        causes = []
        for _ in range(3):
            with pytest.raises(httpx.TransportError) as info:
                await http.post(srv.url + "/Users", content=b"{}")
            failure = describe(info.value)
            assert where in failure.text
            causes.append(failure.cause)
        assert causes == ["protocol", "reset", "timeout"]
        r = await http.post(srv.url + "/Users", content=b"{}")
        assert (r.status_code, r.content) == (201, b'{"id":"ok"}')
    assert srv.connections == 4  # the failed connections were dropped, not reused


async def test_bad_urls_are_httpx_errors() -> None:
    async with client() as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.post("ftp://127.0.0.1/Users", content=b"{}")


async def test_tls_verified_and_refused(serve, tmp_path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    srv = await serve(keepalive(201, b'{"id":"tls"}'), tls=server_ctx)
    async with client(verify=str(ca_file)) as http:
        r = await http.post(srv.url + "/Users", content=b"{}")
        assert (r.status_code, r.content) == (201, b'{"id":"tls"}')
    async with client() as http:  # the system's CAs only
        with pytest.raises(httpx.ConnectError) as info:
            await http.post(srv.url + "/Users", content=b"{}")
    assert "CERTIFICATE_VERIFY_FAILED" in (tls_failure(info.value) or "")
    failure = describe(info.value)
    assert failure.cause == "certificate" and not failure.retryable
    assert srv.url.removeprefix("https://") in failure.text
    # the synchronous client (msal's, in a worker thread) verifies the same way
    with make_sync_client(timeout=5, verify=str(ca_file), proxies=NO_PROXY) as sync:
        r = await asyncio.to_thread(sync.post, srv.url + "/Users", content=b"{}")
        assert r.status_code == 201
    with (
        make_sync_client(timeout=5, proxies=NO_PROXY) as sync,
        pytest.raises(httpx.ConnectError) as info,
    ):
        await asyncio.to_thread(sync.post, srv.url + "/Users", content=b"{}")
    assert describe(info.value).cause == "certificate"


async def test_a_tls_handshake_with_a_plain_server_is_named(server: str) -> None:
    async with client(timeout=2) as http:
        with pytest.raises(httpx.TransportError) as info:
            await http.get(server.replace("http://", "https://") + "/echo")
    failure = describe(info.value)
    assert failure.cause == "tls" and not failure.retryable
    assert server.removeprefix("http://") in failure.text


async def test_no_cookie_is_kept_and_every_request_says_bulkprov(serve) -> None:
    seen: list[bytes] = []

    async def cookie_setter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            seen.append(request)
            writer.write(answer(200, b"{}", "Set-Cookie: session=hostile; Path=/"))
            await writer.drain()

    srv = await serve(cookie_setter)
    async with client() as http:
        for _ in range(2):
            assert (await http.get(srv.url + "/x")).status_code == 200
        assert not http.cookies
        with pytest.raises(ValueError, match="no cookies"):
            http.cookies = {"a": "b"}  # type: ignore[assignment]
    assert len(seen) == 2 and all(b"cookie:" not in r.lower() for r in seen)
    assert all(b"user-agent: bulkprov/" in r.lower() for r in seen)


def test_no_module_of_bulkprov_speaks_http_itself() -> None:
    """HTTP comes from libraries (httpx, httpx-aiohttp, aiohttp): no module of bulkprov parses
    or writes HTTP, opens raw connections, or brings a second client stack."""
    import ast
    from pathlib import Path

    import bulkprov

    banned_modules = {"httptools", "h11", "http.client", "requests", "urllib3"}
    banned_calls = {"open_connection", "create_connection", "start_tls"}
    root = Path(bulkprov.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if "sim" in path.relative_to(root).parts[:1]:
            continue  # the simulators serve HTTP (with aiohttp's server)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders.extend(
                f"{path.relative_to(root)} imports {name}"
                for name in names
                if name in banned_modules or name.split(".")[0] in {"httptools", "h11"}
            )
            if isinstance(node, ast.Attribute) and node.attr in banned_calls:
                offenders.append(f"{path.relative_to(root)} calls {node.attr}")
    assert offenders == []
    assert not (root / "http1.py").exists()
