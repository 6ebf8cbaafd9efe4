"""The Zoom profile's protocol code without a network: request shapes and labels
(bulkprov/scim/requests.py) and the classification of Zoom's answers (responses.py)."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from bulkprov.errors import TargetDailyLimit, TargetRejected, TargetThrottled
from bulkprov.scim import requests as rq
from bulkprov.scim.responses import (
    advice,
    classify,
    is_domain_refused,
    is_license_exhausted,
    is_pending_invitation,
    kept_values,
    may_ignore,
)

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ZOOM_USER = "urn:us:zoom:scim:schemas:extension:1.0:ZoomUser"
WANTED = {
    "userName": "jane@corp.example",
    'emails[type eq "work"].value': "jane@corp.example",
    "name.givenName": "Jane",
    "name.familyName": "Doe",
    "displayName": "Jane Doe",
    f"{ENTERPRISE}:department": "Sales",
    "active": True,
}


# -- 6. labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "label"),
    [
        (rq.get_user("a&b"), "light"),
        (rq.put_user("a", {"displayName": "x"}, {}), "light"),
        (rq.set_active("a", False), "light"),
        (rq.delete_user("a"), "light"),
        (rq.find_users("userName", "x@y"), "medium"),
        (rq.list_users(1, 100), "medium"),
        (rq.create_user(b"{}"), "medium"),
        (rq.ScimRequest("GET", "/Groups"), "medium"),
    ],
)
def test_zoom_label_of_each_request(request_, label):
    assert rq.zoom_label(request_) == label


def test_zoom_label_of_post_is_configurable():
    assert rq.zoom_label(rq.create_user(b"{}"), "light") == "light"


# -- 1. PUT of schemas + changed fields, PATCH only for active ------------------------------


def test_put_carries_schemas_and_only_the_changed_fields():
    body = rq.put_fields({f"{ENTERPRISE}:department": "Research"}, WANTED)
    assert body == {"schemas": [CORE, ENTERPRISE], ENTERPRISE: {"department": "Research"}}


def test_put_sends_a_complex_attribute_whole():
    body = rq.put_fields({"name.familyName": "Smith"}, {**WANTED, "name.familyName": "Smith"})
    assert body == {"schemas": [CORE], "name": {"givenName": "Jane", "familyName": "Smith"}}


def test_put_of_an_extension_sub_attribute_keeps_its_siblings():
    wanted = {f"{ZOOM_USER}:loginType.sso": True, f"{ZOOM_USER}:loginType.workEmail": False}
    body = rq.put_fields({f"{ZOOM_USER}:loginType.sso": True}, wanted)
    assert body == {"schemas": [CORE, ZOOM_USER], ZOOM_USER: {"loginType": wanted_login()}}


def wanted_login() -> dict[str, bool]:
    return {"workEmail": False, "sso": True}


def test_updates_split_active_from_the_rest_and_order_them():
    changes = {"active": False, f"{ENTERPRISE}:department": "Gone"}
    reqs = rq.zoom_updates("k&1", changes, WANTED)
    assert [(r.method, r.path) for r in reqs] == [
        ("PUT", "/Users/k%261"),
        ("PATCH", "/Users/k%261"),
    ]
    assert orjson.loads(reqs[1].body or b"")["Operations"] == [
        {"op": "replace", "path": "active", "value": False}
    ]
    back = rq.zoom_updates("k", {"active": True, "displayName": "X"}, WANTED)
    assert [r.method for r in back] == ["PATCH", "PUT"]
    assert [r.method for r in rq.zoom_updates("k", {"active": False}, WANTED)] == ["PATCH"]
    assert [r.method for r in rq.zoom_updates("k", {"displayName": "Y"}, WANTED)] == ["PUT"]


# -- 7. userType ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "sent", "warned"),
    [
        ("Basic", "Basic", False),
        ("Licensed", "Licensed", False),
        ("On-Prem", "On-Prem", False),
        ("Pro", "Licensed", True),
        ("Corp", "On-Prem", True),
        ("On Prem", "On-Prem", True),
        ("Collaboration", "Collaboration", False),  # Zoom refuses it: the user fails
        (None, None, False),
    ],
)
def test_user_type_pre_2020_names_are_renamed_with_a_warning(value, sent, warned):
    out, warning = rq.zoom_user_type(value)
    assert out == sent and (warning is not None) == warned
    if warned:
        assert "pre-2020" in warning and repr(sent) in warning


# -- 3. pending invitations, 7/8. refused values and seats ----------------------------------


def _rejected(status: int, detail: str) -> TargetRejected:
    body = orjson.dumps({"schemas": ["x"], "detail": detail, "status": status})
    with pytest.raises(TargetRejected) as caught:
        classify(status, {}, body)
    return caught.value


def test_pending_invitation_400_is_recognised():
    exc = _rejected(400, "User jane@corp.example not exist or not belong to this account.")
    assert is_pending_invitation(exc)
    assert not is_pending_invitation(_rejected(400, "Invalid field."))
    assert not is_pending_invitation(_rejected(404, "not exist or not belong to this account"))


def test_license_and_domain_refusals_are_recognised_with_advice():
    no_seat = _rejected(
        400, "No available licenses: all 10 Licensed seats of the account are in use."
    )
    assert is_license_exhausted(no_seat) and "licensed_seats" in (advice(no_seat) or "")
    assert is_license_exhausted(_rejected(400, "The account has a maximum of 9,999 basic users."))
    domain = _rejected(400, "Domain name doesn't match. Please contact the Zoom Customer Support")
    assert is_domain_refused(domain) and not is_license_exhausted(domain)
    invalid = _rejected(400, "AttributeValidationFailed: userType 'None' is not valid")
    assert "Basic, Licensed or On-Prem" in (advice(invalid) or "")
    assert advice(_rejected(400, "something else")) is None


# -- 6. the daily limit -------------------------------------------------------------------

NOW = datetime(2026, 12, 8, 19, 30, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 12, 9, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        # Zoom's REST-style body, no Retry-After (devforum 18928)
        (
            {},
            {
                "code": 429,
                "message": "You have exceeded the daily rate limit (6000) of Light API requests "
                "permitted for this account. You may resume these requests at GMT 00:00:00.",
            },
        ),
        # the documented headers: X-RateLimit-Type and an ISO Retry-After
        (
            {"x-ratelimit-type": "Daily-limit", "retry-after": "2026-12-09T00:00:00Z"},
            {"detail": "Too many requests", "status": 429},
        ),
    ],
)
def test_daily_limit_429_stops_with_the_resume_time(headers, body):
    with pytest.raises(TargetDailyLimit) as caught:
        classify(429, headers, orjson.dumps(body), now=NOW)
    exc = caught.value
    assert exc.resume_at == MIDNIGHT and exc.exit_code == 12
    assert "2026-12-09 00:00 GMT (in 4 h 30 min)" in str(exc)


def test_a_per_second_429_is_still_throttling():
    body = orjson.dumps({"detail": "You have reached the maximum per-second rate limit."})
    with pytest.raises(TargetThrottled) as caught:
        classify(429, {}, body, now=NOW)
    assert not isinstance(caught.value, TargetDailyLimit)


# -- 2. writes Zoom may ignore ---------------------------------------------------------------


def test_attributes_zoom_may_ignore():
    assert may_ignore("userName") and may_ignore("displayName")
    assert may_ignore('emails[type eq "work"].value')
    assert may_ignore(f"{ZOOM_USER}:loginType.sso")
    assert may_ignore(f"{ENTERPRISE}:department") is None
    assert may_ignore("name.familyName") is None


def test_kept_values_compares_what_was_sent_with_the_read_back():
    resource = {
        "userName": "Jane@Corp.example",
        "displayName": "Old Name",
        "emails": [{"type": "work", "value": "jane@corp.example"}],
    }
    sent = {
        "userName": "jane@corp.example",
        "displayName": "New Name",
        'emails[type eq "work"].value': "jane@corp.example",
        "nickName": "J",
    }
    assert kept_values(sent, resource) == {"displayName": "Old Name", "nickName": None}


# -- 9. group member PATCHes by size ----------------------------------------------------------


def test_member_chunks_by_count_and_by_encoded_size():
    from bulkprov.scim.groups import ZOOM_MAX_PATCH_CHARS, change_members, member_chunks

    ids = [f"{'x' * 40}{i:04d}" for i in range(3000)]
    chunks = member_chunks("g&1", "add", ids, count=1000, max_chars=ZOOM_MAX_PATCH_CHARS)
    assert [m for c in chunks for m in c] == ids  # all, in order
    assert all(len(c) <= 1000 for c in chunks)
    sizes = [len(change_members("g&1", "add", c).body or b"") for c in chunks]
    assert max(sizes) <= ZOOM_MAX_PATCH_CHARS
    small = member_chunks("g", "remove", ids, count=1000, max_chars=5_000, dialect="entra")
    sizes = [len(change_members("g", "remove", c, "entra").body or b"") for c in small]
    assert max(sizes) <= 5_000 and sum(map(len, small)) == len(ids)
    assert min(sizes[:-1]) > 5_000 - 60  # full, not halved
    # non-ASCII ids count by their UTF-8 bytes, never fewer than their characters
    wide = member_chunks("g", "add", ["é" * 100] * 50, count=1000, max_chars=2_000)
    assert all(len(change_members("g", "add", c).body or b"") <= 2_000 for c in wide)
    # by count only when no size limit is given (the RFC profile)
    assert [len(c) for c in member_chunks("g", "add", ids[:250], count=100)] == [100, 100, 50]
    # one member too long to fit goes alone
    assert member_chunks("g", "add", ["y" * 300, "z"], count=10, max_chars=250) == [
        ["y" * 300],
        ["z"],
    ]


def test_group_patches_of_several_kinds_fit_the_size_budget():
    """Since groups send a rename, adds and removals in one PATCH (issue 19), the size budget
    (item 9) counts them all: every PATCH built from ``pack`` fits, nothing is lost or
    reordered, and removals cost what their form sends (RFC: one filtered path a member)."""
    from bulkprov.pipeline.groups import pack
    from bulkprov.scim import groups as rg

    adds = [f"a{'x' * 30}{i:04d}" for i in range(400)]
    removes = [f"r{'y' * 30}{i:04d}" for i in range(400)]
    for form in ("rfc", "entra"):
        forms = {rg.RENAME: form, rg.ADD: form, rg.REMOVE: form}
        budget = rg.PatchBudget(5_000, "g&1", forms, "Sales — EMEA")
        patches = pack(True, adds, removes, 1000, budget)
        assert len(patches) > 1
        sizes = []
        for parts in patches:
            ops = [
                op
                for p in parts
                for op in (
                    rg.rename_operations(budget.name, form)
                    if p.kind == rg.RENAME
                    else rg.member_operations(p.kind, p.members, form)
                )
            ]
            sizes.append(len(rg.patch_group("g&1", ops).body or b""))
        assert max(sizes) <= 5_000 and min(sizes[:-1]) > 5_000 - 120  # full, not halved
        assert patches[0][0].kind == rg.RENAME
        sent = [(p.kind, m) for parts in patches for p in parts for m in p.members]
        assert sent == [(rg.ADD, m) for m in adds] + [(rg.REMOVE, m) for m in removes]
    # the count still binds, and without a budget pack is as before
    by_count = pack(False, adds[:10], [], 4, rg.PatchBudget(100_000, "g", {}))
    assert [len(p[0].members) for p in by_count] == [4, 4, 2]
    assert pack(False, adds[:10], [], 4) == by_count


def test_duplicates_report_prints_values_inert_and_csv_cells_as_text():
    """`bulkprov duplicates` prints through echo (issue 13's output safety): a name with a
    line break or an escape sequence stays on its line, and a CSV cell that would start a
    formula is written as text (OWASP)."""
    from bulkprov.observe.duplicates import Row, csv_lines, render, text_lines

    row = Row("unmanaged", "", '=HYPERLINK("http://x")\n\x1b[31mfake', "d\nforged", "a")
    lines = text_lines([row])
    assert any("\n" in line for line in lines)  # kept in the value: echo escapes it
    from bulkprov.redact import shown

    assert all("\n" not in shown(line) and "\x1b" not in shown(line) for line in lines)
    header, record = csv_lines([row])
    assert header == "kind,user,account,detail,action"
    assert ",\"'=HYPERLINK(" in record
    assert render([row], "csv") == f"{header}\r\n{record}\r\n"


def test_zoom_basic_wording_stays_readable_and_a_basic_credential_is_masked():
    """The echoed-credential mask (issue 13) took Zoom's "… 9,999 basic users." for a Basic
    credential and hid the detail the seat guard reads; a real one (base64) is still masked."""
    kept = _rejected(400, "The account has a maximum of 9,999 basic users.")
    assert kept.detail.endswith("9,999 basic users.")
    echoed = _rejected(400, "you sent Authorization: Basic dXNlcjpzM2NyZXQ=")
    assert "dXNlcjpz" not in str(echoed) and "Basic [REDACTED]" in str(echoed)


async def test_rate_limit_caps_the_zoom_labels_together():
    """Zoom's limits are shared by every app and job on the account (docs/deploy.md: two jobs
    split them with target.rate_limit): under the Zoom profile a rate_limit given caps all
    labels together, on top of each label's own limit; none given, no such cap."""
    import anyio
    import httpx
    from pydantic import SecretStr

    from bulkprov.scim import requests as rq
    from bulkprov.scim.client import ScimClient

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "x", "userName": "a@b.example"})

    async def elapsed(ceiling: float) -> float:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            client = ScimClient(
                "https://scim.test/scim2",
                SecretStr("tok-ceiling"),
                http,
                labels={"light": 1000, "medium": 1000},
                ceiling=ceiling,
            )
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                for i in range(60):
                    request = rq.get_user(f"u{i}") if i % 2 else rq.find_users("userName", "a")
                    tg.start_soon(client.send, request)
            return anyio.current_time() - started

    assert await elapsed(20) >= 1.7  # 20 at once, then 20/s: the labels' 1,000/s do not count
    assert await elapsed(0) < 1.5


def test_the_zoom_profile_takes_rate_limit_as_the_ceiling_of_its_labels():
    from bulkprov.commands.starter import STARTER_TOML
    from bulkprov.config import parse_config

    def target(**kw: Any) -> Any:
        doc = {
            "graph": {"tenant_id": "t", "client_id": "c"},
            "target": {"base_url": "https://api.zoom.us/scim2", **kw},
            "mappings": [{"target": "userName", "source": "mail", "matching_precedence": 1}],
        }
        return parse_config(doc).target

    labels = {"light_per_second": 40.0, "medium_per_second": 30.0}
    assert target(profile="zoom", rate_limit=50.0, zoom=labels).zoom_ceiling == 50
    assert target(profile="zoom", zoom=labels).zoom_ceiling == 0  # none given: no cap
    assert target(profile="zoom").zoom_ceiling == 0
    assert target(rate_limit=50.0).zoom_ceiling == 0  # an RFC target: rate_limit paces it
    # what `bulkprov init` writes: both labels, and 60/s for all of them together
    init = tomllib.loads(STARTER_TOML)["target"]
    assert init["profile"] == "zoom" and init["rate_limit"] == 60
    assert target(**init).zoom_ceiling == 60
