"""Run CLI commands in-process (click's CliRunner) against simulators served from a thread.

CliRunner runs each command with its own event loop (``anyio.run``) in the test's thread,
so the simulators live in a second thread with theirs; the test still holds the
:class:`GraphTenant` and :class:`ScimService` objects to change users or inject faults
between commands.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bulkprov.cli import main
from bulkprov.commands.demo import write_demo_config
from bulkprov.sim import GraphTenant, ScimService
from bulkprov.sim.server import SimServers, serve_simulators

from .conftest import GRAPH_SECRET, SCIM_TOKEN


class SimThread:
    def __init__(self, tenant: GraphTenant, scim: ScimService) -> None:
        self.tenant, self.scim = tenant, scim
        self.servers: SimServers | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve_simulators(self.tenant, self.scim) as servers:
            self.servers = servers
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> SimServers:
        self._thread.start()
        if not self._ready.wait(20):
            raise TimeoutError("simulators did not start")
        assert self.servers is not None
        return self.servers

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@dataclass
class Cli:
    """A config written for the simulators, and a runner with the secrets in its env."""

    config: Path
    state: Path
    tenant: GraphTenant
    scim: ScimService
    servers: SimServers

    def __call__(self, *args: str, config: bool = True) -> Result:
        argv = list(args) + (["-c", str(self.config)] if config else [])
        env = {"BULKPROV_GRAPH_SECRET": GRAPH_SECRET, "BULKPROV_SCIM_TOKEN": SCIM_TOKEN}
        return CliRunner().invoke(main, argv, env=env, catch_exceptions=False)


@pytest.fixture(name="cli")
def cli_fixture(tmp_path: Path) -> Iterator[Cli]:
    tenant = GraphTenant(user_count=240, seed=11, client_secret=GRAPH_SECRET)
    scim = ScimService(SCIM_TOKEN, id_seed=5)
    with SimThread(tenant, scim) as servers:
        config, state = tmp_path / "bulkprov.toml", tmp_path / "state.sqlite3"
        info: dict[str, Any] = servers.as_json()
        write_demo_config(config, info, state, concurrency=8, rate_limit=0)
        yield Cli(config, state, tenant, scim, servers)
