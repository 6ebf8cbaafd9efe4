"""Serve the simulators over real HTTP on loopback: in this process, or in a child process.

* :func:`serve_simulators` runs them in the caller's event loop (tests that want real sockets:
  URL encoding, keep-alive, connection limits) and yields their URLs.
* :class:`SimulatorProcess` starts ``python -m bulkprov.sim`` and waits for its URLs, so a
  benchmark's client and the simulators run on different cores and don't share an event loop.

Every server binds ``127.0.0.1`` on a free port (port 0): parallel test runs never collide.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from bulkprov.sim.graph.tenant import GraphTenant
from bulkprov.sim.http import make_server
from bulkprov.sim.scim.service import ScimService

__all__ = ["SimServers", "SimulatorProcess", "serve_simulators"]


@dataclass(frozen=True)
class SimServers:
    """Where the running simulators listen.

    Attributes:
        graph_url: ``http://127.0.0.1:PORT`` of the tenant (token endpoint and Graph API).
        scim_url: ``http://127.0.0.1:PORT/scim2`` (the SCIM base URL a client is configured
            with).
        graph, scim: the simulator objects (in-process only; ``None`` from a subprocess).
    """

    graph_url: str | None
    scim_url: str | None
    tenant_id: str | None = None
    client_id: str | None = None
    graph: GraphTenant | None = None
    scim: ScimService | None = None

    @property
    def graph_api_url(self) -> str | None:
        """Graph's versioned base, ``…/v1.0`` (the config's ``graph.base_url``)."""
        return f"{self.graph_url}/v1.0" if self.graph_url else None

    @property
    def authority_url(self) -> str | None:
        """Base of ``{authority}/{tenant}/oauth2/v2.0/token`` (the config's ``authority``)."""
        return self.graph_url

    @property
    def scim_control_url(self) -> str | None:
        """Root of the SCIM simulator's ``/_sim/…`` control endpoints."""
        if not self.scim_url:
            return None
        parts = urlsplit(self.scim_url)
        return f"{parts.scheme}://{parts.netloc}"

    def as_json(self) -> dict[str, Any]:
        """The JSON ``python -m bulkprov.sim`` prints (no secrets)."""
        return {
            "graph_url": self.graph_url,
            "graph_api_url": self.graph_api_url,
            "authority_url": self.authority_url,
            "scim_url": self.scim_url,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimServers:
        """Rebuild from :meth:`as_json` output (e.g. a subprocess's port file)."""
        return cls(
            graph_url=data.get("graph_url"),
            scim_url=data.get("scim_url"),
            tenant_id=data.get("tenant_id"),
            client_id=data.get("client_id"),
        )


async def _start(
    handler: Any, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[web.ServerRunner, int]:
    runner = web.ServerRunner(make_server(handler), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, int(bound)


@asynccontextmanager
async def serve_simulators(
    graph: GraphTenant | None = None,
    scim: ScimService | None = None,
    host: str = "127.0.0.1",
    *,
    graph_port: int = 0,
    scim_port: int = 0,
    graph_ssl: ssl.SSLContext | None = None,
    scim_ssl: ssl.SSLContext | None = None,
) -> AsyncIterator[SimServers]:
    """Serve ``graph`` and/or ``scim`` on loopback for the duration of the ``async with``.

    ``graph_ssl`` serves the tenant over https: msal accepts only an https authority
    (facts.md §9); the links the tenant returns then use https too.
    """
    runners: list[web.ServerRunner] = []
    try:
        graph_url = scim_url = None
        if graph is not None:
            runner, port = await _start(graph.handle, host, graph_port, graph_ssl)
            runners.append(runner)
            graph_url = f"{'https' if graph_ssl else 'http'}://{host}:{port}"
        if scim is not None:
            runner, port = await _start(scim.handle, host, scim_port, scim_ssl)
            runners.append(runner)
            scim_url = f"{'https' if scim_ssl else 'http'}://{host}:{port}{scim.base_path}"
        yield SimServers(
            graph_url=graph_url,
            scim_url=scim_url,
            tenant_id=graph.tenant_id if graph else None,
            client_id=graph.client_id if graph else None,
            graph=graph,
            scim=scim,
        )
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


class SimulatorProcess:
    """``python -m bulkprov.sim`` as a child process (context manager, sync or async).

    ``args`` are that command's options (``["--users", "5000", "--rate-limit", "80"]``);
    :attr:`servers` holds the URLs once started. Start-up waits for the child's port file, so a
    crashed child is reported (with its exit code) instead of hanging the caller.
    """

    def __init__(self, args: Sequence[str] = (), *, timeout: float = 20.0) -> None:
        self.args = list(args)
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def servers(self) -> SimServers:
        """The child's URLs (after :meth:`start`)."""
        if not self.info:
            raise RuntimeError("the simulator process is not started")
        return SimServers.from_json(self.info)

    def start(self) -> SimServers:
        """Spawn the child and wait until both servers listen."""
        self._dir = tempfile.TemporaryDirectory(prefix="bulkprov-sim-")
        port_file = Path(self._dir.name) / "ports.json"
        cmd = [sys.executable, "-m", "bulkprov.sim", *self.args, "--port-file", str(port_file)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while not port_file.exists():
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise RuntimeError(f"simulator process exited with code {code} before serving")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"simulator process did not start within {self.timeout}s")
            time.sleep(0.02)
        self.info = json.loads(port_file.read_text(encoding="utf-8"))
        return self.servers

    def stop(self) -> int | None:
        """SIGTERM the child (SIGKILL after 5 s) and return its exit code."""
        code: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        return code

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self.proc.pid if self.proc is not None else None

    def __enter__(self) -> SimServers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> SimServers:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def write_port_file(path: str, data: dict[str, Any]) -> None:
    """Write atomically, so a reader polling for the file never sees half of it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
