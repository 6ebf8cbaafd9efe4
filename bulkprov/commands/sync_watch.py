"""The loop behind ``bulkprov sync --watch``: incremental cycles until stopped.

Not a command of its own: :mod:`bulkprov.commands.sync` runs it (imported there only when
``--watch`` is given, since it imports the pipeline).

Each cycle is one :func:`~bulkprov.pipeline.run.run_sync` (a Graph delta round after the first),
so a change in Entra reaches the target within one interval. Ctrl-C or SIGTERM during a
cycle lets the in-flight work finish and saves the state (the pipeline's signal handling);
between cycles there is nothing in flight. A cycle that fails because Graph or the target
is unavailable, or that the quarantine breaker stopped, is reported and the next one runs
at the next interval (a quarantine's reasons no longer stop it); one stopped by the target's
daily request limit (Zoom) is reported and resumed once the limit resets; refused
credentials, a bad config or an unusable state stop the loop.

``sync``'s options hold across the loop: ``--metrics-port`` serves one endpoint for all
cycles (its figures are the current cycle's, ``bulkprov_run_id`` says which), ``--rematch``
re-matches in the first cycle, and each cycle that changed something writes its report
(unless ``--no-report``); what to print (``--quiet``, ``--json``) is the caller's.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio

from bulkprov.commands._shared import _unwrap
from bulkprov.config import Config
from bulkprov.credentials import Secrets
from bulkprov.errors import (
    BulkProvError,
    Quarantined,
    RunAborted,
    SourceAuthError,
    SourceError,
    SourceTLSError,
    TargetDailyLimit,
    TargetStop,
    TargetUnavailable,
)
from bulkprov.observe.metrics import MetricsServer
from bulkprov.observe.report import RunSampler, write_report
from bulkprov.pipeline import Engine, RunResult, RunStats, run_sync

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")

#: counts that mean a cycle did nothing worth a report
_IDLE = frozenset({"unchanged", "skipped"})


def parse_interval(text: str) -> float:
    """``30s``, ``2m``, ``1h``, ``500ms`` or plain seconds → seconds (> 0)."""
    m = _DURATION.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 2m, 1h)")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    return float(m.group(1)) * scale


def did_something(result: RunResult) -> bool:
    """Whether a cycle changed, failed or held anything (else it is an idle cycle)."""
    return any(v for k, v in result.counts.items() if k not in _IDLE)


async def watch(
    cfg: Config,
    secrets: Secrets,
    interval: float,
    *,
    on_result: Callable[[RunResult], None],
    on_error: Callable[[BulkProvError], None],
    cycles: int | None = None,
    metrics: MetricsServer | None = None,
    report: bool = False,
    on_report: Callable[[str], None] | None = None,
    rematch: bool = False,
    **kwargs: Any,
) -> None:
    """Run cycles every ``interval`` seconds (``cycles``: stop after that many, for tests).

    ``metrics``: an open endpoint, pointed at each cycle's figures in turn. ``report``:
    write the report of each cycle that did something (its path to ``on_report``).
    ``rematch``: the first cycle lists the target and re-matches every account.
    """
    engine = Engine(cfg)
    done = 0
    while cycles is None or done < cycles:
        started = anyio.current_time()
        stats = RunStats()
        result: RunResult | None = None
        try:
            result = await _cycle(
                cfg, secrets, engine, stats, metrics, rematch=rematch and done == 0, **kwargs
            )
        except (BulkProvError, BaseExceptionGroup) as group:
            exc = _unwrap(group)
            if isinstance(exc, BaseExceptionGroup):  # e.g. the breaker and a cancelled worker
                exc = _unwrap(exc.subgroup(Quarantined) or exc)
            if isinstance(exc, TargetDailyLimit):
                # Zoom's daily limit: sleep until it resets, then the next cycle resumes
                on_error(exc)
                done += 1
                await anyio.sleep(max(0.0, exc.resume_at - time.time()))
                continue
            # a quarantined cycle too: the next one goes on past the reasons it reported
            transient = isinstance(
                exc, SourceError | TargetUnavailable | Quarantined
            ) and not isinstance(exc, SourceAuthError | SourceTLSError | TargetStop)
            if not transient or not isinstance(exc, BulkProvError):
                raise
            on_error(exc)
        if result is not None:
            on_result(result)
            if report and did_something(result):
                path = await write_report(cfg, result.run_id)
                if path is not None and on_report is not None:
                    on_report(str(path))
        done += 1
        if cycles is not None and done >= cycles:
            break
        await _sleep_or_stop(max(0.0, interval - (anyio.current_time() - started)))


async def _sleep_or_stop(seconds: float) -> None:
    """Wait for the next cycle; SIGINT or SIGTERM meanwhile ends the loop (exit 130).

    The signals are listened for here, not left to their default: as a container's first
    process (PID 1) bulkprov would otherwise ignore SIGTERM between cycles (the kernel
    applies no default action to PID 1), and ``podman stop`` or a Kubernetes rollout
    would wait out their grace period and SIGKILL it. During a cycle the pipeline's own
    handling (finish what is in flight, flush) applies.
    """
    with anyio.move_on_after(seconds):
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                raise RunAborted(
                    f"stopped by {signal.Signals(signum).name} between cycles "
                    "(nothing was in flight; the state is saved)"
                )


async def _cycle(
    cfg: Config,
    secrets: Secrets,
    engine: Engine,
    stats: RunStats,
    metrics: MetricsServer | None,
    **kwargs: Any,
) -> RunResult:
    if metrics is None:
        return await run_sync(cfg, secrets, engine=engine, stats=stats, **kwargs)
    sampler = RunSampler(cfg, stats, sidecar=False)
    metrics.stats, metrics.current_rate = stats, sampler.current_rate
    async with anyio.create_task_group() as tg:
        tg.start_soon(sampler.run)
        try:
            result = await run_sync(cfg, secrets, engine=engine, stats=stats, **kwargs)
        finally:
            tg.cancel_scope.cancel()
    return result
