"""The value model of the expression language.

Entra's expression language is string-typed: numbers are strings (``Mid([x], 1, 3)``),
booleans are the strings ``"True"``/``"False"``, dates are strings in
``M/d/yyyy h:mm:ss tt``. A value here is one of:

* ``None``: null, "expressed by the absence of the attribute" (FUNCS, IsNull);
* ``str`` (dates are :class:`bulkprov.mapping.dates.DateTimeStr`, a ``str`` subclass that
  remembers its ``datetime``);
* ``list[str]``: a multi-valued attribute (``proxyAddresses``) or ``Split``'s result;
* ``list[dict]``: app role assignments and the complex role values built from them;
* ``dict``: a complex Graph property read as a whole (passed through untouched).

Graph JSON is normalised when an attribute is read (:func:`normalize`): ``true`` becomes
``"True"`` (.NET ``Boolean.ToString()``), numbers become their decimal text, an empty list
becomes null, and ``None`` items of a list are dropped.
"""

from __future__ import annotations

import re
from typing import Any

from bulkprov.errors import UserDataError

TRUE = "True"
FALSE = "False"

_INT = re.compile(r"\s*[+-]?\d+\s*\Z")
_HEX = re.compile(r"\s*&[Hh]([0-9A-Fa-f]+)\s*\Z")
_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*\Z")


#: how deep lists may nest in a user's value (Graph's are flat; JSON allows 1,024 levels,
#: more than Python's recursion limit)
MAX_LIST_DEPTH = 32


def normalize(value: Any, _depth: int = 0) -> Any:
    """Graph JSON → language value (see the module docstring).

    Raises:
        UserDataError: lists nested more than :data:`MAX_LIST_DEPTH` deep, or an integer
            too long to print (Python refuses past 4,300 digits).
    """
    if value is None or value.__class__ is str:
        return value
    if value is True:
        return TRUE
    if value is False:
        return FALSE
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:
            raise UserDataError("a number is too long to read") from None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list | tuple):
        if _depth >= MAX_LIST_DEPTH:
            raise UserDataError(f"a value holds lists nested more than {MAX_LIST_DEPTH} deep")
        items = [normalize(v, _depth + 1) for v in value if v is not None]
        return items or None
    return value


def bool_text(flag: bool) -> str:
    return TRUE if flag else FALSE


def text(value: Any, func: str, what: str = "argument") -> str:
    """A single string from a non-null value; a one-element list is its element.

    Raises:
        UserDataError: for a multi-valued or complex value.
    """
    if value.__class__ is str or isinstance(value, str):
        return value
    while isinstance(value, list):  # a loop, not recursion: [[[…]]] can nest 1,000 deep
        if len(value) != 1:
            raise UserDataError(
                f"{func}: {what} is multi-valued ({len(value)} values); expected one value"
            )
        value = value[0]
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return bool_text(value)
    if isinstance(value, int | float):
        return str(normalize(value))
    raise UserDataError(f"{func}: {what} is a complex value, not a string")


def opt_text(value: Any, func: str, what: str = "argument") -> str | None:
    """Like :func:`text`, but null stays null."""
    return None if value is None else text(value, func, what)


#: .NET ``Int64``: the widest integer an argument can be
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


#: the longest string a function may build. Nothing legitimate comes near it (Graph's
#: string properties hold a few thousand characters); without it a few nested calls
#: that grow their input (ConvertToBase64 ×2.7, Replace by a longer string) exhaust memory.
MAX_TEXT_LENGTH = 1_000_000


def check_length(length: int, func: str) -> None:
    """Raise when a result of ``length`` characters would be longer than allowed.

    Raises:
        UserDataError: naming the function and the limit.
    """
    if length > MAX_TEXT_LENGTH:
        raise UserDataError(
            f"{func}: the result would be {length:,} characters long; a value may be at "
            f"most {MAX_TEXT_LENGTH:,}"
        )


def shown(s: str, limit: int = 60) -> str:
    """``repr(s)`` for an error message, cut in the middle when longer than ``limit``: a
    user's value can be a megabyte, and messages end up in the provisioning log."""
    if len(s) <= limit:
        return repr(s)
    half = (limit - 1) // 2
    return repr(s[:half] + "…" + s[-half:]) + f" ({len(s):,} characters)"


def to_int(value: Any, func: str, what: str) -> int:
    """An integer argument (``"7"``, ``"-10"``, ``"&HF"``); VB accepts surrounding spaces.

    Raises:
        UserDataError: null, not an integer, or outside .NET's Int64 (Python would carry
            any size, and fail to convert one past 4,300 digits).
    """
    if value is None:
        raise UserDataError(f"{func}: {what} is null; expected an integer")
    s = text(value, func, what)
    if _INT.match(s):
        digits = s.strip().lstrip("+-").lstrip("0")
        number = int(s) if len(digits) <= 20 else None
    else:
        hex_match = _HEX.match(s)
        if not hex_match:
            raise UserDataError(f"{func}: {what} {shown(s)} is not an integer")
        digits = hex_match.group(1).lstrip("0")
        number = int(digits or "0", 16) if len(digits) <= 16 else None
    if number is None or not INT64_MIN <= number <= INT64_MAX:
        raise UserDataError(
            f"{func}: {what} {shown(s.strip())} is outside the range of a 64-bit integer"
        )
    return number


def as_number(value: str) -> float | None:
    """The number a string spells, or ``None``."""
    if _NUMBER.match(value):
        return float(value)
    return None


def is_truthy(value: Any, func: str) -> bool:
    """A condition value: "True"/"False" (any case) or a number (non-zero is true).

    Null is false. This is VB's ``CBool`` on a string.

    Raises:
        UserDataError: any other string.
    """
    if value is None:
        return False
    s = text(value, func, "condition")
    if s == TRUE:
        return True
    if s == FALSE:
        return False
    low = s.strip().lower()
    if low == "true":
        return True
    if low == "false" or low == "":
        return False
    num = as_number(s)
    if num is not None:
        return num != 0
    raise UserDataError(f'{func}: {shown(s)} is not a boolean (expected "True" or "False")')


def is_null_or_empty(value: Any) -> bool:
    return value is None or value == "" or value == []
