"""ScimService through httpx + SimTransport: CRUD, filters, PATCH dialects, limits, counters."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from bulkprov.scim.paths import ENTERPRISE_USER, ERROR, LIST_RESPONSE, PATCH_OP
from bulkprov.sim import NoFaults, ScimService, SimRequest, SimResponse, SimTransport, scim_error

from .conftest import SCIM_TOKEN

ZOOM_ID = re.compile(r"^[A-Za-z0-9_&-]{22}$")


def entra_user(user_name: str, external_id: str = "ext-1", **extra: Any) -> dict[str, Any]:
    """The POST body Entra sends (facts.md §2.3)."""
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER],
        "externalId": external_id,
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Zoë O'Brien", "familyName": "O'Brien", "givenName": "Zoë"},
        ENTERPRISE_USER: {"department": "R&D"},
        "roles": [],
    }
    body.update(extra)
    return body


def patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(ops)}


def path_of(user_id: str) -> str:
    return "/Users/" + quote(user_id, safe="")


async def create(client: httpx.AsyncClient, user_name: str, **extra: Any) -> dict[str, Any]:
    resp = await client.post("/Users", json=entra_user(user_name, **extra))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


# ---------------------------------------------------------------------------------- create


async def test_post_creates_user(scim_client: httpx.AsyncClient, scim: ScimService) -> None:
    resp = await scim_client.post("/Users", json=entra_user("zoe@corp.example"))
    assert resp.status_code == 201
    assert resp.headers["content-type"] == "application/scim+json"
    user = resp.json()
    assert ZOOM_ID.match(user["id"])
    assert user["userName"] == "zoe@corp.example"
    assert user["name"]["givenName"] == "Zoë"
    meta = user["meta"]
    assert meta["resourceType"] == "User"
    assert meta["created"] == meta["lastModified"]
    assert meta["location"] == f"http://scim.sim.test/scim2/Users/{user['id']}"
    assert meta["version"].startswith('W/"')
    assert resp.headers["location"] == meta["location"]
    assert scim.dump() == [user]


async def test_zoom_ids_sometimes_contain_ampersand() -> None:
    svc = ScimService("t", id_seed=5)
    for i in range(200):
        svc.seed_user({"userName": f"u{i}@x"})
    ids = [u["id"] for u in svc.dump()]
    assert all(ZOOM_ID.match(i) for i in ids)
    assert 5 < sum("&" in i for i in ids) < 60
    uuid_svc = ScimService("t", id_style="uuid")
    assert len(uuid_svc.seed_user({"userName": "a@x"})["id"]) == 36


async def test_ampersand_id_through_sim_transport(scim_client: httpx.AsyncClient) -> None:
    users = [await create(scim_client, f"amp{i}@x.example") for i in range(40)]
    amp = [u for u in users if "&" in u["id"]]
    assert amp
    for user in amp:
        assert "%26" in path_of(user["id"])
        resp = await scim_client.get(path_of(user["id"]))
        assert resp.status_code == 200 and resp.json()["id"] == user["id"]


async def test_post_requires_user_name_and_json(scim_client: httpx.AsyncClient) -> None:
    resp = await scim_client.post("/Users", json={"active": True})
    assert resp.status_code == 400
    assert resp.json()["scimType"] == "invalidValue"
    resp = await scim_client.post("/Users", content=b"{not json")
    assert resp.status_code == 400
    assert resp.json()["scimType"] == "invalidSyntax"


async def test_duplicate_user_name_is_409_case_insensitive(
    scim_client: httpx.AsyncClient, scim: ScimService
) -> None:
    await create(scim_client, "Jane.Smith@corp.example")
    resp = await scim_client.post("/Users", json=entra_user("jane.smith@CORP.example"))
    assert resp.status_code == 409
    assert resp.json() == {
        "schemas": [ERROR],
        "status": "409",
        "scimType": "uniqueness",
        "detail": "User already exists",
    }
    assert len(scim) == 1
    assert scim.duplicate_posts() == {"jane.smith@corp.example": 2}


# ------------------------------------------------------------------------------------ read


async def test_get_by_id_and_404(scim_client: httpx.AsyncClient) -> None:
    user = await create(scim_client, "a@x.example")
    resp = await scim_client.get(path_of(user["id"]))
    assert resp.status_code == 200
    assert resp.json() == user
    resp = await scim_client.get("/Users/doesNotExist000000000000")
    assert resp.status_code == 404
    body = resp.json()
    assert body["schemas"] == [ERROR] and body["status"] == "404"


async def test_filter_user_name_case_insensitive(scim_client: httpx.AsyncClient) -> None:
    user = await create(scim_client, "Mixed.Case@corp.example", external_id="GUID-1")
    await create(scim_client, "other@corp.example", external_id="guid-2")
    resp = await scim_client.get(
        "/Users", params={"filter": 'userName eq "mixed.case@CORP.example"'}
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/scim+json"
    body = resp.json()
    assert body["schemas"] == [LIST_RESPONSE]
    assert body["totalResults"] == 1 and body["itemsPerPage"] == 1 and body["startIndex"] == 1
    assert body["Resources"] == [user]
    by_ext = await scim_client.get("/Users", params={"filter": 'externalId eq "guid-1"'})
    assert [u["id"] for u in by_ext.json()["Resources"]] == [user["id"]]
    # Zoom documents the unquoted form too
    unquoted = await scim_client.get(
        "/Users", params={"filter": "USERNAME eq mixed.case@corp.example"}
    )
    assert unquoted.json()["totalResults"] == 1


async def test_filter_no_match_is_empty_list_response(scim_client: httpx.AsyncClient) -> None:
    resp = await scim_client.get(
        "/Users", params={"filter": 'userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"'}
    )
    assert resp.status_code == 200
    assert resp.json() == {
        "schemas": [LIST_RESPONSE],
        "totalResults": 0,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }


@pytest.mark.parametrize(
    "filt",
    [
        'emails[type eq "work"].value eq "a@x"',
        'userName co "a"',
        'userName eq "a" and active eq true',
        'displayName eq "A"',
    ],
)
async def test_other_filters_are_invalid(scim_client: httpx.AsyncClient, filt: str) -> None:
    resp = await scim_client.get("/Users", params={"filter": filt})
    assert resp.status_code == 400
    assert resp.json()["scimType"] == "invalidFilter"


async def test_filter_value_with_escaped_quote(scim_client: httpx.AsyncClient) -> None:
    await create(scim_client, 'odd"name@x.example')
    resp = await scim_client.get("/Users", params={"filter": r'userName eq "odd\"name@x.example"'})
    assert resp.json()["totalResults"] == 1


async def test_pending_user_answers_400_with_numeric_status(
    scim_client: httpx.AsyncClient, scim: ScimService
) -> None:
    scim.add_pending_user("invited@corp.example")
    resp = await scim_client.get("/Users", params={"filter": 'userName eq "Invited@corp.example"'})
    assert resp.status_code == 400
    body = resp.json()
    assert body["status"] == 400  # a JSON number, as Zoom sends it
    assert body["detail"] == "User Invited@corp.example not exist or not belong to this account."
    resp = await scim_client.post("/Users", json=entra_user("invited@corp.example"))
    assert resp.status_code == 409


async def test_list_paging_in_creation_order(
    scim_client: httpx.AsyncClient, scim: ScimService
) -> None:
    for i in range(250):
        scim.seed_user({"userName": f"user{i:03d}@x.example"})
    seen: list[str] = []
    start = 1
    while True:
        resp = await scim_client.get("/Users", params={"startIndex": str(start), "count": "100"})
        body = resp.json()
        assert body["totalResults"] == 250 and body["startIndex"] == start
        seen += [u["userName"] for u in body["Resources"]]
        if body["itemsPerPage"] < 100:
            break
        start += body["itemsPerPage"]
    assert seen == [f"user{i:03d}@x.example" for i in range(250)]
    # count is capped at max_page_size; count=0 gives only the total
    capped = (await scim_client.get("/Users", params={"count": "5000"})).json()
    assert capped["itemsPerPage"] == 100
    empty = (await scim_client.get("/Users", params={"count": "0"})).json()
    assert empty["totalResults"] == 250 and empty["Resources"] == []
    # deletions keep the others' order
    victim = scim.find("user001@x.example")
    assert victim is not None
    assert (await scim_client.delete(path_of(victim["id"]))).status_code == 204
    page = (await scim_client.get("/Users", params={"count": "3"})).json()
    assert [u["userName"] for u in page["Resources"]] == [
        "user000@x.example",
        "user002@x.example",
        "user003@x.example",
    ]
    assert page["totalResults"] == 249
    assert (await scim_client.get("/Users", params={"startIndex": "x"})).status_code == 400


# ----------------------------------------------------------------------------------- PATCH


async def test_patch_entra_default_dialect(scim_client: httpx.AsyncClient) -> None:
    user = await create(scim_client, "p@x.example")
    resp = await scim_client.patch(
        path_of(user["id"]),
        json=patch(
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "new@x.example"},
            {"op": "Replace", "path": "name.familyName", "value": "Østergård"},
            {"op": "Add", "path": "nickName", "value": "Babs"},
            {"op": "Replace", "path": f"{ENTERPRISE_USER}:department", "value": "Sales"},
        ),
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/scim+json"
    got = resp.json()
    assert got["active"] is False
    assert got["emails"] == [{"primary": True, "type": "work", "value": "new@x.example"}]
    assert got["name"]["familyName"] == "Østergård"
    assert got["name"]["givenName"] == "Zoë"
    assert got["nickName"] == "Babs"
    assert got[ENTERPRISE_USER] == {"department": "Sales"}
    assert got["meta"]["created"] == user["meta"]["created"]
    assert got["meta"]["version"] != user["meta"]["version"]
    again = await scim_client.patch(
        path_of(user["id"]), json=patch({"op": "Replace", "path": "active", "value": "True"})
    )
    assert again.json()["active"] is True


async def test_patch_rfc_dialect_and_pathless_replace(scim_client: httpx.AsyncClient) -> None:
    user = await create(scim_client, "q@x.example")
    resp = await scim_client.patch(
        path_of(user["id"]),
        json=patch(
            {"op": "replace", "path": "active", "value": False},
            {
                "op": "replace",
                "value": {
                    "displayName": "Bjfe",
                    "name.givenName": "Kkom",
                    "name.familyName": "Unua",
                    f"{ENTERPRISE_USER}:employeeNumber": "Aklq",
                },
            },
            {"op": "replace", "value": {ENTERPRISE_USER: {"costCenter": "42"}, "title": "CTO"}},
            {"op": "remove", "path": "roles"},
        ),
    )
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["active"] is False
    assert got["displayName"] == "Bjfe"
    assert got["name"] == {"formatted": "Zoë O'Brien", "familyName": "Unua", "givenName": "Kkom"}
    assert got[ENTERPRISE_USER] == {
        "department": "R&D",
        "employeeNumber": "Aklq",
        "costCenter": "42",
    }
    assert got["title"] == "CTO"
    assert "roles" not in got


async def test_patch_add_appends_and_remove_by_value(scim_client: httpx.AsyncClient) -> None:
    user = await create(scim_client, "r@x.example")
    ref = [{"value": "m1"}]
    got = (
        await scim_client.patch(
            path_of(user["id"]),
            json=patch(
                {"op": "Add", "path": "phoneNumbers", "value": [{"type": "work", "value": "1"}]},
                {"op": "Add", "path": "phoneNumbers", "value": [{"type": "mobile", "value": "2"}]},
                {"op": "Add", "path": "x509Certificates", "value": ref},
                {"op": "Remove", "path": "x509Certificates", "value": ref},
                {"op": "Remove", "path": 'emails[type eq "work"]'},
            ),
        )
    ).json()
    assert got["phoneNumbers"] == [{"type": "work", "value": "1"}, {"type": "mobile", "value": "2"}]
    assert got["x509Certificates"] == []
    assert got["emails"] == []


async def test_patch_is_atomic_and_validated(
    scim_client: httpx.AsyncClient, scim: ScimService
) -> None:
    user = await create(scim_client, "s@x.example")
    other = await create(scim_client, "taken@x.example")
    cases = [
        patch({"op": "replace", "path": "displayName", "value": "X"}, {"op": "explode"}),
        patch({"op": "replace", "path": "displayName", "value": "X"}, {"op": "remove"}),
        patch({"op": "replace", "path": 'emails[type ne "work"].value', "value": "y"}),
        patch({"op": "replace", "path": "id", "value": "mine"}),
        {"schemas": [PATCH_OP], "Operations": []},
    ]
    for body in cases:
        resp = await scim_client.patch(path_of(user["id"]), json=body)
        assert resp.status_code == 400, body
        assert resp.json()["schemas"] == [ERROR]
    assert scim.get(user["id"]) == user
    clash = await scim_client.patch(
        path_of(user["id"]),
        json=patch({"op": "replace", "path": "userName", "value": "TAKEN@x.example"}),
    )
    assert clash.status_code == 409
    missing = await scim_client.patch("/Users/nope", json=patch({"op": "remove", "path": "x"}))
    assert missing.status_code == 404
    assert scim.find("taken@x.example") == other


async def test_patch_user_name_reindexes(scim_client: httpx.AsyncClient) -> None:
    user = await create(scim_client, "old@x.example", external_id="e-1")
    await scim_client.patch(
        path_of(user["id"]),
        json=patch(
            {"op": "Replace", "path": "userName", "value": "new@x.example"},
            {"op": "Replace", "path": "externalId", "value": "e-2"},
        ),
    )

    async def hits(filt: str) -> int:
        return int(
            (await scim_client.get("/Users", params={"filter": filt})).json()["totalResults"]
        )

    assert await hits('userName eq "old@x.example"') == 0
    assert await hits('userName eq "new@x.example"') == 1
    assert await hits('externalId eq "e-1"') == 0
    assert await hits('externalId eq "e-2"') == 1
    # the old name is free again
    await create(scim_client, "old@x.example")


# ------------------------------------------------------------------------------ PUT, DELETE


async def test_put_replaces_but_keeps_id_and_created(scim_client: httpx.AsyncClient) -> None:
    user = await create(scim_client, "put@x.example")
    resp = await scim_client.put(
        path_of(user["id"]),
        json={
            "schemas": user["schemas"],
            "userName": "put@x.example",
            "active": "False",
            "id": "ignored",
            "meta": {"created": "1999-01-01T00:00:00Z"},
        },
    )
    assert resp.status_code == 200
    got = resp.json()
    assert got["id"] == user["id"]
    assert got["meta"]["created"] == user["meta"]["created"]
    assert got["active"] is False
    assert "emails" not in got and "name" not in got
    assert (await scim_client.put("/Users/nope", json={"userName": "z@x"})).status_code == 404
    assert (await scim_client.put(path_of(user["id"]), json={"active": True})).status_code == 400


async def test_delete(scim_client: httpx.AsyncClient, scim: ScimService) -> None:
    user = await create(scim_client, "del@x.example", external_id="d-1")
    resp = await scim_client.delete(path_of(user["id"]))
    assert resp.status_code == 204 and resp.content == b""
    assert (await scim_client.get(path_of(user["id"]))).status_code == 404
    assert (await scim_client.delete(path_of(user["id"]))).status_code == 404
    found = await scim_client.get("/Users", params={"filter": 'externalId eq "d-1"'})
    assert found.json()["totalResults"] == 0
    assert len(scim) == 0
    await create(scim_client, "del@x.example")  # userName is free again


# ------------------------------------------------------------------------- auth and limits


async def test_bearer_auth(scim_client: httpx.AsyncClient, scim: ScimService) -> None:
    for headers in (
        {"Authorization": "Bearer wrong"},
        {"Authorization": ""},
        {"Authorization": "Basic x"},
    ):
        resp = await scim_client.get("/Users", headers=headers)
        assert resp.status_code == 401
        body = resp.json()
        assert body["schemas"] == [ERROR] and body["status"] == "401"
    # the scheme is case-insensitive
    resp = await scim_client.get("/Users", headers={"Authorization": f"bearer {SCIM_TOKEN}"})
    assert resp.status_code == 200
    scim.set_token("rotated")
    assert (await scim_client.get("/Users")).status_code == 401
    resp = await scim_client.get("/Users", headers={"Authorization": "Bearer rotated"})
    assert resp.status_code == 200


async def test_rate_limit_with_integer_retry_after(
    scim_client: httpx.AsyncClient, scim: ScimService
) -> None:
    scim.set_rate_limit(2, burst=3)
    statuses = [(await scim_client.get("/Users")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    resp = await scim_client.get("/Users")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    body = resp.json()
    assert body["status"] == "429" and body["schemas"] == [ERROR]
    assert scim.throttled == 3
    assert scim.counters()["throttled"] == 3


async def test_rate_limit_refills(scim_client: httpx.AsyncClient, scim: ScimService) -> None:
    scim.set_rate_limit(50, burst=1)
    assert (await scim_client.get("/Users")).status_code == 200
    assert (await scim_client.get("/Users")).status_code == 429
    await asyncio.sleep(0.05)
    assert (await scim_client.get("/Users")).status_code == 200


async def test_rate_limit_without_retry_after(
    scim_client: httpx.AsyncClient, scim: ScimService
) -> None:
    scim.configure(rate_limit=1, burst=1, retry_after=False)
    assert (await scim_client.get("/Users")).status_code == 200
    resp = await scim_client.get("/Users")
    assert resp.status_code == 429
    assert "Retry-After" not in resp.headers
    scim.configure(retry_after=0.25)
    resp = await scim_client.get("/Users")
    assert resp.headers["Retry-After"] == "0.25"


async def test_latency(scim_client: httpx.AsyncClient, scim: ScimService) -> None:
    scim.configure(latency_ms=60)
    start = time.monotonic()
    await scim_client.get("/Users")
    assert time.monotonic() - start >= 0.055


# ----------------------------------------------------------------------- counters, control


async def test_counters_and_dump(scim_client: httpx.AsyncClient, scim: ScimService) -> None:
    a = await create(scim_client, "a@x.example")
    b = await create(scim_client, "b@x.example")
    await scim_client.post("/Users", json=entra_user("A@x.example"))  # 409
    await scim_client.get(path_of(a["id"]))
    await scim_client.patch(
        path_of(b["id"]), json=patch({"op": "Replace", "path": "active", "value": False})
    )
    await scim_client.delete(path_of(a["id"]))
    c = scim.counters()
    assert c["by_method"] == {"POST": 3, "GET": 1, "PATCH": 1, "DELETE": 1}
    assert c["total"] == 6
    assert c["statuses"] == {"201": 2, "409": 1, "200": 2, "204": 1}
    assert c["posts"] == 3
    assert c["duplicate_posts"] == {"a@x.example": 2}
    assert scim.posts_by_username["b@x.example"] == 1
    assert [u["userName"] for u in scim.dump()] == ["b@x.example"]
    assert scim.dump()[0]["active"] is False
    scim.reset_counters()
    assert scim.counters()["by_method"] == {}


async def test_control_endpoints(scim_client: httpx.AsyncClient, scim: ScimService) -> None:
    control = httpx.AsyncClient(
        transport=SimTransport(scim.handle), base_url="http://scim.sim.test"
    )
    async with control:
        await create(scim_client, "c@x.example")
        store = (await control.get("/_sim/store")).json()
        assert [u["userName"] for u in store] == ["c@x.example"]
        counters = (await control.get("/_sim/counters")).json()
        assert counters["by_method"] == {"POST": 1}

        resp = await control.post(
            "/_sim/config", json={"rate_limit": 1, "burst": 1, "retry_after": False, "token": "t2"}
        )
        assert resp.status_code == 200
        assert resp.json()["rate_limit"] == 1 and resp.json()["retry_after"] is False
        assert (await scim_client.get("/Users")).status_code == 401  # old token refused
        ok = await scim_client.get("/Users", headers={"Authorization": "Bearer t2"})
        assert ok.status_code == 200
        limited = await scim_client.get("/Users", headers={"Authorization": "Bearer t2"})
        assert limited.status_code == 429 and "Retry-After" not in limited.headers
        assert (await control.post("/_sim/config", json={"rate_limit": None})).status_code == 200
        assert (await control.post("/_sim/config", json={"nope": 1})).status_code == 400
        assert (await control.post("/_sim/config", json={"token": ""})).status_code == 400

        seeded = await control.post("/_sim/users", json={"userName": "seed@x.example"})
        assert seeded.status_code == 201
        assert seeded.json()["meta"]["location"].startswith("http://scim.sim.test/scim2/Users/")
        assert (
            await control.post("/_sim/users", json={"userName": "SEED@x.example"})
        ).status_code == 400
        assert (
            await control.post("/_sim/pending", json={"userName": "p@x.example"})
        ).status_code == 204

        assert (await control.post("/_sim/reset")).status_code == 204
        assert (await control.get("/_sim/store")).json() == []
        assert (await control.get("/_sim/counters")).json()["by_method"] == {}
        assert (await control.get("/_sim/nothing")).status_code == 404


async def test_unknown_endpoints(scim_client: httpx.AsyncClient) -> None:
    assert (await scim_client.get("/Roles")).status_code == 404  # /Groups exists now
    assert (await scim_client.delete("/Users")).status_code == 405
    async with httpx.AsyncClient(
        transport=scim_client._transport, base_url="http://scim.sim.test"
    ) as raw:
        assert (await raw.get("/elsewhere")).status_code == 404


async def test_trailing_slash_tenant_url(scim_client: httpx.AsyncClient) -> None:
    # a Tenant URL configured as ".../scim2/" makes clients request ".../scim2//Users"
    url = "http://scim.sim.test/scim2//Users"
    resp = await scim_client.post(url, json=entra_user("slash@x.example"))
    assert resp.status_code == 201


# ---------------------------------------------------------------------------------- faults


class FlakyCreate(NoFaults):
    """First POST fails before storing; second POST is stored but reported as 502."""

    def __init__(self) -> None:
        self.posts = 0

    async def before(self, req: SimRequest) -> SimResponse | None:
        if req.method == "POST":
            self.posts += 1
            if self.posts == 1:
                return scim_error(503, "Service Unavailable")
        return None

    async def after(self, req: SimRequest, resp: SimResponse) -> SimResponse:
        if req.method == "POST" and self.posts == 2:
            return scim_error(502, "Bad Gateway")
        return resp


async def test_fault_hook(scim_client: httpx.AsyncClient, scim: ScimService) -> None:
    scim.faults = FlakyCreate()
    body = entra_user("flaky@x.example")
    assert (await scim_client.post("/Users", json=body)).status_code == 503
    assert len(scim) == 0
    assert (await scim_client.post("/Users", json=body)).status_code == 502
    assert len(scim) == 1  # created although the client was told otherwise
    assert (await scim_client.post("/Users", json=body)).status_code == 409
    assert scim.counters()["statuses"] == {"503": 1, "502": 1, "409": 1}
