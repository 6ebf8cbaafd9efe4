"""Malformed Graph users: each ends as a Failure (or Skipped) with a reason; the run goes on."""

from __future__ import annotations

from typing import Any

from bulkprov.checkpoint.store import StateStore
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant, ScimService
from bulkprov.sim.server import serve_simulators
from bulkprov.sim.users import generate_user

from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN, SECRETS, make_config
from .e2e import expected_values, store_problems

SEED = 8


def variant(i: int, **changes: Any) -> dict[str, Any]:
    """A well-formed generated user (fresh id and UPN) with ``changes`` applied."""
    user = generate_user(10_000 + i, SEED)
    user["accountEnabled"] = True
    for key, value in changes.items():
        if value is _DROP:
            user.pop(key, None)
        else:
            user[key] = value
    return user


_DROP = object()

#: (kind, the raw page entry, a fragment of the reason it must end with)
MALFORMED: list[tuple[str, Any, str]] = [
    ("missing id", variant(1, id=_DROP), "no 'id'"),
    ("null id", variant(2, id=None), "no 'id'"),
    ("numeric id", variant(3, id=12345), "no 'id'"),
    ("blank id", variant(4, id="   "), "no 'id'"),
    ("control character in id", variant(5, id="abc\x00def"), "'id' is malformed"),
    ("oversized id", variant(6, id="x" * 5000), "'id' is malformed"),
    ("null entry", None, "holds a NoneType"),
    ("string entry", "just a string", "holds a str"),
    ("list entry", [1, 2, 3], "holds a list"),
    ("missing userPrincipalName", variant(10, userPrincipalName=_DROP), "no userName"),
    ("null userPrincipalName", variant(11, userPrincipalName=None), "no userName"),
    ("numeric userPrincipalName", variant(12, userPrincipalName=42), "userName"),
    (
        "userPrincipalName not an email",
        variant(13, userPrincipalName="not-an-email"),
        "not an email",
    ),
    (
        "control character in userPrincipalName",
        variant(14, userPrincipalName="a\tb@x.example"),
        "control character",
    ),
    (
        "oversized userPrincipalName",
        variant(15, userPrincipalName="a" * 3000 + "@x.example"),
        "characters",
    ),
    ("invalid mail", variant(16, mail="a@@b"), "not a valid email"),
    ("mail without domain dot", variant(17, mail="someone@localhost"), "not a valid email"),
    ("oversized givenName", variant(18, givenName="G" * 5000), "characters"),
    ("NUL in displayName", variant(19, displayName="Jane\x00Doe"), "control character"),
    ("line separator in surname", variant(20, surname="Doe\u2028Smith"), "control character"),
    ("givenName is an object", variant(21, givenName={"first": "Jane"}), "object"),
    ("surname is a list of objects", variant(22, surname=[{"x": 1}]), "object"),
    ("accountEnabled is a string", variant(23, accountEnabled="yes"), "accountEnabled"),
    ("department escape sequence", variant(24, department="R&D\x1b[31m"), "control character"),
    # issue 20 item 5: a list for a single-valued target is Entra's
    # SchemaPropertyCanOnlyAcceptValue, not a JSON array sent to the target
    ("surname is a list of two", variant(25, surname=["Doe", "Smith"]), "CanOnlyAcceptValue"),
]


async def test_each_malformed_user_fails_with_a_reason_and_the_run_goes_on(tmp_path):
    tenant = GraphTenant(user_count=120, seed=SEED, client_secret=GRAPH_SECRET)
    good = list(tenant.iter_users())
    for _, raw, _ in MALFORMED:
        tenant.add_raw_user(raw)
    # a userName that collides with a real user's after mapping (case differs)
    dup = dict(good[7], id="dup-of-seven", userPrincipalName=good[7]["userPrincipalName"].upper())
    dup["accountEnabled"] = True
    good[7]["accountEnabled"] = True
    tenant.update_user(good[7]["id"], accountEnabled=True)
    tenant.add_raw_user(dup)
    scim = ScimService(SCIM_TOKEN, id_seed=1)
    async with serve_simulators(tenant, scim) as servers:
        cfg = make_config(servers, tmp_path / "s.db", graph__page_size=999)
        result = await run_sync(cfg, SECRETS, policy=FAST_RETRY)
    assert len(MALFORMED) + 1 >= 26
    assert result.status == "completed_with_failures"
    assert result.counts["failed"] == len(MALFORMED) + 1
    # every well-formed user landed, exactly once, with its values; nothing malformed did
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
    async with await StateStore.open(cfg.state.path) as store:
        failures = await store.log_entries(status="failure", limit=None)
    reasons = [f["reason"] or "" for f in failures]
    assert all(reasons), "every failure has a reason"
    for kind, _, fragment in MALFORMED:
        assert any(fragment in r for r in reasons), f"{kind}: no failure mentions {fragment!r}"
    assert any("mapped from another user too" in r for r in reasons)
    # the malformed values themselves were never sent
    sent = {r["userName"] for r in scim.dump()}
    assert "not-an-email" not in sent and not any("\t" in n for n in sent)
