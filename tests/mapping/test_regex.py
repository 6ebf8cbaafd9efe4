""".NET → Python regex translation (patterns and replacement strings)."""

from __future__ import annotations

import re

import pytest

from bulkprov.mapping.regex import (
    check_replacement,
    compile_dotnet,
    translate_pattern,
    translate_replacement,
)


@pytest.mark.parametrize(
    ("dotnet", "python"),
    [
        (r"(?<isdCode>\d* )(?<phone>\d{10})", r"(?P<isdCode>\d* )(?P<phone>\d{10})"),
        (r"(?'name'x)", r"(?P<name>x)"),
        (r"(?<c>\w)\k<c>", r"(?P<c>\w)(?P=c)"),
        (r"(?<c>\w)\k'c'", r"(?P<c>\w)(?P=c)"),
        (r"(?<=a)b(?<!c)", r"(?<=a)b(?<!c)"),  # lookbehind untouched
        (r"[(?<x>)]", r"[(?<x>)]"),  # inside a character class
        (r"[]a](?<x>b)", r"[]a](?P<x>b)"),  # ']' first in a class is literal
        (r"[^]a](?<x>b)", r"[^]a](?P<x>b)"),
        (r"\(?<x>", r"\(?<x>"),  # an escaped parenthesis is no group
        (r"(?<2>x)", r"(x)"),  # a numbered .NET group
        (r"plain", r"plain"),
    ],
)
def test_translate_pattern(dotnet: str, python: str) -> None:
    """Named groups and backreferences are rewritten; everything else is kept."""
    assert translate_pattern(dotnet) == python
    re.compile(translate_pattern(dotnet))


@pytest.mark.parametrize(
    ("dotnet", "python"),
    [
        ("${phone}", r"\g<phone>"),
        ("$1-${2}", r"\g<1>-\g<2>"),
        ("$0|$&", r"\g<0>|\g<0>"),
        ("$$5", "$5"),
        ("C:\\dir", "C:\\\\dir"),
        ("cost: $", "cost: $"),
        ("${not closed", "${not closed"),
        ("plain", "plain"),
    ],
)
def test_translate_replacement(dotnet: str, python: str) -> None:
    """.NET substitutions become Python templates; backslashes stay literal."""
    assert translate_replacement(dotnet) == python


def test_check_replacement() -> None:
    """Group references are checked against the pattern."""
    pattern = compile_dotnet(r"(?<user>\w+)@(\w+)")
    assert pattern.sub(check_replacement(pattern, "$2:${user}"), "ada@contoso") == "contoso:ada"
    with pytest.raises(ValueError, match="no group named 'nope'"):
        check_replacement(pattern, "${nope}")
    with pytest.raises(ValueError, match="no group 3"):
        check_replacement(pattern, "$3")


def test_compile_is_cached() -> None:
    """The same pattern compiles once."""
    assert compile_dotnet("(?<a>x)") is compile_dotnet("(?<a>x)")
