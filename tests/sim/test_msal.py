"""msal (the library the Graph client will use for tokens) against the simulated tenant.

msal accepts only an https authority, reads ``{authority}/v2.0/.well-known/openid-configuration``
and posts to its ``token_endpoint`` (facts.md §9), so the tenant is served over TLS with a
throwaway CA.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from bulkprov.sim import GraphTenant, serve_simulators

msal = pytest.importorskip("msal")
trustme = pytest.importorskip("trustme")
requests = pytest.importorskip("requests")


async def test_msal_client_credentials(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    tenant = GraphTenant(5, client_secret="msal-secret")
    async with serve_simulators(tenant, graph_ssl=server_ctx) as sims:
        assert sims.authority_url and sims.authority_url.startswith("https://127.0.0.1:")
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify otherwise
        session.verify = str(ca_file)

        def acquire(secret: str) -> dict[str, object]:
            app = msal.ConfidentialClientApplication(
                tenant.client_id,
                client_credential=secret,
                authority=f"{sims.authority_url}/{tenant.tenant_id}",
                http_client=session,
                instance_discovery=False,
                validate_authority=False,
            )
            result: dict[str, object] = app.acquire_token_for_client(
                scopes=["https://graph.microsoft.com/.default"]
            )
            return result

        try:
            good = await asyncio.to_thread(acquire, "msal-secret")
            assert good.get("token_type") == "Bearer", good
            assert isinstance(good.get("access_token"), str)
            bad = await asyncio.to_thread(acquire, "wrong")
            assert bad.get("error") == "invalid_client"
            assert 7000215 in bad.get("error_codes", [])  # type: ignore[operator]
        finally:
            session.close()
    assert tenant.counters["tokens_issued"] == 1
