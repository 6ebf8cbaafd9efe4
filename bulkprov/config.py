"""Configuration: one TOML file, validated by pydantic at the edge.

Secrets never live in the file: the Graph client secret and the SCIM token are read from an
environment variable or from a file the user names, and are held as ``SecretStr`` so they
print as ``**********`` everywhere (repr, logs, exceptions). A secret written in the file
itself is refused with the way to give it; a secret that holds a line break or a control
character is refused when read, naming its key (:class:`SecretSource`).

Every switch and number takes TOML's own type (``Flag``, ``Strict()``: nothing quoted is
coerced), and an unknown key names the closest known one (:func:`parse_config`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from bulkprov import envconfig, netfs, redact
from bulkprov.breaker import BreakerPolicy
from bulkprov.errors import ConfigError
from bulkprov.escrow import EscrowPolicy

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# Every switch and number of the config takes TOML's own type: pydantic's lax mode reads
# `delete_hard_deleted = "no"` as false, `enabled = 0` as false and `threshold = "5"` as 5,
# so a quoted or mistyped safety setting would silently mean something. Strict types refuse
# them (an integer is still a valid float: `timeout = 30`).
Flag = Annotated[bool, Strict()]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: secrets that hold several lines (a PEM private key); every other one is one line, sent
#: in a header or a form
MULTILINE_SECRETS = frozenset({"graph.certificate.private_key"})
#: secrets sent as they are in an HTTP header (``Authorization: Bearer …``): ASCII only
HEADER_SECRETS = frozenset({"target.token"})
_SECRET_HELP = (
    'a secret is never written in the config file: give { env = "VARIABLE" } (an '
    'environment variable) or { file = "path" } (a file holding it)'
)


class SecretSource(_Model):
    """Where a secret comes from: an environment variable or a file (never the TOML itself)."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        # `token = "abc"`: the value is never echoed (parse_config leaves inputs out)
        if not isinstance(data, dict | SecretSource):
            raise ValueError(_SECRET_HELP)  # noqa: TRY004 - pydantic reports only ValueError
        return data

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' (a variable name) or 'file' (a path)")
        return self

    def read(self, key: str, config_path: str | None) -> SecretStr:
        """Read the secret now; a ConfigError names the variable or file, never the value."""
        if self.env is not None:
            raw = os.environ.get(self.env)
            if raw is None:
                raise ConfigError(
                    f"environment variable {self.env} is not set", path=config_path, key=key
                )
            where = f"environment variable {self.env}"
            value = raw.strip()
        else:
            assert self.file is not None
            try:
                value = self.file.expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read secret file {self.file}: {exc.strerror}",
                    path=config_path,
                    key=key,
                ) from exc
            except UnicodeDecodeError:
                raise ConfigError(
                    f"secret file {self.file} is not UTF-8 text", path=config_path, key=key
                ) from None
            where = f"secret file {self.file}"
        if not value:
            raise ConfigError(f"{where} is empty", path=config_path, key=key)
        problem = _secret_problem(value, key)
        if problem:
            raise ConfigError(f"{where} {problem}", path=config_path, key=key)
        redact.register(value)
        return SecretStr(value)

    def loose_file(self) -> str | None:
        """A warning when the secret's file can be read by its group or by others."""
        if self.file is None or os.name != "posix":
            return None
        try:
            mode = self.file.expanduser().stat().st_mode & 0o777
        except OSError:
            return None  # read() says what is wrong with it
        if not mode & 0o077:
            return None
        return (
            f"secret file {self.file} is mode {mode:04o}: others than its owner can read "
            f"or change it (chmod 600 {self.file})"
        )


def _secret_problem(value: str, key: str) -> str | None:
    """What makes a secret unusable where ``key`` sends it, or ``None`` (never the value)."""
    lines = key in MULTILINE_SECRETS
    for c in value:
        if c in "\r\n" and not lines:
            return (
                "holds a line break inside it: a secret is one line (nothing may follow it "
                "in the variable or the file)"
            )
        if (ord(c) < 32 and not (lines and c in "\r\n\t")) or 0x7F <= ord(c) < 0xA0:
            return f"holds a control character (U+{ord(c):04X}): it is not a secret as issued"
        if key in HEADER_SECRETS and ord(c) > 0x7E:
            return (
                "holds a non-ASCII character: an HTTP header carries only ASCII "
                "(copy the token again from where it was issued)"
            )
    return None


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
    page_size: Annotated[int, Strict(), Field(ge=1, le=999)] = 999
    timeout: Annotated[float, Strict(), Field(gt=0)] = 60.0
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


class ZoomConfig(_Model):
    """``[target.zoom]``: what the Zoom profile (``target.profile = "zoom"``) paces and guards.

    Zoom counts requests per account and per *rate-limit label*, shared by every app on the
    account (facts.md §6.6): Light (GET, PUT, PATCH, DELETE of one user; Business+ 80/s) and
    Medium (list and filter; 60/s). The label of POST (create) is not documented: Medium,
    the safer guess, unless ``post_label`` says otherwise.
    """

    #: Light requests per second (lower it when other apps share the account's limit;
    #: 0: not paced, for simulators)
    light_per_second: Annotated[float, Strict(), Field(ge=0)] = 80.0
    #: Medium requests per second (lists and filters; POST by default)
    medium_per_second: Annotated[float, Strict(), Field(ge=0)] = 60.0
    #: the label POST /Users is counted under (undocumented by Zoom, facts.md §6.2)
    post_label: Literal["light", "medium"] = "medium"
    #: Licensed seats bulkprov may fill (None: not guarded); see docs/zoom-from-entra.md
    licensed_seats: Annotated[int, Strict(), Field(ge=0)] | None = None
    #: Zoom's cap on Basic users per account (Entra's Zoom tutorial: 9,999)
    basic_cap: Annotated[int, Strict(), Field(ge=0)] = 9_999
    #: warn when this fraction of a seat pool is used
    seat_warning: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.90
    #: the largest group PATCH body Zoom accepts, in characters (facts.md §6.8); member
    #: PATCHes are chunked by size as well as by ``[groups] member_chunk``
    group_patch_chars: Annotated[int, Strict(), Field(ge=200)] = 100_000


class TargetConfig(_Model):
    """The SCIM 2.0 service provider (Zoom: ``https://api.zoom.us/scim2``)."""

    #: "rfc": an RFC 7644 service; "zoom": Zoom as it behaves (updates by PUT, PATCH only
    #: for ``active``, pending invitations, no discovery endpoints, per-label rate limits:
    #: docs/zoom-from-entra.md, "What Zoom does differently")
    profile: Literal["rfc", "zoom"] = "rfc"
    zoom: ZoomConfig = ZoomConfig()

    base_url: str
    token: SecretSource = SecretSource(env="BULKPROV_SCIM_TOKEN")
    #: instead of a static token: fetch (and refresh) one with Zoom server-to-server OAuth
    oauth: OAuthConfig | None = None
    concurrency: Annotated[int, Strict(), Field(ge=1, le=512)] = 16
    #: requests per second across all workers: the ceiling (0: none, start unbounded).
    #: Profile "zoom" paces each label on its own ([target.zoom]); there, a rate_limit given
    #: (with the labels' own limits) caps all labels together, none given: no such cap
    rate_limit: Annotated[float, Strict(), Field(ge=0)] = 60.0
    #: adapt to 429s below ``rate_limit``: a 429 near a rate that held is a 1 % correction,
    #: a limit that drops is measured and followed; finds an unannounced or shared limit
    #: whatever the shape of the target's limiter (bulkprov.scim.rate). False: fixed rate
    adaptive: Flag = True
    #: read /ServiceProviderConfig and send creates, updates, disables and deletes in SCIM
    #: Bulk requests when it advertises bulk (RFC 7644 §3.7). Zoom offers neither (facts.md
    #: §6.2): off by default, and always off under profile "zoom" (nothing is asked)
    bulk: Flag = False
    timeout: Annotated[float, Strict(), Field(gt=0)] = 30.0
    #: "rfc": lowercase ops and JSON booleans; "entra": Entra's ``Replace`` and ``"False"``
    patch_dialect: Literal["rfc", "entra"] = "rfc"
    #: a source attribute cleared in Entra: by default the target keeps its old value (Entra
    #: never provisions nulls, facts.md §2.1); true sends ``remove`` for it
    clear_on_null: Flag = False
    #: page size of the target listing used to match existing accounts
    list_page_size: Annotated[int, Strict(), Field(ge=1, le=1000)] = 100
    #: Zoom's userName is the user's email: reject a user whose mapped userName is not one
    user_name_is_email: Flag = True
    max_attempts: Annotated[int, Strict(), Field(ge=1, le=50)] = 8
    max_retry_seconds: Annotated[float, Strict(), Field(gt=0)] = 300.0
    #: verify the target (and its OAuth endpoint) against this CA bundle (PEM); TLS
    #: verification is never turned off
    ca_file: Path | None = None

    _url = field_validator("base_url")(classmethod(lambda cls, v: _check_url(v)))

    @model_validator(mode="after")
    def _profile_sanity(self) -> TargetConfig:
        labels = {"light_per_second", "medium_per_second"}
        if (
            self.profile == "zoom"
            and "rate_limit" in self.model_fields_set
            and not labels <= self.zoom.model_fields_set
        ):
            # an RFC target's rate_limit alone would look like it paces Zoom's labels
            raise ValueError(
                'profile = "zoom" paces each Zoom rate-limit label on its own: give '
                "[target.zoom] light_per_second and medium_per_second (rate_limit beside "
                "them caps all labels together)"
            )
        if self.profile == "zoom" and self.clear_on_null:
            # Zoom's "Update a user" is a PUT of only the fields that change (facts.md §6.8);
            # it documents no way to clear one (null, "", a PATCH remove), so a clear could
            # only be a guess: refused rather than silently not done
            raise ValueError(
                'clear_on_null is not available with profile = "zoom": Zoom documents no way '
                "to clear an attribute (its updates are PUTs of the fields that change); a "
                "value cleared in Entra stays in Zoom, as Entra leaves it"
            )
        return self

    @property
    def zoom_profile(self) -> bool:
        return self.profile == "zoom"

    @property
    def zoom_ceiling(self) -> float:
        """Profile "zoom": the cap on all labels together, in requests per second (the
        ``rate_limit`` given; 0 when none is: each label is paced by its own limit only)."""
        if self.profile != "zoom" or "rate_limit" not in self.model_fields_set:
            return 0.0
        return self.rate_limit


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
    #: the most one answer may hold: a list page (Graph's users, a SCIM ListResponse or Bulk
    #: answer), and anything else (one resource, a token, an error); bigger answers fail
    #: with a reason instead of filling memory
    max_page_bytes: Annotated[int, Field(ge=64 * 1024)] = 16 * 1024 * 1024
    max_answer_bytes: Annotated[int, Field(ge=4 * 1024)] = 1024 * 1024
    #: seconds from a request's first byte sent to its answer's last byte read (the
    #: ``timeout`` of [graph] and [target] bounds each wait on its own; this bounds them all)
    deadline: Annotated[float, Field(gt=0)] = 120.0

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
    matching_precedence: Annotated[int, Strict(), Field(ge=1)] | None = None

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
    delete_hard_deleted: Flag = False
    #: accidental-deletion prevention: a cycle that would disable or delete *more* than this
    #: many accounts executes none of them; they are held until ``bulkprov approve``
    threshold: Annotated[int, Strict(), Field(ge=0)] = 500
    prevent_accidental_deletion: Flag = True


class GroupsConfig(_Model):
    """Group provisioning: assigned groups (or all, in scope mode "all") and their members."""

    enabled: Flag = True
    #: members a group PATCH carries, added and removed together (halved on a 413, or a
    #: 400 once the target accepted the form this cycle: bulkprov.pipeline.groups)
    member_chunk: Annotated[int, Strict(), Field(ge=1, le=1000)] = 100
    #: also provision members of nested groups (Entra provisions direct members only)
    flatten_nested: Flag = False


class StateConfig(_Model):
    path: Path = Path("bulkprov-state.sqlite3")
    #: commit the checkpoint after this many outcomes, or this many seconds. ``commit_seconds``
    #: bounds the work redone after a crash; ``commit_every`` only caps a batch's memory. Each
    #: commit rewrites every B-tree page it touches, and users are keyed by random GUIDs:
    #: 500-row commits cost 47 µs of CPU per user over a 100k first sync, 5,000-row commits
    #: 23 µs (``benchmarks/bench_store.py``; benchmarks/RESULTS.md, "Checkpoint batches").
    commit_every: Annotated[int, Strict(), Field(ge=1)] = 5000
    commit_seconds: Annotated[float, Strict(), Field(gt=0)] = 0.5
    #: provisioning-log rows older than this many days are deleted when a run starts
    #: (Entra keeps 30 days on premium editions, facts.md §5.1); 0 keeps them forever
    log_retention_days: Annotated[int, Strict(), Field(ge=0)] = 30
    #: SQLite on NFS, SMB and other network filesystems can corrupt (its locks and WAL do
    #: not hold there: bulkprov.netfs): the path is refused there unless this is true
    allow_network_filesystem: Flag = False


class EscrowConfig(_Model):
    """When failed users are retried (Entra: 6 h, 12 h, 24 h, then daily for 28 days)."""

    delays_hours: list[Annotated[float, Strict(), Field(ge=0)]] = [6.0, 12.0, 24.0]
    then_every_hours: Annotated[float, Strict(), Field(gt=0)] = 24.0
    give_up_days: Annotated[float, Strict(), Field(gt=0)] = 28.0

    def policy(self) -> EscrowPolicy:
        return EscrowPolicy(tuple(self.delays_hours), self.then_every_hours, self.give_up_days)


class QuarantineConfig(_Model):
    """The breaker's thresholds (Entra's numbers; see bulkprov.breaker for the scaling)."""

    min_failures: Annotated[int, Strict(), Field(ge=1)] = 5_000
    max_ratio: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.40
    max_failures: Annotated[int, Strict(), Field(ge=1)] = 40_000
    absolute_failures: Annotated[int, Strict(), Field(ge=1)] = 60_000
    floor: Annotated[int, Strict(), Field(ge=1)] = 25
    #: 0: Entra's fixed minimum; else the minimum scales with the run (bulkprov.breaker)
    scale: Annotated[float, Strict(), Field(ge=0, le=1)] = 0.10

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(**self.model_dump())


#: seconds one regular-expression match may take by default (``limits.regex_timeout``)
DEFAULT_REGEX_TIMEOUT = 0.1


class LimitsConfig(_Model):
    """Bounds on what one user can cost, so that a mistyped mapping cannot hang a run."""

    #: seconds (CPU time) one regular-expression match may take: ``Replace`` patterns,
    #: ``REGEX MATCH`` scoping clauses and ``FormatDateTime`` input formats. A match that
    #: takes longer fails that user, or the config when pattern and value are constants.
    #: .NET's ``Regex`` (what Entra runs) has match timeouts too; a normal match takes
    #: microseconds, a catastrophically backtracking one doubles with every character
    regex_timeout: Annotated[float, Field(gt=0, le=10)] = DEFAULT_REGEX_TIMEOUT


class Config(_Model):
    graph: GraphConfig
    target: TargetConfig
    state: StateConfig = StateConfig()
    escrow: EscrowConfig = EscrowConfig()
    quarantine: QuarantineConfig = QuarantineConfig()
    limits: LimitsConfig = LimitsConfig()
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


def secret_sources(cfg: Config) -> list[tuple[str, SecretSource]]:
    """(key, source) of every secret a command of ``cfg`` reads."""
    g, t, net = cfg.graph, cfg.target, cfg.network
    out = [
        ("graph.certificate.private_key", g.certificate.private_key)
        if g.certificate
        else ("graph.client_secret", g.client_secret),
        ("target.oauth.client_secret", t.oauth.client_secret)
        if t.oauth
        else ("target.token", t.token),
    ]
    if net.proxy_password is not None:
        out.append(("network.proxy_password", net.proxy_password))
    return out


def secret_file_warnings(cfg: Config) -> list[str]:
    """A warning for each secret file of ``cfg`` its group or others can read or change."""
    return [
        f"{key}: {warning}"
        for key, source in secret_sources(cfg)
        if (warning := source.loose_file()) is not None
    ]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the config accepts in the table at ``loc`` (``("deprovision",)``,
    ``("mappings", 0)``), or ``[]`` when ``loc`` is not a table of the config."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return [name for name, f in model.model_fields.items() if not f.exclude]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``X``, ``X | None``, ``list[X]``, ``Annotated[X, …]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _message(error: Any) -> str:
    """One pydantic error as the user reads it: an unknown key names the closest known one."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        if close:
            return f"unknown key {loc[-1]!r} (did you mean {close[0]!r}?)"
        if known:
            return f"unknown key {loc[-1]!r} (the keys here: {', '.join(known)})"
        return f"unknown key {loc[-1]!r}"
    if error["type"] in _STRICT_HINTS:
        return f"{error['msg']}: {_STRICT_HINTS[error['type']]}"
    return str(error["msg"]).removeprefix("Value error, ")


_STRICT_HINTS = {
    "bool_type": "write true or false, without quotes",
    "int_type": "write a whole number, without quotes",
    "float_type": "write a number, without quotes",
}


def parse_config(data: dict[str, Any], *, path: str | None = None) -> Config:
    """Validate a config mapping; the first problem becomes a ConfigError naming its key."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        lines = [f"{_loc(e['loc']) or '(top level)'}: {_message(e)}" for e in errors]
        first = errors[0]
        raise ConfigError(
            "; ".join(lines) if len(lines) > 1 else _message(first),
            path=path,
            key=(_loc(first["loc"]) or None) if len(lines) == 1 else None,
        ) from None  # not the cause: pydantic's text quotes the input, which may be a secret
    return cfg.model_copy(update={"source_path": path})


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file; its relative paths resolve against its folder."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", path=str(p)) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(p)) from exc
    cfg = resolve_paths(_parse_with_env(data, str(p)), p.parent)
    check_state_filesystem(cfg)
    return cfg


def check_state_filesystem(cfg: Config) -> None:
    """Refuse a ``state.path`` on a network filesystem (:mod:`bulkprov.netfs`) unless
    ``state.allow_network_filesystem``: two jobs there could both hold the lock."""
    if cfg.state.allow_network_filesystem:
        return
    kind = netfs.network_filesystem(cfg.state.path)
    if kind is not None:
        raise ConfigError(
            f"{cfg.state.path} is on a network filesystem ({kind}): SQLite's locks and WAL "
            "do not hold there, so two jobs could both write this state and corrupt it. Put "
            "the state on a local disk (in Kubernetes a ReadWriteOnce volume), or set "
            "state.allow_network_filesystem = true if this filesystem's locking is known "
            "to be sound and only one job ever uses this state",
            path=cfg.source_path,
            key="state.path",
        )


def _parse_with_env(data: dict[str, Any], path: str) -> Config:
    """:func:`parse_config` of the file's table with the ``BULKPROV_<SECTION>__<KEY>``
    environment variables laid over it (:mod:`bulkprov.envconfig`); an error in a key the
    environment set names the variable."""
    overrides, origins = envconfig.env_overrides(Config, exclude=frozenset({"source_path"}))
    if not overrides:
        return parse_config(data, path=path)
    data = envconfig.merge(data, overrides, Config, replace_whole=frozenset({SecretSource}))
    try:
        return parse_config(data, path=path)
    except ConfigError as exc:
        named = sorted(
            var
            for key, var in origins.items()
            if exc.key == key
            or (exc.key or "").startswith((key + ".", key + "["))
            or (exc.key is None and key in str(exc))
        )
        if named:
            exc.args = (f"{exc.args[0]} (set by the environment: {', '.join(named)})",)
        raise


def _resolved(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _secret_at(source: SecretSource, base: Path) -> SecretSource:
    if source.file is None:
        return source
    return source.model_copy(update={"file": _resolved(source.file, base)})


def resolve_paths(cfg: Config, base: Path) -> Config:
    """The config with every relative path made relative to ``base``, the config file's
    folder: ``state.path`` (and so the run reports beside it), the secrets' ``file``
    and the ``ca_file`` of Graph and the target. A cron job that runs ``bulkprov -c /etc/bulkprov/zoom.toml`` from
    another folder uses the same state as the admin who ran it from ``/etc/bulkprov``.
    """
    base = Path(os.path.abspath(base))  # absolute, '..' folded (symlinks kept)
    g, t = cfg.graph, cfg.target
    graph: dict[str, Any] = {"client_secret": _secret_at(g.client_secret, base)}
    if g.ca_file is not None:
        graph["ca_file"] = _resolved(g.ca_file, base)
    if g.certificate is not None:
        graph["certificate"] = g.certificate.model_copy(
            update={"private_key": _secret_at(g.certificate.private_key, base)}
        )
    target: dict[str, Any] = {"token": _secret_at(t.token, base)}
    if t.ca_file is not None:
        target["ca_file"] = _resolved(t.ca_file, base)
    if t.oauth is not None:
        target["oauth"] = t.oauth.model_copy(
            update={"client_secret": _secret_at(t.oauth.client_secret, base)}
        )
    return cfg.model_copy(
        update={
            "graph": g.model_copy(update=graph),
            "target": t.model_copy(update=target),
            "state": cfg.state.model_copy(update={"path": _resolved(cfg.state.path, base)}),
        }
    )
