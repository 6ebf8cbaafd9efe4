"""Certificate sign-in (``graph.certificate``): msal signs a client assertion that the
simulated token endpoint verifies against the registered certificate."""

from __future__ import annotations

import base64
import datetime
import time
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from bulkprov.credentials import Secrets
from bulkprov.errors import SourceAuthError
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant, ScimService, SimRequest
from bulkprov.sim.graph.client_assertion import JWT_BEARER
from bulkprov.sim.graph.tenant import DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID
from bulkprov.sim.server import serve_simulators

from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN, make_config
from .e2e import expected_values, store_problems

pytest.importorskip("trustme")  # the ca fixture (conftest) needs it
pytest.importorskip("msal")


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulkprov-test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, x509.Certificate, rsa.RSAPrivateKey]:
    key = _key()
    return key, _cert(key), _key()


def _innermost(err: BaseException) -> BaseException:
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    return err


async def test_sync_signs_in_with_a_certificate(tmp_path, ca, keys):
    """A real sync over TLS whose Graph token comes from msal's signed assertion."""
    ctx, ca_file = ca
    key, cert, other = keys
    public = cert.public_bytes(serialization.Encoding.PEM)
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()  # as the portal shows it
    tenant = GraphTenant(
        user_count=40, seed=7, client_secret=GRAPH_SECRET, client_certificate=public
    )
    scim = ScimService(SCIM_TOKEN)
    async with serve_simulators(tenant, scim, graph_ssl=ctx) as servers:
        cfg = make_config(
            servers,
            tmp_path / "s.db",
            graph__ca_file=str(ca_file),
            graph__certificate={"private_key": {"env": "UNUSED"}, "thumbprint": thumbprint},
        )
        result = await run_sync(cfg, Secrets(SecretStr(_pem(key)), SecretStr(SCIM_TOKEN)))
        assert result.status == "completed"
        assert store_problems(expected_values(cfg, tenant.iter_users()), scim.dump()) == []
        assert tenant.counters["tokens_issued"] >= 1

        # the same thumbprint with a different private key: refused, a clear error
        wrong = _pem(other)
        cfg = make_config(
            servers,
            tmp_path / "t.db",
            graph__ca_file=str(ca_file),
            graph__certificate={"private_key": {"env": "UNUSED"}, "thumbprint": thumbprint},
        )
        with pytest.raises(BaseException) as info:
            await run_sync(cfg, Secrets(SecretStr(wrong), SecretStr(SCIM_TOKEN)), policy=FAST_RETRY)
    err = _innermost(info.value)
    assert isinstance(err, SourceAuthError), repr(err)
    text = str(err)
    assert "invalid_client" in text and "AADSTS700027" in text and "certificate" in text
    for secret in (wrong, _pem(key)):
        body = "".join(secret.splitlines()[1:-1])
        assert body[:40] not in text and "PRIVATE KEY" not in text
    assert tenant.counters["token_errors"] >= 1


# The token endpoint's checks, without a network ---------------------------------------

_URL = f"https://127.0.0.1/{DEFAULT_TENANT_ID}/oauth2/v2.0/token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _assertion(key: rsa.RSAPrivateKey, header: dict[str, Any], **claims: Any) -> str:
    now = int(time.time())
    body = {"aud": _URL, "iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_CLIENT_ID, "exp": now + 600}
    body.update(claims)
    signing = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(body))}"
    if header["alg"] == "PS256":
        pad: padding.AsymmetricPadding = padding.PSS(
            mgf=padding.MGF1(hashes.SHA256()), salt_length=32
        )
    else:
        pad = padding.PKCS1v15()
    return f"{signing}.{_b64(key.sign(signing.encode(), pad, hashes.SHA256()))}"


async def _post(tenant: GraphTenant, assertion: str) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "client_credentials",
        "client_id": DEFAULT_CLIENT_ID,
        "scope": "https://graph.microsoft.com/.default",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    req = SimRequest(
        "POST",
        f"/{DEFAULT_TENANT_ID}/oauth2/v2.0/token",
        {},
        {"host": "127.0.0.1", "content-type": "application/x-www-form-urlencoded"},
        urlencode(form).encode(),
        scheme="https",
    )
    resp = await tenant.handle(req)
    return resp.status, orjson.loads(resp.body)


async def test_token_endpoint_checks_the_assertion(keys):
    key, cert, other = keys
    x5t = _b64(cert.fingerprint(hashes.SHA1()))
    s256 = _b64(cert.fingerprint(hashes.SHA256()))
    tenant = GraphTenant(
        user_count=1, client_certificate=cert.public_bytes(serialization.Encoding.PEM)
    )
    rs256 = {"alg": "RS256", "typ": "JWT", "x5t": x5t}
    status, body = await _post(tenant, _assertion(key, rs256))
    assert status == 200 and body["access_token"]
    status, body = await _post(tenant, _assertion(key, {"alg": "PS256", "x5t#S256": s256}))
    assert status == 200
    cases = {
        "700027": _assertion(other, rs256),  # signed by another key
        "700027 ": _assertion(key, {"alg": "RS256", "x5t": _b64(b"\x01" * 20)}),  # other cert
        "700024": _assertion(key, rs256, exp=int(time.time()) - 3600),  # expired
        "700212": _assertion(key, rs256, aud="https://127.0.0.1/other/oauth2/v2.0/token"),
        "700021": _assertion(key, rs256, iss="someone-else"),
        "50027": "not.a-jwt",
    }
    for code, assertion in cases.items():
        status, body = await _post(tenant, assertion)
        assert (status, body["error"]) == (401, "invalid_client"), code
        assert body["error_codes"] == [int(code)], body
    # a tenant with only a secret refuses any assertion
    status, body = await _post(GraphTenant(user_count=1), _assertion(key, rs256))
    assert (status, body["error"]) == (401, "invalid_client")
    # a registered bare public key verifies the signature (no thumbprint to compare)
    bare = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    status, _ = await _post(
        GraphTenant(user_count=1, client_certificate=bare), _assertion(key, rs256)
    )
    assert status == 200


async def test_token_endpoint_takes_pyjwt_assertions_and_refuses_the_rest(keys):
    """Assertions made by PyJWT (not by msal, not by hand) verify; each wrong claim, header or
    algorithm gets the platform's code, and none of them is a 500."""
    import jwt as pyjwt

    key, cert, other = keys
    pem = cert.public_bytes(serialization.Encoding.PEM)
    tenant = GraphTenant(user_count=1, client_certificate=pem)
    x5t = _b64(cert.fingerprint(hashes.SHA1()))
    now = int(time.time())
    good = {"aud": _URL, "iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_CLIENT_ID, "exp": now + 600}

    def made(claims: dict[str, Any], alg: str = "RS256", signer: Any = key, **head: Any) -> str:
        return pyjwt.encode(claims, signer, algorithm=alg, headers={"x5t": x5t, **head})

    for alg in ("RS256", "PS256"):
        status, body = await _post(tenant, made({**good, "nbf": now, "iat": now}, alg))
        assert status == 200 and body["access_token"], (alg, body)
    # five minutes of clock skew either way
    status, _ = await _post(tenant, made({**good, "exp": now - 100, "nbf": now + 100}))
    assert status == 200

    def without(claim: str) -> dict[str, Any]:
        return {k: v for k, v in good.items() if k != claim}

    cases = {
        "not yet valid": (700024, made({**good, "nbf": now + 3600})),
        "expired": (700024, made({**good, "exp": now - 3600})),
        "no exp": (50027, made(without("exp"))),
        "exp not a number": (50027, made({**good, "exp": "soon"})),
        "nbf not a number": (50027, made({**good, "nbf": "soon"})),
        "other sub": (700021, made({**good, "sub": "someone-else"})),
        "no iss": (700021, made(without("iss"))),
        "sub not a string": (700021, made({**good, "sub": 7})),
        "no aud": (700212, made(without("aud"))),
        "other key, same x5t": (700027, made(good, signer=other)),
        "other x5t#S256": (700027, made(good, "PS256", **{"x5t#S256": _b64(b"\x02" * 32)})),
        "x5t not base64": (700027, made(good, x5t="%%%")),
        # the public certificate used as an HMAC secret: the classic algorithm confusion
        "HS256": (5002738, made(good, "HS256", signer=b"k" * 32)),
        "none": (5002738, made(good, "none", signer=None)),
        "header not JSON": (50027, "bm90IGpzb24." + made(good).split(".", 1)[1]),
        "payload an array": (50027, f"{_b64(b'{}')}.{_b64(b'[1]')}.c2ln"),
        "two parts": (50027, "e30.e30"),
    }
    for name, (code, assertion) in cases.items():
        status, body = await _post(tenant, assertion)
        assert (status, body.get("error")) == (401, "invalid_client"), (name, status, body)
        assert body["error_codes"] == [code], (name, body)
        assert assertion not in body["error_description"], name  # never quoted
