"""bulkprov against hostile or broken SCIM targets on loopback (issue 13, items 5, 6 and 9).

Each peer below answers every request the same hostile way: garbage JSON or HTML with 200,
a 50 MB body, one byte a second, a redirect to another host, a self-signed certificate, an
echo of the request's headers. Each case states its bound (seconds, memory) and checks that
the run ends with a clear reason, and that the SCIM token is printed nowhere: not in the
exception, the state database, the log or the captured output.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trustme
from pydantic import SecretStr

from bulkprov.errors import BulkProvError, TargetRejected, TargetTLSError, TargetUnavailable
from bulkprov.pipeline.run import run_sync
from bulkprov.retry import RetryPolicy
from bulkprov.scim import requests as rq
from bulkprov.scim.client import ScimClient
from bulkprov.transport import Bounds, Proxies, make_client

from .conftest import FAST_RETRY, SCIM_TOKEN, SECRETS, make_config

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """A raw loopback server that reads each request and answers it with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.answer(request, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def peer(answer: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Peer]:
    p = Peer(answer)
    server = await asyncio.start_server(p.serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    p.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/scim2"
    try:
        yield p
    finally:
        server.close()


def fixed(status: int, body: bytes, *headers: str) -> Answer:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return answer


def client(url: str, *, deadline: float = 5.0, attempts: int = 2) -> ScimClient:
    http = make_client(timeout=5, max_connections=2, proxies=Proxies())
    return ScimClient(
        url,
        SecretStr(SCIM_TOKEN),
        http,
        rate_limit=0,
        policy=RetryPolicy(max_attempts=attempts, max_seconds=30, base=0.01, cap=0.05),
        bounds=Bounds(page_bytes=1024 * 1024, resource_bytes=64 * 1024, deadline=deadline),
    )


def _first(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def no_secret_anywhere(*texts: str | bytes, state: Path | None = None) -> None:
    for text in texts:
        raw = text.encode() if isinstance(text, str) else text
        assert SCIM_TOKEN.encode() not in raw
    if state is not None:
        for path in state.parent.glob(state.name + "*"):
            assert SCIM_TOKEN.encode() not in path.read_bytes(), path


# --- one request at a time ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b'{"Resources": [', "application/scim+json"), (b"<html>Sign in</html>", "text/html")],
)
async def test_garbage_with_200_is_a_clear_reason(body: bytes, content_type: str) -> None:
    """Bound: 2 attempts, under 5 s."""
    async with peer(fixed(200, body, f"Content-Type: {content_type}")) as p:
        scim = client(p.url)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable, match="not JSON") as info:
            await scim.send(rq.get_user("u1"))
        await scim._http.aclose()
    assert time.monotonic() - started < 5
    assert len(p.requests) == 2  # retried once, as a 5xx would be, then given up
    no_secret_anywhere(str(info.value))


async def test_a_50_mb_answer_stops_at_the_limit_with_bounded_memory() -> None:
    """Bound: the client holds at most the limit (64 kB here, 1 MB by default) of it."""
    body = b"x" * (50 * 1024 * 1024)

    async def huge(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")  # no Content-Length to refuse early
        view = memoryview(body)
        try:
            for i in range(0, len(body), 1 << 20):
                chunk = view[i : i + (1 << 20)]
                writer.write(b"%x\r\n" % len(chunk) + bytes(chunk) + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        except ConnectionError:
            pass

    async with peer(huge) as p:
        scim = client(p.url)
        tracemalloc.start()
        try:
            with pytest.raises(TargetRejected, match="larger than 65,536 bytes"):
                await scim.send(rq.get_user("u1"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        await scim._http.aclose()
    assert peak < 8 * 1024 * 1024, f"peak {peak:,} bytes"
    assert len(p.requests) == 1  # not retried: the same answer would come again


async def test_an_announced_oversized_answer_is_refused_before_reading() -> None:
    async def announced(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(5)

    async with peer(announced) as p:
        scim = client(p.url)
        started = time.monotonic()
        with pytest.raises(TargetRejected, match="larger than"):
            await scim.send(rq.get_user("u1"))
        await scim._http.aclose()
    assert time.monotonic() - started < 2


async def test_one_byte_a_second_meets_the_deadline() -> None:
    """Bound: deadline (1 s) × attempts (2) plus backoff, under 4 s; httpx's own read
    timeout (5 s) never trips because every byte comes within it."""

    async def drip(request: bytes, writer: asyncio.StreamWriter) -> None:
        answer = b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"id": "slow", "userName": "a@b.example"}'
        for i in range(len(answer)):
            writer.write(answer[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.25)

    async with peer(drip) as p:
        scim = client(p.url, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable) as info:
            await scim.send(rq.get_user("u1"))
        await scim._http.aclose()
    elapsed = time.monotonic() - started
    assert elapsed < 4, elapsed
    assert "no complete answer within 1 s" in str(info.value)
    assert "127.0.0.1" in str(info.value)
    assert len(p.requests) == 2


async def test_a_redirect_is_named_and_never_followed() -> None:
    async with (
        peer(fixed(200, b"{}")) as elsewhere,
        peer(fixed(302, b"", f"Location: {elsewhere.url}/Users/u1")) as p,
    ):
        scim = client(p.url)
        with pytest.raises(TargetRejected) as info:
            await scim.send(rq.get_user("u1"))
        await scim._http.aclose()
    assert "redirected to 127.0.0.1" in str(info.value)
    assert elsewhere.requests == []  # the token never went there
    assert len(p.requests) == 1


async def test_a_self_signed_certificate_is_tls_not_auth(tmp_path: Path) -> None:
    authority = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(ctx)
    async with peer(fixed(200, b"{}"), tls=ctx) as p:
        scim = client(p.url)
        with pytest.raises(TargetTLSError) as info:
            await scim.send(rq.get_user("u1"))
        await scim._http.aclose()
    err = info.value
    assert err.exit_code == 11 and "target.ca_file" in str(err)
    assert "127.0.0.1" in str(err) and "CERTIFICATE_VERIFY_FAILED" in str(err)
    assert p.requests == []  # nothing was sent: the handshake failed first


# --- whole runs ----------------------------------------------------------------------------


def echo_headers(status: int) -> Answer:
    """Answer with the request's own head as the error detail (a debugging proxy's habit)."""

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        body = httpx.Response(status, json={"detail": head, "status": str(status)}).content
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/scim+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    return answer


async def test_a_target_echoing_our_headers_never_gets_the_token_printed(
    servers, tmp_path: Path, capsys, caplog
) -> None:
    """Every request fails with the echo; the token is in no reason, log, output or file."""
    async with peer(echo_headers(400)) as p:
        state = tmp_path / "s.db"
        cfg = make_config(servers, state, target__base_url=p.url)
        started = time.monotonic()
        try:
            result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
            text = repr(result)
        except BaseException as exc:  # noqa: BLE001 - the breaker may stop it: a clear end too
            err = _first(exc)
            assert isinstance(err, BulkProvError), repr(err)
            text = str(err)
    assert time.monotonic() - started < 60
    assert p.requests, "the target was asked"
    assert any(SCIM_TOKEN.encode() in r for r in p.requests)  # it did echo the token back
    out = capsys.readouterr()
    no_secret_anywhere(text, out.out, out.err, caplog.text, state=state)


@pytest.mark.parametrize(
    "answer",
    [
        fixed(200, b"<html><body>Please sign in</body></html>", "Content-Type: text/html"),
        fixed(200, b'{"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"'),
    ],
    ids=["html", "garbage-json"],
)
async def test_a_whole_run_against_garbage_ends_with_a_reason(
    answer: Answer, servers, tmp_path: Path
) -> None:
    """Bound: the retry budget (FAST_RETRY: 6 attempts or 10 s per request), under 60 s."""
    async with peer(answer) as p:
        cfg = make_config(servers, tmp_path / "s.db", target__base_url=p.url)
        started = time.monotonic()
        with pytest.raises(BaseException) as info:
            await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert time.monotonic() - started < 60
    err = _first(info.value)
    assert isinstance(err, BulkProvError), repr(err)
    assert "not JSON" in str(err) or "not a SCIM ListResponse" in str(err), str(err)
    no_secret_anywhere(str(err))


def test_an_echoed_credential_is_masked_before_the_detail_is_cut() -> None:
    """No part of a token survives, even where the 300-character cut falls inside it."""
    from bulkprov.scim.responses import classify

    unregistered = "tok-" + "Q" * 40  # a token bulkprov never registered (echoed by a proxy)
    for pad in (270, 285, 295):
        detail = "x" * pad + f" authorization: Bearer {unregistered}"
        body = httpx.Response(400, json={"detail": detail}).content
        with pytest.raises(TargetRejected) as info:
            classify(400, {}, body)
        assert "QQQQQQ" not in str(info.value)
