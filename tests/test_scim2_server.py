"""The same sync into a third-party SCIM server: scim2-server (PyPI) served on loopback."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from bulkprov.commands.demo import GRAPH_SECRET_ENV, SCIM_TOKEN_ENV, write_demo_config
from bulkprov.config import load_config
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant
from bulkprov.sim.server import serve_simulators

from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN, SECRETS, make_config
from .e2e import expected_values, store_problems
from .test_updates import _change_tenant

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


@pytest.mark.parametrize("clear", [False, True], ids=["default", "clear_on_null"])
async def test_a_user_gains_changes_and_loses_a_mail_in_scim2_server(scim2_server, tmp_path, clear):
    """Issue 20 items 3 and 4 against a third-party RFC server: gaining a mail is an ``add``
    of the whole element (scim2-server answers a ``replace`` on a missing work email with
    400 noTarget), changing it a ``replace``, losing it keeps it or (clear_on_null) removes
    it. Every cycle exits clean and the store ends exactly as mapped."""
    tenant = GraphTenant(user_count=120, seed=9, client_secret=GRAPH_SECRET)
    users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    gain = [u for u in users if u.get("mail") is None][:3]
    change, lose = [u for u in users if u.get("mail")][:3], [u for u in users if u.get("mail")][3:6]
    assert len(gain) == 3
    async with serve_simulators(tenant, None) as graph:
        servers = graph.__class__(
            graph_url=graph.graph_url,
            scim_url=scim2_server,
            tenant_id=graph.tenant_id,
            client_id=graph.client_id,
        )
        cfg = make_config(
            servers, tmp_path / "s.db", target__concurrency=4, target__clear_on_null=clear
        )
        first = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        assert first.counts["failed"] == 0, first
        kept = {}
        for i, u in enumerate(gain):
            tenant.update_user(u["id"], mail=f"gained.{i}@corp.example")
        for i, u in enumerate(change):
            tenant.update_user(u["id"], mail=f"changed.{i}@corp.example")
        for u in lose:
            kept[u["userPrincipalName"].lower()] = u["mail"]
            tenant.update_user(u["id"], mail=None)
        second = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        assert second.status == "completed" and second.counts["failed"] == 0, second
        assert second.counts["updated"] == 6 + (3 if clear else 0)
        # a user who lost a mail gains one again: added (clear_on_null) or replaced
        tenant.update_user(lose[0]["id"], mail="back.again@corp.example")
        kept.pop(lose[0]["userPrincipalName"].lower())
        third = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        assert third.status == "completed" and third.counts["failed"] == 0, third
        assert third.counts["updated"] == 1
    store = list_all(scim2_server)
    expected = expected_values(cfg, tenant.iter_users())
    if not clear:  # Entra's default: a cleared mail stays in the target
        for name, mail in kept.items():
            expected[name]['emails[type eq "work"].value'] = mail
    assert store_problems(expected, store) == []
    for res in store:
        emails = res.get("emails") or []
        assert len(emails) <= 1, res  # never a second work email
        if emails:
            assert emails[0]["type"] == "work" and emails[0].get("primary") is True
        if clear and res["userName"].lower() in kept:
            assert not emails


async def test_changed_only_cycle_into_scim2_server(scim2_server, tmp_path):
    """Issue 20's must-show against scim2-server: 5,000 users, then changed-only delta
    entries (100 users' department/surname/mail changed, 10 of them gaining a mail and 40
    losing theirs, 50 disabled, 20 removed); ``bulkprov sync`` exits 0 each time and the
    store is exactly as mapped (a cleared mail stays, as Entra leaves it)."""
    tenant = GraphTenant(user_count=5000, seed=20, client_secret=GRAPH_SECRET)
    tenant.delta_changed_only = True
    config = tmp_path / "bulkprov.toml"
    env = dict(os.environ, **{GRAPH_SECRET_ENV: GRAPH_SECRET, SCIM_TOKEN_ENV: SCIM_TOKEN})

    async def sync() -> None:
        cmd = [sys.executable, "-m", "bulkprov", "sync", "-c", str(config), "--quiet"]
        proc = await anyio.run_process(cmd, env=env, check=False)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]

    async with serve_simulators(tenant, None) as graph:
        info = {
            "tenant_id": graph.tenant_id,
            "client_id": graph.client_id,
            "authority_url": graph.authority_url,
            "graph_api_url": graph.graph_api_url,
            "scim_url": scim2_server,
        }
        write_demo_config(config, info, tmp_path / "s.db", concurrency=16)
        await sync()
        change = _change_tenant(tenant, random.Random(20))
        await sync()
        before = {r["userName"].lower(): r for r in list_all(scim2_server)}
        await sync()  # nothing changed: nothing sent
        after = {r["userName"].lower(): r for r in list_all(scim2_server)}
    assert {k: v["meta"]["version"] for k, v in before.items()} == {
        k: v["meta"]["version"] for k, v in after.items()
    }
    cfg = load_config(config)
    expected = expected_values(cfg, tenant.iter_users())
    for name, paths in change["cleared"].items():
        expected[name].update(paths)
    gone = {u["userPrincipalName"].lower() for u in change["gone"]}
    store = list(after.values())
    assert sorted(r["userName"].lower() for r in store if r["active"] is False) == sorted(gone)
    assert store_problems(expected, [r for r in store if r["userName"].lower() not in gone]) == []
    gained = after[change["changed"][0]["userPrincipalName"].lower()]
    assert gained["emails"] == [{"type": "work", "primary": True, "value": "gained.0@corp.example"}]
    assert all(len(r.get("emails") or []) <= 1 for r in store)
