"""Fixtures: simulators reached in-process through httpx + SimTransport (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bulkprov.sim import GraphTenant, ScimService, SimTransport

GRAPH_SECRET = "test-graph-secret"
SCIM_TOKEN = "test-scim-token"


@pytest.fixture
def tenant() -> GraphTenant:
    return GraphTenant(user_count=250, seed=7, client_secret=GRAPH_SECRET)


@pytest.fixture
def scim() -> ScimService:
    return ScimService(SCIM_TOKEN, id_seed=1)


@pytest.fixture
async def graph_client(tenant: GraphTenant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=SimTransport(tenant.handle), base_url="https://graph.sim.test"
    ) as client:
        yield client


@pytest.fixture
async def scim_client(scim: ScimService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=SimTransport(scim.handle),
        base_url="http://scim.sim.test/scim2",
        headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
    ) as client:
        yield client


def token_form(tenant: GraphTenant, **overrides: str) -> dict[str, str]:
    form = {
        "client_id": tenant.client_id,
        "client_secret": GRAPH_SECRET,
        "scope": "https://graph.microsoft.com/.default",
        "grant_type": "client_credentials",
    }
    form.update(overrides)
    return form


async def get_token(client: httpx.AsyncClient, tenant: GraphTenant) -> str:
    resp = await client.post(f"/{tenant.tenant_id}/oauth2/v2.0/token", data=token_form(tenant))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])
