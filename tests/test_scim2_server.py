"""The same sync into a third-party SCIM server: scim2-server (PyPI) served on loopback."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from bulkprov.checkpoint.store import StateStore
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


# -- groups on scim2-server (issue 19) ----------------------------------------------------------


class Recording(httpx.AsyncBaseTransport):
    """Forwards to the network and records (method, path, JSON body, status) of each request."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str, Any, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content) if request.content else None
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.seen.append((request.method, request.url.path, body, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def group_writes(self) -> list[tuple[str, str, Any, int]]:
        return [s for s in self.seen if s[0] != "GET" and s[1].startswith("/Groups")]


def get_json(url: str, path: str, **params: Any) -> Any:
    return httpx.get(
        f"{url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
        trust_env=False,
        timeout=60,
    ).json()


def target_groups(url: str) -> dict[str, tuple[str, set[str]]]:
    """externalId → (displayName, member SCIM ids) of every group scim2-server holds."""
    out: dict[str, tuple[str, set[str]]] = {}
    start = 1
    while True:
        doc = get_json(url, "/Groups", startIndex=start, count=100)
        for g in doc.get("Resources", []):
            members = {m["value"] for m in g.get("members") or []}
            assert g["externalId"] not in out, f"two target groups for {g['externalId']}"
            out[g["externalId"]] = (g["displayName"], members)
        start += len(doc.get("Resources", []))
        if not doc.get("Resources") or start > doc["totalResults"]:
            return out


def expected_groups(
    tenant: GraphTenant, user_ids: dict[str, str], group_ids: list[str], flatten: bool
) -> dict[str, tuple[str, set[str]]]:
    """Graph group id → (displayName, SCIM ids of its enabled member users)."""
    d = tenant.directory
    enabled = {u["id"] for u in tenant.iter_users() if u.get("accountEnabled") is not False}

    def users_of(gid: str, seen: set[str]) -> set[str]:
        out: set[str] = set()
        for mid in d.group(gid)["members"]:
            if mid in d.groups:
                if flatten and mid not in seen:
                    seen.add(mid)
                    out |= users_of(mid, seen)
            elif mid in enabled:
                out.add(user_ids[mid])
        return out

    return {gid: (d.group(gid)["displayName"], users_of(gid, {gid})) for gid in group_ids}


def scim_ids(url: str, tenant: GraphTenant) -> dict[str, str]:
    """Graph user id → SCIM id, by userName."""
    by_name = {r["userName"].lower(): r["id"] for r in list_all(url)}
    return {
        u["id"]: by_name[u["userPrincipalName"].lower()]
        for u in tenant.iter_users()
        if u["userPrincipalName"].lower() in by_name
    }


@asynccontextmanager
async def group_syncs(tenant: GraphTenant, url: str, tmp_path: Path, **overrides: Any):
    """``sync(recording=None)`` runs one cycle of ``tenant`` into scim2-server at ``url``."""
    async with serve_simulators(tenant, None) as graph:
        servers = graph.__class__(
            graph_url=graph.graph_url,
            scim_url=url,
            tenant_id=graph.tenant_id,
            client_id=graph.client_id,
        )
        cfg = make_config(servers, tmp_path / "s.db", target__concurrency=4, **overrides)

        async def sync(recording: Recording | None = None) -> Any:
            return await run_sync(cfg, SECRETS, policy=FAST_RETRY, scim_transport=recording)

        yield sync


async def test_group_members_added_removed_and_both_on_scim2_server(scim2_server, tmp_path):
    """rfc dialect: adds, removals (filtered paths, RFC 7644 §3.5.2.2), and both in one
    cycle, each one PATCH per group; scim2-server ends with exactly Entra's members."""
    tenant = GraphTenant(user_count=30, seed=11, client_secret=GRAPH_SECRET)
    d = tenant.directory
    users = [u["id"] for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    groups = [d.add_group(f"G{i}", users[i * 5 : i * 5 + 5])["id"] for i in range(3)]
    cycles = [
        [("add", groups[0], users[20])],  # an add
        [("remove", groups[1], users[5]), ("remove", groups[1], users[6])],  # removals
        [("add", groups[2], users[21]), ("remove", groups[2], users[10])],  # both at once
    ]
    async with group_syncs(tenant, scim2_server, tmp_path) as sync:
        first = await sync()
        assert first.counts["failed"] == 0, first
        ids = scim_ids(scim2_server, tenant)
        held = target_groups(scim2_server)
        assert {g: held[g] for g in groups} == expected_groups(tenant, ids, groups, False)
        for changes in cycles:
            for kind, gid, uid in changes:
                (d.add_member if kind == "add" else d.remove_member)(gid, uid)
            recording = Recording()
            result = await sync(recording)
            assert result.counts["failed"] == 0, result
            (gid,) = {g for _, g, _ in changes}
            # one PATCH, to the changed group, accepted
            assert [(m, p, status) for m, p, _, status in recording.group_writes()] == [
                ("PATCH", f"/Groups/{_group_id(scim2_server, gid)}", 204)
            ]
            ids = scim_ids(scim2_server, tenant)
            held = target_groups(scim2_server)
            assert {g: held[g] for g in groups} == expected_groups(tenant, ids, groups, False)
    # the last PATCH: the add, and the removal the RFC way (a filtered path, no value)
    assert recording.group_writes()[0][2]["Operations"] == [
        {"op": "add", "path": "members", "value": [{"value": ids[users[21]]}]},
        {"op": "remove", "path": f'members[value eq "{ids[users[10]]}"]'},
    ]


def _delete_group(url: str, scim_id: str) -> int:
    """DELETE a group in scim2-server behind bulkprov's back; returns the status."""
    return httpx.delete(
        f"{url}/Groups/{scim_id}",
        headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
        trust_env=False,
    ).status_code


def _group_id(url: str, external_id: str) -> str:
    doc = get_json(url, "/Groups", filter=f'externalId eq "{external_id}"')
    (group,) = doc["Resources"]
    return str(group["id"])


async def test_entra_removal_refused_by_scim2_server_is_sent_the_rfc_way_once(
    scim2_server, tmp_path
):
    """Entra's removal (a value list) is refused with a named reason: the same change goes
    once the RFC way, which is then kept: no halving into more refused requests, and the
    next cycles send the accepted form straight away."""
    tenant = GraphTenant(user_count=40, seed=12, client_secret=GRAPH_SECRET)
    d = tenant.directory
    users = [u["id"] for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    groups = [d.add_group(f"Team {i}", users[i * 12 : i * 12 + 12])["id"] for i in range(3)]
    async with group_syncs(
        tenant, scim2_server, tmp_path, target__patch_dialect="entra", groups__member_chunk=4
    ) as sync:
        assert (await sync()).counts["failed"] == 0
        for gid in groups:  # 9 removals each: three chunks of at most 4 members
            for uid in d.group(gid)["members"][:9]:
                d.remove_member(gid, uid)
        recording = Recording()
        result = await sync(recording)
        assert result.counts["failed"] == 0 and result.counts["members removed"] == 27
        refused = [s for s in recording.group_writes() if s[3] != 204]
        assert len(refused) == 1, refused  # once, for the whole target
        assert refused[0][2]["Operations"][0]["op"] == "Remove"
        assert len(recording.group_writes()) == 1 + 9  # then 3 chunks per group, accepted
        ids = scim_ids(scim2_server, tenant)
        held = target_groups(scim2_server)
        assert {g: held[g] for g in groups} == expected_groups(tenant, ids, groups, False)

        d.remove_member(groups[0], d.group(groups[0])["members"][0])
        d.add_member(groups[1], users[-1])
        recording = Recording()
        result = await sync(recording)
        assert result.counts["failed"] == 0
        assert all(status == 204 for *_, status in recording.group_writes())
        ops = [op for _, _, body, _ in recording.group_writes() for op in body["Operations"]]
        assert sorted(op["op"] for op in ops) == ["Add", "remove"]  # Entra's add, RFC's remove
        held = target_groups(scim2_server)
        ids = scim_ids(scim2_server, tenant)
        assert {g: held[g] for g in groups} == expected_groups(tenant, ids, groups, False)


async def test_groups_whose_names_differ_only_in_case_never_share_a_target_group(
    scim2_server, tmp_path
):
    """ "Marketing", "marketing" and a second "Marketing": scim2-server matches displayName
    case-insensitively and allows duplicates. One target group, for the first; the others
    fail, naming both Entra groups; deleting one of them sends no DELETE; deleting the
    owner deletes its target group, and the next one gets a target group of its own."""
    tenant = GraphTenant(user_count=20, seed=13, client_secret=GRAPH_SECRET)
    d = tenant.directory
    users = [u["id"] for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    first = d.add_group("Marketing", users[:3])
    lower = d.add_group("marketing", users[3:6])
    again = d.add_group("Marketing", users[6:9])
    async with group_syncs(tenant, scim2_server, tmp_path) as sync:
        result = await sync()
        assert result.counts["failed"] == 2
        held = target_groups(scim2_server)
        assert list(held) == [first["id"]]  # one target group, with the first's members only
        ids = scim_ids(scim2_server, tenant)
        assert held == expected_groups(tenant, ids, [first["id"]], False)
        async with await StateStore.open(tmp_path / "s.db") as store:
            failures = await store.log_entries(status="failure")
        reasons = {f["graph_id"]: f["reason"] for f in failures}
        assert set(reasons) == {lower["id"], again["id"]}
        for gid in (lower["id"], again["id"]):
            assert reasons[gid].startswith("DuplicateSourceEntries")
            assert first["id"] in reasons[gid] and gid in reasons[gid]

        # a second cycle merges nothing either
        recording = Recording()
        result = await sync(recording)
        assert result.counts["failed"] == 2 and recording.group_writes() == []

        d.delete_group(again["id"])  # owns nothing: nothing is deleted
        recording = Recording()
        await sync(recording)
        assert recording.group_writes() == []
        assert list(target_groups(scim2_server)) == [first["id"]]

        d.delete_group(first["id"])  # the owner: its target group goes, "marketing" gets one
        recording = Recording()
        result = await sync(recording)
        assert result.counts["failed"] == 0, result
        assert [m for m, *_ in recording.group_writes()] == ["DELETE", "POST", "PATCH"]
        ids = scim_ids(scim2_server, tenant)
        assert target_groups(scim2_server) == expected_groups(tenant, ids, [lower["id"]], False)
        # nothing left waiting: the group failures do not hold the cycle's watermarks back
        async with await StateStore.open(tmp_path / "s.db") as store:
            assert await store.escrow_entries() == {}


async def test_group_scenario_ends_exact_with_one_patch_per_changed_group(scim2_server, tmp_path):
    """Many groups, nesting (flattened), a 1,500-member group; then one incremental cycle
    with adds, removals, both, renames and a change inside a nested group: scim2-server ends
    with exactly Entra's groups, and each changed group cost one PATCH (others none)."""
    rng = random.Random(19)
    tenant = GraphTenant(user_count=1600, seed=19, client_secret=GRAPH_SECRET)
    d = tenant.directory
    users = [u["id"] for u in tenant.iter_users()]
    depts = [
        d.add_group(f"Dept {i:02}", rng.sample(users, rng.randint(5, 30)))["id"] for i in range(40)
    ]
    big = d.add_group("Everyone", users[:1500])["id"]
    parent = d.add_group("Parent", [depts[1], depts[2], *users[1500:1503]])["id"]
    grand = d.add_group("Grand", [parent, *users[1503:1505]])["id"]
    groups = [*depts, big, parent, grand]
    async with group_syncs(tenant, scim2_server, tmp_path, groups__flatten_nested=True) as sync:
        first = await sync()
        assert first.counts["failed"] == 0, first
        ids = scim_ids(scim2_server, tenant)
        before = expected_groups(tenant, ids, groups, True)
        assert target_groups(scim2_server) == before
        assert len(before[big][1]) > 1000 and len(before[grand][1]) > len(before[depts[1]][1])

        live = {u["id"] for u in tenant.iter_users() if u.get("accountEnabled") is not False}

        def outsider(gid: str) -> str:
            return next(u for u in rng.sample(users, 50) if u in live and u not in members(gid))

        def members(gid: str) -> list[str]:
            return [m for m in d.group(gid)["members"] if m in live]

        for gid in depts[3:8]:  # adds
            d.add_member(gid, outsider(gid))
        for gid in depts[8:13]:  # removals
            for uid in members(gid)[:2]:
                d.remove_member(gid, uid)
        for gid in depts[13:16]:  # both
            d.add_member(gid, outsider(gid))
            d.remove_member(gid, members(gid)[0])
        d.update_group(depts[16], displayName="Dept 16 (renamed)")  # a rename with an add
        d.add_member(depts[16], outsider(depts[16]))
        d.update_group(depts[17], displayName="dept 17")  # a rename alone
        for uid in [u for u in users[1500:] if u in live][:2]:
            d.add_member(big, uid)
        for uid in members(big)[:3]:
            d.remove_member(big, uid)
        d.add_member(depts[1], outsider(depts[1]))  # inside Parent and Grand too

        recording = Recording()
        result = await sync(recording)
        assert result.counts["failed"] == 0, result
        ids = scim_ids(scim2_server, tenant)
        after = expected_groups(tenant, ids, groups, True)
        assert target_groups(scim2_server) == after
    changed = {gid for gid in groups if before[gid] != after[gid]}
    assert changed == {*depts[3:18], big, depts[1], parent, grand}
    patched = Counter(p for m, p, _, status in recording.group_writes() if status == 204)
    assert [m for m, *_ in recording.group_writes()] == ["PATCH"] * len(changed)
    assert patched == Counter(f"/Groups/{_group_id(scim2_server, gid)}" for gid in changed)


class RefusingRemovals(Recording):
    """scim2-server behind a gateway that refuses every member removal (400 invalidValue)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content) if request.content else {}
        ops = body.get("Operations", []) if isinstance(body, dict) else []
        if any(str(op.get("op")).lower() == "remove" for op in ops):
            self.seen.append((request.method, request.url.path, body, 400))
            error = {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "400",
                "scimType": "invalidValue",
                "detail": "member removal is disabled",
            }
            return httpx.Response(400, content=orjson.dumps(error), request=request)
        return await super().handle_async_request(request)


async def test_adds_logged_when_removals_fail_and_a_vanished_group_comes_back(
    scim2_server, tmp_path
):
    """The adds of a group reach scim2-server and are logged though its removals fail in the
    same cycle; a target group deleted in scim2-server is created again with its members."""
    tenant = GraphTenant(user_count=20, seed=14, client_secret=GRAPH_SECRET)
    d = tenant.directory
    users = [u["id"] for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    g = d.add_group("Project", users[:5])["id"]
    async with group_syncs(tenant, scim2_server, tmp_path) as sync:
        assert (await sync()).counts["failed"] == 0
        d.remove_member(g, users[0])
        d.add_member(g, users[10])
        result = await sync(RefusingRemovals())
        assert result.counts["failed"] == 1 and result.counts["members added"] == 1
        ids = scim_ids(scim2_server, tenant)
        assert target_groups(scim2_server)[g][1] == {ids[u] for u in [*users[:5], users[10]]}
        async with await StateStore.open(tmp_path / "s.db") as store:
            entries = await store.log_entries(run_id=result.run_id, action="group")
        assert [(e["status"], e["reason"].split(":")[0]) for e in entries] == [
            ("success", "1 member(s) added"),
            ("failure", "1 member(s) not removed"),
        ]
        result = await sync()  # the gateway is gone: the removal goes now
        assert result.counts["failed"] == 0 and result.counts["members removed"] == 1

        assert _delete_group(scim2_server, _group_id(scim2_server, g)) == 204
        d.add_member(g, users[11])
        recording = Recording()
        result = await sync(recording)
        assert result.counts["failed"] == 0 and result.counts["groups created"] == 1
        assert [(m, status) for m, _, _, status in recording.group_writes()] == [
            ("PATCH", 404),
            ("POST", 201),
            ("PATCH", 204),
        ]
        ids = scim_ids(scim2_server, tenant)
        assert target_groups(scim2_server) == expected_groups(tenant, ids, [g], False)
