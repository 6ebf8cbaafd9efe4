"""Dates with .NET semantics: parsing, ``M/d/yyyy h:mm:ss tt``, FILETIME, custom formats.

Entra's date functions exchange dates as strings. ``CDate``, ``DateAdd``, ``Now`` and
``DateFromNum`` return "a UTC DateTime … in the format **M/d/yyyy h:mm:ss tt**" (FUNCS);
here that is a :class:`DateTimeStr`, a ``str`` that also keeps its ``datetime`` so a
nested date function need not parse it again.

Time zones: every date is converted to UTC and kept as a naive ``datetime``. A string
without an offset is taken as UTC: the service runs in UTC, where .NET's "local time" and
UTC coincide [I].
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, Self

import regex

from bulkprov.errors import UserDataError
from bulkprov.mapping.values import shown

Kind = Literal["Unspecified", "Utc", "Local"]

_FILETIME_EPOCH = datetime(1601, 1, 1)
_MONTHS = tuple(calendar.month_name)[1:]
_MONTHS_ABBR = tuple(calendar.month_abbr)[1:]
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAYS_ABBR = tuple(d[:3] for d in _DAYS)


def format_standard(dt: datetime) -> str:
    """``M/d/yyyy h:mm:ss tt`` (invariant culture), e.g. ``3/16/2020 7:00:00 AM``."""
    hour = dt.hour % 12 or 12
    half = "AM" if dt.hour < 12 else "PM"
    return f"{dt.month}/{dt.day}/{dt.year:04d} {hour}:{dt.minute:02d}:{dt.second:02d} {half}"


class DateTimeStr(str):
    """A date string in Entra's output format that remembers its (UTC, naive) datetime."""

    __slots__ = ("dt",)
    dt: datetime

    def __new__(cls, dt: datetime) -> Self:
        self = super().__new__(cls, format_standard(dt))
        self.dt = dt
        return self


# --- parsing free-form date strings (CDate, DateAdd/DateDiff inputs, NumFromDate) ---------

#: the longest string parse_datetime reads (the longest form it knows is under 60)
_MAX_DATE_LENGTH = 256

_ISO = re.compile(
    r"""\s*(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})
    (?:[T\s](?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d{1,7})\d*)?)?)?
    \s*(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?\s*\Z""",
    re.VERBOSE | re.IGNORECASE,
)
_US = re.compile(
    r"""\s*(?P<mo>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})
    (?:\s+(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,7})\d*)?)?
    \s*(?P<ampm>AM|PM|A\.M\.|P\.M\.)?)?
    \s*(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?\s*\Z""",
    re.VERBOSE | re.IGNORECASE,
)
_SLASH_ISO = re.compile(
    r"\s*(?P<y>\d{4})/(?P<mo>\d{1,2})/(?P<d>\d{1,2})"
    r"(?:\s+(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?)?\s*\Z"
)
_NAMED = re.compile(
    r"""\s*(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s+)?
    (?:(?P<d1>\d{1,2})\s+(?P<mon1>[A-Za-z]{3,9})\.?,?\s+(?P<y1>\d{4})
      |(?P<mon2>[A-Za-z]{3,9})\.?\s+(?P<d2>\d{1,2}),?\s+(?P<y2>\d{4}))
    (?:\s+(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?\s*(?P<ampm>AM|PM)?)?
    \s*(?P<tz>Z|GMT|UTC|[+-]\d{2}(?::?\d{2})?)?\s*\Z""",
    re.VERBOSE | re.IGNORECASE,
)


def _offset(tz: str | None) -> timedelta:
    if not tz or tz.upper() in ("Z", "GMT", "UTC"):
        return timedelta(0)
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours = int(digits[:2])
    minutes = int(digits[2:4] or 0)
    return sign * timedelta(hours=hours, minutes=minutes)


def _month_number(name: str) -> int | None:
    low = name.lower()
    for i, (full, abbr) in enumerate(zip(_MONTHS, _MONTHS_ABBR, strict=True), start=1):
        if low in (full.lower(), abbr.lower()) or (len(low) >= 3 and full.lower().startswith(low)):
            return i
    return None


def _hour(h: str | None, ampm: str | None) -> int:
    hour = int(h or 0)
    if ampm:
        if hour < 1 or hour > 12:
            raise ValueError("hour out of range for AM/PM")
        pm = ampm[0].upper() == "P"
        hour = hour % 12 + (12 if pm else 0)
    return hour


def parse_datetime(value: str) -> datetime:
    """Parse the date strings .NET ``DateTime.Parse`` accepts in practice → naive UTC.

    Accepted: ISO 8601 dates and date-times with optional ``Z``/offset, including Workday's
    ``2020-03-16-07:00`` (a date with an offset); US ``M/d/yyyy [h:mm[:ss] [AM|PM]]`` (the
    format this module outputs); ``yyyy/M/d``; ``d MMM yyyy`` and ``MMM d, yyyy`` with an
    optional time and RFC 1123 weekday.

    Raises:
        ValueError: anything else, or an impossible date.
    """
    if isinstance(value, DateTimeStr):
        return value.dt
    if len(value) > _MAX_DATE_LENGTH:
        # The patterns below have adjacent \s* runs: quadratic on long runs of spaces.
        raise ValueError(f"{len(value):,} characters is too long for a date/time")
    m = _ISO.match(value) or _US.match(value)
    if m:
        g = m.groupdict()
        frac = g.get("f") or ""
        dt = datetime(
            int(g["y"]),
            int(g["mo"]),
            int(g["d"]),
            _hour(g["h"], g.get("ampm")),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            int((frac + "000000")[:6]) if frac else 0,
        )
        return dt - _offset(g["tz"])
    m = _SLASH_ISO.match(value)
    if m:
        g = m.groupdict()
        return datetime(
            int(g["y"]),
            int(g["mo"]),
            int(g["d"]),
            int(g["h"] or 0),
            int(g["mi"] or 0),
            int(g["s"] or 0),
        )
    m = _NAMED.match(value)
    if m:
        g = m.groupdict()
        month = _month_number(g["mon1"] or g["mon2"])
        if month is None:
            raise ValueError(f"unknown month name in {shown(value)}")
        dt = datetime(
            int(g["y1"] or g["y2"]),
            month,
            int(g["d1"] or g["d2"]),
            _hour(g["h"], g["ampm"]),
            int(g["mi"] or 0),
            int(g["s"] or 0),
        )
        return dt - _offset(g["tz"])
    raise ValueError(f"not a recognised date/time: {shown(value)}")


def to_datetime(value: str, func: str) -> datetime:
    """:func:`parse_datetime` raising :class:`UserDataError` naming the function."""
    try:
        return parse_datetime(value)
    except (ValueError, OverflowError) as exc:
        raise UserDataError(f"{func}: cannot read {shown(value)} as a date/time ({exc})") from exc


def now(fixed: datetime | None) -> datetime:
    if fixed is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if fixed.tzinfo is not None:
        return fixed.astimezone(UTC).replace(tzinfo=None)
    return fixed


# --- FILETIME (Active Directory dates) ----------------------------------------------------


def from_filetime(ticks: int) -> datetime:
    """100-nanosecond intervals since 1601-01-01 UTC → datetime."""
    if ticks < 0:
        raise ValueError("negative FILETIME")
    return _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)


def to_filetime(dt: datetime) -> int:
    delta = dt - _FILETIME_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


# --- DateAdd / DateDiff -------------------------------------------------------------------

INTERVALS = ("yyyy", "m", "d", "ww", "h", "n", "s")


def _add_months(dt: datetime, months: int) -> datetime:
    total = dt.year * 12 + (dt.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    if not 1 <= year <= 9999:
        raise OverflowError("year out of range")
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


def date_add(interval: str, amount: int, dt: datetime) -> datetime:
    """VB ``DateAdd``: months and years clamp the day to the month's end (Jan 31 + 1 m → Feb 28)."""
    if interval == "yyyy":
        return _add_months(dt, 12 * amount)
    if interval == "m":
        return _add_months(dt, amount)
    if interval == "d":
        return dt + timedelta(days=amount)
    if interval == "ww":
        return dt + timedelta(weeks=amount)
    if interval == "h":
        return dt + timedelta(hours=amount)
    if interval == "n":
        return dt + timedelta(minutes=amount)
    if interval == "s":
        return dt + timedelta(seconds=amount)
    raise ValueError(f"unknown interval {shown(interval)}")


def _week_start(dt: datetime) -> int:
    """Ordinal of the Sunday that starts ``dt``'s week (VB's default first day of week)."""
    ordinal = dt.toordinal()
    return ordinal - (dt.isoweekday() % 7)


def date_diff(interval: str, d1: datetime, d2: datetime) -> int:
    """VB ``DateDiff``: the number of interval *boundaries* crossed from d1 to d2.

    So ``DateDiff("yyyy", 12/31/2020, 1/1/2021)`` is 1 and ``DateDiff("h", 10:59, 11:01)`` is
    1; weeks (``ww``) count Sundays. This matches every example in Microsoft's table
    (e.g. 8/25/2021 5:41:18 PM → 2012-03-16-07:00 is -3449 d, -493 ww, -113 m, -9 yyyy).
    """
    if interval == "yyyy":
        return d2.year - d1.year
    if interval == "m":
        return (d2.year * 12 + d2.month) - (d1.year * 12 + d1.month)
    if interval == "d":
        return d2.toordinal() - d1.toordinal()
    if interval == "ww":
        return (_week_start(d2) - _week_start(d1)) // 7
    days = d2.toordinal() - d1.toordinal()
    if interval == "h":
        return days * 24 + d2.hour - d1.hour
    if interval == "n":
        return (days * 24 + d2.hour - d1.hour) * 60 + d2.minute - d1.minute
    if interval == "s":
        return ((days * 24 + d2.hour - d1.hour) * 60 + d2.minute - d1.minute) * 60 + (
            d2.second - d1.second
        )
    raise ValueError(f"unknown interval {shown(interval)}")


# --- .NET custom date and time format strings (FormatDateTime) ----------------------------

# A token is (specifier letter, repeat count) or ("", literal text).
FormatToken = tuple[str, int | str]

_SPECIFIERS = frozenset("dfFghHKmMstyz")
_MAX_COUNT = {
    "d": 4,
    "f": 7,
    "F": 7,
    "g": 2,
    "h": 2,
    "H": 2,
    "K": 1,
    "m": 2,
    "M": 4,
    "s": 2,
    "t": 2,
    "z": 3,
}


@lru_cache(maxsize=256)
def tokenize_format(fmt: str) -> tuple[FormatToken, ...]:
    """Split a .NET custom format string into specifier and literal tokens.

    Raises:
        ValueError: an unterminated quote, a trailing backslash, more than 7 ``f``.
    """
    if not fmt:
        raise ValueError("empty format string")
    tokens: list[FormatToken] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            tokens.append(("", "".join(literal)))
            literal.clear()

    i = 0
    n = len(fmt)
    while i < n:
        ch = fmt[i]
        if ch in _SPECIFIERS:
            j = i
            while j < n and fmt[j] == ch:
                j += 1
            count = j - i
            if ch in "fF" and count > 7:
                raise ValueError(f"more than 7 '{ch}' in {shown(fmt)}")
            flush()
            tokens.append((ch, count if ch == "y" else min(count, _MAX_COUNT[ch])))
            i = j
        elif ch in "'\"":
            end = fmt.find(ch, i + 1)
            if end < 0:
                raise ValueError(f"unterminated quote in {shown(fmt)}")
            literal.append(fmt[i + 1 : end])
            i = end + 1
        elif ch == "\\":
            if i + 1 >= n:
                raise ValueError(f"trailing backslash in {shown(fmt)}")
            literal.append(fmt[i + 1])
            i += 2
        elif ch == "%":
            # "%d" is the single custom specifier d; the '%' itself is not output.
            i += 1
        elif ch == ":":
            literal.append(":")  # invariant time separator
            i += 1
        elif ch == "/":
            literal.append("/")  # invariant date separator
            i += 1
        else:
            literal.append(ch)
            i += 1
    flush()
    return tuple(tokens)


def format_custom(dt: datetime, kind: Kind, tokens: tuple[FormatToken, ...]) -> str:
    """Format with .NET custom-format semantics (invariant culture; local time is UTC)."""
    out: list[str] = []
    for spec, count in tokens:
        if spec == "":
            out.append(str(count))
            continue
        assert isinstance(count, int)
        if spec == "d":
            if count == 1:
                out.append(str(dt.day))
            elif count == 2:
                out.append(f"{dt.day:02d}")
            elif count == 3:
                out.append(_DAYS_ABBR[dt.weekday()])
            else:
                out.append(_DAYS[dt.weekday()])
        elif spec == "M":
            if count == 1:
                out.append(str(dt.month))
            elif count == 2:
                out.append(f"{dt.month:02d}")
            elif count == 3:
                out.append(_MONTHS_ABBR[dt.month - 1])
            else:
                out.append(_MONTHS[dt.month - 1])
        elif spec == "y":
            if count <= 2:
                yy = dt.year % 100
                out.append(str(yy) if count == 1 else f"{yy:02d}")
            else:
                out.append(f"{dt.year:0{count}d}")
        elif spec == "h":
            h12 = dt.hour % 12 or 12
            out.append(str(h12) if count == 1 else f"{h12:02d}")
        elif spec == "H":
            out.append(str(dt.hour) if count == 1 else f"{dt.hour:02d}")
        elif spec == "m":
            out.append(str(dt.minute) if count == 1 else f"{dt.minute:02d}")
        elif spec == "s":
            out.append(str(dt.second) if count == 1 else f"{dt.second:02d}")
        elif spec in "fF":
            digits = f"{dt.microsecond:06d}0"[:count]
            out.append(digits if spec == "f" else digits.rstrip("0"))
        elif spec == "t":
            half = "AM" if dt.hour < 12 else "PM"
            out.append(half[:count])
        elif spec == "z":
            out.append(("+0", "+00", "+00:00")[count - 1])
        elif spec == "K":
            out.append({"Utc": "Z", "Local": "+00:00", "Unspecified": ""}[kind])
        elif spec == "g":
            out.append("A.D.")
    return "".join(out)


_NAMES_RE = {
    ("M", 3): "|".join(_MONTHS_ABBR),
    ("M", 4): "|".join(_MONTHS),
    ("d", 3): "|".join(_DAYS_ABBR),
    ("d", 4): "|".join(_DAYS),
}


@dataclass(frozen=True, slots=True)
class ExactParser:
    """A compiled ``DateTime.ParseExact`` for one format."""

    fmt: str
    #: a ``regex``-package pattern (matched with a time limit: adjacent ``\d{1,2}`` groups
    #: of a hostile format backtrack exponentially)
    regex: Any
    groups: tuple[tuple[str, int, str], ...]  # (spec, count, group name)


@lru_cache(maxsize=256)
def compile_exact(fmt: str) -> ExactParser:
    """Build the parser for a .NET custom format (``ParseExact``).

    An unquoted ``Z`` in the format matches a literal ``Z`` and marks the time as UTC, as
    .NET's parser does (FUNCS example ``yyyyMMddHHmmss.fZ``).

    Raises:
        ValueError: the format is invalid.
    """
    parts: list[str] = []
    groups: list[tuple[str, int, str]] = []
    for spec, count in tokenize_format(fmt):
        if spec == "":
            assert isinstance(count, str)
            for ch in count:
                if ch == "Z":
                    name = f"g{len(groups)}"
                    groups.append(("Z", 1, name))
                    parts.append(f"(?P<{name}>Z)")
                elif ch.isspace():
                    parts.append(r"\s+")
                else:
                    parts.append(re.escape(ch))
            continue
        assert isinstance(count, int)
        name = f"g{len(groups)}"
        if (spec, count) in _NAMES_RE:
            body = _NAMES_RE[(spec, count)]
        elif spec in "dMhHms":
            body = r"\d{1,2}" if count == 1 else r"\d{2}"
        elif spec == "y":
            body = {1: r"\d{1,2}", 2: r"\d{2}", 3: r"\d{3,4}"}.get(count, rf"\d{{{count}}}")
        elif spec == "f":
            body = rf"\d{{{count}}}"
        elif spec == "F":
            body = rf"\d{{0,{count}}}"
        elif spec == "t":
            body = "[AP]" if count == 1 else "AM|PM"
        elif spec == "z":
            body = r"[+-]\d{1,2}(?::?\d{2})?"
        elif spec == "K":
            body = r"Z|[+-]\d{2}:?\d{2}|"
        else:  # g: era
            body = r"A\.D\.|AD"
        groups.append((spec, count, name))
        parts.append(f"(?P<{name}>{body})")
    try:
        pattern = regex.compile("".join(parts) + r"\Z", regex.IGNORECASE)
    except (regex.error, RecursionError, OverflowError, MemoryError) as exc:
        raise ValueError(f"the format {shown(fmt)} is too complex ({exc})") from None
    return ExactParser(fmt, pattern, tuple(groups))


# DateTimeStyles (System.Globalization) names FormatDateTime accepts
STYLE_NAMES = frozenset(
    {
        "None",
        "AllowLeadingWhite",
        "AllowTrailingWhite",
        "AllowInnerWhite",
        "AllowWhiteSpaces",
        "NoCurrentDateDefault",
        "AdjustToUniversal",
        "AssumeLocal",
        "AssumeUniversal",
        "RoundtripKind",
    }
)
DEFAULT_STYLES = frozenset({"RoundtripKind", "AllowLeadingWhite", "AllowTrailingWhite"})


def parse_styles(text: str) -> frozenset[str]:
    """``"DateTimeStyles.RoundtripKind, DateTimeStyles.AllowLeadingWhite"`` → names.

    Raises:
        ValueError: an unknown style name.
    """
    names: set[str] = set()
    for part in re.split(r"[,|]", text):
        name = part.strip()
        name = name.removeprefix("DateTimeStyles.")
        if not name:
            continue
        if name not in STYLE_NAMES:
            raise ValueError(f"unknown DateTimeStyles value {shown(part.strip())}")
        names.add(name)
    if "AllowWhiteSpaces" in names:
        names |= {"AllowLeadingWhite", "AllowTrailingWhite", "AllowInnerWhite"}
    return frozenset(names)


def parse_exact(
    value: str,
    parser: ExactParser,
    styles: frozenset[str],
    today: Callable[[], datetime],
    timeout: float | None = None,
) -> tuple[datetime, Kind]:
    """``DateTime.ParseExact(value, format, invariant, styles)`` → (UTC-or-unspecified, kind).

    Raises:
        ValueError: the value does not fit the format.
        TimeoutError: matching took longer than ``timeout`` seconds.
    """
    s = value
    if "AllowLeadingWhite" in styles:
        s = s.lstrip()
    if "AllowTrailingWhite" in styles:
        s = s.rstrip()
    if "AllowInnerWhite" in styles:
        s = re.sub(r"\s+", " ", s)
    m = parser.regex.match(s, timeout=timeout)
    if not m:
        raise ValueError(f"{shown(value)} does not match the format {shown(parser.fmt)}")
    year: int | None = None
    month: int | None = None
    day: int | None = None
    hour = minute = second = micro = 0
    half: str | None = None
    offset: timedelta | None = None
    utc_designator = False
    for spec, count, name in parser.groups:
        text = m.group(name)
        if spec == "y":
            y = int(text)
            year = (2000 + y if y <= 49 else 1900 + y) if count <= 2 else y
        elif spec == "M":
            if count >= 3:
                month = _month_number(text)
                if month is None:
                    raise ValueError(f"unknown month name {text!r}")
            else:
                month = int(text)
        elif spec == "d":
            if count <= 2:
                day = int(text)
        elif spec in "hH":
            hour = int(text)
        elif spec == "m":
            minute = int(text)
        elif spec == "s":
            second = int(text)
        elif spec in "fF":
            micro = int((text + "000000")[:6]) if text else 0
        elif spec == "t":
            half = text[0].upper()
        elif spec in "zK":
            if text.upper() == "Z":
                offset, utc_designator = timedelta(0), True
            elif text:
                offset = _offset(text)
        elif spec == "Z":
            offset, utc_designator = timedelta(0), True
    if half is not None:
        if not 1 <= hour <= 12:
            raise ValueError(f"hour {hour} with AM/PM in {shown(value)}")
        hour = hour % 12 + (12 if half == "P" else 0)
    if year is None and month is None and day is None and "NoCurrentDateDefault" not in styles:
        base = today()
        year, month, day = base.year, base.month, base.day
    dt = datetime(year or 1, month or 1, day or 1, hour, minute, second, micro)
    kind: Kind
    if offset is not None:
        dt -= offset
        if "AdjustToUniversal" in styles or (utc_designator and "RoundtripKind" in styles):
            kind = "Utc"
        else:
            kind = "Local"
    elif "AssumeUniversal" in styles or "AssumeLocal" in styles:
        kind = "Utc" if "AdjustToUniversal" in styles else "Local"
    else:
        kind = "Unspecified"
    return dt, kind
