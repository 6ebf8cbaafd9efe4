r"""Secret redaction, enforced in one place rather than by convention.

Every secret bulkprov reads (the Graph client secret, the SCIM token, OAuth client secrets,
the access tokens it obtains) is :func:`register`-ed the moment it is read. From then on:

* every log record of every library (httpx, aiohttp, msal…) is scrubbed when it is created,
  through a log-record factory installed on the first registration — message, arguments and
  formatted traceback alike;
* :func:`scrub` is applied at the other sinks: the text of an error the CLI prints, and the
  reasons and messages the state database stores.

A registered value is replaced by ``[REDACTED]`` wherever it appears, including inside a longer
string (an ``Authorization: Bearer …`` header, a URL-encoded form body, a JSON string); text
cut to a length goes through :func:`clip`, which scrubs first and never shows the start of a
secret the cut went through.

The other sinks of text that came from outside (a Graph user, a target's answer) are made
safe here too, each by one function every writer of that sink uses:

* a terminal: :func:`shown` (scrubbed, control characters escaped: an ESC, an OSC title
  sequence, a bidirectional override or a line break in a user's name prints as ``\x1b``,
  ``\u202e``, ``\n``, never as what it would do), and :func:`shown_json` for JSON lines;
  the commands print through ``bulkprov.commands._shared.echo``/``echo_json``, the progress
  display through the same two functions;
* a spreadsheet: :func:`csv_cell` (a cell that would start a formula is quoted).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
#: shorter values are not secrets worth scrubbing (and would mangle ordinary text)
MIN_LENGTH = 6

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_installed = False


def register(*values: str) -> None:
    """Scrub these values (and their URL-encoded forms) from logs and stored text from now on."""
    global _secrets
    new = set(_secrets)
    for value in values:
        if value and len(value) >= MIN_LENGTH:
            new.update({value, quote(value, safe=""), quote_plus(value)})
            # as a JSON string holds it (a secret with a quote, a backslash, a control
            # or non-ASCII character is written escaped in JSON output and stored JSON)
            new.update({json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]})
    with _lock:
        # longest first, so a secret that contains another is masked whole
        _secrets = tuple(sorted(new, key=len, reverse=True))
    _install()


def registered() -> int:
    """How many distinct forms are scrubbed (for tests)."""
    return len(_secrets)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by :data:`MASK`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_optional(text: str | None) -> str | None:
    return None if text is None else scrub(text)


#: the shortest start of a secret :func:`clip` masks at the end of a cut text
MIN_FRAGMENT = 4


def clip(text: str, limit: int) -> str:
    """``text`` scrubbed, then cut to ``limit`` characters.

    Scrubbing first matters: a secret the cut goes through would no longer be found whole
    afterwards, and its first characters would be shown. The cut text is checked too: when
    it ends with the start of a secret (at least :data:`MIN_FRAGMENT` characters: the text
    given was already cut inside a secret), that start is masked.
    """
    text = scrub(text)
    if len(text) <= limit:
        return text
    # the cut goes through a mask: keep the mask whole
    start = text.rfind(MASK, 0, limit + len(MASK) - 1)
    if start != -1 and start < limit < start + len(MASK):
        return text[:start] + MASK
    cut = text[:limit]
    for secret in _secrets:
        for n in range(min(len(secret) - 1, limit), MIN_FRAGMENT - 1, -1):
            if cut.endswith(secret[:n]):
                return cut[:-n] + MASK
    return cut


# -- text that came from outside, on a terminal or in a spreadsheet ----------------------

#: C0 and C1 control characters, DEL, the bidirectional marks, embeddings, overrides and
#: isolates (Unicode's Bidi_Control, "Trojan Source"), and the two Unicode line breaks
_CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    if c in _SHORT:
        return _SHORT[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def inert(text: str) -> str:
    r"""``text`` with every control character escaped as Python writes it (``\x1b``,
    ``\u202e``, ``\n``): a user's name printed on a terminal shows what it holds and does
    nothing (no escape sequence, no retitled window, no reordered or extra line).
    Printable text, other scripts included, is left as it is."""
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


def shown(text: str, *, lines: bool = False) -> str:
    """What bulkprov prints on a terminal: ``text`` scrubbed, its control characters escaped.

    ``text`` is one line: a line break in it (brought by a user's name, a target's answer)
    is escaped too, so it cannot forge a second line. ``lines`` is for text of several lines
    bulkprov composed (an error with a caret under an expression): its line breaks are kept
    and each line is made inert.
    """
    text = scrub(text)
    if lines:
        return "\n".join(inert(line) for line in text.split("\n"))
    return inert(text)


def shown_json(text: str) -> str:
    r"""A JSON text to print: scrubbed, and the control characters JSON leaves raw (DEL, C1,
    the bidirectional controls) written as ``\uXXXX`` escapes: the same JSON value."""
    text = scrub(text)
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


#: OWASP's CSV injection rule: a cell starting with one of these is a formula to a spreadsheet
#: (https://owasp.org/www-community/attacks/CSV_Injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a leading
    single quote (``=HYPERLINK(…)`` is written ``'=HYPERLINK(…)``; OWASP's rule)."""
    return "'" + value if value.startswith(FORMULA_START) else value


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        base = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        if not _secrets:
            return record
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: logging reports it
            return record
        record.msg, record.args = scrub(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)
