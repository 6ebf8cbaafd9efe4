"""What one evaluation may read besides the Graph user: the per-user mapping context."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class MappingContext:
    """Per-user facts that are not Graph user properties.

    Attributes:
        is_soft_deleted: Entra's ``[IsSoftDeleted]`` ("True"/"False" in expressions): the
            user is deleted, disabled or no longer in scope, and should be deactivated.
        app_role_assignments: ``[appRoleAssignments]``: the user's assignments to this
            app, shaped like Graph's ``appRoleAssignment`` plus the role's ``value`` and
            ``displayName``, e.g. ``{"appRoleId": "…", "value": "Licensed",
            "displayName": "Licensed"}``.
        is_unique: ``SelectUniqueValue``'s uniqueness check against the target,
            ``is_unique(target_path, value)``; without it the first candidate is used.
        now: a fixed UTC time for ``Now()`` (tests, provision-on-demand replays); the
            current time when ``None``.
    """

    is_soft_deleted: bool = False
    app_role_assignments: Sequence[Mapping[str, Any]] = ()
    is_unique: Callable[[str, str], bool] | None = None
    now: datetime | None = None


#: the context used when the caller gives none
DEFAULT_CONTEXT = MappingContext()
