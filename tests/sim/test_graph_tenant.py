"""GraphTenant through httpx + SimTransport: tokens, auth, paging, $select, throttling, edits."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bulkprov.sim import GraphTenant, SimTransport
from bulkprov.sim.users import DEFAULT_SELECT

from .conftest import GRAPH_SECRET, get_token, token_form


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def list_all(client: httpx.AsyncClient, token: str, url: str) -> list[list[dict[str, Any]]]:
    pages = []
    next_url: str | None = url
    while next_url:
        resp = await client.get(next_url, headers=bearer(token))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append(body["value"])
        next_url = body.get("@odata.nextLink")
    return pages


# ---------------------------------------------------------------------------- token endpoint


async def test_token_ok(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    resp = await graph_client.post(
        f"/{tenant.tenant_id}/oauth2/v2.0/token", data=token_form(tenant)
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599 and body["ext_expires_in"] == 3599
    assert len(body["access_token"]) > 20
    assert tenant.counters["tokens_issued"] == 1


async def test_token_bad_secret(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    resp = await graph_client.post(
        f"/{tenant.tenant_id}/oauth2/v2.0/token", data=token_form(tenant, client_secret="nope")
    )
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided")
    assert body["error_codes"] == [7000215]
    assert GRAPH_SECRET not in resp.text


@pytest.mark.parametrize(
    ("override", "status", "error"),
    [
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, 400, "unauthorized_client"),
        ({"scope": "https://graph.microsoft.com/User.Read.All"}, 400, "invalid_scope"),
        ({"scope": "https://other.example/.default"}, 400, "invalid_resource"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_secret": ""}, 401, "invalid_client"),
    ],
)
async def test_token_errors(
    graph_client: httpx.AsyncClient,
    tenant: GraphTenant,
    override: dict[str, str],
    status: int,
    error: str,
) -> None:
    resp = await graph_client.post(
        f"/{tenant.tenant_id}/oauth2/v2.0/token", data=token_form(tenant, **override)
    )
    assert resp.status_code == status
    assert resp.json()["error"] == error


async def test_token_unknown_tenant(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    resp = await graph_client.post("/other-tenant/oauth2/v2.0/token", data=token_form(tenant))
    assert resp.status_code == 400
    assert "AADSTS90002" in resp.json()["error_description"]


async def test_token_client_secret_basic(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    form = token_form(tenant)
    del form["client_id"], form["client_secret"]
    basic = base64.b64encode(f"{tenant.client_id}:{GRAPH_SECRET}".encode()).decode()
    resp = await graph_client.post(
        f"/{tenant.tenant_id}/oauth2/v2.0/token",
        data=form,
        headers={"Authorization": f"Basic {basic}"},
    )
    assert resp.status_code == 200


async def test_openid_configuration(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    resp = await graph_client.get(f"/{tenant.tenant_id}/v2.0/.well-known/openid-configuration")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["token_endpoint"] == (f"https://graph.sim.test/{tenant.tenant_id}/oauth2/v2.0/token")
    assert doc["issuer"].endswith(f"/{tenant.tenant_id}/v2.0")


# ------------------------------------------------------------------------------------ auth


async def test_api_requires_valid_token(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    resp = await graph_client.get("/v1.0/users")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "InvalidAuthenticationToken"
    resp = await graph_client.get("/v1.0/users", headers=bearer("forged"))
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "InvalidAuthenticationToken"
    token = await get_token(graph_client, tenant)
    assert (await graph_client.get("/v1.0/users", headers=bearer(token))).status_code == 200
    tenant.revoke_tokens()
    resp = await graph_client.get("/v1.0/users", headers=bearer(token))
    assert resp.status_code == 401
    assert tenant.counters["unauthorized"] == 3


async def test_expired_token(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    tenant.token_lifetime = -1
    token = await get_token(graph_client, tenant)
    resp = await graph_client.get("/v1.0/users", headers=bearer(token))
    assert resp.status_code == 401
    assert "expired" in resp.json()["error"]["message"]


# ---------------------------------------------------------------------------------- paging


async def test_pages_through_all_users(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    token = await get_token(graph_client, tenant)
    pages = await list_all(graph_client, token, "/v1.0/users?$top=37")
    assert [len(p) for p in pages] == [37] * 6 + [28]
    ids = [u["id"] for p in pages for u in p]
    assert len(set(ids)) == 250
    assert ids == [u["id"] for u in tenant.iter_users()]
    assert tenant.counters["pages"] == 7 and tenant.counters["users_served"] == 250


async def test_next_link_is_absolute_and_keeps_options(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    token = await get_token(graph_client, tenant)
    resp = await graph_client.get(
        "/v1.0/users",
        params={"$select": "displayName,accountEnabled", "$top": "100"},
        headers=bearer(token),
    )
    body = resp.json()
    link = urlsplit(body["@odata.nextLink"])
    assert (link.scheme, link.netloc, link.path) == ("https", "graph.sim.test", "/v1.0/users")
    q = parse_qs(link.query)
    assert q["$select"] == ["displayName,accountEnabled"]
    assert q["$top"] == ["100"]
    assert q["$skiptoken"][0]
    assert body["@odata.context"].endswith("$metadata#users(id,displayName,accountEnabled)")
    # the last page has no nextLink
    pages = await list_all(graph_client, token, body["@odata.nextLink"])
    assert sum(map(len, pages)) == 150


async def test_default_page_size_is_100(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    token = await get_token(graph_client, tenant)
    body = (await graph_client.get("/v1.0/users", headers=bearer(token))).json()
    assert len(body["value"]) == 100
    assert "$top" not in body["@odata.nextLink"]


async def test_select_is_honoured(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    token = await get_token(graph_client, tenant)
    body = (
        await graph_client.get(
            "/v1.0/users?$select=displayName,ACCOUNTENABLED,department&$top=999",
            headers=bearer(token),
        )
    ).json()
    assert len(body["value"]) == 250
    assert "@odata.nextLink" not in body
    for user in body["value"]:
        assert set(user) == {"id", "displayName", "accountEnabled", "department"}
    default = (await graph_client.get("/v1.0/users?$top=5", headers=bearer(token))).json()
    assert set(default["value"][0]) == set(DEFAULT_SELECT)
    assert "accountEnabled" not in default["value"][0]


async def test_select_unknown_property(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    token = await get_token(graph_client, tenant)
    resp = await graph_client.get("/v1.0/users?$select=id,shoeSize", headers=bearer(token))
    assert resp.status_code == 400
    assert "shoeSize" in resp.json()["error"]["message"]


async def test_select_other_graph_properties(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    ext = "extension_0123456789abcdef0123456789abcdef_costCenter"
    first = next(tenant.iter_users())
    tenant.update_user(
        first["id"],
        {"onPremisesExtensionAttributes": {"extensionAttribute1": "CC-1"}, ext: "42"},
    )
    token = await get_token(graph_client, tenant)
    body = (
        await graph_client.get(
            f"/v1.0/users?$top=2&$select=onPremisesExtensionAttributes,otherMails,{ext}",
            headers=bearer(token),
        )
    ).json()
    changed, plain = body["value"]
    assert changed["onPremisesExtensionAttributes"] == {"extensionAttribute1": "CC-1"}
    assert changed[ext] == "42"
    assert plain["otherMails"] == []
    assert plain[ext] is None
    assert plain["onPremisesExtensionAttributes"]["extensionAttribute15"] is None
    assert len(plain["onPremisesExtensionAttributes"]) == 15


@pytest.mark.parametrize("top", ["1000", "0", "-5", "many"])
async def test_bad_top(graph_client: httpx.AsyncClient, tenant: GraphTenant, top: str) -> None:
    token = await get_token(graph_client, tenant)
    resp = await graph_client.get(f"/v1.0/users?$top={top}", headers=bearer(token))
    assert resp.status_code == 400
    if top == "1000":
        assert resp.json()["error"]["message"] == (
            "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."
        )


async def test_tampered_skiptoken(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    token = await get_token(graph_client, tenant)
    link = (await graph_client.get("/v1.0/users?$top=10", headers=bearer(token))).json()[
        "@odata.nextLink"
    ]
    skip = parse_qs(urlsplit(link).query)["$skiptoken"][0]
    raw = bytearray(base64.urlsafe_b64decode(skip + "=" * (-len(skip) % 4)))
    raw[8] ^= 0x01  # move the offset by one
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in (forged, "garbage", skip[:-2]):
        resp = await graph_client.get(
            "/v1.0/users", params={"$top": "10", "$skiptoken": bad}, headers=bearer(token)
        )
        assert resp.status_code == 400, bad
        assert resp.json()["error"]["code"] == "Directory_ExpiredPageToken"
    # a token from another tenant (other key) is not accepted either
    other = GraphTenant(250, seed=8)
    foreign = other._encode_skiptoken(10)
    resp = await graph_client.get(f"/v1.0/users?$skiptoken={foreign}", headers=bearer(token))
    assert resp.status_code == 400


async def test_skiptoken_survives_a_restart(tenant: GraphTenant) -> None:
    again = GraphTenant(250, seed=7, client_secret=GRAPH_SECRET)
    assert again._decode_skiptoken(tenant._encode_skiptoken(42)) == 42


async def test_unsupported_query_options_fail_loudly(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    token = await get_token(graph_client, tenant)
    resp = await graph_client.get(
        "/v1.0/users", params={"$filter": "accountEnabled eq true"}, headers=bearer(token)
    )
    assert resp.status_code == 400


# -------------------------------------------------------------------------------- throttling


async def test_throttle_every_with_fractional_retry_after(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    tenant.configure(throttle_every=3, retry_after=0.05)
    token = await get_token(graph_client, tenant)
    statuses = []
    for _ in range(6):
        resp = await graph_client.get("/v1.0/users?$top=1", headers=bearer(token))
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert resp.headers["Retry-After"] == "0.05"
            assert float(resp.headers["Retry-After"]) == pytest.approx(0.05)
            err = resp.json()["error"]
            assert err["code"] == "TooManyRequests"
            assert err["innerError"]["status"] == "429"
    assert statuses == [200, 200, 429, 200, 200, 429]
    assert tenant.counters["throttled"] == 2


async def test_throttle_probability_is_seeded() -> None:
    async def run() -> list[int]:
        t = GraphTenant(10, throttle_probability=0.5, throttle_seed=99, retry_after=None)
        token = t.issue_token()
        async with httpx.AsyncClient(transport=SimTransport(t.handle), base_url="http://g") as c:
            out = []
            for _ in range(20):
                resp = await c.get("/v1.0/users", headers=bearer(token))
                out.append(resp.status_code)
                if resp.status_code == 429:
                    assert "Retry-After" not in resp.headers
            return out

    first, second = await run(), await run()
    assert first == second
    assert 429 in first and 200 in first


# ----------------------------------------------------------------------- single user, edits


async def test_get_user_by_id_and_upn(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    token = await get_token(graph_client, tenant)
    user = next(tenant.iter_users())
    by_id = await graph_client.get(f"/v1.0/users/{user['id']}", headers=bearer(token))
    assert by_id.status_code == 200
    assert by_id.json()["userPrincipalName"] == user["userPrincipalName"]
    by_upn = await graph_client.get(
        f"/v1.0/users/{user['userPrincipalName'].upper()}?$select=mail", headers=bearer(token)
    )
    assert by_upn.status_code == 200
    assert set(by_upn.json()) == {"@odata.context", "id", "mail"}
    missing = await graph_client.get(
        "/v1.0/users/00000000-0000-4000-8000-000000000000", headers=bearer(token)
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "Request_ResourceNotFound"


async def test_mutations_keep_order(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    users = list(tenant.iter_users())
    first, second, third = users[0], users[1], users[2]
    tenant.update_user(first["id"], department="Sales", userPrincipalName="renamed@corp.example")
    added = tenant.add_user(displayName="New Person", userPrincipalName="new.person@corp.example")
    tenant.delete_user(second["id"])  # soft
    tenant.delete_user(third["userPrincipalName"], soft=False)
    assert tenant.user_count == 249

    token = await get_token(graph_client, tenant)
    pages = await list_all(graph_client, token, "/v1.0/users?$select=department&$top=999")
    listed = pages[0]
    assert len(listed) == 249
    assert listed[0] == {"id": first["id"], "department": "Sales"}
    assert listed[-1]["id"] == added["id"]
    assert second["id"] not in {u["id"] for u in listed}

    renamed = tenant.get_user("renamed@corp.example")
    assert renamed is not None and renamed["id"] == first["id"]
    assert tenant.get_user(first["userPrincipalName"]) is None  # the old UPN is gone
    new = tenant.get_user(added["id"])
    assert new is not None and new["displayName"] == "New Person"
    with pytest.raises(ValueError, match="already in use"):
        tenant.add_user(userPrincipalName="RENAMED@corp.example")

    tenant.restore_user(second["id"])
    ids = [u["id"] for u in tenant.iter_users()]
    assert ids[1] == second["id"]
    with pytest.raises(KeyError):
        tenant.restore_user(third["id"])  # hard-deleted


async def test_control_endpoints(graph_client: httpx.AsyncClient, tenant: GraphTenant) -> None:
    user = next(tenant.iter_users())
    resp = await graph_client.patch(f"/_sim/users/{user['id']}", json={"jobTitle": "CEO"})
    assert resp.status_code == 200 and resp.json()["jobTitle"] == "CEO"
    resp = await graph_client.post("/_sim/users", json={"displayName": "Added"})
    assert resp.status_code == 201
    added_id = resp.json()["id"]
    assert (await graph_client.get(f"/_sim/users/{added_id}")).json()["displayName"] == "Added"
    assert (await graph_client.delete(f"/_sim/users/{added_id}?soft=false")).status_code == 204
    assert (await graph_client.get(f"/_sim/users/{added_id}")).status_code == 404
    assert (await graph_client.patch("/_sim/users/nobody@x", json={})).status_code == 404

    token = await get_token(graph_client, tenant)
    assert (await graph_client.post("/_sim/revoke_tokens")).status_code == 204
    assert (await graph_client.get("/v1.0/users", headers=bearer(token))).status_code == 401

    resp = await graph_client.post("/_sim/config", json={"throttle_every": 1})
    assert resp.json()["throttle_every"] == 1
    token = await get_token(graph_client, tenant)
    assert (await graph_client.get("/v1.0/users", headers=bearer(token))).status_code == 429
    assert (await graph_client.post("/_sim/config", json={"bogus": 1})).status_code == 400
    counters = (await graph_client.get("/_sim/counters")).json()
    assert counters["throttled"] == 1


# ------------------------------------------------------------------------------------ $count


async def test_users_count_needs_consistency_level(
    graph_client: httpx.AsyncClient, tenant: GraphTenant
) -> None:
    token = await get_token(graph_client, tenant)
    resp = await graph_client.get("/v1.0/users/$count", headers=bearer(token))
    assert resp.status_code == 400
    assert "ConsistencyLevel" in resp.json()["error"]["message"]

    eventual = {**bearer(token), "ConsistencyLevel": "eventual"}
    resp = await graph_client.get("/v1.0/users/$count", headers=eventual)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.text == str(tenant.user_count) == "250"

    # the live count: deleted users leave it, added ones join it
    first = next(iter(tenant.iter_users()))
    tenant.delete_user(first["id"])
    tenant.add_user()
    tenant.add_user()
    resp = await graph_client.get("/v1.0/users/$count", headers=eventual)
    assert resp.text == "251"


async def test_graph_latency_delays_api_answers_not_tokens() -> None:
    import time

    tenant = GraphTenant(user_count=5, seed=7, client_secret=GRAPH_SECRET, latency_ms=300)
    async with httpx.AsyncClient(
        transport=SimTransport(tenant.handle), base_url="https://graph.sim.test"
    ) as client:
        started = time.perf_counter()
        token = await get_token(client, tenant)
        assert time.perf_counter() - started < 0.2  # the token endpoint is not delayed
        started = time.perf_counter()
        resp = await client.get("/v1.0/users", headers=bearer(token))
        assert resp.status_code == 200
        assert time.perf_counter() - started >= 0.3
