""".NET regular expressions on Python's ``re``.

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
"""

from __future__ import annotations

import re
from functools import lru_cache

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


@lru_cache(maxsize=512)
def compile_dotnet(pattern: str) -> re.Pattern[str]:
    """Compile a .NET pattern (cached). Raises :class:`re.error` when it is invalid."""
    return re.compile(translate_pattern(pattern))


def check_replacement(pattern: re.Pattern[str], replacement: str) -> str:
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
