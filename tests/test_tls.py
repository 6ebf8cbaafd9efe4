"""TLS is verified, against the system's CAs or a custom CA bundle (graph/target.ca_file)."""

from __future__ import annotations

import pytest

from bulkprov.errors import (
    ConfigError,
    SourceTLSError,
    TargetAuthError,
    TargetStop,
    TargetTLSError,
)
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant, NoFaults, ScimService, SimRequest, SimResponse
from bulkprov.sim.server import serve_simulators

from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN, SECRETS, make_config
from .e2e import expected_values, store_problems

pytest.importorskip("trustme")  # the ca fixture (conftest) needs it


async def test_custom_ca_file_verifies_both_services(tmp_path, ca):
    ctx, ca_file = ca
    tenant = GraphTenant(user_count=60, seed=2, client_secret=GRAPH_SECRET)
    scim = ScimService(SCIM_TOKEN)
    async with serve_simulators(tenant, scim, graph_ssl=ctx, scim_ssl=ctx) as servers:
        assert servers.scim_url.startswith("https://")
        cfg = make_config(
            servers, tmp_path / "s.db", graph__ca_file=str(ca_file), target__ca_file=str(ca_file)
        )
        result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        assert result.status == "completed"
        assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
        # without the CA the certificate is refused: verification is on by default
        cfg = make_config(servers, tmp_path / "t.db", graph__ca_file=str(ca_file))
        with pytest.raises(BaseException) as info:
            await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        err = info.value
        while isinstance(err, BaseExceptionGroup):
            err = err.exceptions[0]
        assert isinstance(err, TargetTLSError) and "target.ca_file" in str(err)
        assert "CERTIFICATE_VERIFY_FAILED" in str(err)
        # TLS is not authentication: its own place in the tree and its own exit code
        assert not isinstance(err, TargetAuthError) and err.exit_code == 11
        assert isinstance(err, TargetStop)
        cfg = make_config(servers, tmp_path / "u.db", target__ca_file=str(ca_file))
        with pytest.raises(BaseException) as info:
            await run_sync(cfg, SECRETS, policy=FAST_RETRY)
        err = info.value
        while isinstance(err, BaseExceptionGroup):
            err = err.exceptions[0]
        assert isinstance(err, SourceTLSError) and "graph.ca_file" in str(err)
        assert err.exit_code == 11
    assert len(scim) == 60 - sum(1 for u in tenant.iter_users() if u["accountEnabled"] is False)


async def test_missing_ca_file_is_a_config_error(servers, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db", target__ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match="nope.pem"):
        await run_sync(cfg, SECRETS, policy=FAST_RETRY)


async def test_graph_tokens_come_from_msal_and_are_refreshed(tmp_path, ca):
    """An https authority goes through msal: short-lived tokens renewed, a revoked one replaced."""
    ctx, ca_file = ca
    tenant = GraphTenant(user_count=200, seed=5, client_secret=GRAPH_SECRET, token_lifetime=1)
    scim = ScimService(SCIM_TOKEN)
    scim.configure(latency_ms=20)  # about 3 s of work: several 1-second tokens
    revoked = False

    class RevokeGraphTokens(NoFaults):
        reads = 0

        async def before(self, req: SimRequest) -> SimResponse | None:
            nonlocal revoked
            self.reads += 1
            if self.reads == 6:  # mid-run on Graph's side, whatever the machine's speed
                tenant.revoke_tokens()  # Graph now answers 401 to the cached token
                revoked = True
            return None

    tenant.faults = RevokeGraphTokens()
    async with serve_simulators(tenant, scim, graph_ssl=ctx) as servers:
        assert servers.authority_url.startswith("https://")
        cfg = make_config(
            servers,
            tmp_path / "s.db",
            graph__ca_file=str(ca_file),
            graph__page_size=10,
            target__concurrency=2,
        )
        result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert result.status == "completed" and revoked
    assert tenant.counters["tokens_issued"] >= 3  # 1-second tokens over a longer run
    assert tenant.counters["unauthorized"] >= 1  # the revocation was met and recovered
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []


def test_certificate_needs_an_https_authority(servers, tmp_path):
    with pytest.raises(ConfigError, match="https authority"):
        make_config(
            servers,
            tmp_path / "s.db",
            graph__certificate={"private_key": {"env": "X"}, "thumbprint": "AB"},
        )
