"""``bulkprov sync``: one run of the pipeline, or with ``--watch`` a run every interval.

The command reads the config and hands it to :func:`bulkprov.observe.progress.run_with_progress`
(the progress bar or JSON events, the metrics server, the report) for one run; ``--watch``
drives the loop in :mod:`bulkprov.commands.sync_watch` instead and prints one line per
cycle. Both import the pipeline only when they run, so ``bulkprov --help`` stays fast.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import click

from bulkprov.commands._shared import (
    EPILOG,
    _load,
    _run,
    _secrets,
    config_option,
    echo,
    result_exit,
)
from bulkprov.config import Config
from bulkprov.errors import BulkProvError


@click.command(epilog=EPILOG)
@config_option
@click.option("--rematch", is_flag=True, help="List the target and re-match every account.")
@click.option(
    "--full",
    is_flag=True,
    help="Read every user, not only the changes since the last cycle (unchanged users "
    "still cost no request).",
)
@click.option("--json", "as_json", is_flag=True, help="Emit JSON-lines events (automation).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final summary (cron).")
@click.option(
    "--expect",
    type=int,
    default=None,
    help="Expected user count, for the ETA (optional: a full read asks Graph for it).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    envvar="BULKPROV_METRICS_PORT",
    help="Serve Prometheus metrics on this port while the run lasts.",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@click.option("--no-report", is_flag=True, help="Do not write the HTML run report.")
@click.option("--watch", is_flag=True, help="Run incremental cycles until stopped (Ctrl-C).")
@click.option(
    "--interval", default="30s", show_default=True, help="Time between --watch cycles (30s, 2m)."
)
def sync(
    config_path: Path,
    rematch: bool,
    full: bool,
    as_json: bool,
    quiet: bool,
    expect: int | None,
    metrics_port: int | None,
    metrics_host: str,
    no_report: bool,
    watch: bool,
    interval: str,
) -> None:
    """Run the sync: create, update and disable users in the SCIM target.

    An interrupted run (Ctrl-C, SIGTERM, a crash, a kill) resumes where it stopped when the
    same command runs again: users already done are not sent again, and users that were in
    flight are found by matching, never created twice.

    \b
    Examples:
      bulkprov sync -c zoom.toml
      bulkprov sync --json > events.jsonl
      bulkprov sync --quiet --metrics-port 9464     # cron, scraped by Prometheus
      bulkprov sync --watch --interval 30s   # changes reach the target within 30 s
      bulkprov sync --full                   # read everyone again, not only changes
    """
    from bulkprov.observe.progress import run_with_progress

    cfg = _load(config_path)
    if watch:
        if full:
            raise click.UsageError("--full is for one run: run `sync --full`, then `--watch`")
        if expect is not None:
            raise click.UsageError(
                "--expect sizes one run's progress bar; --watch prints a line per cycle instead"
            )
        _watch(
            cfg,
            interval,
            as_json=as_json,
            quiet=quiet,
            rematch=rematch,
            report=not no_report,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
    result = _run(
        partial(
            run_with_progress,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            report=not no_report,
            full=full,
        ),
        cfg,
        rematch,
        as_json,
        quiet,
        expect,
    )
    sys.exit(result_exit(result))


def _watch(
    cfg: Config,
    interval: str,
    *,
    as_json: bool,
    quiet: bool,
    rematch: bool,
    report: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> NoReturn:
    """The ``--watch`` loop with ``sync``'s options: ``--metrics-port`` serves one endpoint
    for every cycle, ``--rematch`` applies to the first cycle, each cycle that did something
    writes its report unless ``--no-report``, and ``--quiet`` prints only those cycles
    (and failures)."""
    from bulkprov.commands.sync_watch import did_something, parse_interval, watch
    from bulkprov.observe.metrics import MetricsServer
    from bulkprov.observe.progress import event, summary_line
    from bulkprov.pipeline import RunResult, RunStats

    try:
        seconds = parse_interval(interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--interval") from exc

    def on_result(result: RunResult) -> None:
        if as_json:
            event(
                "cycle",
                run_id=result.run_id,
                status=result.status,
                counts=result.counts,
                message=result.message,
            )
        elif not quiet or did_something(result):
            echo(summary_line(result))
            if result.message:
                echo(f"  {result.message}")

    def on_report(path: str) -> None:
        if as_json:
            event("report", path=path)
        elif not quiet:
            echo(f"  report: {path}")

    def on_error(exc: BulkProvError) -> None:
        echo(f"cycle failed (retried in {interval}): {exc}", fg="yellow", err=True)

    secrets = _secrets(cfg)

    async def loop() -> None:
        options: dict[str, Any] = {
            "on_result": on_result,
            "on_error": on_error,
            "on_report": on_report,
            "report": report,
            "rematch": rematch,
            "handle_signals": True,
        }
        if metrics_port is None:
            await watch(cfg, secrets, seconds, **options)
            return
        async with MetricsServer(
            RunStats(), lambda: 0.0, host=metrics_host, port=metrics_port
        ) as server:
            if as_json:
                event("metrics", url=server.url)
            elif not quiet:
                echo(f"metrics: {server.url} (every cycle)")
            await watch(cfg, secrets, seconds, metrics=server, **options)

    _run(loop)
    sys.exit(0)
