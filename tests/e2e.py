"""Helpers for end-to-end tests: the expected SCIM store, computed from the mapping."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from bulkprov.config import Config
from bulkprov.mapping import MappingContext, compile_mappings
from bulkprov.scim.paths import get_value
from bulkprov.scope import compile_scope


def expected_values(cfg: Config, users: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """userName (lower) -> mapped values, for every user the config puts in scope."""
    mapper = compile_mappings(cfg.mappings)
    scope = compile_scope(cfg.scope.filters)
    out = {}
    for user in users:
        if user.get("accountEnabled") is False or not scope.evaluate(user).in_scope:
            continue
        mapped = mapper.map_user(user, MappingContext(is_soft_deleted=False))
        out[str(mapped.user_name).lower()] = mapped.values
    return out


def store_problems(expected: dict[str, dict[str, Any]], store: list[dict[str, Any]]) -> list[str]:
    """Everything that differs between the expected users and the SCIM store."""
    names = Counter(str(r.get("userName", "")).lower() for r in store)
    problems = [f"duplicate: {n} x{c}" for n, c in names.items() if c > 1]
    problems += [f"extra: {n}" for n in names if n not in expected]
    by_name = {str(r.get("userName", "")).lower(): r for r in store}
    for name, values in expected.items():
        res = by_name.get(name)
        if res is None:
            problems.append(f"missing: {name}")
            continue
        for path, value in values.items():
            got = get_value(res, path)
            if got != value:
                problems.append(f"{name}: {path} = {got!r}, expected {value!r}")
    return problems
