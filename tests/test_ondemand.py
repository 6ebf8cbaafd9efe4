"""``provision USER`` and ``test-connection`` against the simulators over loopback."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from bulkprov.credentials import Secrets
from bulkprov.pipeline.ondemand import check_connection, provision_user
from bulkprov.sim import NoFaults, SimResponse
from bulkprov.sim.http import SimRequest, json_response

from .conftest import FAST_RETRY, SECRETS, make_config


def titles(steps: list[Any]) -> list[tuple[str, bool]]:
    return [(s.title, s.ok) for s in steps]


async def test_provision_creates_then_skips(servers, tenant, scim, tmp_path):
    user = next(u for u in tenant.iter_users() if u["accountEnabled"])
    cfg = make_config(servers, tmp_path / "s.db")
    steps = await provision_user(cfg, SECRETS, user["userPrincipalName"], policy=FAST_RETRY)
    assert titles(steps) == [
        ("Import user", True),
        ("Determine if user is in scope", True),
        ("Match user between source and target system", True),
        ("Perform action", True),
        ("Modified properties", True),
    ]
    assert "no target account matches" in steps[2].detail
    assert steps[3].detail.startswith("create")
    assert steps[4].data["userName"] == user["userPrincipalName"]
    assert scim.find(user["userPrincipalName"]) is not None

    steps = await provision_user(cfg, SECRETS, user["id"], policy=FAST_RETRY)
    assert "linked to target account" in steps[2].detail
    assert steps[-1].detail == "skipped: unchanged"
    assert scim.counters()["posts"] == 1


async def test_provision_names_the_deciding_clause(servers, tenant, scim, tmp_path):
    user = next(
        u for u in tenant.iter_users() if u["accountEnabled"] and u["department"] != "Sales"
    )
    cfg = make_config(
        servers,
        tmp_path / "s.db",
        scope__filters=[
            {
                "name": "Sales only",
                "clauses": [{"attribute": "department", "operator": "EQUALS", "value": "Sales"}],
            }
        ],
    )
    steps = await provision_user(cfg, SECRETS, user["userPrincipalName"], policy=FAST_RETRY)
    assert steps[1].ok is False and 'department EQUALS "Sales"' in steps[1].detail
    assert steps[-1].detail.startswith("skipped")
    assert len(scim) == 0
    missing = await provision_user(cfg, SECRETS, "nobody@corp.example", policy=FAST_RETRY)
    assert titles(missing) == [("Import user", False)]


async def test_test_connection_ok(servers, tmp_path):
    steps = await check_connection(make_config(servers, tmp_path / "s.db"), SECRETS)
    assert titles(steps) == [("Graph token", True), ("Graph read", True), ("SCIM target", True)]


async def test_test_connection_names_each_cause(servers, scim, tmp_path):
    cfg = make_config(servers, tmp_path / "s.db")
    bad_token = Secrets(SECRETS.graph_client_secret, SecretStr("expired-token"))
    steps = await check_connection(cfg, bad_token)
    assert steps[-1].ok is False and "token was refused (401)" in steps[-1].detail
    assert "expired-token" not in str([s.detail for s in steps])

    wrong_url = make_config(servers, tmp_path / "s.db", target__base_url=servers.scim_url + "/v2")
    steps = await check_connection(wrong_url, SECRETS)
    assert "check target.base_url" in steps[-1].detail

    class NotScim(NoFaults):
        async def before(self, req: SimRequest) -> SimResponse | None:
            return json_response(200, {"users": []})

    scim.faults = NotScim()
    steps = await check_connection(cfg, SECRETS)
    assert "Request is unparsable" in steps[-1].detail

    bad_graph = Secrets(SecretStr("wrong-secret"), SECRETS.scim_token)
    steps = await check_connection(cfg, bad_graph)
    assert steps[0].ok is False and "client secret" in steps[0].detail
    assert "wrong-secret" not in str([s.detail for s in steps])


async def test_a_wrong_service_principal_is_named_with_the_setting(servers, tenant, tmp_path):
    """Assigned scope with a service principal id Graph does not know: the sync's error and
    test-connection name servicePrincipals/{id} and scope.service_principal_id (issue 20
    item 12); test-connection reads the assignments as a sync does."""
    from bulkprov.errors import SourceError
    from bulkprov.pipeline.run import run_sync

    wrong = "11111111-2222-3333-4444-555555555555"
    cfg = make_config(
        servers, tmp_path / "s.db", scope__mode="assigned", scope__service_principal_id=wrong
    )
    with pytest.raises(BaseException) as info:
        await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    err: BaseException = info.value
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    assert isinstance(err, SourceError) and err.status == 404
    assert f"GET {servers.graph_api_url}/servicePrincipals/{wrong}" in str(err)
    assert f"scope.service_principal_id = '{wrong}'" in str(err)
    assert "enterprise application" in str(err)
    steps = await check_connection(cfg, SECRETS)
    assert steps[1].title == "Graph read" and not steps[1].ok
    assert steps[1].exit_code == 4 and "servicePrincipals" in steps[1].detail

    right = make_config(
        servers,
        tmp_path / "s.db",
        scope__mode="assigned",
        scope__service_principal_id=tenant.directory.service_principal_id,
    )
    steps = await check_connection(right, SECRETS)
    assert all(s.ok for s in steps), steps
    assert "the app's assignments (servicePrincipals/{id})" in steps[1].detail


async def test_a_tls_failure_is_named_tls_not_a_refused_token(tmp_path, ca):
    """A target whose certificate cannot be verified: test-connection says TLS and names
    target.ca_file, never "the token was refused" (issue 20 item 12)."""
    from bulkprov.sim import GraphTenant, ScimService
    from bulkprov.sim.server import serve_simulators

    from .conftest import GRAPH_SECRET, SCIM_TOKEN

    ctx, ca_file = ca
    tenant = GraphTenant(user_count=5, seed=2, client_secret=GRAPH_SECRET)
    async with serve_simulators(tenant, ScimService(SCIM_TOKEN), scim_ssl=ctx) as servers:
        cfg = make_config(servers, tmp_path / "s.db")  # no target.ca_file
        steps = await check_connection(cfg, SECRETS)
        last = steps[-1]
        assert last.title == "SCIM target" and not last.ok
        assert last.detail.startswith("TLS: the certificate of")
        assert "target.ca_file" in last.detail and "CERTIFICATE_VERIFY_FAILED" in last.detail
        assert "token" not in last.detail
        cfg = make_config(servers, tmp_path / "s.db", target__ca_file=str(ca_file))
        assert all(s.ok for s in await check_connection(cfg, SECRETS))
