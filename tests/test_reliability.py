"""Escrow, the quarantine breaker, schema migrations, locked and exported state."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from bulkprov.breaker import Breaker, BreakerPolicy
from bulkprov.checkpoint.store import SCHEMA_VERSION, StateStore
from bulkprov.errors import Quarantined, StateError
from bulkprov.escrow import DAY, HOUR, EscrowPolicy
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import NoFaults, SimRequest, SimResponse, scim_error

from .conftest import FAST_RETRY, SECRETS, make_config
from .e2e import expected_values, store_problems

ENTRA = BreakerPolicy(scale=0)  # Entra's fixed numbers, for its documented test vectors


@pytest.mark.parametrize(
    ("ok", "failed", "ref", "quarantined"),
    [
        (0, 4_000, 0, False),  # below 5,000 failures: no evaluation
        (0, 45_000, 0, True),  # more than 40,000 failures
        (5_000, 30_000, 0, True),  # more than 40 % with the 5,000 minimum
        (100_000, 20_000, 0, False),  # neither 40 % nor 40,000
        (1_000_000, 40_000, 21_000, True),  # 61,000 > the absolute 60,000
    ],
)
def test_breaker_entra_vectors(ok, failed, ref, quarantined):
    """facts.md §2.4 QUARANTINE test vectors."""
    assert (ENTRA.verdict(ok, failed, ref) is not None) is quarantined


def test_breaker_scales_for_small_runs():
    policy = BreakerPolicy()
    assert policy.verdict(0, 24) is None  # under the floor of 25
    assert policy.verdict(10, 25) is not None  # 71 % of 35 events
    assert policy.verdict(200, 100) is None  # 33 %
    # large runs reach Entra's 5,000 minimum again
    assert policy.verdict(0, 4_000) is not None  # scaled minimum 400
    assert policy.verdict(100_000, 4_999) is None
    b = Breaker(policy)
    verdicts = [b.record(False, f"409 'user{i}@x' exists") for i in range(25)]
    assert verdicts[-1] is not None and all(v is None for v in verdicts[:-1])
    assert "25  409" in b.report(verdicts[-1])  # reasons grouped without the user names


def test_a_reported_quarantine_reason_does_not_stop_a_run_again():
    """Reasons already reported (the state in quarantine) no longer trip the breaker; they
    count toward the absolute limit only, and a new reason trips it as before (issue 20
    item 2: every rerun quarantined again, 25 failures at a time)."""
    policy = BreakerPolicy(absolute_failures=500)
    b = Breaker(policy, frozenset({"409"}))
    assert all(b.record(False, f"409 'user{i}@x' exists") is None for i in range(400))
    assert b.top_reasons() == ["409"]
    verdicts = [b.record(False, "400 invalid department") for _ in range(25)]
    assert verdicts[-1] is not None and "25 of 25" in verdicts[-1]
    flood = Breaker(policy, frozenset({"409"}))
    assert [flood.record(False, "409") for _ in range(501)][-1] is not None  # absolute


def test_escrow_schedule_is_entras():
    p = EscrowPolicy()
    t0 = 1_000_000.0
    assert [(p.next_retry(t0, n) or 0) - t0 for n in (1, 2, 3, 4, 5)] == [
        6 * HOUR,
        12 * HOUR,
        24 * HOUR,
        48 * HOUR,
        72 * HOUR,
    ]
    # daily up to 28 days after the first failure, then no automatic retry
    assert p.next_retry(t0, 30) == t0 + 28 * DAY
    assert p.next_retry(t0, 31) is None


class RejectSome(NoFaults):
    """400 on creates of every user whose name is in ``names``."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    async def before(self, req: SimRequest) -> SimResponse | None:
        if req.method == "POST" and any(n.encode() in req.body for n in self.names):
            return scim_error(400, "Invalid email domain", "invalidValue")
        return None


async def test_failed_users_wait_in_escrow_then_retry_failed(servers, tenant, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db")
    bad = {
        u["userPrincipalName"]
        for u in list(tenant.iter_users())[:5]
        if u.get("accountEnabled") is not False
    }
    scim.faults = RejectSome(bad)
    first = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert first.counts["failed"] == len(bad) and first.status == "completed_with_failures"
    # the next run does not hammer them: they wait 6 hours, logged as Skipped when a
    # cycle reads them (here: changed in Entra; an incremental cycle reads escrowed users
    # by id only when their retry is due, issue 20 item 14)
    scim.faults = None
    scim.reset_counters()
    for u in tenant.iter_users():
        if u["userPrincipalName"] in bad:
            tenant.update_user(u["id"], department="Changed while escrowed")
    second = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert scim.counters()["total"] == 0
    assert second.counts["failed"] == 0 and second.counts["skipped"] >= len(bad)
    async with await StateStore.open(cfg.state.path) as store:
        entries = await store.escrow_entries()
        assert {e.user_name for e in entries.values()} == bad
        e = next(iter(entries.values()))
        assert e.failures == 1 and e.next_retry == pytest.approx(e.first_failed + 6 * HOUR)
        logs = await store.log_entries(run_id=second.run_id, status="skipped")
        assert sum("escrowed after 1 failure(s)" in (x["reason"] or "") for x in logs) == 5
        assert await store.release_escrow() == len(bad)  # what retry-failed does
    third = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert third.counts["created"] == len(bad)
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
    async with await StateStore.open(cfg.state.path) as store:
        assert await store.escrow_entries() == {}


async def test_an_escrowed_user_does_not_make_every_cycle_a_full_read(
    servers, tenant, scim, tmp_path
):
    """Issue 20 item 14: the users/delta watermark advances over a cycle whose failures are
    escrowed, and an escrowed user is read again by id when its retry is due (Entra's
    escrow schedule): one user that keeps failing no longer turns every later cycle into a
    full read of the tenant."""
    from bulkprov.checkpoint.staging import USERS_DELTA, LifecycleStore

    users = [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]
    x, y = users[0], users[1]
    cfg = make_config(servers, tmp_path / "s.db")
    scim.faults = RejectSome({x["userPrincipalName"]})
    first = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert first.counts["failed"] == 1
    async with await StateStore.open(cfg.state.path) as store:
        assert await LifecycleStore(store).get(USERS_DELTA) is not None
    tenant._reset_counters()
    scim.reset_counters()
    second = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert tenant.counters["users_served"] == 0  # a round of changes: none
    assert tenant.counters["user_reads"] == 0  # x waits: its retry is not due
    assert second.counts["failed"] == 0 and scim.counters()["total"] == 0
    tenant.update_user(y["id"], department="Moved")
    tenant._reset_counters()
    third = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert tenant.counters["users_served"] == 1 and third.counts["updated"] == 1
    # due (what `retry-failed` does): x alone is read by id and retried; still failing,
    # it is escrowed again and the watermark still advances
    async with await StateStore.open(cfg.state.path) as store:
        assert await store.release_escrow() == 1
    tenant._reset_counters()
    fourth = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert tenant.counters["user_reads"] == 1 and tenant.counters["users_served"] == 0
    assert fourth.counts["failed"] == 1
    async with await StateStore.open(cfg.state.path) as store:
        (entry,) = (await store.escrow_entries()).values()
        assert entry.failures == 2 and not entry.is_due()
    tenant._reset_counters()
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert tenant.counters["users_served"] == 0 and tenant.counters["user_reads"] == 0
    # fixed on the target side: the next due retry creates it
    scim.faults = None
    async with await StateStore.open(cfg.state.path) as store:
        await store.release_escrow()
    sixth = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert sixth.counts["created"] == 1 and sixth.counts["failed"] == 0
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
    async with await StateStore.open(cfg.state.path) as store:
        assert await store.escrow_entries() == {}


async def test_second_failure_moves_the_retry_further(servers, tenant, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db", escrow__delays_hours=[0, 12])
    user = next(u for u in tenant.iter_users() if u.get("accountEnabled") is not False)
    scim.faults = RejectSome({user["userPrincipalName"]})
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)  # due at once (0 h): fails again
    async with await StateStore.open(cfg.state.path) as store:
        (e,) = (await store.escrow_entries()).values()
    assert e.failures == 2 and e.next_retry == pytest.approx(e.first_failed + 12 * HOUR)
    assert not e.is_due()


async def test_mass_failure_trips_the_breaker_instead_of_hammering(servers, tenant, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db", target__concurrency=4)

    class Broken(NoFaults):
        posts = 0

        async def before(self, req: SimRequest) -> SimResponse | None:
            if req.method == "POST":
                self.posts += 1
                return scim_error(400, "Account has not enabled Single Sign-On.")
            return None

    scim.faults = broken = Broken()
    with pytest.raises(BaseException) as info:
        await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    err = info.value
    if isinstance(err, BaseExceptionGroup):
        group = err.subgroup(Quarantined)
        assert group is not None
        (err,) = group.exceptions
        while isinstance(err, BaseExceptionGroup):
            (err,) = err.exceptions
    assert isinstance(err, Quarantined)
    assert "quarantined" in str(err) and "Single Sign-On" in str(err)
    assert 25 <= broken.posts < 60  # stopped near the 25-failure floor, not after all 280 users
    # fixed: the run resumes and completes (failed users are escrowed; retry-failed sends them)
    scim.faults = None
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    # the 25 failures that tripped it are kept (in-flight requests at the stop are redone)
    assert result.resumed and result.counts["failed"] == 25
    async with await StateStore.open(cfg.state.path) as store:
        assert await store.release_escrow() == 25
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.status == "completed" and result.counts["created"] == 25
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []


V1_SCHEMA_DB = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE users (graph_id TEXT PRIMARY KEY, scim_id TEXT, user_name TEXT, digest TEXT,
    attrs BLOB, active INTEGER NOT NULL DEFAULT 1, last_action TEXT, last_status TEXT,
    last_reason TEXT, last_run INTEGER, updated_at REAL);
INSERT INTO users(graph_id, scim_id, user_name) VALUES ('g1', 's1', 'kept@x.example');
"""


async def test_v1_database_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(V1_SCHEMA_DB)
    con.close()
    async with await StateStore.open(path) as store:
        assert await store.user_count() == 1
        assert await store.escrow_entries() == {}
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    assert con.execute("SELECT user_name FROM users").fetchone() == ("kept@x.example",)
    con.close()


async def test_locked_database_is_a_clear_error_and_untouched(tmp_path):
    path = tmp_path / "s.db"
    async with await StateStore.open(path):
        pass
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=DELETE")  # an exclusive lock blocks even WAL readers
    other.execute("BEGIN EXCLUSIVE")
    before = path.read_bytes()
    try:
        StateStore.busy_timeout_ms = 100
        with pytest.raises(StateError, match="locked by another process"):
            await StateStore.open(path)
    finally:
        StateStore.busy_timeout_ms = 5000
        other.execute("ROLLBACK")
        other.close()
    assert path.read_bytes() == before


async def test_state_export_is_a_consistent_private_copy(servers, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db")
    await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    dest = tmp_path / "backup.sqlite3"
    async with await StateStore.open(cfg.state.path) as store:
        await store.backup(dest)
        with pytest.raises(StateError, match="nothing was overwritten"):
            await store.backup(dest)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    async with await StateStore.open(dest) as copy:
        assert await copy.user_count() == len(scim)
        assert (await copy.runs())[0]["status"] == "completed"
