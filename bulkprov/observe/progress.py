"""Progress for long runs: a rich progress bar, JSON-lines events, or quiet.

The display only reads :class:`~bulkprov.pipeline.run.RunStats` four times a second; it never
sits on the hot path. Beside it run the report's sampler (:mod:`bulkprov.observe.report`, once a
second, which also gives the *current* rate shown here) and, when asked, the Prometheus
endpoint (:mod:`bulkprov.observe.metrics`). After the run, the HTML report is written.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from bulkprov import _json
from bulkprov.config import Config
from bulkprov.credentials import Secrets
from bulkprov.credentials.target import expiry_warning
from bulkprov.observe.metrics import MetricsServer
from bulkprov.observe.report import RunSampler, write_report
from bulkprov.pipeline import Engine, RunResult, RunStats, run_sync
from bulkprov.redact import shown, shown_json

TICK = 0.25
#: seconds between JSON ``progress`` events
JSON_TICK = 1.0


def _counts_text(counts: dict[str, int]) -> str:
    return "  ".join(f"{k} {v:,}" for k, v in counts.items() if v)


def summary_line(result: RunResult) -> str:
    rate = result.users / result.seconds if result.seconds > 0 else 0.0
    per_user = result.requests / result.users if result.users else 0.0
    return (
        f"run {result.run_id} {result.status}{' (resumed)' if result.resumed else ''} in "
        f"{result.seconds:.1f} s: {_counts_text(result.counts) or 'nothing to do'} — "
        f"{rate:,.0f} users/s, {result.requests:,} requests ({per_user:.2f}/user), "
        f"{result.throttled:,} throttled"
    )


def _print(console: Console, line: str) -> None:
    """One line on the console: scrubbed, control characters escaped, no rich markup (a
    ``[…]`` in a user's name or a target's answer is text)."""
    console.print(shown(line), markup=False, highlight=False)


def event(kind: str, **fields: Any) -> None:
    """One JSON-lines event on standard output (scrubbed, control characters escaped)."""
    line = _json.dumps({"event": kind, "at": time.time(), **fields}).decode()
    sys.stdout.write(shown_json(line) + "\n")
    sys.stdout.flush()


async def run_with_progress(
    cfg: Config,
    rematch: bool,
    as_json: bool,
    quiet: bool,
    expect: int | None,
    *,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    report: bool = True,
    **sync_options: Any,
) -> RunResult:
    """Run :func:`~bulkprov.pipeline.run.run_sync` with a display, the sampler, metrics, a report.

    ``sync_options`` go to ``run_sync`` (tests pass transports and a retry policy).
    """
    secrets = Secrets.from_config(cfg)
    engine = Engine(cfg)
    stats = RunStats()
    console = Console(stderr=False)
    warning = None if cfg.target.oauth else expiry_warning(secrets.scim_token)
    if warning and as_json:
        event("warning", message=warning)
    elif warning:
        Console(stderr=True).print(
            Text("warning: ", style="yellow") + Text(shown(warning)), highlight=False
        )
    sampler = RunSampler(cfg, stats)
    result: RunResult | None = None
    sync_options.setdefault("handle_signals", True)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            if as_json:
                tg.start_soon(_json_ticker, stats, sampler, expect)
            elif not quiet:
                tg.start_soon(_bar_ticker, stats, console, expect, sampler)
            try:
                async with (
                    MetricsServer(stats, sampler.current_rate, host=metrics_host, port=metrics_port)
                    if metrics_port is not None
                    else contextlib.nullcontext()
                ) as server:
                    if server is not None and as_json:
                        event("metrics", url=server.url)
                    elif server is not None and not quiet:
                        _print(console, f"metrics: {server.url}")
                    result = await run_sync(
                        cfg, secrets, stats=stats, rematch=rematch, engine=engine, **sync_options
                    )
            finally:
                tg.cancel_scope.cancel()
    finally:
        sampler.close()
        if report and stats.run_id:
            with anyio.CancelScope(shield=True):
                path = await write_report(cfg, stats.run_id)
            if path is not None and result is None and not as_json:
                _print(console, f"report (run stopped): {path}")
            report_file = path
        else:
            report_file = None
    assert result is not None
    if as_json:
        event(
            "finished",
            run_id=result.run_id,
            status=result.status,
            counts=result.counts,
            seconds=round(result.seconds, 3),
            requests=result.requests,
            throttled=result.throttled,
            resumed=result.resumed,
            report=str(report_file) if report_file else None,
            message=result.message,
        )
    else:
        _print(console, summary_line(result))
        if result.message:  # e.g. the disables held by the threshold: --quiet shows it too
            _print(console, f"  {result.message}")
        if report_file is not None and not quiet:
            _print(console, f"report: {report_file}")
    return result


async def _json_ticker(stats: RunStats, sampler: RunSampler, expect: int | None) -> None:
    while True:
        await anyio.sleep(JSON_TICK)
        elapsed = time.monotonic() - stats.started
        event(
            "progress",
            run_id=stats.run_id,
            phase=stats.phase,
            processed=stats.processed,
            counts=stats.counts,
            requests=stats.requests,
            throttled=stats.throttled,
            users_per_second=round(stats.processed / elapsed, 1) if elapsed else 0.0,
            current_rate=round(sampler.current_rate(), 1),
            queue=stats.queue_depth,
            total=expect if expect is not None else stats.total,
        )


async def _bar_ticker(
    stats: RunStats, console: Console, expect: int | None, sampler: RunSampler
) -> None:
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} users/s (now {task.fields[now]})"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("sync", total=expect, rate="0", now="0", counts="")
        while True:
            elapsed = time.monotonic() - stats.started
            rate = stats.processed / elapsed if elapsed > 0 else 0.0
            extra = f"  429s {stats.throttled}" if stats.throttled else ""
            bar.update(
                task,
                completed=stats.processed,
                # --expect wins; else the count Graph gave at the start of a full read
                total=expect if expect is not None else stats.total,
                description=f"run {stats.run_id} {stats.phase}",
                rate=f"{rate:,.0f}",
                now=f"{sampler.current_rate():,.0f}",
                counts=_counts_text(stats.counts) + extra,
            )
            await anyio.sleep(TICK)
