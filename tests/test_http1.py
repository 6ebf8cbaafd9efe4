"""The lean HTTP/1.1 sender of the SCIM hot path (bulkprov.http1) against scripted servers.

Each test runs a raw asyncio server on loopback that answers with exactly the bytes the
case needs (chunked bodies, ``Connection: close``, garbage, a hang, a disconnect), so the
pool's framing, reuse and error paths are exercised on real sockets.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme

from bulkprov.http1 import Http1Pool
from bulkprov.transport import tls_failure

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[bytes] = []
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
        await server.wait_closed()


def keepalive(status: int = 201, body: bytes = b'{"id":"1"}', *extra: str) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            srv_requests.append(request)
            writer.write(answer(status, body, *extra))
            await writer.drain()

    srv_requests: list[bytes] = []
    handler.requests = srv_requests  # type: ignore[attr-defined]
    return handler


async def test_request_bytes_and_keepalive_reuse(serve) -> None:
    handler = keepalive(201, b'{"id":"1"}', "Retry-After: 3")
    srv = await serve(handler)
    pool = Http1Pool(4, read_timeout=5, connect_timeout=5)
    try:
        headers = {"Authorization": "Bearer t", "Content-Type": "application/scim+json"}
        for _ in range(10):
            status, got, body = await pool.send("POST", srv.url + "/scim2/Users", headers, b"{}")
            assert (status, body) == (201, b'{"id":"1"}')
            assert got.get("retry-after") == "3" and got.get("RETRY-AFTER") == "3"
    finally:
        await pool.aclose()
    assert srv.connections == 1  # ten requests over one kept-alive connection
    first = handler.requests[0]
    assert first.startswith(b"POST /scim2/Users HTTP/1.1\r\n")
    assert f"Host: {srv.url.split('//')[1]}\r\n".encode() in first
    assert b"Authorization: Bearer t\r\n" in first and b"Content-Length: 2\r\n" in first
    assert first.endswith(b"\r\n\r\n{}")


async def test_non_ascii_paths_are_percent_encoded(serve) -> None:
    handler = keepalive()
    srv = await serve(handler)
    pool = Http1Pool(1, read_timeout=5, connect_timeout=5)
    try:
        await pool.send("PATCH", srv.url + "/scim2/Users/Zoë%20K", {}, b"{}")
    finally:
        await pool.aclose()
    assert handler.requests[0].startswith(b"PATCH /scim2/Users/Zo%C3%AB%20K HTTP/1.1\r\n")


async def test_a_header_with_a_line_break_is_refused_before_sending(serve) -> None:
    handler = keepalive()
    srv = await serve(handler)
    pool = Http1Pool(1, read_timeout=5, connect_timeout=5)
    try:
        with pytest.raises(httpx.LocalProtocolError, match="line break"):
            await pool.send(
                "POST", srv.url + "/Users", {"Authorization": "Bearer t\r\nX: y"}, b"{}"
            )
    finally:
        await pool.aclose()
    assert handler.requests == [] and srv.connections == 0


async def test_a_header_that_is_not_latin1_is_refused_without_its_value(serve) -> None:
    srv = await serve(keepalive())
    pool = Http1Pool(1, read_timeout=5, connect_timeout=5)
    try:
        with pytest.raises(httpx.LocalProtocolError) as info:
            await pool.send("POST", srv.url + "/Users", {"Authorization": "Bearer tök€n"}, b"{}")
    finally:
        await pool.aclose()
    assert "'Authorization'" in str(info.value) and "tök" not in repr(info.value)
    assert srv.connections == 0


async def test_an_answer_nobody_asked_for_closes_the_idle_connection(serve) -> None:
    async def then_408(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(201, b'{"id":"1"}'))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(answer(408, b"{}"))  # unsolicited, while the connection is idle
        await writer.drain()
        await asyncio.sleep(1)

    srv = await serve(then_408)
    pool = Http1Pool(2, read_timeout=5, connect_timeout=5)
    try:
        assert (await pool.send("POST", srv.url + "/Users", {}, b"{}"))[0] == 201
        await asyncio.sleep(0.1)
        status, _, body = await pool.send("POST", srv.url + "/Users", {}, b"{}")
        assert (status, body) == (201, b'{"id":"1"}')  # not the stray 408
    finally:
        await pool.aclose()
    assert srv.connections == 2


async def test_connections_never_exceed_the_limit(serve) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.01)
            writer.write(answer(200, b"{}"))

    srv = await serve(slow)
    pool = Http1Pool(3, read_timeout=5, connect_timeout=5)
    try:
        results = await asyncio.gather(
            *(pool.send("PATCH", srv.url + f"/Users/{i}", {}, b"{}") for i in range(20))
        )
    finally:
        await pool.aclose()
    assert [r[0] for r in results] == [200] * 20
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
    pool = Http1Pool(2, read_timeout=5, connect_timeout=5)
    try:
        assert (await pool.send("POST", a.url + "/Users", {}, b"{}"))[::2] == (201, b'{"id":"abc"}')
        assert (await pool.send("POST", a.url + "/Users", {}, b"{}"))[::2] == (201, b'{"id":"abc"}')
        assert a.connections == 1
        assert (await pool.send("GET", b.url + "/x", {}, None))[::2] == (200, b'{"a":1}')
        assert (await pool.send("GET", b.url + "/x", {}, None))[::2] == (200, b'{"a":1}')
        assert b.connections == 2  # an answer framed by the close is never reused
    finally:
        await pool.aclose()


async def test_connection_close_and_server_closed_idle_connections(serve) -> None:
    closing = await serve(keepalive(200, b"{}", "Connection: close"))
    idle_closer_requests = 0

    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal idle_closer_requests
        await read_request(reader)
        idle_closer_requests += 1
        writer.write(answer(200, b"{}"))
        await writer.drain()
        writer.close()  # keep-alive promised, then closed while idle

    idler = await serve(one_then_close)
    pool = Http1Pool(2, read_timeout=5, connect_timeout=5)
    try:
        for _ in range(3):
            assert (await pool.send("PATCH", closing.url + "/Users/1", {}, b"{}"))[0] == 200
        assert closing.connections == 3
        for _ in range(3):
            assert (await pool.send("PATCH", idler.url + "/Users/1", {}, b"{}"))[0] == 200
            await asyncio.sleep(0.05)  # the close reaches the client before the next send
        assert idler.connections == 3 and idle_closer_requests == 3
    finally:
        await pool.aclose()


async def test_keepalive_expiry_opens_a_new_connection(serve) -> None:
    srv = await serve(keepalive())
    pool = Http1Pool(2, read_timeout=5, connect_timeout=5, keepalive=0.05)
    try:
        await pool.send("POST", srv.url + "/Users", {}, b"{}")
        await asyncio.sleep(0.1)
        await pool.send("POST", srv.url + "/Users", {}, b"{}")
    finally:
        await pool.aclose()
    assert srv.connections == 2


async def test_errors_are_httpx_errors_and_the_pool_recovers(serve) -> None:
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
    pool = Http1Pool(1, read_timeout=0.3, connect_timeout=5)
    try:
        with pytest.raises(httpx.ReadError):
            await pool.send("POST", srv.url + "/Users", {}, b"{}")
        with pytest.raises(httpx.ReadError):
            await pool.send("POST", srv.url + "/Users", {}, b"{}")
        with pytest.raises(httpx.ReadTimeout):
            await pool.send("POST", srv.url + "/Users", {}, b"{}")
        status, _, body = await pool.send("POST", srv.url + "/Users", {}, b"{}")
        assert (status, body) == (201, b'{"id":"ok"}')
        assert len(pool._open) == 1  # the failed connections were dropped, not kept
    finally:
        await pool.aclose()
    assert srv.connections == 4


async def test_cancelled_send_drops_its_connection(serve) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    srv = await serve(hang)
    pool = Http1Pool(1, read_timeout=30, connect_timeout=5)
    task = asyncio.create_task(pool.send("POST", srv.url + "/Users", {}, b"{}"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool._open == set() and not any(pool._idle.values())
    # the semaphore was released: a new send is not blocked by the cancelled one
    srv.handler = keepalive()
    assert (await asyncio.wait_for(pool.send("POST", srv.url + "/U", {}, b"{}"), 5))[0] == 201
    await pool.aclose()


async def test_connect_errors_and_bad_urls() -> None:
    pool = Http1Pool(1, read_timeout=1, connect_timeout=1)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await pool.send("POST", f"http://127.0.0.1:{port}/Users", {}, b"{}")
    with pytest.raises(httpx.UnsupportedProtocol):
        await pool.send("POST", "ftp://127.0.0.1/Users", {}, b"{}")
    await pool.aclose()


async def test_gzip_answers_are_decoded(serve) -> None:
    zipped = gzip.compress(b'{"zipped":true}')
    srv = await serve(keepalive(200, zipped, "Content-Encoding: gzip"))
    odd = await serve(keepalive(200, b"xx", "Content-Encoding: br"))
    pool = Http1Pool(2, read_timeout=5, connect_timeout=5)
    try:
        assert (await pool.send("GET", srv.url + "/z", {}, None))[2] == b'{"zipped":true}'
        with pytest.raises(httpx.ReadError, match="unsupported Content-Encoding"):
            await pool.send("GET", odd.url + "/z", {}, None)
    finally:
        await pool.aclose()


async def test_tls_verified_and_refused(serve) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    srv = await serve(keepalive(201, b'{"id":"tls"}'), tls=server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    pool = Http1Pool(1, ssl_context=client_ctx, read_timeout=5, connect_timeout=5)
    try:
        assert (await pool.send("POST", srv.url + "/Users", {}, b"{}"))[::2] == (
            201,
            b'{"id":"tls"}',
        )
    finally:
        await pool.aclose()
    untrusting = Http1Pool(1, read_timeout=5, connect_timeout=5)  # the system's CAs only
    with pytest.raises(httpx.ConnectError) as info:
        await untrusting.send("POST", srv.url + "/Users", {}, b"{}")
    assert "CERTIFICATE_VERIFY_FAILED" in (tls_failure(info.value) or "")
    await untrusting.aclose()
    insecure = Http1Pool(1, ssl_context=False, read_timeout=5, connect_timeout=5)
    assert (await insecure.send("POST", srv.url + "/Users", {}, b"{}"))[0] == 201
    await insecure.aclose()


async def test_slots_hand_over_and_survive_cancelled_waiters() -> None:
    from bulkprov.http1 import _Slots

    slots = _Slots(1)
    await slots.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await slots.acquire()
        order.append(name)

    a = asyncio.create_task(take("a"))
    b = asyncio.create_task(take("b"))
    c = asyncio.create_task(take("c"))
    await asyncio.sleep(0)
    b.cancel()  # cancelled while waiting: leaves the queue, takes nothing
    await asyncio.sleep(0)
    slots.release()  # handed to a
    await asyncio.sleep(0)
    assert order == ["a"] and not c.done()
    slots.release()  # b is gone: handed to c
    await asyncio.sleep(0)
    assert order == ["a", "c"]
    await asyncio.gather(a, c)
    assert b.cancelled()
    # handed a slot, then cancelled before running: the slot goes on, not lost
    d = asyncio.create_task(take("d"))
    e = asyncio.create_task(take("e"))
    await asyncio.sleep(0)
    slots.release()
    d.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == ["a", "c", "e"]
    await e
    assert d.cancelled()
    slots.release()  # e's: the one slot is free again
    await slots.acquire()
    # cancelled after release() popped it but before it ran: the cancellation stands
    f = asyncio.create_task(take("f"))
    await asyncio.sleep(0)
    f.cancel()
    slots.release()  # pops f (already cancelled): the slot is freed instead
    with pytest.raises(asyncio.CancelledError):
        await f
    assert slots._free == 1 and not slots._waiters
