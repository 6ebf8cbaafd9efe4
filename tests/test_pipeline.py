"""End-to-end: real HTTP on loopback between bulkprov and both simulators, real SQLite."""

from __future__ import annotations

import time

import anyio
import pytest

from bulkprov.errors import SourceAuthError, TargetAuthError
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import NoFaults, ScimService, SimResponse
from bulkprov.sim.http import SimRequest

from .conftest import FAST_RETRY, SECRETS, make_config
from .e2e import expected_values, store_problems


def unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def test_initial_sync_creates_exactly_the_in_scope_users(servers, tenant, scim, tmp_path):
    """300 users: every enabled user created once with the mapped attributes, 1 request each."""
    cfg = make_config(servers, tmp_path / "s.db", graph__page_size=37)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    expected = expected_values(cfg, tenant.iter_users())
    assert store_problems(expected, scim.dump()) == []
    disabled = sum(1 for u in tenant.iter_users() if u.get("accountEnabled") is False)
    assert result.status == "completed"
    assert result.counts["created"] == len(expected)
    assert result.counts["skipped"] == disabled > 0
    counters = scim.counters()
    assert counters["by_method"]["POST"] == len(expected)
    assert counters["duplicate_posts"] == {}
    # one listing page to match against the (empty) target, then one POST per user
    assert counters["by_method"]["GET"] == 1


async def test_resync_without_changes_sends_nothing(servers, scim, tmp_path):
    """A second run with no source change: 0 SCIM requests at all."""
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    scim.reset_counters()
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert scim.counters()["total"] == 0
    assert result.counts["unchanged"] == result.users - result.counts["skipped"]


async def test_changed_department_patches_only_that_attribute(servers, tenant, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    user = next(u for u in tenant.iter_users() if u.get("accountEnabled") is not False)
    tenant.update_user(user["id"], department="Quantum Research")
    scim.reset_counters()
    seen: list[bytes] = []

    class Spy(NoFaults):
        async def before(self, req: SimRequest) -> SimResponse | None:
            if req.method == "PATCH":
                seen.append(req.body)
            return None

    scim.faults = Spy()
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["updated"] == 1
    assert scim.counters()["total"] == 1
    assert len(seen) == 1
    import orjson

    ops = orjson.loads(seen[0])["Operations"]
    assert ops == [
        {
            "op": "replace",
            "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "value": "Quantum Research",
        }
    ]
    stored = scim.find(user["userPrincipalName"])
    ext = stored["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
    assert ext["department"] == "Quantum Research"


async def test_disabled_in_entra_is_deactivated_and_kept(servers, tenant, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    user = next(u for u in tenant.iter_users() if u.get("accountEnabled") is not False)
    tenant.update_user(user["id"], accountEnabled=False)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["disabled"] == 1
    stored = scim.find(user["userPrincipalName"])
    assert stored is not None and stored["active"] is False
    assert stored["name"]["givenName"] == user["givenName"]  # data kept
    tenant.update_user(user["id"], accountEnabled=True)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["updated"] == 1
    assert scim.find(user["userPrincipalName"])["active"] is True


async def test_existing_accounts_are_linked_not_duplicated(servers, tenant, scim, tmp_path):
    """Accounts already in the target (other case, stale name) are matched and patched."""
    users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False][:5]
    for u in users:
        scim.seed_user(
            {"userName": u["userPrincipalName"].upper(), "displayName": "Stale", "active": True}
        )
    cfg = make_config(servers, tmp_path / "s.db")
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["updated"] + result.counts["linked"] == 5
    assert scim.counters()["duplicate_posts"] == {}
    names = [r["userName"].lower() for r in scim.dump()]
    assert len(names) == len(set(names))
    assert scim.find(users[0]["userPrincipalName"])["displayName"] == users[0]["displayName"]


async def test_409_on_incremental_run_links_the_account(servers, tenant, scim, tmp_path):
    """After a complete run (no pre-list), a create that meets 409 is resolved by matching."""
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    new = tenant.add_user(userPrincipalName="late.joiner@corp.example", accountEnabled=True)
    scim.seed_user({"userName": "Late.Joiner@corp.example", "active": True})
    scim.reset_counters()
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["failed"] == 0
    assert result.counts["updated"] + result.counts["linked"] == 1
    assert scim.counters()["statuses"].get("409") == 1
    assert len([r for r in scim.dump() if r["userName"].lower() == "late.joiner@corp.example"]) == 1
    assert scim.find(new["userPrincipalName"])["displayName"] == new["displayName"]


@pytest.mark.slow  # ~6 s each: a whole sync throttled by the simulator's real-time 60/s limit
@pytest.mark.parametrize("retry_after", [0.05, False], ids=["retry-after", "no-retry-after"])
async def test_rate_limited_target_429_with_and_without_retry_after(tmp_path, retry_after):
    """The target throttles at 60 req/s: every user still lands exactly once."""
    from bulkprov.sim import GraphTenant
    from bulkprov.sim.server import serve_simulators

    from .conftest import GRAPH_SECRET, SCIM_TOKEN

    tenant = GraphTenant(user_count=120, seed=4, client_secret=GRAPH_SECRET)
    scim = ScimService(SCIM_TOKEN, rate_limit=60, burst=5, retry_after=retry_after)
    async with serve_simulators(tenant, scim) as servers:
        cfg = make_config(servers, tmp_path / "s.db", target__concurrency=16)
        result = await run_sync(cfg, SECRETS)
    assert scim.throttled > 0
    assert result.throttled > 0 and result.counts["failed"] == 0
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
    assert scim.counters()["duplicate_posts"] == {}


class FlakyTarget(NoFaults):
    """Every 7th request: a 503 before processing, or a reset after processing a POST."""

    def __init__(self) -> None:
        self.n = 0
        self.injected = 0

    async def before(self, req: SimRequest) -> SimResponse | None:
        self.n += 1
        if self.n % 7 == 0:
            self.injected += 1
            return SimResponse(503, b'{"detail":"try later"}')
        return None

    async def after(self, req: SimRequest, resp: SimResponse) -> SimResponse:
        # the POST *was* processed, but the client is told 502: outcome unknown
        if req.method == "POST" and self.n % 11 == 0:
            self.injected += 1
            return SimResponse(502, b"bad gateway")
        return resp


async def test_5xx_are_retried_and_unknown_creates_resolved_by_matching(
    servers, tenant, scim, tmp_path
):
    flaky = FlakyTarget()
    scim.faults = flaky
    cfg = make_config(servers, tmp_path / "s.db")
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert flaky.injected > 10
    assert result.counts["failed"] == 0
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
    assert scim.counters()["duplicate_posts"] == {}


async def test_graph_throttling_is_honoured(servers, tenant, scim, tmp_path):
    tenant.configure(throttle_every=3)
    cfg = make_config(servers, tmp_path / "s.db", graph__page_size=50)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["failed"] == 0
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []


async def test_401_stops_the_run_at_once_with_one_message_then_resumes(
    servers, tenant, scim, tmp_path
):
    cfg = make_config(servers, tmp_path / "s.db")
    scim.set_token("rotated-by-an-admin")
    started = time.monotonic()
    with pytest.raises(BaseException) as info:
        await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    err = unwrap(info.value)
    assert isinstance(err, TargetAuthError)
    assert "refused our token" in str(err) and "401" in str(err)
    assert time.monotonic() - started < 5
    assert scim.counters()["statuses"].get("401", 0) <= 8  # one per worker at most
    from .conftest import SCIM_TOKEN

    scim.set_token(SCIM_TOKEN)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.resumed and result.status == "completed"
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []


async def test_bad_graph_secret_is_a_clear_error(servers, tmp_path):
    from pydantic import SecretStr

    from bulkprov.credentials import Secrets

    from .conftest import SCIM_TOKEN

    cfg = make_config(servers, tmp_path / "s.db")
    with pytest.raises(BaseException) as info:
        await run_sync(cfg, Secrets(SecretStr("wrong"), SecretStr(SCIM_TOKEN)), policy=FAST_RETRY)
    err = unwrap(info.value)
    assert isinstance(err, SourceAuthError)
    assert "client secret" in str(err) and "wrong" not in str(err)


async def test_cancelled_run_resumes_without_duplicates(servers, tenant, scim, tmp_path):
    """Cancel mid-run (as Ctrl-C does), resume: each user exactly once, none POSTed twice."""
    cfg = make_config(servers, tmp_path / "s.db", graph__page_size=20, target__concurrency=4)
    scim.configure(latency_ms=10)

    async def cancel_midway(scope: anyio.CancelScope) -> None:
        # cancel once real work is under way, however slow the machine (a store size to
        # poll: the simulator has no event to wait on)
        while len(scim) < 60:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_midway, tg.cancel_scope)
        await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    partial = len(scim)
    assert 60 <= partial < 290
    scim.configure(latency_ms=0)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.resumed
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
    assert scim.counters()["duplicate_posts"] == {}


async def test_second_concurrent_sync_on_same_state_refuses(servers, tmp_path):
    from bulkprov.checkpoint.lock import StateLock
    from bulkprov.errors import StateError

    cfg = make_config(servers, tmp_path / "s.db")
    with StateLock(cfg.state.path), pytest.raises(StateError, match="another bulkprov sync"):
        await run_sync(cfg, SECRETS, policy=FAST_RETRY)


async def test_same_username_on_two_pages_is_duplicate_source_not_a_shared_link(
    servers, tenant, scim, tmp_path
):
    """Two Graph users mapping to one account: the second is a Failure, never linked to it."""
    first = next(u for u in tenant.iter_users() if u.get("accountEnabled") is not False)
    twin = dict(
        first,
        id="0d0d0d0d-0000-4000-8000-00000000beef",
        userPrincipalName=first["userPrincipalName"].upper(),
    )
    tenant.add_raw_user(twin)  # listed last: on another page than `first`
    cfg = make_config(servers, tmp_path / "s.db", graph__page_size=50)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["failed"] == 1
    failures = [e for e in await _log(cfg) if e["status"] == "failure"]
    assert failures[0]["graph_id"] == twin["id"]
    assert "DuplicateSourceEntries" in failures[0]["reason"]
    assert (
        len([r for r in scim.dump() if r["userName"].lower() == first["userPrincipalName"].lower()])
        == 1
    )
    owners = await _owners(cfg)
    assert list(owners.values()).count(first["id"]) == 1 and twin["id"] not in owners.values()


async def test_a_twin_never_takes_an_account_created_by_this_run_before_it_is_durable(
    servers, tenant, scim, tmp_path
):
    """The same userName on a later page: its POST answers 409 and matches the account the
    first user's create made — while that link still waits for the writer (slow commits).
    The twin fails as DuplicateSourceEntries; it is never linked to that account."""
    first = next(u for u in tenant.iter_users() if u.get("accountEnabled") is not False)
    twin = dict(
        first,
        id="0d0d0d0d-0000-4000-8000-00000000f00d",
        userPrincipalName=first["userPrincipalName"].upper(),
    )
    tenant.add_raw_user(twin)
    cfg = make_config(
        servers,
        tmp_path / "s.db",
        graph__page_size=50,
        state__commit_seconds=30,
        state__commit_every=100_000,
    )
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["failed"] == 1 and result.counts["updated"] == 0
    failures = [e for e in await _log(cfg) if e["status"] == "failure"]
    assert [f["graph_id"] for f in failures] == [twin["id"]]
    assert "DuplicateSourceEntries" in failures[0]["reason"]
    owners = await _owners(cfg)
    assert list(owners.values()).count(first["id"]) == 1 and twin["id"] not in owners.values()


async def test_pre_existing_account_is_linked_to_one_source_user_only(
    servers, tenant, scim, tmp_path
):
    first = next(u for u in tenant.iter_users() if u.get("accountEnabled") is not False)
    scim.seed_user({"userName": first["userPrincipalName"], "active": True})
    twin = dict(first, id="0d0d0d0d-0000-4000-8000-00000000cafe")
    tenant.add_raw_user(twin)
    cfg = make_config(servers, tmp_path / "s.db", graph__page_size=50)
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.counts["failed"] == 1
    assert scim.counters()["by_method"].get("POST", 0) == result.counts["created"]
    owners = await _owners(cfg)
    assert twin["id"] not in owners.values() and first["id"] in owners.values()


async def _log(cfg):
    from bulkprov.checkpoint.store import StateStore

    async with await StateStore.open(cfg.state.path) as store:
        return await store.log_entries(limit=None)


async def _owners(cfg):
    import sqlite3

    con = sqlite3.connect(cfg.state.path)
    try:
        return dict(con.execute("SELECT scim_id, graph_id FROM users WHERE scim_id IS NOT NULL"))
    finally:
        con.close()
