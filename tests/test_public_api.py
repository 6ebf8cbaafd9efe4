"""The public API: what ``bulkprov.__all__`` lists, and nothing else (httpx's own test)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import bulkprov
import bulkprov.errors
from bulkprov.mapping import ExpressionSyntaxError


def test_every_name_imports_once():
    # (its order is ruff's RUF022: scripts/check)
    assert len(set(bulkprov.__all__)) == len(bulkprov.__all__)
    for name in bulkprov.__all__:
        assert getattr(bulkprov, name) is not None, name


def test_nothing_else_is_public():
    public = {
        name
        for name in dir(bulkprov)
        if not name.startswith("_") and not inspect.ismodule(getattr(bulkprov, name))
    }
    assert public == set(bulkprov.__all__)


def test_every_error_of_the_tree_is_exported():
    tree = {
        name
        for name, obj in vars(bulkprov.errors).items()
        if isinstance(obj, type)
        and issubclass(obj, Exception)
        and obj.__module__ == "bulkprov.errors"
    }
    assert tree <= set(bulkprov.__all__)
    assert issubclass(ExpressionSyntaxError, bulkprov.BulkProvError)
    assert bulkprov.ExpressionSyntaxError is ExpressionSyntaxError


def test_an_unknown_name_is_an_attribute_error():
    try:
        bulkprov.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("bulkprov.no_such_name resolved")


def test_importing_the_errors_loads_neither_the_pipeline_nor_httpx():
    code = (
        "import sys, bulkprov.errors; "
        "print(sorted(m for m in ('bulkprov.pipeline', 'httpx', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
