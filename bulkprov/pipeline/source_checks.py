"""Reject malformed source users before anything is sent: one Failure with a reason, not a crash.

Graph is the source of truth, but its data is typed by admins and scripts: a display name
with a control character pasted in, a 10,000-character department, a ``mail`` of
``"a@@b"``, a property of the wrong JSON type. Sending such values makes the target answer a
400 the admin cannot relate to the user (or, worse, store garbage). Each check here raises
:class:`~bulkprov.errors.UserDataError` naming the attribute, so the user ends as a Failure
with that reason and the run goes on. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bulkprov.errors import UserDataError

#: longest single attribute value sent to the target (userName, emails: see below)
MAX_VALUE_LENGTH = 1024
MAX_ID_LENGTH = 256
#: RFC 5321: a path of at most 256 octets, so an address of at most 254
MAX_EMAIL_LENGTH = 254

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Deliberately simple: one @, no spaces, a dot in the domain, no empty labels.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+$")


def _show(value: str) -> str:
    return repr(value[:40] + "…") if len(value) > 40 else repr(value)


def check_source(user: Mapping[str, Any]) -> str:
    """The Graph user's id, after checking the properties the engine itself relies on."""
    graph_id = user.get("id")
    if not isinstance(graph_id, str) or not graph_id.strip():
        raise UserDataError("the Graph user has no 'id'")
    if len(graph_id) > MAX_ID_LENGTH or _CONTROL.search(graph_id):
        raise UserDataError(f"the Graph user's 'id' is malformed: {_show(graph_id)}")
    enabled = user.get("accountEnabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise UserDataError(
            f"accountEnabled is {type(enabled).__name__} {enabled!r}, not true/false"
        )
    return graph_id


def check_value(path: str, value: Any) -> None:
    """One mapped value: a scalar (or a list of scalars) of sane size and characters."""
    if isinstance(value, list):
        for item in value:
            check_value(path, item)
        return
    if isinstance(value, dict):
        raise UserDataError(f"{path}: the source value is an object, not a single value")
    if isinstance(value, str):
        if len(value) > MAX_VALUE_LENGTH:
            raise UserDataError(
                f"{path}: value of {len(value):,} characters (at most {MAX_VALUE_LENGTH:,})"
            )
        if _CONTROL.search(value):
            raise UserDataError(f"{path}: value contains a control character: {_show(value)}")
        if _is_email_path(path) and not is_email(value):
            raise UserDataError(f"{path}: not a valid email address: {_show(value)}")


def check_user_name(user_name: str, *, email: bool) -> None:
    if email and not is_email(user_name):
        raise UserDataError(
            f"userName {_show(user_name)} is not an email address (the target requires one)"
        )


def is_email(value: str) -> bool:
    return len(value) <= MAX_EMAIL_LENGTH and _EMAIL.match(value) is not None


def _is_email_path(path: str) -> bool:
    return path.startswith("emails") and path.endswith(".value")
