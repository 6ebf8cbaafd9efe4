"""String operations with .NET semantics: case mapping, title case, diacritics.

Python's ``str.upper``/``lower`` apply Unicode *full* case mapping (``"ß".upper()`` is
``"SS"``); .NET's invariant culture applies *simple* mapping (one character to one), so
``ToUpper("straße")`` is ``"STRAßE"`` in Entra. These helpers keep .NET's behaviour.
"""

from __future__ import annotations

import re
import unicodedata

from bulkprov.mapping._diacritics import DIACRITICS


def _simple(ch: str, mapped: str) -> str:
    if len(mapped) == 1:
        return mapped
    if ch == "\u0130":  # İ: simple lowercase mapping is 'i'
        return "i"
    return ch


def upper(s: str, culture: str | None = None) -> str:
    """.NET ``ToUpper`` with the invariant culture (or Turkish/Azeri dotted-i rules)."""
    if culture and culture[:2].lower() in ("tr", "az"):
        s = s.replace("i", "\u0130")
    r = s.upper()
    if len(r) == len(s):
        return r
    return "".join(_simple(c, c.upper()) for c in s)


def lower(s: str, culture: str | None = None) -> str:
    """.NET ``ToLower`` with the invariant culture (or Turkish/Azeri dotted-i rules)."""
    if culture and culture[:2].lower() in ("tr", "az"):
        s = s.replace("I", "\u0131").replace("\u0130", "i")
    r = s.lower()
    if len(r) == len(s):
        return r
    return "".join(_simple(c, c.lower()) for c in s)


# .NET TextInfo.IsWordSeparator: these Unicode general categories end a word.
_WORD_SEPARATORS = frozenset(
    {"Zs", "Zl", "Zp", "Cc", "Cf", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So"}
)
_LETTERS = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo"})


def title_case(s: str) -> str:
    """PCase without separators: .NET ``TextInfo.ToTitleCase`` on the lowered string.

    Entra's PCase lower-cases everything but the first letter of each word ("PABLO
    GONSALVES (SECOND)" → "Pablo Gonsalves (Second)"), so the string is lowered first
    (``ToTitleCase`` alone would keep all-caps words). As in .NET, a word starts at a
    letter; digits and marks continue a word ("1st" → "1St"), an apostrophe inside a word
    does not start a new one ("o'neil" → "O'neil"), and every category in
    ``_WORD_SEPARATORS`` ends it.
    """
    s = lower(s)
    out: list[str] = []
    i = 0
    n = len(s)
    category = unicodedata.category
    while i < n:
        ch = s[i]
        if category(ch) in _LETTERS:
            out.append(_simple(ch, ch.upper()))
            i += 1
            while i < n:
                c = s[i]
                cat = category(c)
                if cat in _LETTERS or c == "'" or cat not in _WORD_SEPARATORS:
                    out.append(c)
                    i += 1
                else:
                    break
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def proper_case(s: str, separators: str) -> str:
    """PCase with explicit separators: only those characters separate words."""
    s = lower(s)
    out: list[str] = []
    start = True
    for ch in s:
        if ch in separators:
            out.append(ch)
            start = True
        elif start:
            out.append(_simple(ch, ch.upper()))
            start = False
        else:
            out.append(ch)
    return "".join(out)


_SINGLE = {k: v for v, keys in DIACRITICS.items() for k in keys if len(k) == 1}
_TRANSLATE = str.maketrans(_SINGLE)
_MULTI = {k: v for v, keys in DIACRITICS.items() for k in keys if len(k) > 1}
# Longest first, so "ā́" (ā + U+0301) wins over "ā".
_MULTI_RE = re.compile("|".join(re.escape(k) for k in sorted(_MULTI, key=len, reverse=True)))


def normalize_diacritics(s: str) -> str:
    """Replace the characters of Microsoft's table; others are kept (``"Zoë"`` → ``"Zoe"``)."""
    if s.isascii():
        return s
    s = unicodedata.normalize("NFC", s)
    if _MULTI_RE.search(s):
        s = _MULTI_RE.sub(lambda m: _MULTI[m.group()], s)
    return s.translate(_TRANSLATE)
