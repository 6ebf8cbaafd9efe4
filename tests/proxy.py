"""A CONNECT proxy on loopback for tests: the only way to reach the names it knows.

Like a corporate proxy, it resolves host names the client cannot: ``hosts`` maps names such as
``graph.test`` to a loopback address, and a client that tried to reach them without the proxy
would fail to resolve them. It records every tunnel it opens, can require Basic credentials
(407 without them) and can refuse every tunnel (403), as a proxy's policy does.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class ConnectProxy:
    #: names the proxy can reach, and the address each resolves to
    hosts: dict[str, str]
    #: (user, password) every CONNECT must carry as ``Proxy-Authorization: Basic``
    credentials: tuple[str, str] | None = None
    #: answer 403 to every CONNECT (a proxy policy that forbids the destination)
    refuse: bool = False
    #: "host:port" of every tunnel opened
    tunnels: list[str] = field(default_factory=list)
    #: (status, "host:port") of every CONNECT answered with an error
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: request lines that were not CONNECT (a client sending plain http through it)
    other: list[str] = field(default_factory=list)
    url: str = ""

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _refuse(
        self, writer: asyncio.StreamWriter, status: int, reason: str, *extra: str
    ) -> None:
        head = [f"HTTP/1.1 {status} {reason}", "Content-Length: 0", "Connection: close", *extra]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method != "CONNECT":
            self.other.append(lines[0])
            await self._refuse(writer, 405, "Method Not Allowed")
            return
        if self.credentials is not None:
            want = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if headers.get("proxy-authorization") != want:
                self.rejected.append((407, target))
                await self._refuse(
                    writer,
                    407,
                    "Proxy Authentication Required",
                    'Proxy-Authenticate: Basic realm="test"',
                )
                return
        if self.refuse:
            self.rejected.append((403, target))
            await self._refuse(writer, 403, "Forbidden")
            return
        host, _, port = target.rpartition(":")
        address = self.hosts.get(host)
        if address is None or not port.isdigit():
            self.rejected.append((502, target))
            await self._refuse(writer, 502, "Bad Gateway")
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(address, int(port))
        except OSError:
            self.rejected.append((502, target))
            await self._refuse(writer, 502, "Bad Gateway")
            return
        self.tunnels.append(target)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))


@asynccontextmanager
async def serve_proxy(proxy: ConnectProxy) -> AsyncIterator[ConnectProxy]:
    server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        server.close()
        # open tunnels end with the test: closing the listener is enough here
