"""Secret redaction, enforced in one place rather than by convention.

Every secret bulkprov reads (the Graph client secret, the SCIM token, OAuth client secrets,
the access tokens it obtains) is :func:`register`-ed the moment it is read. From then on:

* every log record of every library (httpx, aiohttp, msal…) is scrubbed when it is created,
  through a log-record factory installed on the first registration — message, arguments and
  formatted traceback alike;
* :func:`scrub` is applied at the other sinks: the text of an error the CLI prints, and the
  reasons and messages the state database stores.

A registered value is replaced by ``[REDACTED]`` wherever it appears, including inside a longer
string (an ``Authorization: Bearer …`` header, a URL-encoded form body).
"""

from __future__ import annotations

import logging
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
