""".NET regular expressions, run by the ``regex`` package with a time limit per match.

Entra evaluates ``Replace`` patterns and ``REGEX MATCH`` scoping clauses with .NET's
``System.Text.RegularExpressions``. The two dialects agree on everything Microsoft's
examples use except the named-group syntax, which this module translates:

=========================  ==========================
.NET                       Python
=========================  ==========================
``(?<name>…)``             ``(?P<name>…)``
``(?'name'…)``             ``(?P<name>…)``
``\\k<name>``, ``\\k'name'`` ``(?P=name)``
replacement ``${name}``    ``\\g<name>``
replacement ``$1``/``${1}`` ``\\g<1>``
replacement ``$0``, ``$&`` ``\\g<0>``
replacement ``$$``          ``$``
=========================  ==========================

Lookbehind ``(?<=``/``(?<!`` is left alone, as is everything inside ``[…]`` classes and
after a backslash. Backslashes in a .NET replacement are literal, so they are escaped.

Patterns run on the ``regex`` package (PyPI), not on ``re``: like .NET's ``Regex`` (its
``MatchTimeout``), it takes a time limit per call (``timeout=``). ``re`` has none, and
``(a|aa)+$`` searched in 50 characters runs there for over an hour (measured: 0.13 s at
28 characters, ×1.6 per character). It is also nearer to .NET than ``re`` in what it
accepts (``\\p{Lu}`` classes, variable-length lookbehind). Every match is given
``limits.regex_timeout`` seconds; the ``regex`` package counts them in CPU time of the
process (C ``clock()``), checked as the match runs.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import Any

import regex

from bulkprov.config import DEFAULT_REGEX_TIMEOUT
from bulkprov.errors import UserDataError

#: a compiled pattern of the ``regex`` package (it ships no type information)
Pattern = Any

__all__ = [
    "DEFAULT_REGEX_TIMEOUT",
    "Pattern",
    "PatternError",
    "check_replacement",
    "compile_dotnet",
    "timed_out",
    "translate_pattern",
    "translate_replacement",
]

_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


def translate_pattern(pattern: str) -> str:
    """Rewrite .NET group syntax into Python's (see the module docstring)."""
    if "(?<" not in pattern and "(?'" not in pattern and "\\k" not in pattern:
        return pattern
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "k" and not in_class and i + 2 < n and pattern[i + 2] in "<'":
                close = ">" if pattern[i + 2] == "<" else "'"
                end = pattern.find(close, i + 3)
                if end > 0 and _GROUP_NAME.fullmatch(pattern[i + 3 : end]):
                    out.append(f"(?P={pattern[i + 3 : end]})")
                    i = end + 1
                    continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            # A ']' right after '[' or '[^' is a literal member, not the end.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        if ch == "(" and pattern.startswith("(?", i) and i + 2 < n and pattern[i + 2] in "<'":
            opener = pattern[i + 2]
            if opener == "<" and i + 3 < n and pattern[i + 3] in "=!":
                out.append(pattern[i : i + 4])  # lookbehind
                i += 4
                continue
            close = ">" if opener == "<" else "'"
            end = pattern.find(close, i + 3)
            if end > 0 and _GROUP_NAME.fullmatch(pattern[i + 3 : end]):
                name = pattern[i + 3 : end]
                # .NET allows numbered explicit groups (?<2>…); Python has no equivalent,
                # so they become plain capturing groups.
                out.append("(" if name.isdigit() else f"(?P<{name}>")
                i = end + 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def translate_replacement(replacement: str) -> str:
    """A .NET ``Regex.Replace`` replacement string → a Python ``re.sub`` template."""
    if "$" not in replacement and "\\" not in replacement:
        return replacement
    out: list[str] = []
    i = 0
    n = len(replacement)
    while i < n:
        ch = replacement[i]
        if ch == "\\":
            out.append("\\\\")
            i += 1
            continue
        if ch == "$" and i + 1 < n:
            nxt = replacement[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "&":
                out.append("\\g<0>")
                i += 2
                continue
            if nxt == "{":
                end = replacement.find("}", i + 2)
                name = replacement[i + 2 : end] if end > 0 else ""
                if end > 0 and _GROUP_NAME.fullmatch(name):
                    out.append(f"\\g<{name}>")
                    i = end + 1
                    continue
            if nxt.isdigit():
                j = i + 1
                while j < n and replacement[j].isdigit():
                    j += 1
                out.append(f"\\g<{replacement[i + 1 : j]}>")
                i = j
                continue
        out.append(ch)
        i += 1
    return "".join(out)


class PatternError(ValueError):
    """An invalid pattern: ``msg`` and ``pos`` (0-based, in the translated pattern, or None)."""

    def __init__(self, msg: str, pos: int | None) -> None:
        super().__init__(msg if pos is None else f"{msg} at position {pos}")
        self.msg = msg
        self.pos = pos


@lru_cache(maxsize=512)
def compile_dotnet(pattern: str) -> Pattern:
    """Compile a .NET pattern (cached).

    Raises:
        PatternError: the pattern is invalid. Its message and position are ``re``'s when
            ``re`` rejects the pattern too (its positions point at the offending
            character), else the ``regex`` package's.
    """
    translated = translate_pattern(pattern)
    try:
        return regex.compile(translated)
    except regex.error as exc:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # re's FutureWarning on nested sets
                re.compile(translated)
        except re.error as plain:
            raise PatternError(plain.msg, plain.pos) from None
        except (RecursionError, OverflowError, MemoryError):
            pass
        raise PatternError(str(getattr(exc, "msg", exc)), getattr(exc, "pos", None)) from None
    except (RecursionError, OverflowError, MemoryError) as exc:
        raise PatternError(f"the pattern is too complex ({type(exc).__name__})", None) from None


def _shown(pattern: str) -> str:
    return repr(pattern) if len(pattern) <= 60 else repr(pattern[:28] + "…" + pattern[-28:])


def timed_out(
    where: str, pattern: str, timeout: float, what: str = "the regular expression"
) -> UserDataError:
    """The error of a match that ran out of time (``where`` names the function or clause)."""
    return UserDataError(
        f"{where}: matching {what} {_shown(pattern)} took longer than {timeout:g} s on this "
        "value (limits.regex_timeout): the pattern backtracks too much"
    )


def check_replacement(pattern: Pattern, replacement: str) -> str:
    """Translate a replacement and check its group references exist in ``pattern``.

    Raises:
        ValueError: naming the unknown group.
    """
    template = translate_replacement(replacement)
    for ref in re.findall(r"\\g<([^>]*)>", template):
        if ref.isdigit():
            if int(ref) > pattern.groups:
                raise ValueError(f"the pattern has no group {ref}")
        elif ref not in pattern.groupindex:
            raise ValueError(f"the pattern has no group named {ref!r}")
    return template
