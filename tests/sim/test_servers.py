"""The simulators over real loopback sockets: in-process, as ``python -m bulkprov.sim``, and
under the load generator."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

import aiohttp
import httpx
import pytest
from aiohttp import web

from bulkprov.sim import (
    GraphTenant,
    ScimService,
    SimulatorProcess,
    make_app,
    measure_capacity,
    run_load,
    serve_simulators,
)

from .conftest import GRAPH_SECRET, SCIM_TOKEN


def loopback_client(**kw: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=10, **kw)  # type: ignore[arg-type]


async def test_graph_and_scim_over_loopback() -> None:
    tenant = GraphTenant(120, seed=3, client_secret=GRAPH_SECRET)
    scim = ScimService(SCIM_TOKEN, id_seed=2)
    async with serve_simulators(tenant, scim) as sims, loopback_client() as client:
        assert sims.graph_url and sims.graph_url.startswith("http://127.0.0.1:")
        assert sims.graph_api_url == f"{sims.graph_url}/v1.0"
        assert sims.authority_url == sims.graph_url
        assert sims.scim_url and sims.scim_url.startswith("http://127.0.0.1:")
        assert sims.scim_url.endswith("/scim2")
        assert sims.tenant_id == tenant.tenant_id

        token_resp = await client.post(
            f"{sims.authority_url}/{sims.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": tenant.client_id,
                "client_secret": GRAPH_SECRET,
                "scope": "https://graph.microsoft.com/.default",
                "grant_type": "client_credentials",
            },
        )
        assert token_resp.status_code == 200
        headers = {"Authorization": f"Bearer {token_resp.json()['access_token']}"}
        url: str | None = f"{sims.graph_api_url}/users?$select=userPrincipalName&$top=50"
        upns = []
        while url:
            page = (await client.get(url, headers=headers)).json()
            assert page.get("@odata.nextLink", sims.graph_url).startswith(sims.graph_url)
            upns += [u["userPrincipalName"] for u in page["value"]]
            url = page.get("@odata.nextLink")
        assert len(upns) == 120

        scim_headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
        for upn in upns[:40]:
            resp = await client.post(
                f"{sims.scim_url}/Users",
                json={"userName": upn, "active": True},
                headers=scim_headers,
            )
            assert resp.status_code == 201
        assert len(scim) == 40
        assert scim.counters()["by_method"] == {"POST": 40}


async def test_ids_with_ampersand_round_trip_over_sockets() -> None:
    scim = ScimService(SCIM_TOKEN, id_seed=4)
    async with serve_simulators(scim=scim) as sims, loopback_client() as client:
        assert sims.graph_url is None
        headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
        ids = []
        for i in range(60):
            resp = await client.post(
                f"{sims.scim_url}/Users", json={"userName": f"amp{i}@x.example"}, headers=headers
            )
            ids.append(resp.json()["id"])
        amp_ids = [i for i in ids if "&" in i]
        assert amp_ids, "the seed should produce at least one id with '&'"
        for uid in amp_ids:
            encoded = f"{sims.scim_url}/Users/{quote(uid, safe='')}"
            assert "%26" in encoded
            got = await client.get(encoded, headers=headers)
            assert got.status_code == 200 and got.json()["id"] == uid
            patched = await client.patch(
                encoded,
                json={"Operations": [{"op": "Replace", "path": "active", "value": "False"}]},
                headers=headers,
            )
            assert patched.status_code == 200 and patched.json()["active"] is False
            # a raw '&' in the path is legal too and reaches the same resource
            raw = await client.get(f"{sims.scim_url}/Users/{uid}", headers=headers)
            assert raw.status_code == 200 and raw.json()["id"] == uid
        # the same through aiohttp's client
        async with aiohttp.ClientSession() as session:
            for uid in amp_ids:
                async with session.get(
                    f"{sims.scim_url}/Users/{quote(uid, safe='')}", headers=headers
                ) as aresp:
                    assert aresp.status == 200
                    assert aresp.headers["Content-Type"] == "application/scim+json"
                    assert (await aresp.json(content_type=None))["id"] == uid
        for uid in amp_ids:
            encoded = f"{sims.scim_url}/Users/{quote(uid, safe='')}"
            assert (await client.delete(encoded, headers=headers)).status_code == 204
            assert (await client.get(encoded, headers=headers)).status_code == 404
        assert len(scim) == 60 - len(amp_ids)


async def test_make_app_adapter() -> None:
    scim = ScimService(SCIM_TOKEN)
    runner = web.AppRunner(make_app(scim.handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with loopback_client() as client:
            resp = await client.get(
                f"http://127.0.0.1:{port}/scim2/Users",
                params={"filter": 'userName eq "nobody@x"'},
                headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
            )
            assert resp.status_code == 200 and resp.json()["totalResults"] == 0
    finally:
        await runner.cleanup()


async def test_load_generator() -> None:
    scim = ScimService(SCIM_TOKEN)
    async with serve_simulators(scim=scim) as sims:
        assert sims.scim_url
        result = await run_load(sims.scim_url, SCIM_TOKEN, 300, 8, prefix="lg-")
        assert result.requests == 300 and dict(result.statuses) == {201: 300}
        assert result.rate > 0
        rate = await measure_capacity(sims.scim_url, SCIM_TOKEN, 100, 4)
        assert rate > 0
    assert len(scim) == 400
    assert sum(1 for u in scim.dump() if u["userName"].startswith("lg-")) == 300
    assert not scim.duplicate_posts()


async def test_load_generator_refuses_remote_hosts() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        await run_load("https://api.zoom.us/scim2", "t", 1, 1)


@pytest.mark.slow
async def test_simulator_subprocess() -> None:
    args = [
        "--users",
        "300",
        "--seed",
        "5",
        "--scim-token",
        "sub-token",
        "--graph-secret",
        "sub-secret",
        "--rate-limit",
        "1000",
        "--no-retry-after",
    ]
    proc = SimulatorProcess(args)
    async with proc as sims, loopback_client() as client:
        assert proc.pid is not None
        assert sims.scim_url and sims.scim_url.startswith("http://127.0.0.1:")
        assert sims.graph_url and sims.tenant_id and sims.client_id
        assert proc.info["pid"] == proc.pid
        assert "sub-secret" not in str(proc.info) and "sub-token" not in str(proc.info)

        token = await client.post(
            f"{sims.authority_url}/{sims.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": sims.client_id,
                "client_secret": "sub-secret",
                "scope": "https://graph.microsoft.com/.default",
                "grant_type": "client_credentials",
            },
        )
        assert token.status_code == 200
        page = await client.get(
            f"{sims.graph_api_url}/users?$top=999",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert len(page.json()["value"]) == 300

        headers = {"Authorization": "Bearer sub-token"}
        resp = await client.post(
            f"{sims.scim_url}/Users", json={"userName": "x@y"}, headers=headers
        )
        assert resp.status_code == 201
        cfg = await client.post(
            f"{sims.scim_control_url}/_sim/config", json={"rate_limit": 1, "burst": 1}
        )
        assert cfg.status_code == 200
        statuses = [
            (await client.get(f"{sims.scim_url}/Users", headers=headers)).status_code
            for _ in range(3)
        ]
        assert 429 in statuses
        counters = (await client.get(f"{sims.scim_control_url}/_sim/counters")).json()
        assert counters["users"] == 1 and counters["throttled"] >= 1
    assert proc.proc is None  # stopped


@pytest.mark.slow
def test_main_prints_one_json_line_and_stops_on_sigterm() -> None:
    import json
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkprov.sim", "--users", "10", "--no-uvloop"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) >= {
            "graph_url",
            "graph_api_url",
            "authority_url",
            "scim_url",
            "tenant_id",
            "client_id",
        }
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
