"""Conformance cases for the expression language, read from ``cases/*.json``.

Each file is ``{"given": {Graph user}, "context": {…}?, "cases": [case, …]}`` and a case is
one of::

    {"expression": "...", "result": <value>}                 exact result (null = not sent)
    {"expression": "...", "match": "<regex>"}                for Guid(), RandomString(), …
    {"expression": "...", "error": "<substring>", "phase": "compile" | "evaluate"}

with an optional ``"context"`` (``is_soft_deleted``, ``app_role_assignments``, ``now``)
overriding the file's, and an optional ``"comment"``. Run one file with
``BULKPROV_CASES=dates.json pytest tests/mapping/test_conformance.py``.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bulkprov.errors import UserDataError
from bulkprov.mapping import FUNCTIONS, ExpressionSyntaxError, MappingContext, compile_expression

CASES_DIR = Path(__file__).parent / "cases"


def _files() -> list[Path]:
    only = os.environ.get("BULKPROV_CASES")
    files = sorted(CASES_DIR.glob("*.json"))
    if only:
        files = [f for f in files if f.name == only or f.stem == only]
    return files


def _context(raw: dict[str, Any]) -> MappingContext:
    now = raw.get("now")
    return MappingContext(
        is_soft_deleted=bool(raw.get("is_soft_deleted", False)),
        app_role_assignments=tuple(raw.get("app_role_assignments", ())),
        now=datetime.fromisoformat(now) if now else None,
    )


def _load() -> list[Any]:
    params = []
    for path in _files():
        data = json.loads(path.read_text(encoding="utf-8"))
        for i, case in enumerate(data["cases"]):
            ctx = case["context"] if "context" in case else data.get("context", {})
            expression = case["expression"].replace("\n", " ")
            short = expression if len(expression) <= 70 else expression[:67] + "..."
            params.append(
                pytest.param(data["given"], case, _context(ctx), id=f"{path.stem}[{i}] {short}")
            )
    return params


ALL_CASES = _load()


@pytest.mark.parametrize(("given", "case", "ctx"), ALL_CASES)
def test_case(given: dict[str, Any], case: dict[str, Any], ctx: MappingContext) -> None:
    """The expression gives the documented result, or fails with the documented error."""
    expression = case["expression"]
    if "error" in case:
        with pytest.raises((ExpressionSyntaxError, UserDataError)) as info:
            compile_expression(expression).evaluate(given, ctx)
        assert case["error"] in str(info.value)
        phase = case["phase"]
        expected = ExpressionSyntaxError if phase == "compile" else UserDataError
        assert isinstance(info.value, expected), f"expected a {phase}-time error"
        return
    result = compile_expression(expression).evaluate(given, ctx)
    if "match" in case:
        assert isinstance(result, str)
        assert re.fullmatch(case["match"], result), result
    else:
        assert result == case["result"]


def test_every_function_has_cases() -> None:
    """Each of the 44 registered functions appears in at least one conformance case."""
    if os.environ.get("BULKPROV_CASES"):
        pytest.skip("running a single case file")
    text = " ".join(p.values[1]["expression"] for p in ALL_CASES)
    missing = sorted(name for name in FUNCTIONS if not re.search(rf"\b{name}\(", text))
    assert missing == []
    assert len(FUNCTIONS) == 44  # Microsoft's 43 + AssertiveAppRoleAssignmentsComplex
