"""bulkprov.transport: the aiohttp transport and the direct sender, against a loopback server."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from bulkprov.transport import direct, make_client


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
    async with make_client(timeout=5, max_connections=2) as http:
        r = await http.post(f"{server}/echo", params={"a": "b c"}, content=b"hi")
        assert r.status_code == 201
        assert r.json()["body"] == "hi"
        assert r.json()["query"] == {"a": "b c"}
        assert r.headers["retry-after"] == "3"  # case-insensitive, as httpx's own
        z = await http.get(f"{server}/gzip")  # httpx decodes Content-Encoding once
        assert z.json() == {"zipped": True}


async def test_direct_sender(server: str) -> None:
    async with make_client(timeout=5, max_connections=2) as http:
        sender = direct(http)
        assert sender is not None
        status, headers, body = await sender.send(
            "PATCH", f"{server}/echo", {"Authorization": "Bearer t"}, b"{}"
        )
        assert status == 200
        assert headers.get("retry-after") == "3"
        assert b'"method":"PATCH"' in body.replace(b" ", b"")
        assert b"Bearer t" in body
        status, _, body = await sender.send("GET", f"{server}/gzip", {}, None)
        assert (status, body) == (200, b'{"zipped": true}')


async def test_errors_are_httpx_errors(server: str) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    async with make_client(timeout=0.3, max_connections=2) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{closed}/")
        with pytest.raises(httpx.TimeoutException):
            await http.get(f"{server}/slow")
        sender = direct(http)
        assert sender is not None
        with pytest.raises(httpx.TransportError):
            await sender.send("GET", f"http://127.0.0.1:{closed}/", {}, None)
        with pytest.raises(httpx.TimeoutException):
            await sender.send("GET", f"{server}/slow", {}, None)


def test_no_direct_sender_for_other_transports() -> None:
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert direct(make_client(timeout=5, max_connections=1, transport=mock)) is None
    assert direct(httpx.AsyncClient()) is None
