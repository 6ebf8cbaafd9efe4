"""What ``bulkprov migrate`` makes of Entra's job, without I/O: the config it writes, and
what a plan says about taking over.

* :func:`render_config` writes the ``bulkprov.toml`` of a job: its mappings and scoping
  filters (as :func:`bulkprov.mapping.exchange.from_graph` imported them), its scope mode,
  its matching attribute, the group and deletion settings; a comment says where a value
  comes from whenever a choice was made, and what must be filled in.
  :func:`validated` loads that text as ``--config`` would load it (TOML, the config
  model, every mapping and filter compiled), so nothing is written that would not load.
* :func:`analyse` reads a plan (:func:`bulkprov.pipeline.make_plan` with ``unmanaged``)
  as a cut-over: the users Entra provisioned (matched, in sync or drifted), the users it
  left absent, the accounts nobody manages, and whether it is safe to switch: no create for
  a user who already has an account (it would be a duplicate), no disables or deletes
  beyond the accidental-deletion threshold.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bulkprov.config import Config, parse_config, resolve_paths
from bulkprov.errors import ConfigError

if TYPE_CHECKING:
    from bulkprov.graph.synchronization import ProvisioningSettings, SyncJob
    from bulkprov.mapping.exchange import Imported

ZOOM_SCIM = "https://api.zoom.us/scim2"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH = "https://graph.microsoft.com/v1.0"
#: bulkprov's accidental-deletion threshold when Entra's cannot be read
DEFAULT_THRESHOLD = 500
#: the values a create carries that say whose account an existing one may be
_IDENTITY_PATHS = ("userName", 'emails[type eq "work"].value', "externalId")


@dataclass(frozen=True)
class Connection:
    """How the written config reaches Graph and the target."""

    tenant_id: str
    client_id: str
    authority: str = DEFAULT_AUTHORITY
    graph_url: str = DEFAULT_GRAPH
    #: None: take the job's Tenant URL (BaseAddress), else Zoom's
    target_url: str | None = None


def _s(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()]


def target_url(conn: Connection, settings: ProvisioningSettings | None) -> tuple[str, str]:
    """The target base URL, and where it comes from."""
    if conn.target_url:
        return conn.target_url, "given with --target-url"
    if settings is not None and settings.base_address:
        return settings.base_address, "Entra's Tenant URL for this app (BaseAddress)"
    return ZOOM_SCIM, "Zoom's SCIM API: Entra's Tenant URL could not be read (--target-url)"


def render_config(
    *,
    job: SyncJob,
    imported: Imported,
    settings: ProvisioningSettings | None,
    settings_problem: str | None,
    conn: Connection,
    service_principal_id: str,
    read_at: str,
) -> str:
    """The ``bulkprov.toml`` of Entra's job (see the module docstring)."""
    from bulkprov.mapping.exchange import to_toml

    url, url_from = target_url(conn, settings)
    lines = [
        "# bulkprov configuration written by `bulkprov migrate` from Entra's provisioning job",
        f"#   {job.id} (template {job.template_id or '?'})",
        f"# of the enterprise application (service principal) {service_principal_id},",
        f"# read {read_at}. Values come from that job; a comment says where a choice was",
        "# made, and FILL IN what Entra does not let bulkprov read.",
        "# Secrets never go in this file: set the environment variables named below.",
        "",
        "[graph]",
        f"tenant_id = {_s(conn.tenant_id)}",
        f"client_id = {_s(conn.client_id)}",
        'client_secret = { env = "BULKPROV_GRAPH_SECRET" }   # or { file = "/run/secrets/graph" }',
    ]
    if conn.authority != DEFAULT_AUTHORITY:
        lines.append(f"authority = {_s(conn.authority)}")
    if conn.graph_url != DEFAULT_GRAPH:
        lines.append(f"base_url = {_s(conn.graph_url)}")
    lines += [
        "",
        "[target]",
        f"# {url_from}",
        f"base_url = {_s(url)}",
        "# FILL IN: Entra never reveals its SCIM secret token. Set BULKPROV_SCIM_TOKEN to it",
        "# (Zoom: Advanced > Single Sign-On > SCIM) or to a new one.",
        'token = { env = "BULKPROV_SCIM_TOKEN" }             # or { file = "/run/secrets/zoom" }',
        "concurrency = 16",
        "# Requests per second across all workers; Zoom's limits are per account, shared with",
        "# every app on it (Business+: Light 80/s, Medium 60/s).",
        "rate_limit = 60",
        "",
        "[state]",
        'path = "bulkprov-state.sqlite3"    # relative to this file\'s folder',
        "",
        "[scope]",
    ]
    if settings is not None and settings.sync_all is not None:
        mode = "all" if settings.sync_all else "assigned"
        said = "Sync all users and groups" if settings.sync_all else "Sync only assigned users"
        lines.append(
            f'# Entra\'s Scope setting: "{said} and groups" (SyncAll = {settings.sync_all})'
        )
    else:
        mode = "assigned"
        lines += _comment(
            "CHOICE: Entra's Scope setting could not be read"
            + (f" ({settings_problem})" if settings_problem else "")
            + ';\n"assigned" (Entra\'s default, "Sync only assigned users and groups") is the '
            'narrower one.\nCheck the app\'s Provisioning > Settings > Scope; "all" for "Sync all '
            'users and groups".'
        )
    lines.append(f'mode = "{mode}"')
    lines.append(f"service_principal_id = {_s(service_principal_id)}   # the enterprise app")
    lines += ["", "[deprovision]"]
    if imported.deletes:
        lines += _comment(
            'CHOICE: Entra\'s user mapping has the "Delete" target object action: it sends DELETE\n'
            "for users deleted permanently in Entra. bulkprov deactivates them (active = false)\n"
            "unless this is true: set it to delete as Entra did."
        )
    elif imported.deletes is False:
        lines.append("# Entra's user mapping has no Delete action: users are only deactivated")
    lines.append("delete_hard_deleted = false")
    threshold = DEFAULT_THRESHOLD
    if settings is not None and settings.delete_threshold_enabled and settings.delete_threshold:
        threshold = settings.delete_threshold
        lines.append(
            f"# Entra's accidental-deletion threshold (DeleteThresholdValue = {threshold})"
        )
    elif settings is not None and settings.delete_threshold_enabled is False:
        lines += _comment(
            "CHOICE: Entra's accidental-deletion prevention is off; bulkprov keeps its own at\n"
            f"{DEFAULT_THRESHOLD} (a cycle disabling more sends none until `bulkprov approve`)."
        )
    else:
        lines += _comment(
            "FILL IN: Entra's accidental-deletion threshold could not be read (Provisioning >\n"
            f"Settings > Accidental deletion threshold); {DEFAULT_THRESHOLD} is bulkprov's default."
        )
    lines.append(f"threshold = {threshold}")
    if settings is not None and settings.skip_out_of_scope_deletions:
        lines += _comment(
            "NOTE: Entra's job skips out-of-scope deletions (SkipOutOfScopeDeletions = True):\n"
            "it leaves accounts active when their users leave scope. bulkprov deactivates them\n"
            "(within the threshold above); there is no setting to skip it."
        )
    lines += ["", "[groups]"]
    if imported.groups:
        lines.append(
            "# Entra's group mapping is enabled: groups and direct members are provisioned"
        )
    else:
        lines.append("# Entra's job provisions no groups (its group mapping is disabled or absent)")
    lines.append(f"enabled = {'true' if imported.groups else 'false'}")
    lines += [
        "",
        "# Attribute mappings: Entra's user mapping, as its expressions are written there.",
    ]
    for note in imported.notes:
        lines += _comment(note)
    for warning in imported.warnings:
        lines += _comment(f"WARNING: {warning}")
    for m in imported.mappings:
        lines.append("")
        if m.matching_precedence is not None:
            lines.append(
                "# matching: Entra matches existing accounts on this attribute "
                f"(matchingPriority {m.matching_precedence})"
            )
        if m.apply == "creation":
            lines.append("# Entra: flowType ObjectAddOnly (sent only when the account is created)")
        lines.append(to_toml([m]).rstrip("\n"))
    if imported.filters:
        lines += ["", "# Scoping filters of Entra's user mapping: clauses AND, filters OR."]
        lines.append(to_toml([], imported.filters).strip("\n"))
    return "\n".join(lines) + "\n"


def validated(text: str, path: Path) -> Config:
    """``text`` loaded as ``--config path`` would load it, every mapping and scoping filter
    compiled (:class:`~bulkprov.pipeline.Engine`); a :class:`ConfigError` otherwise."""
    from bulkprov.pipeline import Engine

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # a bug here, never the user's: say so
        raise ConfigError(f"bulkprov migrate wrote TOML it cannot read back: {exc}") from exc
    cfg = resolve_paths(parse_config(data, path=str(path)), path.parent)
    Engine(cfg)
    return cfg


def differences(
    cfg: Config, imported: Imported, mode: str | None, service_principal_id: str | None = None
) -> list[str]:
    """How an existing config differs from Entra's job (its mappings, filters, groups,
    scope mode and service principal); empty when it holds the job's table."""
    out = []
    sp = cfg.scope.service_principal_id
    if service_principal_id is not None and sp is not None and sp != service_principal_id:
        out.append(
            f"scope.service_principal_id is {sp}, not the service principal whose job this is "
            f"({service_principal_id})"
        )
    mine = {m.target: m for m in cfg.mappings}
    theirs = {m.target: m for m in imported.mappings}
    for target in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(target), theirs.get(target)
        if a is None:
            out.append(f"Entra maps {target!r}; the config does not")
        elif b is None:
            out.append(f"the config maps {target!r}; Entra does not")
        elif a != b:
            out.append(f"the mapping of {target!r} differs from Entra's")
    if list(cfg.scope.filters) != list(imported.filters):
        out.append("the scoping filters differ from Entra's")
    if imported.groups is not None and cfg.groups.enabled != imported.groups:
        out.append(f"groups.enabled is {cfg.groups.enabled}, Entra's job: {imported.groups}")
    if mode is not None and cfg.scope.mode != mode:
        out.append(f'scope.mode is "{cfg.scope.mode}", Entra\'s job: "{mode}"')
    return out


@dataclass
class CutoverReport:
    """A plan read as a cut-over (:func:`analyse`)."""

    #: matched accounts that need nothing (Entra provisioned them as the mapping says)
    in_sync: list[dict[str, Any]] = field(default_factory=list)
    #: matched accounts whose values Entra left behind: one PATCH each
    drifted: list[dict[str, Any]] = field(default_factory=list)
    #: users without an account: created (Entra failed them, or they are new)
    absent: list[dict[str, Any]] = field(default_factory=list)
    #: creates whose user seems to have an account already: (operation, account)
    duplicates: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    #: users whose source data fails (nothing is sent for them)
    failed: list[dict[str, Any]] = field(default_factory=list)
    #: operations of a state that already manages users (update, disable, delete, deferred)
    other: list[dict[str, Any]] = field(default_factory=list)
    #: accounts nobody manages, left alone: active ones, and inactive ones
    unmanaged_active: list[dict[str, Any]] = field(default_factory=list)
    unmanaged_inactive: list[dict[str, Any]] = field(default_factory=list)
    #: the plan's disables/deletes exceed the accidental-deletion threshold
    held: bool = False
    held_note: str | None = None
    #: the target was not listed (the state already completed a sync): unknown accounts
    listed: bool = True

    @property
    def safe(self) -> bool:
        """No create for a user who has an account; nothing held by the threshold."""
        return not self.duplicates and not self.held and self.listed

    def reasons(self) -> list[str]:
        """Why it is not safe to switch (empty when it is)."""
        out = []
        if self.duplicates:
            out.append(
                f"{len(self.duplicates)} create(s) would duplicate an account the user already "
                "has (same userName, email or externalId): the matching attribute does not find "
                "them — map userName (matching_precedence 1) from the attribute Entra's "
                "accounts were made with, then run migrate again"
            )
        if self.held:
            out.append(self.held_note or "disables/deletes exceed the threshold")
        if not self.listed:
            out.append(
                "the state already completed a sync, so the target was not matched again: "
                "the cut-over is done (use `bulkprov plan` and `bulkprov sync`)"
            )
        return out


def _identities(values: dict[str, Any]) -> list[str]:
    out = []
    for path in _IDENTITY_PATHS:
        value = values.get(path)
        if isinstance(value, str) and value and value != "[Redact]":
            out.append(value.lower())
    return out


def analyse(plan: dict[str, Any]) -> CutoverReport:
    """Read ``plan`` (with ``"unmanaged"``) as a cut-over."""
    report = CutoverReport(held=bool(plan.get("held")), held_note=plan.get("note"))
    accounts: Sequence[dict[str, Any]] | None = plan.get("unmanaged")
    report.listed = accounts is not None
    owner: dict[str, dict[str, Any]] = {}
    for account in accounts or ():
        (report.unmanaged_active if account.get("active") else report.unmanaged_inactive).append(
            account
        )
        for key in (account.get("user_name"), account.get("external_id"), *account["emails"]):
            if isinstance(key, str) and key:
                owner.setdefault(key.lower(), account)
    for op in plan["operations"]:
        action = op["action"]
        if action == "link":
            (report.drifted if op.get("changes") else report.in_sync).append(op)
        elif action == "create":
            hit = next((owner[k] for k in _identities(op.get("values") or {}) if k in owner), None)
            if hit is not None:
                report.duplicates.append((op, hit))
            report.absent.append(op)
        elif action == "failed":
            report.failed.append(op)
        else:
            report.other.append(op)
    return report
