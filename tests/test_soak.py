"""10 % injected faults of every kind on both services: every user still lands, exactly once."""

from __future__ import annotations

import pytest

from bulkprov.checkpoint.store import StateStore
from bulkprov.pipeline.run import run_sync
from bulkprov.retry import RetryPolicy
from bulkprov.sim import GraphTenant, NoFaults, ScimService, SimRequest, SimResponse
from bulkprov.sim.faults import GRAPH_KINDS, SOAK_KINDS, FaultPlan
from bulkprov.sim.server import serve_simulators

from .conftest import GRAPH_SECRET, SCIM_TOKEN, SECRETS, make_config
from .e2e import expected_values, store_problems

POLICY = RetryPolicy(max_attempts=8, max_seconds=30, base=0.005, cap=0.1)


async def soak(cfg, rounds: int = 5) -> list:
    """sync, then retry-failed until nothing is left in escrow (bounded)."""
    results = [await run_sync(cfg, SECRETS, policy=POLICY)]
    for _ in range(rounds):
        async with await StateStore.open(cfg.state.path) as store:
            if not await store.release_escrow():
                break
        results.append(await run_sync(cfg, SECRETS, policy=POLICY))
    return results


@pytest.mark.slow  # ~50 s: 1,000 users through 10 % faults of every kind, then escrow rounds
async def test_ten_percent_faults_of_every_kind(tmp_path):
    tenant = GraphTenant(user_count=1000, seed=13, client_secret=GRAPH_SECRET)
    scim = ScimService(SCIM_TOKEN, id_seed=13)
    scim.faults = FaultPlan(rate=0.10, kinds=SOAK_KINDS, seed=1, timeout_seconds=0.4)
    tenant.faults = FaultPlan(rate=0.10, kinds=GRAPH_KINDS, seed=2, timeout_seconds=0.4)
    async with serve_simulators(tenant, scim) as servers:
        cfg = make_config(
            servers,
            tmp_path / "s.db",
            target__timeout=0.25,
            graph__timeout=0.25,
            graph__page_size=10,  # enough Graph pages for faults of every kind (issue 20
            # item 14: the retry rounds read escrowed users by id, not the whole tenant again)
            target__concurrency=16,
        )
        results = await soak(cfg)
    assert set(scim.faults.injected) >= set(SOAK_KINDS) - {"pending"}
    assert sum(scim.faults.injected.values()) > 80
    assert set(tenant.faults.injected) & {"500", "502", "503", "504", "reset", "timeout"}
    assert results[-1].counts["failed"] == 0
    scim.faults = None
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
    assert scim.counters()["duplicate_posts"] == {}


async def test_pending_user_400_fails_the_user_then_escrow_retries_it(
    servers, tenant, scim, tmp_path
):
    """Zoom's pending-user 400 on the matching filter: a Failure with Zoom's reason, retried."""
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=POLICY)  # a completed run: no more pre-listing
    new = tenant.add_user(userPrincipalName="pending.person@corp.example", accountEnabled=True)
    scim.add_pending_user(new["userPrincipalName"])  # POST → 409, filter → 400
    result = await run_sync(cfg, SECRETS, policy=POLICY)
    assert result.counts["failed"] == 1
    async with await StateStore.open(cfg.state.path) as store:
        (entry,) = (await store.escrow_entries()).values()
    assert "not exist or not belong to this account" in (entry.reason or "")
    scim.reset()  # the invitation was accepted and the account removed: retry now
    async with await StateStore.open(cfg.state.path) as store:
        await store.release_escrow()
    result = await run_sync(cfg, SECRETS, policy=POLICY)
    assert result.counts["failed"] == 0 and scim.find(new["userPrincipalName"]) is not None


async def test_escrowed_create_is_matched_before_it_is_posted_again(
    servers, tenant, scim, tmp_path
):
    """A create that landed but looked failed (502 after processing, then a failed match)
    is found by matching on retry, never POSTed a second time."""
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=POLICY)
    new = tenant.add_user(userPrincipalName="flaky.create@corp.example", accountEnabled=True)

    class LandedButFailed(NoFaults):
        async def after(self, req: SimRequest, resp: SimResponse) -> SimResponse:
            if req.method == "POST":
                return SimResponse(502, b"bad gateway")  # the user *was* created
            if req.method == "GET" and "filter" in req.query:
                return SimResponse(400, b'{"status": 400, "detail": "pending"}')
            return resp

    scim.faults = LandedButFailed()
    result = await run_sync(cfg, SECRETS, policy=POLICY)
    assert result.counts["failed"] == 1
    scim.faults = None
    async with await StateStore.open(cfg.state.path) as store:
        await store.release_escrow()
    result = await run_sync(cfg, SECRETS, policy=POLICY)
    assert result.counts["failed"] == 0 and result.counts["linked"] + result.counts["updated"] == 1
    assert scim.posts_by_username[new["userPrincipalName"].lower()] == 1
