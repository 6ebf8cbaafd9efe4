"""JWT expiry warnings and Zoom server-to-server OAuth, refreshed and re-fetched on 401;
token endpoint errors that keep their cause and never the secret."""

from __future__ import annotations

import base64
import socket
import time
import traceback

import httpx
import orjson
import pytest
from pydantic import SecretStr

from bulkprov.credentials import Secrets
from bulkprov.credentials.target import ZoomOAuth, expiry_warning, jwt_expiry
from bulkprov.errors import SourceError, TargetAuthError
from bulkprov.graph.client import GraphClient
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import NoFaults, SimRequest, SimResponse
from bulkprov.transport import make_client

from .conftest import FAST_RETRY, GRAPH_SECRET, make_config
from .e2e import expected_values, store_problems

DAY = 86400.0
NOW = 1_900_000_000.0


def jwt(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("token", "warns"),
    [
        (jwt({"exp": NOW + 10 * DAY}), "expires on"),
        (jwt({"exp": NOW + 29.5 * DAY}), "in 30 day(s)"),
        (jwt({"exp": NOW - DAY}), "expired on"),
        (jwt({"exp": NOW + 31 * DAY}), None),
        (jwt({"sub": "no exp"}), None),
        ("not-a-jwt-at-all", None),
        ("a.b.c", None),
        (jwt({"exp": True}), None),
    ],
)
def test_jwt_expiry_warning_30_days_ahead(token, warns):
    warning = expiry_warning(SecretStr(token), now=NOW)
    if warns is None:
        assert warning is None
    else:
        assert warning is not None and warns in warning and token not in warning


def test_jwt_expiry_is_read_without_verification():
    assert jwt_expiry(jwt({"exp": 1234567890})) == 1234567890.0


@pytest.mark.parametrize("alg", ["HS256", "RS256"])
def test_jwt_expiry_of_tokens_made_by_pyjwt(alg):
    """Real signed tokens (PyJWT's), read without their key; an expired one still has a date."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key: object = "k" * 32
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for exp in (NOW + 10 * DAY, NOW - 400 * DAY, 1_700_000_000):
        token = pyjwt.encode({"exp": exp, "sub": "scim"}, key, algorithm=alg)
        assert jwt_expiry(token) == float(exp)
    token = pyjwt.encode({"exp": NOW + 3 * DAY}, key, algorithm=alg)
    warning = expiry_warning(SecretStr(token), now=NOW)
    assert warning is not None and "in 3 day(s)" in warning and token not in warning


@pytest.mark.parametrize(
    "token",
    [
        "",
        "...",
        "a.b",
        "é.é.é",
        "Zm9v.YmFy.YmF6",  # base64, not JSON
        "e30.WzFd.c2ln",  # the payload is a JSON array
        "e30.eyJleHAiOkluZmluaXR5fQ.c2ln",  # {"exp": Infinity}
        "e30.eyJleHAiOk5hTn0.c2ln",  # {"exp": NaN}
        jwt({"exp": 1e20}),  # a number no date can hold
        jwt({"exp": -1e30}),
        jwt({"exp": "1900000000"}),  # a string, not a NumericDate
        "x" * 100_000,
    ],
)
def test_jwt_expiry_of_hostile_tokens_is_none_never_an_exception(token):
    assert jwt_expiry(token) is None
    assert expiry_warning(SecretStr(token), now=NOW) is None


def oauth_config(servers, tmp_path, secret_env="ZOOM_S2S_SECRET"):
    return make_config(
        servers,
        tmp_path / "s.db",
        target__oauth={
            "account_id": "acct-1",
            "client_id": "zoom-client",
            "client_secret": {"env": secret_env},
            "token_url": servers.scim_control_url + "/oauth/token",
        },
    )


class RevokeOnce(NoFaults):
    def __init__(self, scim, after: int) -> None:
        self.scim, self.revoke_at, self.posts = scim, after, 0

    async def before(self, req: SimRequest) -> SimResponse | None:
        if req.method == "POST":
            self.posts += 1
            if self.posts == self.revoke_at:
                self.scim.revoke_oauth_tokens()
        return None


async def test_zoom_oauth_tokens_are_refreshed_and_refetched_after_revocation(
    servers, tenant, scim, tmp_path, monkeypatch
):
    monkeypatch.setenv("BULKPROV_GRAPH_SECRET", GRAPH_SECRET)
    monkeypatch.setenv("ZOOM_S2S_SECRET", "zoom-s2s-client-secret-42")
    scim.set_token("static-token-not-used-with-oauth")
    # one-hour tokens in production; 0.4 s here, so a one-second run needs several
    scim.enable_oauth("acct-1", "zoom-client", "zoom-s2s-client-secret-42", lifetime=0.4)
    scim.configure(latency_ms=3)
    scim.faults = RevokeOnce(scim, after=150)
    cfg = oauth_config(servers, tmp_path)
    started = time.monotonic()
    result = await run_sync(cfg, Secrets.from_config(cfg), policy=FAST_RETRY)
    took = time.monotonic() - started
    assert result.status == "completed" and result.counts["failed"] == 0
    assert scim.counters()["statuses"].get("401", 0) >= 1  # the revocation was met
    assert scim.oauth_requests >= 2 + int(took / 0.4) // 2  # refreshed before expiry too
    assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []


async def test_wrong_oauth_client_secret_stops_with_a_clear_message(
    servers, scim, tmp_path, monkeypatch
):
    monkeypatch.setenv("BULKPROV_GRAPH_SECRET", GRAPH_SECRET)
    monkeypatch.setenv("ZOOM_S2S_SECRET", "a-wrong-client-secret")
    scim.enable_oauth("acct-1", "zoom-client", "the-right-one")
    cfg = oauth_config(servers, tmp_path)
    with pytest.raises(BaseException) as info:
        await run_sync(cfg, Secrets.from_config(cfg), policy=FAST_RETRY)
    err = info.value
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    assert isinstance(err, TargetAuthError)
    assert "OAuth token request was refused (401" in str(err)
    assert "a-wrong-client-secret" not in str(err)


async def test_an_unreachable_token_endpoint_keeps_the_cause_and_no_secret():
    """The transport error stays on ``__cause__`` (for debugging); no text of the chain, the
    traceback included, holds the client secret or the Basic credential made from it."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = make_client(timeout=5, max_connections=2)
    zoom = ZoomOAuth(
        f"http://127.0.0.1:{port}/oauth/token",
        "acct-1",
        "zoom-client",
        SecretStr("zoom-s2s-client-secret-42"),
        http,
    )
    graph = GraphClient(
        authority=f"http://127.0.0.1:{port}",
        tenant_id="t1",
        client_id="c1",
        client_secret=SecretStr(GRAPH_SECRET),
        base_url=f"http://127.0.0.1:{port}/v1.0",
        http=http,
    )
    try:
        with pytest.raises(TargetAuthError, match="cannot reach the OAuth token endpoint") as z:
            await zoom.token()
        with pytest.raises(SourceError, match="cannot reach the token endpoint") as g:
            await graph.token()
    finally:
        await http.aclose()
    for info, secrets in (
        (z, ["zoom-s2s-client-secret-42", zoom._basic]),
        (g, [GRAPH_SECRET]),
    ):
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        text = "".join(traceback.format_exception(info.value))
        assert f"127.0.0.1:{port}" in text  # the cause names where, never what was sent
        assert not [s for s in secrets if s in text]
