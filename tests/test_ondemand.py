"""``provision USER`` and ``test-connection`` against the simulators over loopback."""

from __future__ import annotations

from typing import Any

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
