"""The token endpoint's answer (bulkprov.credentials.oauth.read_token), without a network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from bulkprov import redact
from bulkprov.credentials.oauth import read_token


class Refused(Exception):
    def __init__(self, status: int, doc: Mapping[str, Any]) -> None:
        super().__init__(status)
        self.status, self.doc = status, doc


def read(status: int, body: bytes) -> tuple[str, float]:
    return read_token(status, body, default_lifetime=3599.0, refused=Refused)


def test_a_granted_token_and_its_lifetime_the_token_registered_for_scrubbing():
    token = "granted-token-7Qx-not-in-any-log"
    body = orjson.dumps({"access_token": token, "expires_in": 1800, "token_type": "Bearer"})
    assert read(200, body) == (token, 1800.0)
    assert redact.scrub(f"Bearer {token}") == f"Bearer {redact.MASK}"


def test_without_expires_in_the_callers_default_lifetime():
    assert read(200, b'{"access_token": "tok-without-expiry"}') == ("tok-without-expiry", 3599.0)


@pytest.mark.parametrize(
    ("status", "body", "doc"),
    [
        (401, b'{"error": "invalid_client"}', {"error": "invalid_client"}),
        (400, b'{"access_token": "t0k3n-on-a-400"}', {"access_token": "t0k3n-on-a-400"}),
        (200, b'{"token_type": "Bearer"}', {"token_type": "Bearer"}),
        (200, b'{"access_token": ""}', {"access_token": ""}),
        (200, b'{"access_token": 12345}', {"access_token": 12345}),
        (200, b"<html>a proxy's login page</html>", {}),
        (200, b'["access_token"]', {}),
        (200, b'"access_token"', {}),
        (502, b"", {}),
    ],
)
def test_anything_else_is_the_callers_refusal_with_the_answers_object(status, body, doc):
    with pytest.raises(Refused) as info:
        read(status, body)
    assert info.value.status == status and info.value.doc == doc
