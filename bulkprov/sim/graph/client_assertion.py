"""Verify a ``private_key_jwt`` client assertion, as the identity platform does for a
certificate credential (what msal sends for ``graph.certificate``).

The simulator's token endpoint uses this so certificate sign-in is exercised end to end:
msal signs a JWT with the private key, and only the certificate registered with the
simulated app registration verifies it. Checked, in the order the platform reports them:
the JWT is well formed; ``RS256`` (a SHA-1 ``x5t`` thumbprint, what msal sends with a
configured thumbprint) or ``PS256`` (``x5t#S256``); a thumbprint header, when present, names
the registered certificate; the signature verifies with its public key; ``iss`` and ``sub``
are the client id; ``aud`` is the token endpoint; ``exp`` (and ``nbf``) hold now.

Errors are ``(AADSTS code, text)`` pairs modelled on the platform's (AADSTS700027 for a key
or signature that does not match, AADSTS700024 for the time range, AADSTS700021 for the
issuer); they never quote the assertion itself.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: seconds of clock skew tolerated on ``exp`` and ``nbf``
_SKEW = 300


class RegisteredCertificate:
    """The public half of a certificate credential: a PEM certificate or a PEM public key.

    With a bare public key no thumbprint is known, so a thumbprint header is not checked
    (the signature still is).
    """

    def __init__(self, pem: str | bytes) -> None:
        data = pem.encode() if isinstance(pem, str) else pem
        self.sha1: bytes | None = None
        self.sha256: bytes | None = None
        if b"CERTIFICATE" in data:
            cert = x509.load_pem_x509_certificate(data)
            key: Any = cert.public_key()
            self.sha1 = cert.fingerprint(hashes.SHA1())  # x5t is SHA-1 (RFC 7515)
            self.sha256 = cert.fingerprint(hashes.SHA256())
        else:
            key = serialization.load_pem_public_key(data)
        if not isinstance(key, rsa.RSAPublicKey):
            raise TypeError("only RSA certificates are supported")
        self.key: rsa.RSAPublicKey = key


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify(
    assertion: str,
    cert: RegisteredCertificate,
    *,
    client_id: str,
    audiences: tuple[str, ...],
    now: float | None = None,
) -> tuple[int, str] | None:
    """``None`` when the assertion is valid, else the ``(AADSTS code, text)`` to answer."""
    try:
        head_b64, body_b64, sig_b64 = assertion.split(".")
        header = orjson.loads(_b64(head_b64))
        claims = orjson.loads(_b64(body_b64))
        signature = _b64(sig_b64)
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise TypeError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        return 50027, "JWT token is invalid or malformed."
    alg = header.get("alg")
    pad: padding.AsymmetricPadding
    if alg == "RS256":
        pad = padding.PKCS1v15()
    elif alg == "PS256":
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    else:
        return 5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm."
    for name, expected in (("x5t", cert.sha1), ("x5t#S256", cert.sha256)):
        sent = header.get(name)
        if sent is None or expected is None:
            continue
        try:
            ok = hmac.compare_digest(_b64(str(sent)), expected)
        except (ValueError, binascii.Error):
            ok = False
        if not ok:
            return 700027, (
                "Client assertion contains an invalid signature. [Reason - The key was not "
                f"found., Thumbprint of key used by client: '{str(sent)[:64]}']"
            )
    try:
        signed = f"{head_b64}.{body_b64}".encode()
        cert.key.verify(signature, signed, pad, hashes.SHA256())
    except InvalidSignature:
        return 700027, (
            "Client assertion contains an invalid signature. [Reason - The key used to sign "
            "the assertion does not match the certificate registered for the application.]"
        )
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        return 700021, "Client assertion application identifier doesn't match 'client_id'."
    if claims.get("aud") not in audiences:
        return 700212, (
            f"Client assertion audience '{str(claims.get('aud'))[:200]}' is not the token endpoint."
        )
    now = time.time() if now is None else now
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        return 50027, "JWT token is invalid or malformed: 'exp' and 'nbf' must be numbers."
    if exp + _SKEW < now or nbf - _SKEW > now:
        return 700024, "Client assertion is not within its valid time range."
    return None
