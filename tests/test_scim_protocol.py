"""SCIM request builders and response classification: no transport at all."""

from __future__ import annotations

import orjson
import pytest

from bulkprov.errors import (
    TargetAuthError,
    TargetRejected,
    TargetThrottled,
    TargetUnavailable,
)
from bulkprov.retry import parse_retry_after
from bulkprov.scim import groups as rg
from bulkprov.scim import requests as rq
from bulkprov.scim.paths import get_value, parse_path, remove_value, set_value
from bulkprov.scim.responses import classify, is_uniqueness_conflict, list_resources


def test_filter_value_is_quoted_and_escaped():
    """A userName with a quote or backslash cannot break out of the filter string."""
    req = rq.find_users("userName", 'a"b\\c@x.com')
    assert req.method == "GET" and req.path == "/Users"
    assert req.params["filter"] == 'userName eq "a\\"b\\\\c@x.com"'


def test_ids_are_percent_encoded_in_paths():
    """Zoom ids may contain '&' (facts.md §6.4): the path segment is fully encoded."""
    assert rq.get_user("k&Kd/r6").path == "/Users/k%26Kd%2Fr6"
    assert rq.delete_user("a b").path == "/Users/a%20b"


def test_create_is_marked_as_creating():
    req = rq.create_user(b'{"userName":"a"}')
    assert (req.method, req.path, req.body, req.creates) == (
        "POST",
        "/Users",
        b'{"userName":"a"}',
        True,
    )


def test_patch_rfc_dialect_uses_lowercase_ops_and_json_booleans():
    ops = rq.patch_operations({"active": False, "name.givenName": "Zoë"}, "rfc")
    assert ops == [
        {"op": "replace", "path": "active", "value": False},
        {"op": "replace", "path": "name.givenName", "value": "Zoë"},
    ]


def test_patch_entra_dialect_uses_replace_and_string_booleans():
    """Entra's default dialect (SCIMCOMPAT): capitalised Replace, "False" as a string."""
    req = rq.set_active("u1", False, "entra")
    body = orjson.loads(req.body)
    assert body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
    }
    assert req.method == "PATCH" and req.path == "/Users/u1"


def test_list_users_page_parameters():
    assert rq.list_users(201, 100).params == {"startIndex": "201", "count": "100"}


def test_diff_only_changed_and_never_nulls():
    wanted = {"displayName": "A", "name.givenName": "B"}
    assert rq.diff_values(wanted, {"displayName": "A", "name.givenName": "C"}) == {
        "name.givenName": "B"
    }
    assert rq.diff_values(wanted, None) == wanted
    # a path we no longer send is left alone, not cleared
    assert rq.diff_values({"displayName": "A"}, {"displayName": "A", "title": "x"}) == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", 10.0),
        ("2.128", 2.128),
        ("0", 0.0),
        ("-3", 0.0),
        ("soon", None),
        (None, None),
        ("", None),
        ("nan", None),
    ],
)
def test_retry_after_parsing(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(
        10.0
    )


def test_classify_success_and_empty_body():
    assert classify(201, {}, b'{"id":"x"}') == {"id": "x"}
    assert classify(204, {}, b"") is None


def test_classify_success_with_garbage_is_unavailable():
    with pytest.raises(TargetUnavailable):
        classify(200, {}, b"<html>")


@pytest.mark.parametrize("status", [401, 403])
def test_classify_auth(status):
    with pytest.raises(TargetAuthError) as info:
        classify(status, {}, b'{"detail":"Invalid access token.","status":401}')
    assert "Invalid access token" in str(info.value)


def test_classify_throttled_keeps_retry_after():
    with pytest.raises(TargetThrottled) as info:
        classify(429, {"retry-after": "1.5"}, b"")
    assert info.value.retry_after == 1.5 and info.value.retryable


def test_classify_throttled_without_retry_after():
    with pytest.raises(TargetThrottled) as info:
        classify(429, {}, b"")
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_classify_server_errors_are_retryable(status):
    with pytest.raises(TargetUnavailable) as info:
        classify(status, {}, b"oops")
    assert info.value.retryable


def test_classify_conflict_and_scim_type():
    body = b'{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"User already exists"}'
    with pytest.raises(TargetRejected) as info:
        classify(409, {}, body)
    assert info.value.scim_type == "uniqueness"
    assert is_uniqueness_conflict(info.value)
    assert "User already exists" in str(info.value)


def test_classify_zoom_pending_user_400():
    """Zoom answers 400 for a pending user (facts.md §6.3): a per-user rejection."""
    body = b'{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"detail":"User a@b not exist or not belong to this account.","status":400}'
    with pytest.raises(TargetRejected) as info:
        classify(400, {}, body)
    assert info.value.status == 400 and not is_uniqueness_conflict(info.value)


def test_list_resources_tolerates_missing_keys():
    assert list_resources({"totalResults": 0, "Resources": []}) == ([], 0)
    assert list_resources({"totalResults": 0}) == ([], 0)
    res, total = list_resources({"totalResults": "3", "Resources": [{"id": "a"}, "junk"]})
    assert res == [{"id": "a"}] and total == 3
    with pytest.raises(TargetUnavailable):
        list_resources([1, 2])


def test_paths_roundtrip_extension_and_filters():
    r: dict = {}
    set_value(r, 'emails[type eq "work"].value', "a@x.com")
    set_value(r, "urn:us:zoom:scim:schemas:extension:1.0:ZoomUser:loginType.sso", True)
    set_value(r, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "R&D")
    assert r["emails"] == [{"type": "work", "primary": True, "value": "a@x.com"}]
    assert r["urn:us:zoom:scim:schemas:extension:1.0:ZoomUser"] == {"loginType": {"sso": True}}
    assert get_value(r, 'emails[type eq "WORK"].value') == "a@x.com"
    assert (
        get_value(r, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")
        == "R&D"
    )
    set_value(r, 'emails[type eq "work"].value', "b@x.com")
    assert len(r["emails"]) == 1 and r["emails"][0]["value"] == "b@x.com"
    remove_value(r, 'emails[type eq "work"]')
    assert r["emails"] == []


def test_core_schema_prefix_means_core_attribute():
    p = parse_path("urn:ietf:params:scim:schemas:core:2.0:User:userName")
    assert p.schema is None and p.attribute == "userName"


def test_roles_primary_filter_creates_boolean_primary():
    r: dict = {}
    set_value(r, 'roles[primary eq "True"].value', "Licensed")
    assert r["roles"] == [{"primary": True, "value": "Licensed"}]
    assert get_value(r, 'roles[primary eq "True"].value') == "Licensed"


@pytest.mark.parametrize("bad", ["", 'emails[type ne "x"].value', "a..b", "urn:x:", "1abc"])
def test_bad_paths_are_config_errors(bad):
    from bulkprov.errors import MappingError

    with pytest.raises(MappingError):
        parse_path(bad)


WORK = 'emails[type eq "work"].value'


def test_a_filtered_path_the_target_does_not_hold_is_added_whole():
    """Issue 20 item 3: ``replace`` on ``emails[type eq "work"].value`` with no work email
    is answered 400 noTarget (RFC 7644 §3.5.2.3): the element is sent whole with ``add``."""
    ops = rq.patch_operations({WORK: "a@x.com", "name.familyName": "D"}, known={"x": "y"})
    assert ops == [
        {
            "op": "add",
            "path": "emails",
            "value": [{"type": "work", "primary": True, "value": "a@x.com"}],
        },
        {"op": "replace", "path": "name.familyName", "value": "D"},
    ]
    # held: replaced as before
    assert rq.patch_operations({WORK: "b@x.com"}, known={WORK: "a@x.com"}) == [
        {"op": "replace", "path": WORK, "value": "b@x.com"}
    ]
    # several sub-attributes of one new element: one add; Entra's dialect capitalises it
    street, city = 'addresses[type eq "work"].streetAddress', 'addresses[type eq "work"].locality'
    assert rq.patch_operations({street: "1 Main St", city: "Oslo"}, "entra", known={}) == [
        {
            "op": "Add",
            "path": "addresses",
            "value": [{"type": "work", "streetAddress": "1 Main St", "locality": "Oslo"}],
        }
    ]
    # an element the target holds (one of its sub-attributes is known): replace the other
    assert rq.patch_operations({street: "2 Main St"}, known={city: "Oslo"}) == [
        {"op": "replace", "path": street, "value": "2 Main St"}
    ]
    # phoneNumbers too; primary only for the email a POST would mark so
    phone = 'phoneNumbers[type eq "work"].value'
    assert rq.patch_operations({phone: "+47 1"}, known={}) == [
        {"op": "add", "path": "phoneNumbers", "value": [{"type": "work", "value": "+47 1"}]}
    ]
    other = 'emails[type eq "other"].value'
    assert rq.patch_operations({WORK: "a@x.com"}, known={other: "o@x.com"}) == [
        {"op": "add", "path": "emails", "value": [{"type": "work", "value": "a@x.com"}]}
    ]
    # nothing known (no stored values): replace, as before
    assert rq.patch_operations({WORK: "a@x.com"}) == [
        {"op": "replace", "path": WORK, "value": "a@x.com"}
    ]


def test_cleared_paths_are_removed_and_a_whole_element_when_nothing_is_left():
    """Issue 20 item 4 (``target.clear_on_null``): ``None`` is a ``remove``."""
    assert rq.patch_operations({WORK: None}, known={WORK: "a@x.com"}) == [
        {"op": "remove", "path": 'emails[type eq "work"]'}
    ]
    assert rq.patch_operations({"title": None}, "entra", known={"title": "x"}) == [
        {"op": "Remove", "path": "title"}
    ]
    street, city = 'addresses[type eq "work"].streetAddress', 'addresses[type eq "work"].locality'
    assert rq.patch_operations({street: None}, known={street: "1", city: "Oslo"}) == [
        {"op": "remove", "path": street}
    ]
    # diff_values: clearable paths absent from the wanted values but held map to None
    assert rq.diff_values({"displayName": "A"}, {"displayName": "A", "title": "x"}, ["title"]) == {
        "title": None
    }
    assert rq.diff_values({"displayName": "A"}, {"displayName": "A"}, ["title"]) == {}
    assert rq.after_patch({"a": 1, "b": 2}, {"a": None, "c": 3}) == {"b": 2, "c": 3}


# -- /Groups (issue 19) --------------------------------------------------------------------------


def test_rfc_removes_group_members_with_filtered_paths():
    """RFC 7644 §3.5.2.2: a remove carries no value; several operations in one PATCH."""
    req = rg.change_members("g&1", "remove", ["u1", 'a"b'], "rfc")
    assert (req.method, req.path) == ("PATCH", "/Groups/g%261")
    assert orjson.loads(req.body) == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "remove", "path": 'members[value eq "u1"]'},
            {"op": "remove", "path": 'members[value eq "a\\"b"]'},  # the id cannot break out
        ],
    }


def test_entra_removes_group_members_with_a_value_list():
    """Entra's default form (facts.md §2.3, SCIMCOMPAT), kept under patch_dialect = "entra"."""
    ops = rg.member_operations("remove", ["u1", "u2"], "entra")
    assert ops == [{"op": "Remove", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}]


@pytest.mark.parametrize(("dialect", "op"), [("rfc", "add"), ("entra", "Add")])
def test_adding_group_members_is_one_operation_with_a_value_list(dialect, op):
    assert rg.member_operations("add", ["u1", "u2"], dialect) == [
        {"op": op, "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}
    ]


def test_one_group_patch_carries_a_rename_adds_and_removals_in_order():
    ops = [
        *rg.rename_operations("Sales EMEA"),
        *rg.member_operations("add", ["u3"]),
        *rg.member_operations("remove", ["u1"]),
    ]
    body = orjson.loads(rg.patch_group("g1", ops).body)
    assert body["Operations"] == [
        {"op": "replace", "path": "displayName", "value": "Sales EMEA"},
        {"op": "add", "path": "members", "value": [{"value": "u3"}]},
        {"op": "remove", "path": 'members[value eq "u1"]'},
    ]


def test_no_target_means_the_member_is_not_there():
    """RFC 7644 §3.12 ``noTarget``: the filtered path selected nothing."""
    assert rg.member_absent(TargetRejected("no match", status=400, scim_type="noTarget"))
    assert not rg.member_absent(TargetRejected("bad", status=400, scim_type="invalidValue"))
    assert not rg.member_absent(TargetRejected("gone", status=404))
