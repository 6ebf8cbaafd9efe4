"""A token revoked mid-run stops the run within a second, with one message; a new token resumes."""

from __future__ import annotations

import time

import pytest

from bulkprov.errors import TargetAuthError
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import NoFaults, SimRequest, SimResponse

from .conftest import FAST_RETRY, SCIM_TOKEN, SECRETS, make_config
from .e2e import expected_values, store_problems


class RevokeAfter(NoFaults):
    """Revoke the token (as an admin would) once ``n`` creates have gone through."""

    def __init__(self, scim, n: int) -> None:
        self.scim, self.n, self.posts = scim, n, 0
        self.revoked_at: float | None = None

    async def before(self, req: SimRequest) -> SimResponse | None:
        if req.method == "POST" and self.revoked_at is None:
            self.posts += 1
            if self.posts == self.n:
                self.scim.set_token("a-new-token-the-run-does-not-have")
                self.revoked_at = time.monotonic()
        return None


async def test_revoked_mid_run_stops_within_a_second_then_resumes(servers, tenant, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db", target__concurrency=8, graph__page_size=40)
    scim.configure(latency_ms=5)
    hook = RevokeAfter(scim, 100)
    scim.faults = hook
    with pytest.raises(BaseException) as info:
        await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    stopped = time.monotonic()
    assert hook.revoked_at is not None
    assert stopped - hook.revoked_at < 1.0
    err = info.value
    while isinstance(err, BaseExceptionGroup):
        auth = err.subgroup(TargetAuthError)
        assert auth is not None
        err = auth.exceptions[0]
    assert isinstance(err, TargetAuthError) and "refused our token" in str(err)
    # one stop, not a storm: at most one 401 per worker, no per-user failures logged
    assert scim.counters()["statuses"].get("401", 0) <= 8
    scim.set_token(SCIM_TOKEN)
    scim.faults = None
    result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.resumed and result.status == "completed" and result.counts["failed"] == 0
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
    assert scim.counters()["duplicate_posts"] == {}
