"""The same sync into a third-party SCIM server: scim2-server (PyPI) served on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant
from bulkprov.sim.server import serve_simulators

from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN, SECRETS, make_config
from .e2e import expected_values, store_problems

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def scim2_server():
    exe = shutil.which("scim2-server", path=str(Path(sys.executable).parent))
    assert exe, "scim2-server is a test dependency (pyproject [test] extra)"
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--hostname", "127.0.0.1", "--port", str(port), "--bearer-token", SCIM_TOKEN],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/ServiceProviderConfig", trust_env=False, timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("scim2-server did not start") from None
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def list_all(url: str) -> list[dict]:
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
    out: list[dict] = []
    start = 1
    while True:
        doc = httpx.get(
            f"{url}/Users",
            params={"startIndex": start, "count": 500},
            headers=headers,
            trust_env=False,
            timeout=30,
        ).json()
        out += doc.get("Resources", [])
        start += len(doc.get("Resources", []))
        if not doc.get("Resources") or start > doc["totalResults"]:
            return out


async def test_sync_into_scim2_server(scim2_server, tmp_path):
    """Create, then change one user and re-sync: scim2-server ends with the mapped state."""
    tenant = GraphTenant(user_count=150, seed=9, client_secret=GRAPH_SECRET)
    async with serve_simulators(tenant, None) as graph:
        servers = graph.__class__(
            graph_url=graph.graph_url,
            scim_url=scim2_server,
            tenant_id=graph.tenant_id,
            client_id=graph.client_id,
        )
        cfg = make_config(servers, tmp_path / "s.db", target__concurrency=4)
        first = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        assert first.counts["failed"] == 0, first
        user = next(u for u in tenant.iter_users() if u.get("accountEnabled") is not False)
        tenant.update_user(user["id"], department="Field Ops", accountEnabled=True)
        other = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False][1]
        tenant.update_user(other["id"], accountEnabled=False)
        second = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert second.counts["updated"] == 1 and second.counts["disabled"] == 1
    assert second.counts["failed"] == 0
    store = list_all(scim2_server)
    expected = expected_values(cfg, tenant.iter_users())
    # the disabled user is kept in the target, inactive
    disabled = [r for r in store if r["userName"].lower() == other["userPrincipalName"].lower()]
    assert len(disabled) == 1 and disabled[0]["active"] is False
    store = [r for r in store if r is not disabled[0]]
    assert store_problems(expected, store) == []
