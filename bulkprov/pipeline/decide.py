"""What to do with one user: Entra's per-object decision, as a pure function.

Inputs are what the pipeline already holds for the user (scope decision, mapped values,
the stored link, a matching target account); the output is one :class:`Decision`. No I/O,
so the same logic serves ``sync``, ``plan`` and ``provision`` and is tested exhaustively.

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bulkprov.checkpoint.store import UserState
from bulkprov.scim.paths import get_value
from bulkprov.scim.requests import diff_values

Kind = Literal["create", "update", "link", "disable", "delete", "skip"]


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    reason: str = ""
    scim_id: str | None = None
    #: target path -> new value, for update / link (what the PATCH carries)
    changes: dict[str, Any] = field(default_factory=dict)


def target_values(resource: Mapping[str, Any], paths: Mapping[str, Any]) -> dict[str, Any]:
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
) -> Decision:
    """Decide for one user. ``update_values``/``digest`` are ``None`` when not mapped.

    ``delete``: the user was hard-deleted in Entra and the config asks for DELETE (Entra's
    "Delete" target object action); every other way out of scope is a disable.
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
        changes = diff_values(update_values, state.attrs)
        if not state.active and "active" not in update_values:
            changes["active"] = True
        if not changes:
            return Decision("skip", "unchanged", state.scim_id)
        return Decision("update", "values changed", state.scim_id, changes)
    if not in_scope:
        return Decision("skip", scope_reason)
    assert update_values is not None
    if match is not None:
        scim_id, resource = match
        current = target_values(resource, update_values)
        return Decision(
            "link", "matched an existing account", scim_id, diff_values(update_values, current)
        )
    return Decision("create", "no matching account")
