"""Tokens of the expression language, each with its ``start``/``end`` offsets.

The language (Microsoft's "Reference for writing expressions for attribute mappings")::

    Function(arg, …)        names are case-sensitive
    [attributeName]         an attribute reference
    "text"                  \\" and \\\\ are the only escapes
    12   -3   1.5           bare numbers (Graph stores them as constant strings)
    &HF  &HF7               VB hex literals (BitAnd's documented example)
    vbTextCompare           a bare VB name (InStr's compare type)
    =  <>  <  <=  >  >=     comparisons, inside IIF and CBool only

Any other backslash sequence in a string is kept as written (``"\\d"`` stays ``\\d``),
which is what regex patterns written without doubling expect; Microsoft documents only
the two escapes, so this leniency is ours.

Numbers are ASCII digits, and a literal's integer part must fit .NET's ``Int64`` (VB's
``Long``, the widest integer the service can hold): a longer literal is a syntax error at
its position, not a number Python would carry through (and fail to print past 4,300
digits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bulkprov.mapping.errors import ExpressionSyntaxError

#: Entra's documented limit (KNOWN: "a maximum of 10,000 characters")
MAX_EXPRESSION_LENGTH = 10_000

#: .NET ``Int64`` (``Long``): the range of a number literal's integer part
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_DIGITS = frozenset("0123456789")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

TokenKind = Literal[
    "NAME", "LPAREN", "RPAREN", "COMMA", "ATTR", "STRING", "NUMBER", "HEX", "OP", "EOF"
]


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    #: the decoded value: the name, the string without quotes, the number's text, the
    #: operator; for HEX the decimal value
    value: str
    start: int
    end: int

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind == "EOF":
            return "end of expression"
        if self.kind == "STRING":
            return "a string"
        if self.kind == "ATTR":
            return f"[{self.value}]"
        return repr(self.value) if self.kind != "HEX" else "a number"


_SINGLE: dict[str, TokenKind] = {"(": "LPAREN", ")": "RPAREN", ",": "COMMA"}
_CURLY_QUOTES = "\u201c\u201d\u201e\u201f\u2033"


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens (the last is ``EOF``).

    Raises:
        ExpressionSyntaxError: an unterminated string or attribute, or a stray character.
    """
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionSyntaxError(
            f"expression is {len(text):,} characters long; Entra allows at most "
            f"{MAX_EXPRESSION_LENGTH:,}",
            text,
            MAX_EXPRESSION_LENGTH,
        )
    tokens: list[Token] = []
    append = tokens.append
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        kind = _SINGLE.get(ch)
        if kind is not None:
            append(Token(kind, ch, i, i + 1))
            i += 1
        elif ch == '"':
            i = _string(text, i, append)
        elif ch == "[":
            close = text.find("]", i + 1)
            newline = text.find("\n", i + 1)
            if close < 0 or (0 <= newline < close):
                raise ExpressionSyntaxError(
                    "unterminated attribute reference: '[' has no matching ']'", text, i
                )
            name = text[i + 1 : close].strip()
            if not name:
                raise ExpressionSyntaxError("empty attribute name '[]'", text, i)
            if "[" in name:
                raise ExpressionSyntaxError(
                    "'[' inside an attribute reference", text, text.find("[", i + 1)
                )
            append(Token("ATTR", name, i, close + 1))
            i = close + 1
        elif ch == "]":
            raise ExpressionSyntaxError("']' without a matching '['", text, i)
        elif ch in _DIGITS or (ch == "-" and i + 1 < n and text[i + 1] in _DIGITS):
            j = i + 1
            while j < n and text[j] in _DIGITS:
                j += 1
            whole = j
            if j + 1 < n and text[j] == "." and text[j + 1] in _DIGITS:
                j += 1
                while j < n and text[j] in _DIGITS:
                    j += 1
            if j < n and (text[j].isalnum() or text[j] == "_"):
                raise ExpressionSyntaxError(
                    f"invalid number {text[i : j + 1]!r}: names cannot start with a digit",
                    text,
                    i,
                )
            _check_int64(text, i, text[i:whole])
            append(Token("NUMBER", text[i:j], i, j))
            i = j
        elif ch == "&":
            if i + 1 < n and text[i + 1] in "hH":
                j = i + 2
                while j < n and text[j] in _HEX_DIGITS:
                    j += 1
                if j == i + 2:
                    raise ExpressionSyntaxError(
                        "hex literal needs digits after '&H' (e.g. &HF7)", text, i
                    )
                digits = text[i + 2 : j].lstrip("0")
                if len(digits) > 16 or (digits and int(digits, 16) > INT64_MAX):
                    raise ExpressionSyntaxError(
                        f"hex literal {_excerpt(text[i:j])} is larger than .NET's Int64 "
                        f"allows (at most &H{INT64_MAX:X})",
                        text,
                        i,
                    )
                append(Token("HEX", str(int(digits or "0", 16)), i, j))
                i = j
            else:
                raise ExpressionSyntaxError(
                    "unexpected '&': the only '&' form is a hex literal like &HF7; "
                    "to join strings use Join or Append",
                    text,
                    i,
                )
        elif ch.isalpha() or ch == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            append(Token("NAME", text[i:j], i, j))
            i = j
        elif ch in "=<>!":
            two = text[i : i + 2]
            if two in ("<>", "<=", ">="):
                append(Token("OP", two, i, i + 2))
                i += 2
            elif two == "!=":
                raise ExpressionSyntaxError("'!=' is not an operator; use '<>'", text, i)
            elif two == "==":
                raise ExpressionSyntaxError("'==' is not an operator; use '='", text, i)
            elif ch == "!":
                raise ExpressionSyntaxError("unexpected '!'; negate with Not(…)", text, i)
            else:
                append(Token("OP", ch, i, i + 1))
                i += 1
        elif ch in _CURLY_QUOTES:
            raise ExpressionSyntaxError(
                f'typographic quote {ch!r}: strings need straight double quotes (")',
                text,
                i,
            )
        elif ch == "'":
            raise ExpressionSyntaxError(
                'strings need double quotes ("…"), not single quotes', text, i
            )
        else:
            raise ExpressionSyntaxError(f"unexpected character {ch!r}", text, i)
    append(Token("EOF", "", n, n))
    return tokens


def _excerpt(literal: str) -> str:
    """A literal as an error message shows it: long ones cut in the middle."""
    return literal if len(literal) <= 24 else f"{literal[:10]}…{literal[-10:]}"


def _check_int64(text: str, start: int, whole: str) -> None:
    """Raise when a number literal's integer part lies outside .NET's Int64."""
    digits = whole.lstrip("-").lstrip("0")
    if len(digits) < 19:
        return
    value = int(whole) if len(digits) <= 20 else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        raise ExpressionSyntaxError(
            f"number {_excerpt(whole)} is outside the range of .NET's Int64 "
            f"({INT64_MIN} to {INT64_MAX})",
            text,
            start,
        )


def _string(text: str, start: int, append: Callable[[Token], None]) -> int:
    """Read the string opening at ``start``; append its token; return the next offset."""
    n = len(text)
    i = start + 1
    chunk_start = i
    parts: list[str] = []
    while True:
        j = text.find('"', i)
        k = text.find("\\", i)
        if j < 0:
            raise ExpressionSyntaxError("unterminated string", text, start)
        if 0 <= k < j:
            parts.append(text[chunk_start:k])
            if k + 1 >= n:
                raise ExpressionSyntaxError("unterminated string", text, start)
            nxt = text[k + 1]
            # \" and \\ are Microsoft's escapes; anything else is kept as written.
            parts.append(nxt if nxt in '"\\' else "\\" + nxt)
            i = chunk_start = k + 2
            continue
        parts.append(text[chunk_start:j])
        append(Token("STRING", "".join(parts), start, j + 1))
        return j + 1
