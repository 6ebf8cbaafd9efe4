"""The functions of Entra's expression language, registered with their signatures.

Each function is a *builder*: at compile time it receives a :class:`Call` (the compiled
arguments, which of them are constants, where they are in the text) and returns the
evaluator closure run per user. That split lets a builder check argument kinds once —
arity, an empty required argument, a constant that is not an integer, an invalid regex or
date format, an unknown interval — and raise :class:`ExpressionSyntaxError` when the
config loads, never per user. A per-user problem (``CDate`` of garbage) raises
:class:`~bulkprov.errors.UserDataError`.

Null rules (Microsoft documents only some; the rest follow .NET/VB and are marked [I]):

* A null *source* (first argument) of a string transform gives null, so the target is
  not sent ("Microsoft Entra ID currently can't provision null attributes"). Exceptions
  documented by Microsoft: ``Left`` and ``Word`` of null are ``""``; ``Coalesce`` skips
  nulls; ``Join`` skips null and empty values (its "Doe, John" example); ``Switch``
  matches a null source against the key ``""``; ``IsNull``/``IsNullOrEmpty``/
  ``IsPresent``/``IsString`` test for it; ``Count`` of null is ``"0"`` [I].
* A null *secondary* argument reads as ``""`` where a string is needed (``Append``'s
  suffix) [I], and as "omitted" where the argument is optional.
* A comparison with a null or empty operand is false: "If the source attribute used
  within the IIF function is empty or null, the condition check fails" (FUNCS).

Booleans are the strings ``"True"``/``"False"``; numbers are decimal strings.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from bulkprov.errors import UserDataError
from bulkprov.mapping import ast, dates, text
from bulkprov.mapping.context import MappingContext
from bulkprov.mapping.errors import ExpressionSyntaxError
from bulkprov.mapping.regex import (
    DEFAULT_REGEX_TIMEOUT,
    Pattern,
    PatternError,
    check_replacement,
    compile_dotnet,
    timed_out,
)
from bulkprov.mapping.values import (
    FALSE,
    MAX_TEXT_LENGTH,
    TRUE,
    as_number,
    bool_text,
    check_length,
    is_null_or_empty,
    is_truthy,
    opt_text,
    shown,
    to_int,
)
from bulkprov.mapping.values import text as as_text

#: ``evaluator(user, ctx)`` → a value (see :mod:`bulkprov.mapping.values`)
Evaluator = Callable[[Mapping[str, Any], MappingContext], Any]


def null_evaluator(user: Mapping[str, Any], ctx: MappingContext) -> Any:
    return None


def constant_evaluator(value: Any) -> Evaluator:
    def constant(user: Mapping[str, Any], ctx: MappingContext) -> Any:
        return value

    return constant


@dataclass(slots=True)
class Arg:
    """One compiled argument: its node, its evaluator, and its value when constant."""

    node: ast.Node
    ev: Evaluator
    const: bool = False
    value: Any = None


class Call:
    """A function call site as a builder sees it at compile time."""

    def __init__(
        self,
        spec: FunctionSpec,
        node: ast.Function,
        args: tuple[Arg, ...],
        *,
        expression: str,
        target: str,
        top_level: bool,
        regex_timeout: float = DEFAULT_REGEX_TIMEOUT,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.node = node
        self.args = args
        self.count = len(args)
        self.expression = expression
        self.target = target
        self.top_level = top_level
        #: seconds one regular-expression match may take (``limits.regex_timeout``)
        self.regex_timeout = regex_timeout

    def present(self, i: int) -> bool:
        """The argument exists and is not an empty slot."""
        return i < self.count and not isinstance(self.args[i].node, ast.Empty)

    def ev(self, i: int) -> Evaluator:
        """The argument's evaluator (a null one for a missing or empty argument)."""
        return self.args[i].ev if self.present(i) else null_evaluator

    def is_const(self, i: int) -> bool:
        """A missing or empty argument counts as the constant null."""
        return not self.present(i) or self.args[i].const

    def value(self, i: int) -> Any:
        return self.args[i].value if self.present(i) else None

    def const_text(self, i: int) -> str | None:
        """The constant string at ``i`` (None when absent, null or not constant)."""
        if not self.present(i) or not self.args[i].const or self.args[i].value is None:
            return None
        try:
            return as_text(self.args[i].value, self.name, self.spec.param_name(i))
        except UserDataError as exc:
            self.fail(i, str(exc).removeprefix(f"{self.name}: "))

    def const_int(self, i: int, *, minimum: int | None = None) -> int | None:
        """The constant integer at ``i``, checked now (None when not constant)."""
        if not self.present(i) or not self.args[i].const:
            return None
        what = self.spec.param_name(i)
        try:
            number = to_int(self.args[i].value, self.name, what)
        except UserDataError as exc:
            self.fail(i, str(exc).removeprefix(f"{self.name}: "))
        if minimum is not None and number < minimum:
            self.fail(i, f"{what} must be at least {minimum}, got {number}")
        return number

    def fail(self, i: int | None, message: str) -> NoReturn:
        """Raise a compile-time error pointing at argument ``i`` (or at the name)."""
        if i is not None and i < self.count:
            node = self.args[i].node
            position = node.op_start if isinstance(node, ast.Comparison) else node.start
        else:
            position = self.node.start
        raise ExpressionSyntaxError(f"{self.name}: {message}", self.expression, position)


Builder = Callable[[Call], Evaluator]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A function's signature and builder.

    Attributes:
        params: names of the fixed parameters; ``repeat`` names the variadic ones (cycled).
        min_args / max_args: arity; ``max_args`` is ``None`` for variadic functions.
        optional: argument indexes that may be left empty (``Switch([x], , …)``).
        conditions: argument indexes that may be a comparison (IIF's condition).
        enums: argument indexes that may be a bare name, with the names allowed.
        pure: the result depends only on the arguments, so calls on constants fold.
    """

    name: str
    params: tuple[str, ...]
    min_args: int
    max_args: int | None
    build: Builder
    repeat: tuple[str, ...] = ()
    optional: frozenset[int] = frozenset()
    conditions: frozenset[int] = frozenset()
    enums: Mapping[int, frozenset[str]] = field(default_factory=dict)
    pure: bool = True

    def param_name(self, i: int) -> str:
        if i < len(self.params):
            return self.params[i]
        if self.repeat:
            k = i - len(self.params)
            name = self.repeat[k % len(self.repeat)]
            return f"{name}{k // len(self.repeat) + 1}"
        return f"argument {i + 1}"

    @property
    def signature(self) -> str:
        names = list(self.params)
        if self.repeat:
            names += [f"{r}1" for r in self.repeat] + ["…"]
        return f"{self.name}({', '.join(names)})"


#: every function by its (case-sensitive) name
REGISTRY: dict[str, FunctionSpec] = {}


def function(
    name: str,
    *params: str,
    min_args: int | None = None,
    max_args: int | None = -1,
    repeat: tuple[str, ...] = (),
    optional: tuple[int, ...] = (),
    conditions: tuple[int, ...] = (),
    enums: Mapping[int, tuple[str, ...]] | None = None,
    pure: bool = True,
) -> Callable[[Builder], Builder]:
    """Register a builder: ``@function("Left", "String", "NumChars")``.

    ``min_args`` defaults to the number of fixed parameters, ``max_args`` to the same
    (or to unbounded when ``repeat`` names variadic parameters).
    """

    def register(build: Builder) -> Builder:
        lo = len(params) if min_args is None else min_args
        hi: int | None
        if max_args == -1:
            hi = None if repeat else len(params)
        else:
            hi = max_args
        REGISTRY[name] = FunctionSpec(
            name=name,
            params=params,
            min_args=lo,
            max_args=hi,
            build=build,
            repeat=repeat,
            optional=frozenset(optional),
            conditions=frozenset(conditions),
            enums={i: frozenset(v) for i, v in (enums or {}).items()},
            pure=pure,
        )
        return build

    return register


# --- helpers ------------------------------------------------------------------------------

U = Mapping[str, Any]
C = MappingContext


def _transform(name: str, fn: Callable[[str], Any]) -> Builder:
    """A one-argument string transform: null in, null out."""

    def build(call: Call) -> Evaluator:
        src = call.ev(0)

        def transform(u: U, c: C) -> Any:
            v = src(u, c)
            if v is None:
                return None
            if v.__class__ is not str:
                v = as_text(v, name, "source")
            return fn(v)

        return transform

    return build


def _int_arg(call: Call, i: int, *, minimum: int | None = None) -> Callable[[U, C], int]:
    """An evaluator of an integer argument; a constant one is checked at compile time."""
    const = call.const_int(i, minimum=minimum)
    if const is not None:

        def fixed(u: U, c: C) -> int:
            return const

        return fixed
    ev = call.ev(i)
    name, what = call.name, call.spec.param_name(i)

    def dynamic(u: U, c: C) -> int:
        number = to_int(ev(u, c), name, what)
        if minimum is not None and number < minimum:
            raise UserDataError(f"{name}: {what} must be at least {minimum}, got {number}")
        return number

    return dynamic


def _datetime_of(value: Any, func: str) -> Any:
    """A DateTime argument: a DateTimeStr, or a string to parse; null stays null."""
    if value is None:
        return None
    if isinstance(value, dates.DateTimeStr):
        return value.dt
    return dates.to_datetime(as_text(value, func, "date"), func)


def _interval(call: Call, i: int) -> Callable[[U, C], str]:
    const = call.const_text(i)
    if const is not None:
        if const not in dates.INTERVALS:
            call.fail(i, f"unknown interval {const!r}; use one of {', '.join(dates.INTERVALS)}")

        def fixed(u: U, c: C) -> str:
            return const

        return fixed
    ev, name = call.ev(i), call.name

    def dynamic(u: U, c: C) -> str:
        value = opt_text(ev(u, c), name, "interval")
        if value not in dates.INTERVALS:
            raise UserDataError(f"{name}: unknown interval {shown(value or '')}")
        return value

    return dynamic


# --- the functions, in Microsoft's order --------------------------------------------------


@function("Append", "source", "suffix")
def _append(call: Call) -> Evaluator:
    src, suffix = call.ev(0), call.ev(1)

    def append(u: U, c: C) -> Any:
        s = src(u, c)
        if s is None:
            return None
        if s.__class__ is not str:
            s = as_text(s, "Append", "source")
        x = suffix(u, c)
        if x is None:
            return str(s)
        if x.__class__ is not str:
            x = as_text(x, "Append", "suffix")
        if len(s) + len(x) > MAX_TEXT_LENGTH:
            check_length(len(s) + len(x), "Append")
        return s + x

    return append


def _roles_argument(call: Call) -> Evaluator:
    node = call.args[0].node
    if not (isinstance(node, ast.Attribute) and node.name == "appRoleAssignments"):
        call.fail(0, "the argument must be the attribute [appRoleAssignments]")
    return call.ev(0)


_DEFAULT_ACCESS = "00000000-0000-0000-0000-000000000000"


def _assigned_roles(value: Any) -> list[tuple[str, str]]:
    """(value, displayName) of each real role, de-duplicated and sorted.

    "Default Access" (the all-zero appRoleId) is not a role; sorting makes the result
    stable whatever order Graph lists assignments in ("There's no guarantee which role is
    provisioned", CUSTATTR), so an unchanged user never looks changed.
    """
    if not value:
        return []
    roles: set[tuple[str, str]] = set()
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, Mapping):
            raise UserDataError("appRoleAssignments: each assignment must be an object")
        if item.get("appRoleId") == _DEFAULT_ACCESS:
            continue
        role_value = item.get("value") or item.get("displayName")
        if not role_value:
            continue
        roles.add((str(role_value), str(item.get("displayName") or role_value)))
    return sorted(roles)


def _complex_roles(call: Call, *, assertive: bool) -> Evaluator:
    src = _roles_argument(call)
    empty: list[dict[str, Any]] | None = [] if assertive else None

    def complex_roles(u: U, c: C) -> Any:
        roles = _assigned_roles(src(u, c))
        if not roles:
            return None if empty is None else []
        return [
            {
                "primary": False,
                "type": "WindowsAzureActiveDirectoryRole",
                "value": value,
                "display": display,
            }
            for value, display in roles
        ]

    return complex_roles


@function("AppRoleAssignmentsComplex", "appRoleAssignments")
def _app_roles_complex(call: Call) -> Evaluator:
    # PATCH "Add" only: roles are never removed (CUSTATTR), so no roles means no value.
    return _complex_roles(call, assertive=False)


@function("AssertiveAppRoleAssignmentsComplex", "appRoleAssignments")
def _assertive_app_roles(call: Call) -> Evaluator:
    # PATCH "replace": roles no longer assigned are removed (CUSTATTR). No roles is an
    # empty list, so that replacing removes the last one too [I]; the PATCH itself is the
    # pipeline's business.
    return _complex_roles(call, assertive=True)


@function("BitAnd", "value1", "value2")
def _bit_and(call: Call) -> Evaluator:
    a, b = _int_arg(call, 0), _int_arg(call, 1)
    ea, eb = call.ev(0), call.ev(1)

    def bit_and(u: U, c: C) -> Any:
        if ea(u, c) is None or eb(u, c) is None:
            return None
        return str(a(u, c) & b(u, c))

    return bit_and


@function("CBool", "expression", conditions=(0,))
def _cbool(call: Call) -> Evaluator:
    src = call.ev(0)

    def cbool(u: U, c: C) -> Any:
        return bool_text(is_truthy(src(u, c), "CBool"))

    return cbool


@function("CDate", "expression")
def _cdate(call: Call) -> Evaluator:
    src = call.ev(0)

    def cdate(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        if isinstance(v, dates.DateTimeStr):
            return v
        return dates.DateTimeStr(dates.to_datetime(as_text(v, "CDate", "expression"), "CDate"))

    return cdate


@function("Coalesce", min_args=1, repeat=("source",))
def _coalesce(call: Call) -> Evaluator:
    evs = tuple(call.ev(i) for i in range(call.count))

    def coalesce(u: U, c: C) -> Any:
        for ev in evs:
            v = ev(u, c)
            if v is not None:
                return v
        return None

    return coalesce


def _encode(s: str, encoding: str, func: str, growth: int) -> bytes:
    """``s`` in ``encoding``; a lone surrogate (no character: half of a UTF-16 pair) fails
    the user instead of raising ``UnicodeEncodeError``. ``growth``: at most how many
    output characters one input character makes (checked against the length limit)."""
    if len(s) * growth > MAX_TEXT_LENGTH:
        check_length(len(s) * growth, func)
    try:
        return s.encode(encoding)
    except UnicodeEncodeError as exc:
        raise UserDataError(
            f"{func}: the source holds an invalid character ({exc.reason}: "
            f"U+{ord(s[exc.start]):04X} at position {exc.start + 1})"
        ) from None


@function("ConvertToBase64", "source")
def _base64(call: Call) -> Evaluator:
    return _transform(
        "ConvertToBase64",
        # UTF-16: up to 4 bytes a character; base64: 4 characters per 3 bytes
        lambda s: base64.b64encode(_encode(s, "utf-16-le", "ConvertToBase64", 6)).decode("ascii"),
    )(call)


@function("ConvertToUTF8Hex", "source")
def _utf8_hex(call: Call) -> Evaluator:
    return _transform(
        "ConvertToUTF8Hex", lambda s: _encode(s, "utf-8", "ConvertToUTF8Hex", 8).hex().upper()
    )(call)


@function("Count", "attribute")
def _count(call: Call) -> Evaluator:
    src = call.ev(0)

    def count(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return "0"
        return str(len(v)) if isinstance(v, list) else "1"

    return count


@function("CStr", "value")
def _cstr(call: Call) -> Evaluator:
    return _transform("CStr", str)(call)


@function("DateAdd", "interval", "value", "dateTime")
def _date_add(call: Call) -> Evaluator:
    interval, amount, src = _interval(call, 0), _int_arg(call, 1), call.ev(2)

    def date_add(u: U, c: C) -> Any:
        dt = _datetime_of(src(u, c), "DateAdd")
        if dt is None:
            return None
        try:
            return dates.DateTimeStr(dates.date_add(interval(u, c), amount(u, c), dt))
        except OverflowError as exc:
            raise UserDataError("DateAdd: the result is outside years 1-9999") from exc

    return date_add


@function("DateDiff", "interval", "date1", "date2")
def _date_diff(call: Call) -> Evaluator:
    interval, first, second = _interval(call, 0), call.ev(1), call.ev(2)

    def date_diff(u: U, c: C) -> Any:
        d1 = _datetime_of(first(u, c), "DateDiff")
        d2 = _datetime_of(second(u, c), "DateDiff")
        if d1 is None or d2 is None:
            return None
        return str(dates.date_diff(interval(u, c), d1, d2))

    return date_diff


@function("DateFromNum", "value")
def _date_from_num(call: Call) -> Evaluator:
    src = call.ev(0)

    def date_from_num(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        ticks = to_int(v, "DateFromNum", "value")
        try:
            return dates.DateTimeStr(dates.from_filetime(ticks))
        except (ValueError, OverflowError) as exc:
            raise UserDataError(
                f"DateFromNum: {ticks} is not a date between years 1601 and 9999"
            ) from exc

    return date_from_num


@function(
    "FormatDateTime",
    "source",
    "dateTimeStyles",
    "inputFormat",
    "outputFormat",
    min_args=3,
    optional=(1,),
)
def _format_date_time(call: Call) -> Evaluator:
    # Microsoft's older three-argument form FormatDateTime(source, inputFormat,
    # outputFormat) is still accepted.
    if call.count == 3:
        styles_i, in_i, out_i = None, 1, 2
        if not call.present(1):
            call.fail(1, "inputFormat cannot be empty")
    else:
        styles_i, in_i, out_i = 1, 2, 3
    name = "FormatDateTime"
    styles = dates.DEFAULT_STYLES
    if styles_i is not None and call.present(styles_i):
        const_styles = call.const_text(styles_i)
        if const_styles is None:
            call.fail(styles_i, "dateTimeStyles must be a constant string")
        try:
            styles = dates.parse_styles(const_styles) or dates.DEFAULT_STYLES
        except ValueError as exc:
            call.fail(styles_i, str(exc))

    def parser_of(i: int) -> Callable[[U, C], dates.ExactParser]:
        fmt = call.const_text(i)
        if fmt is not None:
            try:
                fixed = dates.compile_exact(fmt)
            except ValueError as exc:
                call.fail(i, f"invalid .NET date format: {exc}")
            return lambda u, c: fixed
        ev = call.ev(i)

        def dynamic(u: U, c: C) -> dates.ExactParser:
            try:
                return dates.compile_exact(as_text(ev(u, c) or "", name, "inputFormat"))
            except ValueError as exc:
                raise UserDataError(f"{name}: invalid inputFormat: {exc}") from exc

        return dynamic

    def formatter_of(i: int) -> Callable[[U, C], tuple[dates.FormatToken, ...]]:
        fmt = call.const_text(i)
        if fmt is not None:
            try:
                fixed = dates.tokenize_format(fmt)
            except ValueError as exc:
                call.fail(i, f"invalid .NET date format: {exc}")
            return lambda u, c: fixed
        ev = call.ev(i)

        def dynamic(u: U, c: C) -> tuple[dates.FormatToken, ...]:
            try:
                return dates.tokenize_format(as_text(ev(u, c) or "", name, "outputFormat"))
            except ValueError as exc:
                raise UserDataError(f"{name}: invalid outputFormat: {exc}") from exc

        return dynamic

    src = call.ev(0)
    parser, formatter = parser_of(in_i), formatter_of(out_i)
    timeout = call.regex_timeout

    def format_date_time(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        s = as_text(v, name, "source")
        exact = parser(u, c)
        try:
            dt, kind = dates.parse_exact(s, exact, styles, lambda: dates.now(c.now), timeout)
        except (ValueError, OverflowError) as exc:
            raise UserDataError(f"{name}: {exc}") from exc
        except TimeoutError:
            raise timed_out(name, exact.fmt, timeout, "the inputFormat") from None
        out = dates.format_custom(dt, kind, formatter(u, c))
        if len(out) > MAX_TEXT_LENGTH:
            check_length(len(out), name)
        return out

    return format_date_time


@function("Guid", pure=False)
def _guid(call: Call) -> Evaluator:
    def guid(u: U, c: C) -> Any:
        return str(uuid.uuid4())

    return guid


@function("IgnoreFlowIfNullOrEmpty", "expression")
def _ignore_flow(call: Call) -> Evaluator:
    src = call.ev(0)

    def ignore_flow(u: U, c: C) -> Any:
        v = src(u, c)
        return None if is_null_or_empty(v) else v

    return ignore_flow


@function("IIF", "condition", "valueIfTrue", "valueIfFalse", conditions=(0,))
def _iif(call: Call) -> Evaluator:
    cond, if_true, if_false = call.ev(0), call.ev(1), call.ev(2)

    def iif(u: U, c: C) -> Any:
        v = cond(u, c)
        if v == TRUE or (v != FALSE and is_truthy(v, "IIF")):
            return if_true(u, c)
        return if_false(u, c)

    return iif


_COMPARE_TYPES = ("vbBinaryCompare", "vbTextCompare")


@function(
    "InStr",
    "value1",
    "value2",
    "start",
    "compareType",
    min_args=2,
    optional=(2, 3),
    enums={3: _COMPARE_TYPES},
)
def _instr(call: Call) -> Evaluator:
    haystack, needle = call.ev(0), call.ev(1)
    start = _int_arg(call, 2, minimum=1) if call.present(2) else None
    text_compare = False
    if call.present(3):
        mode = call.value(3) if call.is_const(3) else None
        # VB's constants: vbBinaryCompare = 0, vbTextCompare = 1.
        if mode in ("vbTextCompare", "1"):
            text_compare = True
        elif mode not in ("vbBinaryCompare", "0"):
            call.fail(3, "compareType must be vbBinaryCompare or vbTextCompare")

    def instr(u: U, c: C) -> Any:
        a, b = haystack(u, c), needle(u, c)
        if a is None or b is None:
            return None
        a, b = as_text(a, "InStr", "value1"), as_text(b, "InStr", "value2")
        offset = start(u, c) - 1 if start is not None else 0
        if text_compare:
            a, b = text.lower(a), text.lower(b)
        if offset > len(a):
            return "0"
        return str(a.find(b, offset) + 1)

    return instr


@function("IsNull", "expression")
def _is_null(call: Call) -> Evaluator:
    src = call.ev(0)

    def is_null(u: U, c: C) -> Any:
        return TRUE if src(u, c) is None else FALSE

    return is_null


@function("IsNullOrEmpty", "expression")
def _is_null_or_empty(call: Call) -> Evaluator:
    src = call.ev(0)

    def is_null_or_empty_(u: U, c: C) -> Any:
        return bool_text(is_null_or_empty(src(u, c)))

    return is_null_or_empty_


@function("IsPresent", "expression")
def _is_present(call: Call) -> Evaluator:
    src = call.ev(0)

    def is_present(u: U, c: C) -> Any:
        return FALSE if is_null_or_empty(src(u, c)) else TRUE

    return is_present


@function("IsString", "expression")
def _is_string(call: Call) -> Evaluator:
    src = call.ev(0)

    def is_string(u: U, c: C) -> Any:
        return bool_text(isinstance(src(u, c), str))

    return is_string


@function("Item", "attribute", "index")
def _item(call: Call) -> Evaluator:
    src, index = call.ev(0), _int_arg(call, 1, minimum=1)

    def item(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        i = index(u, c)
        if isinstance(v, list):
            return v[i - 1] if i <= len(v) else None
        return v if i == 1 else None

    return item


@function("Join", "separator", repeat=("source",), min_args=2)
def _join(call: Call) -> Evaluator:
    sep_ev = call.ev(0)
    sources = tuple(call.ev(i) for i in range(1, call.count))
    const_sep = call.const_text(0)

    def join(u: U, c: C) -> Any:
        parts: list[str] = []
        for ev in sources:
            v = ev(u, c)
            if v is None or v == "":
                continue
            if v.__class__ is str:
                parts.append(v)
            elif isinstance(v, list):
                parts.extend(as_text(x, "Join", "source") for x in v if x is not None and x != "")
            else:
                parts.append(as_text(v, "Join", "source"))
        if not parts:
            # Nothing to join: null, so the target is not sent [I].
            return None
        sep = const_sep if const_sep is not None else opt_text(sep_ev(u, c), "Join") or ""
        length = sum(map(len, parts)) + len(sep) * (len(parts) - 1)
        if length > MAX_TEXT_LENGTH:
            check_length(length, "Join")
        return sep.join(parts)

    return join


@function("Left", "String", "NumChars")
def _left(call: Call) -> Evaluator:
    src, count = call.ev(0), _int_arg(call, 1)

    def left(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return ""
        s = as_text(v, "Left", "String")
        n = count(u, c)
        if n < 0:
            return s
        return s[:n]

    return left


@function("Mid", "source", "start", "length")
def _mid(call: Call) -> Evaluator:
    src = call.ev(0)
    start, length = _int_arg(call, 1, minimum=1), _int_arg(call, 2, minimum=0)

    def mid(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        s = as_text(v, "Mid", "source")
        i = start(u, c) - 1
        return s[i : i + length(u, c)]

    return mid


@function("NormalizeDiacritics", "source")
def _normalize_diacritics(call: Call) -> Evaluator:
    def normalize(s: str) -> str:
        out = text.normalize_diacritics(s)
        if len(out) > MAX_TEXT_LENGTH:
            check_length(len(out), "NormalizeDiacritics")
        return out

    return _transform("NormalizeDiacritics", normalize)(call)


@function("Not", "source")
def _not(call: Call) -> Evaluator:
    src = call.ev(0)

    def not_(u: U, c: C) -> Any:
        v = src(u, c)
        if v == TRUE:
            return FALSE
        if v is None or v == FALSE:
            return TRUE
        # "If source value is True, returns False. Otherwise, returns True." (FUNCS)
        return FALSE if as_text(v, "Not", "source").strip().lower() == "true" else TRUE

    return not_


@function("Now", pure=False)
def _now(call: Call) -> Evaluator:
    def now(u: U, c: C) -> Any:
        return dates.DateTimeStr(dates.now(c.now))

    return now


@function("NumFromDate", "value")
def _num_from_date(call: Call) -> Evaluator:
    src = call.ev(0)

    def num_from_date(u: U, c: C) -> Any:
        dt = _datetime_of(src(u, c), "NumFromDate")
        if dt is None:
            return None
        if dt.year < 1601:
            raise UserDataError("NumFromDate: dates before 1601 have no AD representation")
        return str(dates.to_filetime(dt))

    return num_from_date


@function("PCase", "source", "wordSeparators", min_args=1, optional=(1,))
def _pcase(call: Call) -> Evaluator:
    src = call.ev(0)
    if not call.present(1):
        return _transform("PCase", text.title_case)(call)
    const_seps = call.const_text(1)
    seps_ev = call.ev(1)

    def pcase(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        s = as_text(v, "PCase", "source")
        seps = const_seps if const_seps is not None else opt_text(seps_ev(u, c), "PCase")
        # An empty or null separator set falls back to ToTitleCase's rules [I].
        return text.proper_case(s, seps) if seps else text.title_case(s)

    return pcase


#: the "special characters" of Windows' password complexity rules, which Microsoft's
#: RandomString reference links to
SPECIAL_CHARACTERS = "~!@#$%^&*_-+=`|\\(){}[]:;\"'<>,.?/"
_MAX_RANDOM_LENGTH = 256


@function(
    "RandomString",
    "Length",
    "MinimumNumbers",
    "MinimumSpecialCharacters",
    "MinimumCapital",
    "MinimumLowerCase",
    "CharactersToAvoid",
    min_args=5,
    optional=(5,),
    pure=False,
)
def _random_string(call: Call) -> Evaluator:
    ints = [_int_arg(call, i, minimum=0 if i else 1) for i in range(5)]
    consts = [call.const_int(i) for i in range(5)]
    if consts[0] is not None and consts[0] > _MAX_RANDOM_LENGTH:
        call.fail(0, f"Length can be at most {_MAX_RANDOM_LENGTH}")
    if all(x is not None for x in consts):
        length, *minimums = (x or 0 for x in consts)
        if sum(minimums) > length:
            call.fail(0, f"Length {length} is less than the sum of the minimums ({sum(minimums)})")
    avoid_ev = call.ev(5)
    rng = secrets.SystemRandom()

    def random_string(u: U, c: C) -> Any:
        length, digits, specials, capitals, lowers = (f(u, c) for f in ints)
        if length > _MAX_RANDOM_LENGTH:
            raise UserDataError(f"RandomString: Length can be at most {_MAX_RANDOM_LENGTH}")
        if digits + specials + capitals + lowers > length:
            raise UserDataError("RandomString: Length is less than the sum of the minimums")
        avoid = opt_text(avoid_ev(u, c), "RandomString") or ""
        pools = [
            ("".join(ch for ch in pool if ch not in avoid), minimum)
            for pool, minimum in (
                (string.digits, digits),
                (SPECIAL_CHARACTERS, specials),
                (string.ascii_uppercase, capitals),
                (string.ascii_lowercase, lowers),
            )
        ]
        chars: list[str] = []
        for pool, minimum in pools:
            if minimum and not pool:
                raise UserDataError("RandomString: CharactersToAvoid excludes a required class")
            chars.extend(rng.choice(pool) for _ in range(minimum))
        # The rest comes from the classes asked for (letters and digits if none) [I].
        rest = "".join(pool for pool, minimum in pools if minimum) or "".join(
            pool for pool, _ in (pools[0], pools[2], pools[3])
        )
        if len(chars) < length and not rest:
            raise UserDataError("RandomString: CharactersToAvoid excludes every character")
        chars.extend(rng.choice(rest) for _ in range(length - len(chars)))
        rng.shuffle(chars)
        return "".join(chars)

    return random_string


@function("Redact", "value")
def _redact(call: Call) -> Evaluator:
    # The value still flows to the target; the compiler marks the target as redacted so
    # that logs print "[Redact]" (FUNCS: replaced "in the provisioning logs").
    return call.ev(0)


@function("RemoveDuplicates", "attribute")
def _remove_duplicates(call: Call) -> Evaluator:
    src = call.ev(0)

    def remove_duplicates(u: U, c: C) -> Any:
        v = src(u, c)
        if not isinstance(v, list):
            return v
        out: list[Any] = []
        hashable: set[Any] = set()
        others: list[Any] = []  # dicts and lists: compared one by one (rare, and short)
        for x in v:
            try:
                if x in hashable:
                    continue
                hashable.add(x)
            except TypeError:
                if x in others:
                    continue
                others.append(x)
            out.append(x)
        return out

    return remove_duplicates


@function(
    "Replace",
    "source",
    "oldValue",
    "regexPattern",
    "regexGroupName",
    "replacementValue",
    "replacementAttributeName",
    "template",
    min_args=2,
    optional=(1, 2, 3, 4, 5, 6),
)
def _replace(call: Call) -> Evaluator:
    given = {call.spec.param_name(i) for i in range(1, 7) if call.present(i)}
    modes = {
        frozenset({"oldValue", "replacementValue"}): _replace_value,
        frozenset({"oldValue", "template"}): _replace_template,
        frozenset({"regexPattern", "replacementValue"}): _replace_regex,
        frozenset({"regexPattern", "regexGroupName", "replacementValue"}): _replace_group,
        frozenset(
            {"regexPattern", "regexGroupName", "replacementAttributeName"}
        ): _replace_fallback,
    }
    build = modes.get(frozenset(given))
    if build is None:
        shown = ", ".join(sorted(given)) or "nothing"
        call.fail(
            None,
            f"unsupported combination of arguments ({shown}); give oldValue with "
            "replacementValue or template, or regexPattern with replacementValue, "
            "regexGroupName + replacementValue, or regexGroupName + replacementAttributeName",
        )
    return build(call)


def _replace_value(call: Call) -> Evaluator:
    src, old_ev, new_ev = call.ev(0), call.ev(1), call.ev(4)
    if call.const_text(1) == "":
        call.fail(1, "oldValue cannot be an empty string")

    def replace_value(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        s = as_text(v, "Replace", "source")
        old = opt_text(old_ev(u, c), "Replace", "oldValue")
        if not old:
            return s
        new = opt_text(new_ev(u, c), "Replace", "replacementValue") or ""
        if len(new) > len(old) and len(s) + len(s) // len(old) * (len(new) - len(old)) > (
            MAX_TEXT_LENGTH
        ):
            check_length(len(s) + s.count(old) * (len(new) - len(old)), "Replace")
        return s.replace(old, new)

    return replace_value


def _replace_template(call: Call) -> Evaluator:
    src, old_ev, template_ev = call.ev(0), call.ev(1), call.ev(6)
    if call.const_text(1) == "":
        call.fail(1, "oldValue cannot be an empty string")

    def replace_template(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        s = as_text(v, "Replace", "source")
        template = opt_text(template_ev(u, c), "Replace", "template")
        old = opt_text(old_ev(u, c), "Replace", "oldValue")
        if template is None:
            return None
        if not old:
            return template
        if len(s) > len(old) and len(template) // len(old) * len(s) > MAX_TEXT_LENGTH:
            check_length(len(template) + template.count(old) * (len(s) - len(old)), "Replace")
        return template.replace(old, s)

    return replace_template


def _regex_of(call: Call, i: int) -> tuple[Callable[[U, C], tuple[Pattern, str]], Pattern | None]:
    """The pattern's evaluator (compiled pattern, pattern text), and the compiled pattern
    itself when it is a constant."""
    const = call.const_text(i)
    if const is not None:
        try:
            compiled = compile_dotnet(const)
        except PatternError as exc:
            call.fail(i, f"invalid regular expression: {exc}")
        fixed = (compiled, const)
        return (lambda u, c: fixed), compiled
    ev = call.ev(i)

    def dynamic(u: U, c: C) -> tuple[Pattern, str]:
        text = as_text(ev(u, c) or "", "Replace", "regexPattern")
        try:
            return compile_dotnet(text), text
        except PatternError as exc:
            raise UserDataError(f"Replace: invalid regular expression: {exc}") from exc

    return dynamic, None


def _replace_regex(call: Call) -> Evaluator:
    src = call.ev(0)
    pattern, const_pattern = _regex_of(call, 2)
    const_repl = call.const_text(4) if call.is_const(4) else None
    template: str | None = None
    if const_repl is not None and const_pattern is not None:
        try:
            template = check_replacement(const_pattern, const_repl)
        except ValueError as exc:
            call.fail(4, f"replacementValue: {exc}")
    repl_ev = call.ev(4)
    timeout = call.regex_timeout

    def replace_regex(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        s = as_text(v, "Replace", "source")
        rx, text = pattern(u, c)
        tpl = template
        if tpl is None:
            raw = opt_text(repl_ev(u, c), "Replace", "replacementValue") or ""
            try:
                tpl = check_replacement(rx, raw)
            except ValueError as exc:
                raise UserDataError(f"Replace: replacementValue: {exc}") from exc
        try:
            # Every match (at most one per position) adds at most the template, each of
            # its group references at most the whole source: when that cannot pass the
            # length limit, the fast path; else each expansion is counted.
            refs = tpl.count("\\g<")
            if len(s) + (len(s) + 1) * (len(tpl) + refs * len(s)) <= MAX_TEXT_LENGTH:
                return rx.sub(tpl, s, timeout=timeout)
            return _bounded_sub(rx, tpl, s, timeout)
        except TimeoutError:
            raise timed_out("Replace", text, timeout) from None

    return replace_regex


def _bounded_sub(rx: Pattern, template: str, s: str, timeout: float) -> str:
    """``rx.sub(template, s)`` that stops as soon as the result passes the length limit."""
    budget = [MAX_TEXT_LENGTH - len(s)]

    def expand(m: Any) -> str:
        piece: str = m.expand(template)
        budget[0] -= len(piece) - (m.end() - m.start())
        if budget[0] < 0:
            check_length(MAX_TEXT_LENGTH - budget[0], "Replace")
        return piece

    result: str = rx.sub(expand, s, timeout=timeout)
    return result


def _group_name(call: Call, pattern: Pattern | None) -> str:
    name = call.const_text(3)
    if name is None:
        call.fail(3, "regexGroupName must be a constant string")
    if pattern is not None and name not in pattern.groupindex:
        call.fail(3, f"the pattern has no group named {name!r}")
    return name


def _replace_group(call: Call) -> Evaluator:
    src = call.ev(0)
    pattern, const_pattern = _regex_of(call, 2)
    group = _group_name(call, const_pattern)
    repl_ev = call.ev(4)
    timeout = call.regex_timeout

    def replace_group(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        s = as_text(v, "Replace", "source")
        rx, text = pattern(u, c)
        if group not in rx.groupindex:
            raise UserDataError(f"Replace: the pattern has no group named {group!r}")
        new = opt_text(repl_ev(u, c), "Replace", "replacementValue") or ""
        out: list[str] = []
        last = 0
        try:
            # One time limit for the whole scan: the package times the iterator's state.
            length = len(s)
            for m in rx.finditer(s, timeout=timeout):
                start, end = m.span(group)
                # Only a group that matched some text is replaced (an empty or skipped
                # group is not "a value matching regexGroupName") [I].
                if start < end:
                    out.append(s[last:start])
                    out.append(new)
                    last = end
                    length += len(new) - (end - start)
                    if length > MAX_TEXT_LENGTH:
                        check_length(length, "Replace")
        except TimeoutError:
            raise timed_out("Replace", text, timeout) from None
        out.append(s[last:])
        return "".join(out)

    return replace_group


def _replace_fallback(call: Call) -> Evaluator:
    src = call.ev(0)
    pattern, const_pattern = _regex_of(call, 2)
    group = _group_name(call, const_pattern)
    other_ev = call.ev(5)
    timeout = call.regex_timeout

    def replace_fallback(u: U, c: C) -> Any:
        v = src(u, c)
        if not is_null_or_empty(v):
            return v
        other = other_ev(u, c)
        if other is None:
            return None
        rx, text = pattern(u, c)
        if group not in rx.groupindex:
            raise UserDataError(f"Replace: the pattern has no group named {group!r}")
        try:
            m = rx.search(as_text(other, "Replace", "replacementAttributeName"), timeout=timeout)
        except TimeoutError:
            raise timed_out("Replace", text, timeout) from None
        return m.group(group) if m else None

    return replace_fallback


@function("SelectUniqueValue", repeat=("uniqueValueRule",), min_args=2, pure=False)
def _select_unique_value(call: Call) -> Evaluator:
    if not call.top_level:
        call.fail(None, "SelectUniqueValue must be the whole expression (it cannot be nested)")
    rules = tuple(call.ev(i) for i in range(call.count))
    target = call.target

    def select_unique_value(u: U, c: C) -> Any:
        candidates = 0
        for rule in rules:
            v = rule(u, c)
            if is_null_or_empty(v):
                continue
            s = as_text(v, "SelectUniqueValue", "rule")
            if c.is_unique is None:
                return s
            candidates += 1
            if c.is_unique(target, s):
                return s
        if candidates:
            raise UserDataError(
                f"SelectUniqueValue: all {candidates} candidate values already exist in "
                f"the target ({target})"
            )
        return None

    return select_unique_value


@function("SingleAppRoleAssignment", "appRoleAssignments")
def _single_app_role(call: Call) -> Evaluator:
    src = _roles_argument(call)

    def single_role(u: U, c: C) -> Any:
        roles = _assigned_roles(src(u, c))
        return roles[0][0] if roles else None

    return single_role


@function("Split", "source", "delimiter")
def _split(call: Call) -> Evaluator:
    src, delim_ev = call.ev(0), call.ev(1)
    if call.is_const(1) and not call.const_text(1):
        call.fail(1, "delimiter cannot be empty")

    def split(u: U, c: C) -> Any:
        v = src(u, c)
        if v is None:
            return None
        delimiter = opt_text(delim_ev(u, c), "Split", "delimiter")
        if not delimiter:
            raise UserDataError("Split: delimiter is empty")
        # .NET String.Split: no trimming, empty entries kept [I].
        return as_text(v, "Split", "source").split(delimiter)

    return split


@function("StripSpaces", "source")
def _strip_spaces(call: Call) -> Evaluator:
    return _transform("StripSpaces", lambda s: s.replace(" ", ""))(call)


@function("Switch", "source", "defaultValue", repeat=("key", "value"), min_args=4, optional=(1,))
def _switch(call: Call) -> Evaluator:
    if call.count % 2:
        call.fail(
            None,
            "key and value parameters must come in pairs: give the source, the default "
            f"value, then key/value pairs (an even number of arguments, got {call.count})",
        )
    src, default = call.ev(0), call.ev(1)
    key_indexes = range(2, call.count, 2)

    def source_text(u: U, c: C) -> str:
        v = src(u, c)
        if v is None:
            return ""  # a null source matches the key "" (FUNCS, Switch caution)
        return v if v.__class__ is str else as_text(v, "Switch", "source")

    if all(call.is_const(k) for k in key_indexes):
        table: dict[str, Evaluator] = {}
        values: dict[str, Any] = {}
        for k in key_indexes:
            key = call.const_text(k) or ""
            if key not in table:  # the first matching key wins
                table[key] = call.ev(k + 1)
                values[key] = call.value(k + 1)
        if all(call.is_const(k + 1) for k in key_indexes) and call.is_const(1):
            default_value = call.value(1)

            # The common case (e.g. IsSoftDeleted → active): one dict lookup.
            def switch_constant(u: U, c: C) -> Any:
                v = src(u, c)
                if v is None:
                    v = ""
                elif v.__class__ is not str:
                    v = as_text(v, "Switch", "source")
                return values.get(v, default_value)

            return switch_constant

        def switch_table(u: U, c: C) -> Any:
            return table.get(source_text(u, c), default)(u, c)

        return switch_table

    pairs = tuple((call.ev(k), call.ev(k + 1)) for k in key_indexes)

    def switch(u: U, c: C) -> Any:
        s = source_text(u, c)
        for key_ev, value_ev in pairs:
            key = key_ev(u, c)
            if ("" if key is None else as_text(key, "Switch", "key")) == s:
                return value_ev(u, c)
        return default(u, c)

    return switch


_CULTURE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*\Z")


def _case(name: str, fn: Callable[[str, str | None], str]) -> Builder:
    def build(call: Call) -> Evaluator:
        src, culture_ev = call.ev(0), call.ev(1)
        const_culture = call.const_text(1) if call.is_const(1) else None
        if const_culture and not _CULTURE.match(const_culture):
            call.fail(1, f"{const_culture!r} is not a culture name such as en-US or tr-TR")
        if call.is_const(1):

            def fixed(u: U, c: C) -> Any:
                v = src(u, c)
                if v is None:
                    return None
                if v.__class__ is not str:
                    v = as_text(v, name, "source")
                return fn(v, const_culture)

            return fixed

        def dynamic(u: U, c: C) -> Any:
            v = src(u, c)
            if v is None:
                return None
            return fn(as_text(v, name, "source"), opt_text(culture_ev(u, c), name, "culture"))

        return dynamic

    return build


function("ToLower", "source", "culture", min_args=1, optional=(1,))(_case("ToLower", text.lower))
function("ToUpper", "source", "culture", min_args=1, optional=(1,))(_case("ToUpper", text.upper))


@function("Word", "String", "WordNumber", "Delimiters")
def _word(call: Call) -> Evaluator:
    src, number, delim_ev = call.ev(0), _int_arg(call, 1), call.ev(2)
    const_delims = call.const_text(2)

    def word(u: U, c: C) -> Any:
        v = src(u, c)
        n = number(u, c)
        if v is None or n < 1:
            return ""
        s = as_text(v, "Word", "String")
        delims = const_delims if const_delims is not None else opt_text(delim_ev(u, c), "Word")
        if delims:
            words = [w for w in re.split("[" + re.escape(delims) + "]", s) if w]
        else:
            words = [s] if s else []
        return words[n - 1] if n <= len(words) else ""

    return word


# --- comparisons (IIF/CBool conditions) ---------------------------------------------------


def compare(op: ast.CompareOp, a: Any, b: Any) -> bool:
    """``a op b`` as the language evaluates it.

    A null or empty operand makes the comparison false ("the condition check fails").
    ``=`` and ``<>`` compare strings exactly (case-sensitive, VB's default
    ``Option Compare Binary``); the orderings compare dates as dates, numbers as numbers
    and anything else ordinally [I].
    """
    if a is None or b is None:
        return False
    x, y = as_text(a, "IIF", "operand"), as_text(b, "IIF", "operand")
    if x == "" or y == "":
        return False
    if op == "=":
        return x == y
    if op == "<>":
        return x != y
    left: Any = x
    right: Any = y
    if isinstance(x, dates.DateTimeStr) and isinstance(y, dates.DateTimeStr):
        left, right = x.dt, y.dt
    else:
        nx, ny = as_number(x), as_number(y)
        if nx is not None and ny is not None:
            left, right = nx, ny
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


#: names of the functions Microsoft's reference lists (43) plus the CUSTATTR extra
FUNCTION_NAMES = frozenset(REGISTRY)
