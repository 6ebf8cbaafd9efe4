"""Shared fixtures: simulators served on loopback, a config pointing at them, fast retries."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bulkprov.config import Config, parse_config
from bulkprov.credentials import Secrets
from bulkprov.mapping.defaults import DEFAULT_ZOOM_MAPPINGS
from bulkprov.retry import RetryPolicy
from bulkprov.sim import GraphTenant, ScimService
from bulkprov.sim.server import SimServers, serve_simulators

GRAPH_SECRET = "graph-secret-Zq9-never-printed"
SCIM_TOKEN = "scim-token-Xv7-never-printed"

#: retries without real waiting, so fault tests stay fast
FAST_RETRY = RetryPolicy(max_attempts=6, max_seconds=10.0, base=0.001, cap=0.01)


def make_config(
    servers: SimServers, state: Path, *, mappings: list[Any] | None = None, **overrides: Any
) -> Config:
    target: dict[str, Any] = {
        "base_url": servers.scim_url,
        "concurrency": 8,
        "rate_limit": 0,
    }
    graph: dict[str, Any] = {
        "tenant_id": servers.tenant_id,
        "client_id": servers.client_id,
        "authority": servers.authority_url,
        "base_url": servers.graph_api_url,
    }
    scope: dict[str, Any] = {}
    state_cfg: dict[str, Any] = {"path": str(state), "commit_seconds": 0.05}
    sections: dict[str, dict[str, Any]] = {
        "target": target,
        "graph": graph,
        "scope": scope,
        "state": state_cfg,
        "escrow": {},
        "quarantine": {},
        "deprovision": {},
        "groups": {},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        sections[section][name] = value
    if target.get("profile") == "zoom" and "target__rate_limit" not in overrides:
        del target["rate_limit"]  # the Zoom profile paces by label ([target.zoom])
    data = {
        "escrow": sections["escrow"],
        "quarantine": sections["quarantine"],
        "deprovision": sections["deprovision"],
        "groups": sections["groups"],
        "graph": graph,
        "target": target,
        "scope": scope,
        "state": state_cfg,
        "mappings": [m.model_dump(exclude_none=True) for m in (mappings or DEFAULT_ZOOM_MAPPINGS)],
    }
    return parse_config(data, path="test.toml")


SECRETS = Secrets(SecretStr(GRAPH_SECRET), SecretStr(SCIM_TOKEN))


@pytest.fixture
def tenant() -> GraphTenant:
    return GraphTenant(user_count=300, seed=3, client_secret=GRAPH_SECRET)


@pytest.fixture
def scim() -> ScimService:
    return ScimService(SCIM_TOKEN, id_seed=5)


@pytest.fixture
async def servers(tenant: GraphTenant, scim: ScimService) -> AsyncIterator[SimServers]:
    async with serve_simulators(tenant, scim) as s:
        yield s


@pytest.fixture
def ca(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A throwaway CA (trustme): a server context for 127.0.0.1, and the CA's PEM file."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(ctx)
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return ctx, path
