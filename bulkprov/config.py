"""Configuration: one TOML file, validated by pydantic at the edge.

Secrets never live in the file: the Graph client secret and the SCIM token are read from an
environment variable or from a file the user names, and are held as ``SecretStr`` so they
print as ``**********`` everywhere (repr, logs, exceptions).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bulkprov import redact
from bulkprov.breaker import BreakerPolicy
from bulkprov.errors import ConfigError
from bulkprov.escrow import EscrowPolicy

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSource(_Model):
    """Where a secret comes from: an environment variable or a file (never the TOML itself)."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' (a variable name) or 'file' (a path)")
        return self

    def read(self, key: str, config_path: str | None) -> SecretStr:
        """Read the secret now; a ConfigError names the variable or file, never the value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(
                    f"environment variable {self.env} is not set", path=config_path, key=key
                )
            redact.register(value.strip())
            return SecretStr(value.strip())
        assert self.file is not None
        try:
            value = self.file.expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read secret file {self.file}: {exc.strerror}", path=config_path, key=key
            ) from exc
        if not value:
            raise ConfigError(f"secret file {self.file} is empty", path=config_path, key=key)
        redact.register(value)
        return SecretStr(value)


def _check_url(value: str, *, allow_http_loopback: bool = True) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    if parts.scheme == "http" and not (allow_http_loopback and parts.hostname in LOOPBACK_HOSTS):
        raise ValueError(f"https is required for a non-loopback host: {value!r}")
    return value.rstrip("/")


class CertificateConfig(_Model):
    """A certificate credential for the app registration (msal's ``private_key_jwt``)."""

    #: the PEM private key (a secret: from an environment variable or a file)
    private_key: SecretSource
    #: the SHA-1 thumbprint of the certificate uploaded to the app registration (hex)
    thumbprint: str


class GraphConfig(_Model):
    """Microsoft Graph, the source (application permissions, client credentials)."""

    tenant_id: str
    client_id: str
    client_secret: SecretSource = SecretSource(env="BULKPROV_GRAPH_SECRET")
    #: instead of the client secret (needs an https authority: msal)
    certificate: CertificateConfig | None = None
    authority: str = "https://login.microsoftonline.com"
    base_url: str = "https://graph.microsoft.com/v1.0"
    page_size: Annotated[int, Field(ge=1, le=999)] = 999
    timeout: Annotated[float, Field(gt=0)] = 60.0
    #: verify the token endpoint and Graph against this CA bundle (PEM) instead of the system's
    ca_file: Path | None = None

    _urls = field_validator("authority", "base_url")(classmethod(lambda cls, v: _check_url(v)))

    @model_validator(mode="after")
    def _certificate_needs_msal(self) -> GraphConfig:
        if self.certificate is not None and not self.authority.startswith("https://"):
            raise ValueError("graph.certificate needs an https authority (msal signs it)")
        return self


class OAuthConfig(_Model):
    """Zoom server-to-server OAuth (``account_credentials``; one-hour tokens, facts.md §6.1)."""

    account_id: str
    client_id: str
    client_secret: SecretSource = SecretSource(env="BULKPROV_ZOOM_CLIENT_SECRET")
    token_url: str = "https://zoom.us/oauth/token"

    _url = field_validator("token_url")(classmethod(lambda cls, v: _check_url(v)))


class TargetConfig(_Model):
    """The SCIM 2.0 service provider (Zoom: ``https://api.zoom.us/scim2``)."""

    base_url: str
    token: SecretSource = SecretSource(env="BULKPROV_SCIM_TOKEN")
    #: instead of a static token: fetch (and refresh) one with Zoom server-to-server OAuth
    oauth: OAuthConfig | None = None
    concurrency: Annotated[int, Field(ge=1, le=512)] = 16
    #: requests per second across all workers: the ceiling (0: none, start unbounded)
    rate_limit: Annotated[float, Field(ge=0)] = 60.0
    #: adapt to 429s below ``rate_limit``: a 429 near a rate that held is a 1 % correction,
    #: a limit that drops is measured and followed; finds an unannounced or shared limit
    #: whatever the shape of the target's limiter (bulkprov.scim.rate). False: fixed rate
    adaptive: bool = True
    #: read /ServiceProviderConfig and send creates, updates, disables and deletes in SCIM
    #: Bulk requests when it advertises bulk (RFC 7644 §3.7). Zoom offers neither (facts.md
    #: §6.2): off by default
    bulk: bool = False
    timeout: Annotated[float, Field(gt=0)] = 30.0
    #: "rfc": lowercase ops and JSON booleans; "entra": Entra's ``Replace`` and ``"False"``
    patch_dialect: Literal["rfc", "entra"] = "rfc"
    #: page size of the target listing used to match existing accounts
    list_page_size: Annotated[int, Field(ge=1, le=1000)] = 100
    #: Zoom's userName is the user's email: reject a user whose mapped userName is not one
    user_name_is_email: bool = True
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    max_retry_seconds: Annotated[float, Field(gt=0)] = 300.0
    #: verify the target (and its OAuth endpoint) against this CA bundle (PEM); TLS
    #: verification is never turned off
    ca_file: Path | None = None

    _url = field_validator("base_url")(classmethod(lambda cls, v: _check_url(v)))


class NetworkConfig(_Model):
    """How requests leave this machine: the proxy for Graph, the token endpoints and the
    target (msal's token requests included).

    Without this section bulkprov honours ``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` and
    ``NO_PROXY``; ``proxy`` here replaces the first three (``"none"``: no proxy, whatever the
    environment says), ``no_proxy`` replaces ``NO_PROXY``. ``https://`` targets go through
    the proxy with ``CONNECT``; loopback hosts never use a proxy.
    """

    #: ``http://host:port`` (or ``https://``); ``"none"`` turns an environment proxy off
    proxy: str | None = None
    #: hosts, domain suffixes (``.corp.example``) or IP addresses that go direct; ``["*"]``: all
    no_proxy: list[str] | None = None
    #: proxy credentials, when the proxy URL does not carry them (the password is a secret:
    #: an environment variable or a file)
    proxy_username: str | None = None
    proxy_password: SecretSource | None = None

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, v: str | None) -> str | None:
        if v is None or v == "none":
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError('a proxy is an http:// or https:// URL with a host, or "none"')
        if parts.password:
            raise ValueError(
                "keep the proxy password out of the file: give proxy_username and "
                "proxy_password = {env = ...} or {file = ...}"
            )
        return v.rstrip("/")

    @model_validator(mode="after")
    def _credentials_together(self) -> NetworkConfig:
        if (self.proxy_username is None) != (self.proxy_password is None):
            raise ValueError("give proxy_username and proxy_password together")
        return self


class AttributeMapping(_Model):
    """One row of the attribute-mapping table (Entra's "Edit attribute" dialog).

    Exactly one of ``source`` (type Direct: a Graph attribute name), ``constant`` (type
    Constant) or ``expression`` (type Expression) is given, or none of them with
    ``type = "none"`` (the target is only filled with ``default`` when it is empty).
    """

    target: str
    source: str | None = None
    constant: str | None = None
    expression: str | None = None
    type: Literal["direct", "constant", "expression", "none"] | None = None
    #: "Default value if null": only used when the user is created
    default: str | None = None
    #: "Apply this mapping": always, or only during object creation
    apply: Literal["always", "creation"] = "always"
    #: "Match objects using this attribute" with its precedence (1 is tried first)
    matching_precedence: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _infer_type(self) -> AttributeMapping:
        given = [
            name
            for name, value in (
                ("direct", self.source),
                ("constant", self.constant),
                ("expression", self.expression),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError("give only one of 'source', 'constant' or 'expression'")
        inferred = given[0] if given else "none"
        if self.type is not None and self.type != inferred:
            raise ValueError(f"type {self.type!r} does not fit the keys given ({inferred})")
        if self.type is None:
            object.__setattr__(self, "type", inferred)
        return self


ScopingOperator = Literal[
    "EQUALS",
    "NOT EQUALS",
    "IS TRUE",
    "IS FALSE",
    "IS NULL",
    "IS NOT NULL",
    "REGEX MATCH",
    "NOT REGEX MATCH",
    "Greater_Than",
    "Greater_Than_OR_EQUALS",
    "Includes",
    "ENDS_WITH",
    "&",
    "!&",
]


class ScopingClause(_Model):
    """``attribute OPERATOR value`` (Entra's scoping-filter clause)."""

    attribute: str
    operator: ScopingOperator
    value: str | None = None


class ScopingFilter(_Model):
    """Clauses AND together within one filter; filters OR together."""

    name: str | None = None
    clauses: list[ScopingClause] = Field(min_length=1)


class ScopeConfig(_Model):
    """Who is in scope: everyone, or only users assigned to the app (then scoping filters)."""

    mode: Literal["all", "assigned"] = "all"
    #: the service principal whose app role assignments define "assigned" (mode = "assigned")
    service_principal_id: str | None = None
    filters: list[ScopingFilter] = []

    @model_validator(mode="after")
    def _sp_needed(self) -> ScopeConfig:
        if self.mode == "assigned" and not self.service_principal_id:
            raise ValueError("mode 'assigned' needs service_principal_id")
        return self


class DeprovisionConfig(_Model):
    """What happens to accounts whose user leaves scope (facts.md §2.5, §2.6)."""

    #: DELETE the target account when the user is hard-deleted in Entra (Entra's "Delete"
    #: target object action); otherwise, and for every other reason, PATCH active=false
    delete_hard_deleted: bool = False
    #: accidental-deletion prevention: a cycle that would disable or delete *more* than this
    #: many accounts executes none of them; they are held until ``bulkprov approve``
    threshold: Annotated[int, Field(ge=0)] = 500
    prevent_accidental_deletion: bool = True


class GroupsConfig(_Model):
    """Group provisioning: assigned groups (or all, in scope mode "all") and their members."""

    enabled: bool = True
    #: members per add/remove PATCH (halved on a 400/413 answer)
    member_chunk: Annotated[int, Field(ge=1, le=1000)] = 100
    #: also provision members of nested groups (Entra provisions direct members only)
    flatten_nested: bool = False


class StateConfig(_Model):
    path: Path = Path("bulkprov-state.sqlite3")
    #: commit the checkpoint after this many outcomes, or this many seconds. ``commit_seconds``
    #: bounds the work redone after a crash; ``commit_every`` only caps a batch's memory. Each
    #: commit rewrites every B-tree page it touches, and users are keyed by random GUIDs:
    #: 500-row commits cost 47 µs of CPU per user over a 100k first sync, 5,000-row commits
    #: 23 µs (``benchmarks/bench_store.py``; benchmarks/RESULTS.md, "Checkpoint batches").
    commit_every: Annotated[int, Field(ge=1)] = 5000
    commit_seconds: Annotated[float, Field(gt=0)] = 0.5
    #: provisioning-log rows older than this many days are deleted when a run starts
    #: (Entra keeps 30 days on premium editions, facts.md §5.1); 0 keeps them forever
    log_retention_days: Annotated[int, Field(ge=0)] = 30


class EscrowConfig(_Model):
    """When failed users are retried (Entra: 6 h, 12 h, 24 h, then daily for 28 days)."""

    delays_hours: list[Annotated[float, Field(ge=0)]] = [6.0, 12.0, 24.0]
    then_every_hours: Annotated[float, Field(gt=0)] = 24.0
    give_up_days: Annotated[float, Field(gt=0)] = 28.0

    def policy(self) -> EscrowPolicy:
        return EscrowPolicy(tuple(self.delays_hours), self.then_every_hours, self.give_up_days)


class QuarantineConfig(_Model):
    """The breaker's thresholds (Entra's numbers; see bulkprov.breaker for the scaling)."""

    min_failures: Annotated[int, Field(ge=1)] = 5_000
    max_ratio: Annotated[float, Field(gt=0, le=1)] = 0.40
    max_failures: Annotated[int, Field(ge=1)] = 40_000
    absolute_failures: Annotated[int, Field(ge=1)] = 60_000
    floor: Annotated[int, Field(ge=1)] = 25
    #: 0: Entra's fixed minimum; else the minimum scales with the run (bulkprov.breaker)
    scale: Annotated[float, Field(ge=0, le=1)] = 0.10

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(**self.model_dump())


class Config(_Model):
    graph: GraphConfig
    target: TargetConfig
    state: StateConfig = StateConfig()
    escrow: EscrowConfig = EscrowConfig()
    quarantine: QuarantineConfig = QuarantineConfig()
    scope: ScopeConfig = ScopeConfig()
    deprovision: DeprovisionConfig = DeprovisionConfig()
    groups: GroupsConfig = GroupsConfig()
    network: NetworkConfig = NetworkConfig()
    mappings: list[AttributeMapping] = Field(min_length=1)
    #: where this config came from (for messages); not part of the TOML
    source_path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _mapping_sanity(self) -> Config:
        targets = [m.target for m in self.mappings]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise ValueError(f"target attributes mapped more than once: {', '.join(dupes)}")
        if not any(m.target == "userName" for m in self.mappings):
            raise ValueError("a mapping to 'userName' is required (SCIM's unique user key)")
        if not any(m.matching_precedence for m in self.mappings):
            raise ValueError("at least one mapping needs matching_precedence (how accounts match)")
        return self


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_config(data: dict[str, Any], *, path: str | None = None) -> Config:
    """Validate a config mapping; the first problem becomes a ConfigError naming its key."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        lines = [f"{_loc(e['loc']) or '(top level)'}: {e['msg']}" for e in errors]
        first = errors[0]
        raise ConfigError(
            "; ".join(lines) if len(lines) > 1 else str(first["msg"]),
            path=path,
            key=(_loc(first["loc"]) or None) if len(lines) == 1 else None,
        ) from None  # not the cause: pydantic's text quotes the input, which may be a secret
    return cfg.model_copy(update={"source_path": path})


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", path=str(p)) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(p)) from exc
    return parse_config(data, path=str(p))
