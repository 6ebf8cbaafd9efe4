"""A simulated Microsoft Entra tenant: the v2.0 token endpoint and Graph's ``/v1.0/users``.

It behaves like the real service where a provisioning client can notice (facts.md §7):

* client-credentials tokens from ``POST /{tenant}/oauth2/v2.0/token`` with AADSTS-style errors,
  and ``GET /{tenant}/v2.0/.well-known/openid-configuration`` for msal;
* ``GET /v1.0/users`` with ``$select`` (``id`` always returned; Graph's default property set
  otherwise), ``$top`` 1–999 (default 100) and an absolute ``@odata.nextLink`` whose
  ``$skiptoken`` is opaque and HMAC-signed, so a client that edits or fabricates it gets a 400
  just as it would from Graph;
* Bearer authentication with Graph's ``InvalidAuthenticationToken`` body, token expiry and
  revocation;
* optional throttling: 429 with Graph's body and a ``Retry-After`` that may be fractional.

Users come from :mod:`bulkprov.sim.users` on demand; only users a test changes, adds or deletes
are stored, so a tenant of a million users costs a few kilobytes until it is read.

What ``$select`` accepts and how a selected user reads, and Graph's error envelope, are in
:mod:`bulkprov.sim.graph.odata` (the directory's ``users/delta`` needs them too); groups,
assignments and delta rounds in :mod:`bulkprov.sim.graph.directory`.

Unsupported OData options (``$filter``, ``$orderby``, ``$search``, ``$expand``, ``$skip``)
answer 400 instead of being ignored: a client that starts relying on them should fail loudly
against the simulator rather than silently receive every user.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import orjson

from bulkprov.sim.faults import GRAPH_KINDS, FaultPlan, Faults
from bulkprov.sim.graph.client_assertion import JWT_BEARER, RegisteredCertificate
from bulkprov.sim.graph.client_assertion import verify as verify_assertion
from bulkprov.sim.graph.directory import Directory
from bulkprov.sim.graph.odata import GRAPH_JSON, graph_error, now_iso, parse_select, project
from bulkprov.sim.graph.synchronization import Synchronization
from bulkprov.sim.http import SimRequest, SimResponse, json_response
from bulkprov.sim.users import (
    DEFAULT_SELECT,
    generate_user,
    index_from_id,
    index_from_upn,
)

__all__ = ["DEFAULT_CLIENT_ID", "DEFAULT_TENANT_ID", "GraphTenant"]

DEFAULT_TENANT_ID = "8f3c0e2a-5b1d-4c6e-9a7f-0d2b4e6f8a10"
DEFAULT_CLIENT_ID = "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

_AAD_JSON = "application/json; charset=utf-8"
_UNSUPPORTED_OPTIONS = ("$filter", "$orderby", "$search", "$expand", "$skip", "$count")


def format_retry_after(seconds: float) -> str:
    """``2`` for whole seconds, ``0.05`` otherwise (Graph sometimes sends ``2.128``)."""
    return f"{seconds:g}"


class GraphTenant:
    """One Entra tenant with one app registration (client id + secret) and its users.

    Args:
        user_count: users generated from indexes ``0 … user_count-1``.
        seed: selects the synthetic population (same seed → same users, ids and UPNs).
        tenant_id, client_id, client_secret: the credentials the token endpoint accepts.
        token_lifetime: seconds a token stays valid (``expires_in``); make it small to test
            refresh.
        throttle_every: answer every N-th ``/v1.0`` request with 429 (``None``: never).
        throttle_probability: or throttle each request with this probability (seeded by
            ``throttle_seed``, so runs are reproducible).
        retry_after: seconds for the 429 ``Retry-After`` header; fractional values are sent as
            such (``"0.05"``); ``None`` omits the header.
        public_url: ``scheme://host[:port]`` to use in absolute links; by default the
            request's own scheme and ``Host`` header, which is right behind loopback and for
            :class:`~bulkprov.sim.http.SimTransport`.
        skiptoken_key: HMAC key for ``$skiptoken``; by default derived from the seed and the
            tenant id, so a restarted simulator still honours nextLinks saved in a checkpoint.
        client_certificate: a PEM certificate (or public key) registered for the app: the
            token endpoint then also accepts a ``private_key_jwt`` client assertion signed
            with its private key (:mod:`bulkprov.sim.graph.client_assertion`).
        delta_changed_only: rounds of ``users/delta`` changes list a changed user with only
            the properties that changed, as Graph does with ``Prefer: return=minimal`` (the
            header turns it on per request too); added and restored users are listed whole.
    """

    def __init__(
        self,
        user_count: int = 1000,
        seed: int = 0,
        tenant_id: str = DEFAULT_TENANT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = "sim-graph-secret",
        *,
        token_lifetime: int = 3599,
        throttle_every: int | None = None,
        throttle_probability: float = 0.0,
        throttle_seed: int = 0,
        retry_after: float | None = 0.05,
        public_url: str | None = None,
        skiptoken_key: bytes | None = None,
        client_certificate: str | bytes | None = None,
        latency_ms: float = 0,
        delta_changed_only: bool = False,
    ) -> None:
        if user_count < 0:
            raise ValueError("user_count must be >= 0")
        self.seed = seed
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.certificate = RegisteredCertificate(client_certificate) if client_certificate else None
        self.token_lifetime = token_lifetime
        #: awaited before each Graph API answer: Graph is a remote service (a page of 999
        #: users takes a few hundred ms over the internet), loopback answers in ~1 ms
        self.latency_ms = float(latency_ms)
        #: rounds of ``users/delta`` changes list only the changed properties of a user, as
        #: Graph does with ``Prefer: return=minimal`` (and may without it)
        self.delta_changed_only = delta_changed_only
        self.throttle_every = throttle_every
        self.throttle_probability = throttle_probability
        self.retry_after = retry_after
        self.public_url = public_url.rstrip("/") if public_url else None
        self._rng = random.Random(throttle_seed)
        self._key = (
            skiptoken_key or hashlib.sha256(f"skiptoken:{seed}:{tenant_id}".encode()).digest()
        )
        self._slots = user_count  # slots ever allocated; added users take new slots
        self._overrides: dict[int, dict[str, Any]] = {}
        self._gone: set[int] = set()  # hard- or soft-deleted slots
        self._soft_deleted: dict[int, str] = {}  # slot → deletedDateTime
        self._upn_slots: dict[str, int] = {}  # lower-cased UPN → slot, for overridden slots
        self._tokens: dict[str, float] = {}  # access token → monotonic expiry
        self._api_requests = 0
        #: fault-injection hook around every ``/v1.0`` request (see :mod:`bulkprov.sim.faults`)
        self.faults: Faults | None = None
        #: raw user dicts served verbatim at a slot (malformed-input tests): slot → dict
        self.raw_users: dict[int, Any] = {}
        self.counters: dict[str, int] = {}
        self._reset_counters()
        #: groups, app role assignments and delta tracking (directory.py)
        self.directory = Directory(self)
        #: Entra's provisioning jobs (synchronization.py): ``bulkprov migrate`` reads them
        self.synchronization = Synchronization(self)
        self.synchronization.add_service_principal(self.directory.service_principal_id)

    # ------------------------------------------------------------------ Python test API

    @property
    def user_count(self) -> int:
        """Users currently listed by ``GET /users`` (added ones in, deleted ones out)."""
        return self._slots - len(self._gone)

    def _reset_counters(self) -> None:
        self.counters = {
            "token_requests": 0,
            "tokens_issued": 0,
            "token_errors": 0,
            "api_requests": 0,
            "pages": 0,
            "users_served": 0,
            "group_member_reads": 0,
            "user_reads": 0,
            "groups_delta_pages": 0,
            "throttled": 0,
            "unauthorized": 0,
            "bad_requests": 0,
        }

    def _user_at(self, slot: int) -> dict[str, Any]:
        user = self._overrides.get(slot)
        return user if user is not None else generate_user(slot, self.seed)

    def _slot_of(self, key: str) -> int | None:
        """Slot of a live or soft-deleted user by object id or UPN (case-insensitive)."""
        if "@" in key:
            low = key.lower()
            slot = self._upn_slots.get(low)
            if slot is not None:
                return slot
            slot = index_from_upn(low)
            if (
                slot is None
                or slot >= self._slots
                or slot in self._overrides
                or generate_user(slot, self.seed)["userPrincipalName"].lower() != low
            ):
                return None
        else:
            slot = index_from_id(key, self.seed)
            if slot is None or slot >= self._slots:
                return None
        if slot in self._gone and slot not in self._soft_deleted:
            return None
        return slot

    def _live_slot(self, key: str) -> int:
        slot = self._slot_of(key)
        if slot is None or slot in self._gone:
            raise KeyError(key)
        return slot

    def get_user(self, key: str) -> dict[str, Any] | None:
        """A live user by id or UPN (all properties), or ``None``."""
        slot = self._slot_of(key)
        if slot is None or slot in self._gone:
            return None
        return dict(self._user_at(slot))

    def iter_users(self) -> Iterator[dict[str, Any]]:
        """Every live user in listing order (what paging through ``/users`` yields)."""
        for slot in range(self._slots):
            if slot not in self._gone and slot not in self.raw_users:
                yield self._user_at(slot)

    def _store(self, slot: int, user: dict[str, Any]) -> None:
        old = self._overrides.get(slot)
        if old is not None:
            self._upn_slots.pop(str(old["userPrincipalName"]).lower(), None)
        self._overrides[slot] = user
        self._upn_slots[str(user["userPrincipalName"]).lower()] = slot

    def _check_upn_free(self, upn: Any, slot: int | None) -> None:
        if not isinstance(upn, str) or "@" not in upn:
            raise ValueError(f"userPrincipalName must look like name@domain: {upn!r}")
        other = self._slot_of(upn)
        if other is not None and other != slot:
            raise ValueError(f"userPrincipalName already in use: {upn!r}")

    def update_user(
        self, key: str, attrs: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Change properties of a live user (its ``id`` cannot change); returns the user.

        Raises ``KeyError`` if there is no such user, ``ValueError`` for a clashing UPN.
        """
        changes = {**(attrs or {}), **kw}
        slot = self._live_slot(key)
        user = dict(self._user_at(slot))
        changes.pop("id", None)
        if "userPrincipalName" in changes:
            self._check_upn_free(changes["userPrincipalName"], slot)
        user.update(changes)
        self._store(slot, user)
        self.directory.touch(slot, props=changes.keys())
        return dict(user)

    def add_user(self, attrs: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """Append a new user (listed after every existing one) and return it.

        Unspecified properties come from the generator for the new slot, so the user has the
        same shape as the others; ``id`` is always assigned by the tenant.
        """
        changes = {**(attrs or {}), **kw}
        changes.pop("id", None)
        slot = self._slots
        user = generate_user(slot, self.seed)
        if "userPrincipalName" in changes:
            self._check_upn_free(changes["userPrincipalName"], None)
        user.update(changes)
        self._slots += 1
        self._store(slot, user)
        self.directory.touch(slot)
        return dict(user)

    def served(self, slot: int, select: tuple[str, ...]) -> Any:
        """What a ``/users`` or ``users/delta`` page holds for ``slot``: the projected user,
        or a raw entry (:meth:`add_raw_user`) as it is."""
        if slot in self.raw_users and slot not in self._overrides:
            return self.raw_users[slot]
        return project(self._user_at(slot), select)

    def add_raw_user(self, raw: Any) -> int:
        """Append an entry served *verbatim* in ``/users`` pages (no projection, no checks).

        For malformed-input tests: a user without ``id``, ``null``, wrong types, control
        characters… Returns its slot. :meth:`iter_users` leaves such entries out.
        """
        slot = self._slots
        self._slots += 1
        self.raw_users[slot] = raw
        return slot

    def delete_user(self, key: str, soft: bool = True) -> None:
        """Remove a user from ``/users``; ``soft`` keeps it restorable (Graph's deletedItems)."""
        slot = self._live_slot(key)
        self._gone.add(slot)
        self.directory.touch(slot, hard_delete=not soft)
        if soft:
            self._soft_deleted[slot] = now_iso() + "Z"
        elif slot in self._overrides:
            del self._upn_slots[str(self._overrides[slot]["userPrincipalName"]).lower()]

    def restore_user(self, key: str) -> dict[str, Any]:
        """Bring a soft-deleted user back, in its original position."""
        slot = self._slot_of(key)
        if slot is None or slot not in self._soft_deleted:
            raise KeyError(key)
        del self._soft_deleted[slot]
        self._gone.discard(slot)
        self.directory.touch(slot)
        return dict(self._user_at(slot))

    def issue_token(self) -> str:
        """A valid access token, as if obtained from the token endpoint."""
        token = secrets.token_urlsafe(32)
        if len(self._tokens) > 10_000:
            now = time.monotonic()
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
        self._tokens[token] = time.monotonic() + self.token_lifetime
        self.counters["tokens_issued"] += 1
        return token

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (the next API call gets 401)."""
        self._tokens.clear()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change throttling, secret or token lifetime at runtime; returns the settings."""
        allowed = (
            "client_secret",
            "token_lifetime",
            "throttle_every",
            "throttle_probability",
            "retry_after",
            "delta_changed_only",
        )
        for k, v in changes.items():
            if k not in allowed:
                raise ValueError(f"unknown setting {k!r}; expected one of {allowed}")
            setattr(self, k, v)
        return self.settings()

    def settings(self) -> dict[str, Any]:
        """Current runtime settings (the secret is not included)."""
        return {
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "token_lifetime": self.token_lifetime,
            "throttle_every": self.throttle_every,
            "throttle_probability": self.throttle_probability,
            "retry_after": self.retry_after,
            "delta_changed_only": self.delta_changed_only,
            "user_count": self.user_count,
        }

    # ------------------------------------------------------------------------- HTTP

    async def handle(self, req: SimRequest) -> SimResponse:
        """Serve one request (the single entry point for every adapter)."""
        path = req.path
        if path.startswith(("/v1.0/", "/beta/")):
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000)
            rest, beta = path[6:], path.startswith("/beta/")
            faults = self.faults
            if faults is None:
                return self._graph(req, rest, beta)
            injected = await faults.before(req)
            if injected is not None:
                return injected
            return await faults.after(req, self._graph(req, rest, beta))
        if path.startswith("/_sim/"):
            return self._control(req, path[6:])
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            if req.method != "POST":
                return _aad_error(
                    405, "invalid_request", 900561, "The endpoint only accepts POST requests."
                )
            return self._token(req, parts[0])
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self._openid(req, parts[0])
        return graph_error(404, "UnknownError", f"No route for {req.method} {path}")

    def _fault_plan(self, changes: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(self.faults, FaultPlan):
            if changes is None:
                return {"rate": 0.0, "injected": {}}
            self.faults = FaultPlan(kinds=GRAPH_KINDS)
        return self.faults.configure(**changes) if changes else self.faults.settings()

    # OAuth2 -----------------------------------------------------------------------

    def _base(self, req: SimRequest) -> str:
        return self.public_url or req.base_url

    def _openid(self, req: SimRequest, tenant: str) -> SimResponse:
        if tenant.lower() != self.tenant_id.lower():
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = f"{self._base(req)}/{self.tenant_id}"
        doc = {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self._base(req)}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }
        return json_response(200, doc, _AAD_JSON)

    def _token(self, req: SimRequest, tenant: str) -> SimResponse:
        self.counters["token_requests"] += 1
        resp = self._token_inner(req, tenant)
        if resp.status != 200:
            self.counters["token_errors"] += 1
        return resp

    def _token_inner(self, req: SimRequest, tenant: str) -> SimResponse:
        if tenant.lower() != self.tenant_id.lower():
            return _aad_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant "
                "ID and are signing into the correct cloud.",
            )
        try:
            form = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return _aad_error(400, "invalid_request", 900144, "The request body is not valid.")
        client_id = form.get("client_id")
        client_secret = form.get("client_secret")
        auth = req.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":  # client_secret_basic
            try:
                cid, _, csec = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return _aad_error(401, "invalid_client", 7000218, "Malformed Basic credentials.")
            client_id, client_secret = unquote(cid), unquote(csec)
        grant = form.get("grant_type")
        if not grant:
            return _missing("grant_type")
        if grant != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        if not client_id:
            return _missing("client_id")
        if client_id != self.client_id:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'.",
            )
        assertion = form.get("client_assertion")
        if assertion and form.get("client_assertion_type") == JWT_BEARER:
            if self.certificate is None:
                return _aad_error(
                    401,
                    "invalid_client",
                    700027,
                    "Client assertion failed signature validation: no certificate is "
                    f"registered for app '{client_id}'.",
                )
            token_url = f"{self._base(req)}/{self.tenant_id}/oauth2/v2.0/token"
            problem = verify_assertion(
                assertion,
                self.certificate,
                client_id=self.client_id,
                audiences=(token_url, f"{self._base(req)}{req.path}"),
            )
            if problem is not None:
                return _aad_error(401, "invalid_client", *problem)
        elif not client_secret:
            return _aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        elif not hmac.compare_digest(client_secret.encode(), self.client_secret.encode()):
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID, for a secret added to "
                f"app '{client_id}'.",
            )
        scope = form.get("scope")
        if not scope:
            return _missing("scope")
        if not scope.endswith("/.default") or " " in scope.strip():
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        resource = scope[: -len("/.default")].rstrip("/")
        if resource not in (GRAPH_RESOURCE, GRAPH_APP_ID):
            return _aad_error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{tenant}.",
            )
        token = self.issue_token()
        body = {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": token,
        }
        return json_response(200, body, _AAD_JSON, {"Cache-Control": "no-store, no-cache"})

    # Graph ------------------------------------------------------------------------

    def _graph(self, req: SimRequest, rest: str, beta: bool = False) -> SimResponse:
        c = self.counters
        c["api_requests"] += 1
        auth = req.headers.get("authorization")
        if not auth:
            c["unauthorized"] += 1
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        expiry = self._tokens.get(auth[7:]) if auth[:7].lower() == "bearer " else None
        if expiry is None:
            c["unauthorized"] += 1
            return graph_error(
                401, "InvalidAuthenticationToken", "Access token validation failure. Invalid token."
            )
        if expiry < time.monotonic():
            c["unauthorized"] += 1
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        self._api_requests += 1
        if (self.throttle_every and self._api_requests % self.throttle_every == 0) or (
            self.throttle_probability and self._rng.random() < self.throttle_probability
        ):
            c["throttled"] += 1
            return self._throttled()
        # Entra's provisioning jobs: GETs, the pause/start POSTs, the beta secrets read
        synced = self.synchronization.route(req, rest, beta=beta)
        if synced is not None:
            return synced
        if beta:
            return graph_error(400, "BadRequest", f"'/beta/{rest}' is not served by the simulator.")
        if req.method != "GET":
            return graph_error(
                405,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            )
        routed = self.directory.route(req, rest)
        if routed is not None:
            return routed
        if rest == "users/$count":
            return self._count_users(req)
        for opt in _UNSUPPORTED_OPTIONS:
            if opt in req.query:
                c["bad_requests"] += 1
                return graph_error(
                    400, "Request_UnsupportedQuery", f"'{opt}' is not supported by the simulator."
                )
        fields = parse_select(req.query.get("$select"))
        if isinstance(fields, SimResponse):
            c["bad_requests"] += 1
            return fields
        if rest == "users":
            return self._list_users(req, fields)
        if rest.startswith("users/") and "/" not in rest[6:]:
            return self._get_user(req, rest[6:], fields)
        return graph_error(
            400, "BadRequest", f"Resource not found for the segment '{rest.split('/')[-1]}'."
        )

    def _count_users(self, req: SimRequest) -> SimResponse:
        """``GET /users/$count``: the live user count as ``text/plain``.

        Graph only counts directory objects with advanced queries, which need the
        ``ConsistencyLevel: eventual`` header; without it the request is refused with a 400
        (https://learn.microsoft.com/graph/aad-advanced-queries).
        """
        if req.headers.get("consistencylevel", "").lower() != "eventual":
            self.counters["bad_requests"] += 1
            return graph_error(
                400, "Request_BadRequest", "ConsistencyLevel header is required for $count."
            )
        body = str(self.user_count).encode()
        return SimResponse(200, body, {"Content-Type": "text/plain; charset=utf-8"})

    def _throttled(self) -> SimResponse:
        headers = {
            "x-ms-throttle-scope": f"Tenant_Application/ReadWrite/{self.client_id}/{self.tenant_id}",
            "x-ms-throttle-information": "ResourceUnitLimitExceeded",
        }
        if self.retry_after is not None:
            headers["Retry-After"] = format_retry_after(self.retry_after)
        rid = str(uuid.uuid4())
        body = {
            "error": {
                "code": "TooManyRequests",
                "message": "Please retry again later.",
                "innerError": {
                    "code": "429",
                    "date": now_iso(),
                    "message": "Please retry after",
                    "request-id": rid,
                    "status": "429",
                },
            }
        }
        return json_response(429, body, GRAPH_JSON, headers)

    def _context(self, req: SimRequest, fields: tuple[str, ...] | None, suffix: str = "") -> str:
        sel = f"({','.join(fields)})" if fields is not None else ""
        return f"{self._base(req)}/v1.0/$metadata#users{sel}{suffix}"

    def _list_users(self, req: SimRequest, fields: tuple[str, ...] | None) -> SimResponse:
        q = req.query
        top_text = q.get("$top")
        top = 100
        if top_text is not None:
            try:
                top = int(top_text)
            except ValueError:
                self.counters["bad_requests"] += 1
                return graph_error(
                    400,
                    "BadRequest",
                    f"The query specified in the URI is not valid. Failed to convert '{top_text}' "
                    "to an integer.",
                )
            if not 1 <= top <= 999:
                self.counters["bad_requests"] += 1
                return graph_error(
                    400,
                    "Request_UnsupportedQuery",
                    f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.",
                )
        start = 0
        token = q.get("$skiptoken")
        if token is not None:
            decoded = self._decode_skiptoken(token)
            if decoded is None:
                self.counters["bad_requests"] += 1
                return graph_error(
                    400,
                    "Directory_ExpiredPageToken",
                    "The specified page token value has expired or is invalid.",
                )
            start = decoded
        users, next_slot = self._page(start, top)
        proj = fields if fields is not None else DEFAULT_SELECT
        raw = self.raw_users
        value = (
            [u.value if isinstance(u, _Raw) else project(u, proj) for u in users]
            if raw
            else [project(u, proj) for u in users]
        )
        body: dict[str, Any] = {"@odata.context": self._context(req, fields), "value": value}
        if next_slot is not None:
            params = []
            if "$select" in q:
                params.append(f"$select={quote(q['$select'], safe=',')}")
            if top_text is not None:
                params.append(f"$top={top}")
            params.append(f"$skiptoken={self._encode_skiptoken(next_slot)}")
            body["@odata.nextLink"] = f"{self._base(req)}/v1.0/users?{'&'.join(params)}"
        self.counters["pages"] += 1
        self.counters["users_served"] += len(value)
        return SimResponse(200, orjson.dumps(body), {"Content-Type": GRAPH_JSON})

    def _page(self, start: int, top: int) -> tuple[list[Any], int | None]:
        out: list[Any] = []
        gone, overrides, seed, end = self._gone, self._overrides, self.seed, self._slots
        i = start
        while i < end and len(out) < top:
            if i not in gone:
                user = overrides.get(i)
                if user is not None:
                    out.append(user)
                elif i in self.raw_users:
                    out.append(_Raw(self.raw_users[i]))
                else:
                    out.append(generate_user(i, seed))
            i += 1
        while i < end and i in gone:
            i += 1
        return out, (i if i < end else None)

    def _get_user(self, req: SimRequest, key: str, fields: tuple[str, ...] | None) -> SimResponse:
        self.counters["user_reads"] += 1
        user = self.get_user(key)
        if user is None:
            return graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        proj = fields if fields is not None else DEFAULT_SELECT
        body: dict[str, Any] = {"@odata.context": self._context(req, fields, "/$entity")}
        body.update(project(user, proj))
        return SimResponse(200, orjson.dumps(body), {"Content-Type": GRAPH_JSON})

    # $skiptoken: version byte + slot + truncated HMAC, urlsafe base64 without padding.

    def _encode_skiptoken(self, slot: int) -> str:
        payload = b"\x01" + slot.to_bytes(8, "big")
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()

    def _decode_skiptoken(self, token: str) -> int | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        if len(raw) != 21 or raw[0] != 1:
            return None
        payload, mac = raw[:9], raw[9:]
        if not hmac.compare_digest(mac, hmac.new(self._key, payload, hashlib.sha256).digest()[:12]):
            return None
        return int.from_bytes(payload[1:], "big")

    # Control endpoints (no auth: a test harness drives them) ---------------------------

    def _control_directory(self, m: str, rest: str, body: dict[str, Any]) -> SimResponse:
        resp = _directory_control(self.directory, m, rest, body)
        if resp is None:
            return json_response(404, {"error": f"no control endpoint {m} /_sim/directory/{rest}"})
        return resp

    def _control(self, req: SimRequest, rest: str) -> SimResponse:
        m = req.method
        try:
            body = orjson.loads(req.body) if req.body else {}
        except orjson.JSONDecodeError as exc:
            return json_response(400, {"error": f"invalid JSON: {exc}"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "expected a JSON object"})
        try:
            if rest == "counters" and m == "GET":
                return json_response(200, self.counters)
            if rest == "faults":
                return json_response(200, self._fault_plan(body if m == "POST" else None))
            if rest == "config" and m == "GET":
                return json_response(200, self.settings())
            if rest == "config" and m == "POST":
                return json_response(200, self.configure(**body))
            if rest == "revoke_tokens" and m == "POST":
                self.revoke_tokens()
                return SimResponse(204)
            if rest == "reset_counters" and m == "POST":
                self._reset_counters()
                return SimResponse(204)
            if rest == "synchronization" and m == "GET":
                sync = self.synchronization
                jobs = {sp: [j["job"] for j in js.values()] for sp, js in sync.jobs.items()}
                return json_response(200, {"jobs": jobs, "calls": sync.calls})
            if rest == "users" and m == "POST":
                return json_response(201, self.add_user(body))
            if rest.startswith("directory/"):
                return self._control_directory(m, rest[10:], body)
            if rest.startswith("users/"):
                key = rest[6:]
                if key.endswith("/restore") and m == "POST":
                    return json_response(200, self.restore_user(key[: -len("/restore")]))
                if m == "GET":
                    user = self.get_user(key)
                    if user is None:
                        return json_response(404, {"error": f"no user {key!r}"})
                    return json_response(200, user)
                if m == "PATCH":
                    return json_response(200, self.update_user(key, body))
                if m == "DELETE":
                    soft = req.query.get("soft", "true").lower() not in ("false", "0", "no")
                    self.delete_user(key, soft=soft)
                    return SimResponse(204)
        except KeyError as exc:
            return json_response(404, {"error": f"no user {exc.args[0]!r}"})
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": f"no control endpoint {m} /_sim/{rest}"})


class _Raw:
    """A page entry served as it is (see :meth:`GraphTenant.add_raw_user`)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _directory_control(d: Directory, m: str, rest: str, body: dict[str, Any]) -> SimResponse | None:
    """``/_sim/directory/…``: drive groups, assignments and delta tokens from a test."""
    if m != "POST":
        return None
    if rest == "groups":
        return json_response(201, d.add_group(body["displayName"], body.get("members")))
    if rest == "assign":
        return json_response(
            201, d.assign(body["principalId"], body.get("appRoleId", d.app_roles[0]["id"]))
        )
    if rest == "unassign":
        return json_response(200, {"removed": d.unassign(body["principalId"])})
    if rest == "members/add":
        d.add_member(body["groupId"], body["memberId"])
        return SimResponse(204)
    if rest == "members/remove":
        d.remove_member(body["groupId"], body["memberId"])
        return SimResponse(204)
    if rest == "groups/update":
        return json_response(200, d.update_group(body.pop("groupId"), **body))
    if rest == "groups/delete":
        d.delete_group(body["groupId"])
        return SimResponse(204)
    if rest == "expire_delta_tokens":
        d.expire_delta_tokens()
        return SimResponse(204)
    return None


def _aad_error(status: int, error: str, code: int, text: str) -> SimResponse:
    """The identity platform's OAuth2 error body (``error`` + ``AADSTS…`` description)."""
    trace = str(uuid.uuid4())
    corr = str(uuid.uuid4())
    ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} "
        f"Timestamp: {ts}",
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return json_response(status, body, _AAD_JSON)


def _missing(param: str) -> SimResponse:
    return _aad_error(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{param}'.",
    )
