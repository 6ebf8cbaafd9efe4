"""The loop behind ``bulkprov sync --watch``: incremental cycles until stopped.

Not a command of its own: :mod:`bulkprov.commands.sync` runs it (imported there only when
``--watch`` is given, since it imports the pipeline).

Each cycle is one :func:`~bulkprov.pipeline.run.run_sync` (a Graph delta round after the first),
so a change in Entra reaches the target within one interval. Ctrl-C or SIGTERM during a
cycle lets the in-flight work finish and saves the state (the pipeline's signal handling);
between cycles there is nothing in flight. A cycle that fails because Graph or the target
is unavailable is reported and retried at the next interval (its read resumes); one stopped
by the target's daily request limit (Zoom) is reported and resumed once the limit resets;
refused credentials, a bad config or an unusable state stop the loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import anyio

from bulkprov.commands._shared import _unwrap
from bulkprov.config import Config
from bulkprov.credentials import Secrets
from bulkprov.errors import (
    BulkProvError,
    SourceAuthError,
    SourceError,
    TargetAuthError,
    TargetDailyLimit,
    TargetUnavailable,
)
from bulkprov.pipeline import Engine, RunResult, run_sync

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_interval(text: str) -> float:
    """``30s``, ``2m``, ``1h``, ``500ms`` or plain seconds → seconds (> 0)."""
    m = _DURATION.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 2m, 1h)")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    return float(m.group(1)) * scale


async def watch(
    cfg: Config,
    secrets: Secrets,
    interval: float,
    *,
    on_result: Callable[[RunResult], None],
    on_error: Callable[[BulkProvError], None],
    cycles: int | None = None,
    **kwargs: Any,
) -> None:
    """Run cycles every ``interval`` seconds (``cycles``: stop after that many, for tests)."""
    engine = Engine(cfg)
    done = 0
    while cycles is None or done < cycles:
        started = anyio.current_time()
        try:
            on_result(await run_sync(cfg, secrets, engine=engine, **kwargs))
        except (BulkProvError, BaseExceptionGroup) as group:
            exc = _unwrap(group)
            if isinstance(exc, TargetDailyLimit):
                # Zoom's daily limit: sleep until it resets, then the next cycle resumes
                on_error(exc)
                done += 1
                await anyio.sleep(max(0.0, exc.resume_at - time.time()))
                continue
            transient = isinstance(exc, SourceError | TargetUnavailable) and not isinstance(
                exc, SourceAuthError | TargetAuthError
            )
            if not transient or not isinstance(exc, BulkProvError):
                raise
            on_error(exc)
        done += 1
        await anyio.sleep(max(0.0, interval - (anyio.current_time() - started)))
