"""Graph answer classification (bulkprov.graph.responses): no transport at all."""

from __future__ import annotations

import orjson
import pytest

from bulkprov.errors import DeltaExpired, SourceAuthError, SourceError
from bulkprov.graph.responses import (
    Retry,
    StaleToken,
    classify,
    graph_error,
    page_parts,
    token_refused,
    user_count,
)


def err(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def test_a_200_returns_its_document():
    assert classify(200, {}, b'{"value":[{"id":"1"}]}', refreshed=False) == {"value": [{"id": "1"}]}


def test_a_200_that_is_not_json_is_asked_again():
    with pytest.raises(Retry, match="200 with a body that is not JSON") as info:
        classify(200, {}, b"<html>proxy</html>", refreshed=False)
    assert not info.value.throttled and info.value.retry_after is None
    assert info.value.__cause__ is not None  # the parser's error stays on the chain


def test_a_first_401_asks_for_a_new_token_a_second_one_stops():
    body = err("InvalidAuthenticationToken", "Access token has expired.")
    with pytest.raises(StaleToken):
        classify(401, {}, body, refreshed=False)
    with pytest.raises(SourceAuthError, match=r"refused the read \(401\)") as info:
        classify(401, {}, body, refreshed=True)
    assert "InvalidAuthenticationToken: Access token has expired." in str(info.value)


def test_403_is_a_permission_error_at_once():
    with pytest.raises(SourceAuthError, match="User.Read.All") as info:
        classify(403, {}, err("Authorization_RequestDenied", "Insufficient"), refreshed=False)
    assert "(403): Authorization_RequestDenied: Insufficient" in str(info.value)
    assert type(info.value) is SourceAuthError and info.value.status is None


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [({"retry-after": "2.128"}, 2.128), ({"retry-after": "soon"}, None), ({}, None)],
)
def test_429_is_throttled_with_its_retry_after(headers, retry_after):
    with pytest.raises(Retry, match="429 Too Many Requests") as info:
        classify(429, headers, err("TooManyRequests", "slow down"), refreshed=False)
    assert info.value.throttled and info.value.retry_after == retry_after


def test_5xx_is_asked_again_and_names_graphs_error():
    with pytest.raises(Retry) as info:
        classify(503, {}, err("serviceNotAvailable", "try later"), refreshed=False)
    assert str(info.value) == "503 serviceNotAvailable: try later"
    assert not info.value.throttled and info.value.retry_after is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (410, err("resyncRequired", "gone")),
        (400, err("syncStateNotFound", "The delta token is invalid")),
        (404, b"... syncStateNotFound ..."),
    ],
)
def test_an_expired_delta_token_is_delta_expired(status, body):
    with pytest.raises(DeltaExpired, match=f"Graph answered {status}") as info:
        classify(status, {}, body, refreshed=False)
    assert info.value.status == status


def test_a_5xx_or_a_401_mentioning_sync_state_keeps_its_own_class():
    """The order of the checks: auth and retryable answers before the delta-token check."""
    body = err("syncStateNotFound", "x")
    with pytest.raises(Retry):
        classify(500, {}, body, refreshed=False)
    with pytest.raises(SourceAuthError):
        classify(403, {}, body, refreshed=False)


@pytest.mark.parametrize("status", [400, 404, 204, 302])
def test_any_other_answer_is_a_source_error_with_its_status(status):
    with pytest.raises(SourceError) as info:
        classify(status, {}, err("Request_ResourceNotFound", "no such user"), refreshed=False)
    assert type(info.value) is SourceError and info.value.status == status
    assert str(info.value) == f"Graph answered {status}: Request_ResourceNotFound: no such user"


def test_graph_error_reads_the_error_object_or_quotes_the_body():
    assert graph_error(err("Code", "m" * 500)) == "Code: " + "m" * 200
    assert graph_error(orjson.dumps({"error": {"message": "only"}})) == ": only"
    assert graph_error(b"plain text " * 50) == (b"plain text " * 50)[:200].decode()
    assert graph_error(b'["a list"]') == "['a list']"
    assert graph_error(b"\xff\xfe not utf-8") == "\ufffd\ufffd not utf-8"
    assert graph_error(b"") == ""


def test_user_count_reads_plain_text_and_anything_else_is_none():
    assert user_count(200, {}, b"37") == 37
    assert user_count(200, {}, b" 1200\n") == 1200
    assert user_count(200, {}, b"many") is None
    assert user_count(200, {}, b"-3") is None
    assert user_count(400, {}, err("Request_BadRequest", "no")) is None
    assert user_count(503, {}, b"") is None
    with pytest.raises(Retry) as info:
        user_count(429, {"retry-after": "0.5"}, b"")
    assert info.value.throttled and info.value.retry_after == 0.5


def test_page_parts_of_a_page_in_the_middle_and_the_last_one():
    users = [{"id": "1"}]
    assert page_parts({"value": users, "@odata.nextLink": "https://g/next"}, 3) == (
        users,
        "https://g/next",
        None,
    )
    assert page_parts({"value": [], "@odata.deltaLink": "https://g/delta"}, 4) == (
        [],
        None,
        "https://g/delta",
    )
    assert page_parts({"value": [], "@odata.deltaLink": 7}, 5) == ([], None, None)


@pytest.mark.parametrize("doc", [{"values": []}, {"value": {}}, [], "value", None])
def test_a_page_that_is_not_a_collection_is_a_source_error(doc):
    with pytest.raises(SourceError, match="Graph page 2 is not a collection"):
        page_parts(doc, 2)


def test_a_malformed_next_link_is_a_source_error():
    with pytest.raises(SourceError, match="page 9 has a malformed @odata.nextLink"):
        page_parts({"value": [], "@odata.nextLink": ["x"]}, 9)


def test_a_refused_token_names_entras_code_and_the_first_line_of_its_description():
    doc = {
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1",
    }
    refused = token_refused(401, doc)
    assert isinstance(refused, SourceAuthError)
    assert str(refused) == (
        "Graph token request refused (401 invalid_client): AADSTS7000215: Invalid client "
        "secret provided. — check tenant_id, client_id and the client secret"
    )
    assert str(token_refused(400, {"error_description": "x" * 500})).count("x") == 200
    assert str(token_refused(200, {})).startswith("Graph token request refused (200 ):  — ")
