"""Verify a ``private_key_jwt`` client assertion, as the identity platform does for a
certificate credential (what msal sends for ``graph.certificate``).

The simulator's token endpoint uses this so certificate sign-in is exercised end to end:
msal signs a JWT with the private key, and only the certificate registered with the
simulated app registration verifies it. PyJWT parses the assertion and verifies it (the
signature with the certificate's public key, ``RS256`` or ``PS256``; ``iss`` and ``sub`` are
the client id; ``aud`` is the token endpoint, RFC 7523 §3; ``exp``, ``nbf`` and ``iat`` hold
now, with five minutes of clock skew). Checked here only: ``alg`` is one of the two (a SHA-1
``x5t`` thumbprint goes with ``RS256``, what msal sends with a configured thumbprint, and
``x5t#S256`` with ``PS256``), and a thumbprint header, when present, names the registered
certificate (PyJWT knows no certificates).

Errors are ``(AADSTS code, text)`` pairs modelled on the platform's (AADSTS700027 for a key
or signature that does not match, AADSTS700024 for the time range, AADSTS700021 for the
issuer); they never quote the assertion itself.
"""

from __future__ import annotations

import binascii
import hmac
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.exceptions import InvalidSubjectError
from jwt.utils import base64url_decode

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``
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


def _thumbprint(sent: object) -> bytes | None:
    try:
        return base64url_decode(str(sent))
    except (ValueError, binascii.Error):
        return None


def verify(
    assertion: str,
    cert: RegisteredCertificate,
    *,
    client_id: str,
    audiences: tuple[str, ...],
) -> tuple[int, str] | None:
    """``None`` when the assertion is valid, else the ``(AADSTS code, text)`` to answer."""
    try:
        # parsed first, unverified: a malformed JWT is answered before anything is checked
        parsed = jwt.decode_complete(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return 50027, "JWT token is invalid or malformed."
    header, claims = parsed["header"], parsed["payload"]
    alg = header.get("alg")
    if alg not in ("RS256", "PS256"):
        return 5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm."
    for name, expected in (("x5t", cert.sha1), ("x5t#S256", cert.sha256)):
        sent = header.get(name)
        if sent is None or expected is None:
            continue
        got = _thumbprint(sent)
        if got is None or not hmac.compare_digest(got, expected):
            return 700027, (
                "Client assertion contains an invalid signature. [Reason - The key was not "
                f"found., Thumbprint of key used by client: '{str(sent)[:64]}']"
            )
    try:
        jwt.decode(
            assertion,
            cert.key,
            algorithms=[alg],
            audience=audiences,
            issuer=client_id,
            subject=client_id,
            leeway=_SKEW,
            options={"require": ["exp", "iss", "sub", "aud"]},
        )
    except jwt.InvalidSignatureError:
        return 700027, (
            "Client assertion contains an invalid signature. [Reason - The key used to sign "
            "the assertion does not match the certificate registered for the application.]"
        )
    except (jwt.InvalidIssuerError, InvalidSubjectError):
        return 700021, _WRONG_CLIENT
    except jwt.InvalidAudienceError:
        return 700212, _wrong_audience(claims)
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
        return 700024, "Client assertion is not within its valid time range."
    except jwt.MissingRequiredClaimError as exc:
        if exc.claim in ("iss", "sub"):
            return 700021, _WRONG_CLIENT
        if exc.claim == "aud":
            return 700212, _wrong_audience(claims)
        return 50027, _NOT_NUMBERS
    except jwt.DecodeError:  # the assertion parsed above: only a non-numeric exp or nbf is left
        return 50027, _NOT_NUMBERS
    except jwt.InvalidTokenError:  # iat or jti of the wrong type
        return 50027, "JWT token is invalid or malformed."
    return None


_WRONG_CLIENT = "Client assertion application identifier doesn't match 'client_id'."
_NOT_NUMBERS = "JWT token is invalid or malformed: 'exp' and 'nbf' must be numbers."


def _wrong_audience(claims: dict[str, Any]) -> str:
    return f"Client assertion audience '{str(claims.get('aud'))[:200]}' is not the token endpoint."
