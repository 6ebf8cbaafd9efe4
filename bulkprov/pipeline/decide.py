"""What to do with one user: Entra's per-object decision, as a pure function.

Inputs are what the pipeline already holds for the user (scope decision, mapped values,
the stored link, a matching target account); the output is one :class:`Decision`. No I/O,
so the same logic serves ``sync``, ``plan`` and ``provision`` and is tested exhaustively.

:class:`Engine` holds what one config compiles to (the mapper, the scope, the attributes to
read) and evaluates one Graph user: validate it (:mod:`~bulkprov.pipeline.source_checks`),
scope it, map it, then pick its matching target account and decide. The producer
(:mod:`~bulkprov.pipeline.pages`), ``bulkprov plan`` and ``bulkprov provision`` all go through
it, one user at a time, with no I/O.

=====================================  ==========================================
situation                              decision
=====================================  ==========================================
managed, in scope, digest unchanged    skip  ("unchanged", 0 requests)
managed, in scope, values changed      update (PATCH only the changed paths)
managed, out of scope, active          disable (PATCH active=false, data kept)
managed, out of scope, inactive        skip
managed, hard-deleted, delete wanted   delete (DELETE; only with ``delete=True``)
unmanaged, out of scope                skip  (never touched)
unmanaged, in scope, matching account  link  (+ PATCH of values that differ)
unmanaged, in scope, no match known    create (POST; a 409 is resolved by matching)
=====================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bulkprov.checkpoint.store import UserState
from bulkprov.config import Config
from bulkprov.errors import UserDataError
from bulkprov.escrow import EscrowEntry
from bulkprov.graph.directory import ScopeSources
from bulkprov.mapping import MappedUser, MappingContext, UserMapper, compile_mappings
from bulkprov.pipeline import source_checks
from bulkprov.scim.paths import ZOOM_SCHEMAS, get_value
from bulkprov.scim.requests import diff_values
from bulkprov.scope import ScopeEvaluator, compile_scope

Kind = Literal["create", "update", "link", "disable", "delete", "skip"]


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    reason: str = ""
    scim_id: str | None = None
    #: target path -> new value, for update / link (what the PATCH carries); ``None``
    #: removes the path (``target.clear_on_null``)
    changes: dict[str, Any] = field(default_factory=dict)
    #: what the target holds for the user's mapped paths before the PATCH, as far as known
    #: (the last values sent, or the matched account's): a filtered path whose element it
    #: does not hold is sent with ``add`` (:func:`bulkprov.scim.requests.patch_operations`)
    known: dict[str, Any] | None = None


def target_values(resource: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The values a target resource holds at the given paths (absent paths omitted)."""
    out: dict[str, Any] = {}
    for path in paths:
        value = get_value(dict(resource), path)
        if value is not None:
            out[path] = value
    return out


def decide(
    *,
    in_scope: bool,
    scope_reason: str,
    update_values: Mapping[str, Any] | None,
    digest: str | None,
    state: UserState | None,
    match: tuple[str, Mapping[str, Any]] | None,
    delete: bool = False,
    targets: Collection[str] = (),
    clearable: Collection[str] = (),
) -> Decision:
    """Decide for one user. ``update_values``/``digest`` are ``None`` when not mapped.

    ``delete``: the user was hard-deleted in Entra and the config asks for DELETE (Entra's
    "Delete" target object action); every other way out of scope is a disable.
    ``targets``: every path the mapping may send on update (what a matched account is read
    at); ``clearable``: the paths removed from the target when their source is cleared
    (``target.clear_on_null``; by default none: Entra never provisions nulls).
    """
    if state is not None and state.scim_id:
        if not in_scope and delete:
            return Decision("delete", scope_reason, state.scim_id)
        if not in_scope:
            if state.active:
                return Decision("disable", scope_reason, state.scim_id, {"active": False})
            return Decision(
                "skip", f"out of scope and already disabled ({scope_reason})", state.scim_id
            )
        assert update_values is not None
        if digest == state.digest and state.active:
            return Decision("skip", "unchanged", state.scim_id)
        changes = diff_values(update_values, state.attrs, clearable)
        if not state.active and "active" not in update_values:
            changes["active"] = True
        if not changes:
            return Decision("skip", "unchanged", state.scim_id)
        return Decision("update", "values changed", state.scim_id, changes, state.attrs)
    if not in_scope:
        return Decision("skip", scope_reason)
    assert update_values is not None
    if match is not None:
        scim_id, resource = match
        current = target_values(resource, targets or update_values)
        changes = diff_values(update_values, current, clearable)
        return Decision("link", "matched an existing account", scim_id, changes, current)
    return Decision("create", "no matching account")


#: decisions an escrowed user waits for (bulkprov.escrow); deprovisioning is never held back
_ESCROWED_KINDS = frozenset({"create", "update", "link"})
NOT_ASSIGNED = "not assigned to the application (directly or through a group)"

#: (graph id, in scope, scope reason, mapped values or ``None``) of one source user
Evaluated = tuple[str, bool, str, MappedUser | None]
HARD_DELETED = "deleted permanently in Entra ID"
SOFT_DELETED = "deleted in Entra ID (soft delete, restorable)"


def removed_entry(item: dict[str, Any]) -> tuple[Evaluated, bool]:
    """A delta ``@removed`` entry: ``changed`` = soft delete, ``deleted`` = hard delete.

    Returns the user as out of scope, and whether it was hard-deleted.
    """
    graph_id = item.get("id")
    if not isinstance(graph_id, str) or not graph_id:
        raise UserDataError("a removed Graph user has no 'id'")
    removed = item.get("@removed")
    if isinstance(removed, dict) and removed.get("reason") == "deleted":
        return (graph_id, False, HARD_DELETED, None), True
    return (graph_id, False, SOFT_DELETED, None), False


def escrow_deferral(escrow: Mapping[str, EscrowEntry], graph_id: str, kind: str) -> str | None:
    """Why a user waits in escrow instead of being sent now (the Skipped reason), or ``None``.

    A user escrowed after a failure waits until its next retry is due for a create, update
    or link; deprovisioning never waits. Sync and plan both ask this.
    """
    if kind not in _ESCROWED_KINDS:
        return None
    waiting = escrow.get(graph_id)
    if waiting is None or waiting.is_due():
        return None
    return waiting.deferral()


def user_name_of(mapped: MappedUser | None, state: UserState | None) -> str | None:
    """The userName to log a user under: the mapped one, else the one last sent."""
    if mapped is not None:
        return mapped.user_name
    return state.user_name if state is not None else None


class UserNames:
    """The userNames mapped on one Graph page, to fail a second user mapped to the same one.

    Two users of one page sending the same userName would race (two POSTs in flight): the
    second one in page order fails instead. The same Graph id again (a delta round may list
    a user twice) is not a duplicate. Across pages the target's uniqueness stops a second
    POST (409, then matching). Sync and plan both check each page through one of these;
    the scope is the page, not the read, so the sync keeps no per-user memory for it.
    """

    __slots__ = ("_owners",)

    def __init__(self) -> None:
        #: lowercased userName → Graph id of the first user of the page mapped to it
        self._owners: dict[str, str] = {}

    def duplicate(self, graph_id: str, mapped: MappedUser | None) -> str | None:
        """The failure reason when another user of the page has ``mapped``'s userName."""
        if mapped is None or not mapped.user_name:
            return None
        if self._owners.setdefault(mapped.user_name.lower(), graph_id) == graph_id:
            return None
        return f"userName {mapped.user_name!r} is mapped from another user too"


class Engine:
    """Everything compiled from one config, reused across runs (``--watch``) and commands."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        timeout = cfg.limits.regex_timeout
        self.mapper: UserMapper = compile_mappings(
            cfg.mappings,
            # Zoom serves no /Schemas: its known attribute types come with the profile
            resource_schemas=ZOOM_SCHEMAS if cfg.target.zoom_profile else None,
            config_path=cfg.source_path,
            regex_timeout=timeout,
        )
        self.scope: ScopeEvaluator = compile_scope(
            cfg.scope.filters, config_path=cfg.source_path, regex_timeout=timeout
        )
        self.select = sorted(
            self.mapper.source_attributes
            | self.scope.source_attributes
            | {"id", "userPrincipalName", "accountEnabled"}
        )
        mapper = self.mapper
        #: the paths an update may send (a matched account is compared on all of them)
        self.targets: tuple[str, ...] = tuple(
            p for p in mapper.targets if p not in mapper.create_only_paths
        )
        #: ``target.clear_on_null``: the paths removed from the target when the source
        #: clears them; never userName or active, nor Add-only role assignments
        self.clearable: frozenset[str] = frozenset(
            p
            for p in self.targets
            if cfg.target.clear_on_null
            and p.lower() not in ("username", "active")
            and p not in mapper.additive_paths
        )

    def evaluate(self, user: dict[str, Any], sources: ScopeSources | None = None) -> Evaluated:
        """Validate, scope and map one Graph user: (graph id, in scope, reason, mapped).

        ``sources`` (scope mode "assigned"): users not assigned are out of scope, before any
        scoping filter (Entra applies assignment first); assigned users' app roles feed
        ``[appRoleAssignments]``. Raises :class:`UserDataError` when the user cannot be
        processed at all.
        """
        graph_id = source_checks.check_source(user)
        assigned = sources.assigned if sources is not None else None
        if assigned is not None and graph_id not in assigned:
            return graph_id, False, NOT_ASSIGNED, None
        decision = self.scope.evaluate(user)
        in_scope, reason = decision.in_scope, decision.reason
        if in_scope and user.get("accountEnabled") is False:
            # Entra: "Provisioning a user that is disabled in Microsoft Entra ID isn't
            # supported" and IsSoftDeleted is true for accountEnabled=false (facts.md §2.6).
            in_scope, reason = False, "accountEnabled is false"
        if not in_scope:
            return graph_id, False, reason, None
        roles = sources.roles_of(graph_id) if sources is not None else ()
        mapped = self.mapper.map_user(
            user, MappingContext(is_soft_deleted=False, app_role_assignments=roles)
        )
        if not mapped.user_name or not isinstance(mapped.user_name, str):
            raise UserDataError("the mapping gave no userName (the matching attribute is empty)")
        for path, value in mapped.values.items():
            source_checks.check_value(path, value)
        source_checks.check_user_name(mapped.user_name, email=self.cfg.target.user_name_is_email)
        return graph_id, True, reason, mapped

    def entry(
        self, item: dict[str, Any], sources: ScopeSources | None = None
    ) -> tuple[Evaluated, bool]:
        """One item of a Graph page: a user (see :meth:`evaluate`) or a delta ``@removed``
        entry; and whether it is a hard delete. Sync and plan both read pages through here.
        """
        if "@removed" in item:
            return removed_entry(item)
        return self.evaluate(item, sources), False

    def decide(
        self,
        evaluated: Evaluated,
        state: UserState | None,
        match: tuple[str, dict[str, Any]] | None,
        *,
        hard_deleted: bool,
    ) -> Decision:
        """The decision for one evaluated user: sync and plan both decide through here."""
        _, in_scope, reason, mapped = evaluated
        return decide(
            in_scope=in_scope,
            scope_reason=reason,
            update_values=mapped.update_values if mapped else None,
            digest=mapped.digest if mapped else None,
            state=state,
            match=match,
            delete=hard_deleted and self.cfg.deprovision.delete_hard_deleted,
            targets=self.targets,
            clearable=self.clearable,
        )

    def delta_url(self, base_url: str) -> str:
        """The first request of a full ``users/delta`` round (facts.md §7.3)."""
        return f"{base_url}/users/delta?$select={','.join(self.select)}"

    def pick_match(
        self,
        mapped: MappedUser | None,
        state: UserState | None,
        index: Mapping[str, tuple[str, dict[str, Any]]] | None,
    ) -> tuple[str, dict[str, Any]] | None:
        """The target account a user not in the state matches, from ``index`` (matching key
        → account): the first matching attribute found, in precedence order (Entra's way).

        Pure: sync and plan both match through here.
        """
        if mapped is None or state is not None or not index:
            return None
        for key in self.match_keys(mapped):
            found = index.get(key)
            if found is not None:
                return found
        return None

    def match_keys(self, mapped: MappedUser) -> list[str]:
        """Index keys for the mapping's matching attributes, in precedence order."""
        values = mapped.values
        return [
            f"{path}\x00{value.lower()}"  # the key format: resource_keys() writes the same
            for path in self.mapper.matching
            if isinstance(value := values.get(path), str) and value
        ]

    def resource_keys(self, resource: dict[str, Any]) -> list[str]:
        """The same keys for an account listed from the target (what :meth:`match_keys`
        of a user is looked up against)."""
        return [
            f"{path}\x00{value.lower()}"
            for path in self.mapper.matching
            if isinstance(value := get_value(resource, path), str) and value
        ]
