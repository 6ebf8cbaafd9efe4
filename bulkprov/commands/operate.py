"""The operator's commands around the syncs: what ran, what failed, what waits, and backups.

``status``, ``logs`` and ``report`` read the state database (the runs, the provisioning
log, the HTML report); ``staged`` and ``approve`` show and send the disables and deletes the
accidental-deletion threshold held back; ``retry-failed`` makes the escrowed users due now
and syncs; ``state export`` backs the database up. The state store, the report and the
pipeline are imported inside the functions that use them (:func:`release_escrow` and
:func:`export_state` too), so ``bulkprov --help`` does not pay for them.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bulkprov import _json
from bulkprov.commands._shared import (
    EPILOG,
    EXIT_FAILURES,
    _load,
    _run,
    _secrets,
    config_option,
    echo,
    echo_json,
    result_exit,
)
from bulkprov.config import Config

if TYPE_CHECKING:
    from bulkprov.checkpoint.health import StateHealth
from bulkprov.errors import StateError
from bulkprov.observe.logexport import LOG_ACTIONS, LOG_STATUSES


@click.command(epilog=EPILOG)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit non-zero when the job is unhealthy: 8 last run quarantined, 12 last run "
    "stopped and no sync running, 9 actions wait for approval, 13 no cycle completed "
    "within --max-age (the first that applies).",
)
@click.option(
    "--max-age",
    default=None,
    help="With --check: unhealthy when the last completed cycle ended longer ago (2h, 90m).",
)
@click.option(
    "--metrics",
    "as_metrics",
    is_flag=True,
    help="Print the health gauges in Prometheus' text format (a textfile collector, a "
    "Pushgateway).",
)
def status(
    config_path: Path, as_json: bool, check: bool, max_age: str | None, as_metrics: bool
) -> None:
    """Show the recent runs, their counts and whether one can resume.

    With ``--check``, say whether the job is healthy and exit with a code that says why
    not (what a container HEALTHCHECK, a Kubernetes probe or a cron wrapper calls).

    \b
    Examples:
      bulkprov status -c zoom.toml
      bulkprov status --check --max-age 2h     # exit 0 healthy, 8/9/12/13 why not
      bulkprov status --metrics > /var/lib/node_exporter/textfile/bulkprov.prom
    """
    from bulkprov.checkpoint.lock import StateLock

    if max_age is not None and not check:
        raise click.UsageError("--max-age goes with --check")
    max_seconds: float | None = None
    if max_age is not None:
        from bulkprov.commands.sync_watch import parse_interval

        try:
            max_seconds = parse_interval(max_age)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--max-age") from exc
    cfg = _load(config_path)
    if check or as_metrics:
        _health(cfg, as_json=as_json, check=check, max_age=max_seconds, as_metrics=as_metrics)
        return

    runs, users, quarantine, seats = _run(_read_status, cfg)
    # a sync holding the state now: its run is in progress, not interrupted
    live = bool(runs) and runs[0]["status"] == "running" and StateLock.held(cfg.state.path)
    if as_json:
        doc: dict[str, Any] = {
            "managed_users": users,
            "runs": runs,
            "live": live,
            "quarantine": quarantine,
        }
        if seats is not None:
            doc["seats"] = seats
        echo_json(doc)
        return
    if not runs:
        echo(f"no runs yet in {cfg.state.path}")
        return
    echo(f"state: {cfg.state.path}   managed users: {users}")
    if quarantine:
        echo(
            "in quarantine (until a cycle ends with no failure and nothing in escrow); "
            "reported reasons, which no longer stop a run: " + "; ".join(quarantine)
        )
    for pool, f in (seats or {}).items():
        held = f", {f['held']:,} user(s) held (LicenseLimitExceeded)" if f["held"] else ""
        echo(f"seats: {pool} {f['used']:,} used, {f['left']:,} left of {f['cap']:,}{held}")
    for i, r in enumerate(runs):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"]))
        counts = ", ".join(f"{k} {v}" for k, v in r["counts"].items() if v)
        note = _run_note(r, live=live and i == 0, last=i == 0)
        echo(f"run {r['id']:>4}  {started}  {r['status']:<24} {counts}{note}")


async def _read_status(
    cfg: Config,
) -> tuple[list[dict[str, Any]], int, list[str], dict[str, dict[str, int]] | None]:
    """The recent runs, the managed users, the quarantine's reasons and (profile "zoom")
    the seat pools' figures."""
    from bulkprov.checkpoint.staging import QUARANTINE, LifecycleStore
    from bulkprov.checkpoint.store import StateStore
    from bulkprov.pipeline import Seats

    if not cfg.state.path.exists():
        return [], 0, [], None
    async with await StateStore.open(cfg.state.path, verify=True) as store:
        saved = await LifecycleStore(store).get(QUARANTINE)
        reasons = [str(r) for r in _json.loads(saved)] if saved else []
        seats = await Seats.load(cfg, store, held=True)
        return (
            await store.runs(10),
            await store.user_count(),
            reasons,
            seats.figures() if seats is not None else None,
        )


async def _read_health(cfg: Config) -> StateHealth | None:
    from bulkprov.checkpoint.health import read_health
    from bulkprov.checkpoint.store import StateStore

    if not cfg.state.path.exists():  # never created by a check
        return None
    async with await StateStore.open(cfg.state.path, verify=True) as store:
        return await read_health(store)


def _health(
    cfg: Config, *, as_json: bool, check: bool, max_age: float | None, as_metrics: bool
) -> None:
    """``status --check`` / ``--metrics``: the verdict, one line per problem, the exit code."""
    from bulkprov.checkpoint.lock import StateLock
    from bulkprov.observe.health import check as judge
    from bulkprov.observe.health import render_metrics, summary

    health = _run(_read_health, cfg)
    live = StateLock.held(cfg.state.path)
    now = time.time()
    problems = judge(health, now=now, max_age=max_age, live=live) if check else []
    code = problems[0].exit_code if problems else 0
    if as_metrics:
        for line in render_metrics(health):
            echo(line)
    elif as_json:
        echo_json(
            {
                "healthy": not problems,
                "exit_code": code,
                "problems": [
                    {"kind": p.kind, "exit_code": p.exit_code, "text": p.text} for p in problems
                ],
                "live": live,
                "last_success": health.last_success if health else None,
                "held": health.held if health else 0,
                "escrowed": health.escrowed if health else 0,
                "quarantine": list(health.quarantine) if health else [],
            }
        )
    else:
        echo(("unhealthy: " if problems else "healthy: ") + summary(health, now=now, live=live))
        for p in problems:
            # a run's message comes from the state: printed through echo, terminal-safe
            echo(f"  {p.kind} (exit {p.exit_code}): {p.text}")
    sys.exit(code)


def _run_note(run: dict[str, Any], *, live: bool, last: bool) -> str:
    """What an unfinished run is, and what the next sync does with it."""
    status = run["status"]
    resumes = run.get("kind") in ("full", "new")
    if status == "running" and live:
        return "  (in progress)"
    if status == "running" and last:
        return (
            "  (interrupted: `bulkprov sync` resumes it)"
            if resumes
            else "  (stopped: the next `bulkprov sync` reads its changes again)"
        )
    if status == "quarantined" and last:
        nxt = "resumes it" if resumes else "reads its changes again"
        return f"  (see `bulkprov report {run['id']}`; the next `bulkprov sync` {nxt})"
    return ""


@click.command(epilog=EPILOG)
@config_option
@click.option("--run", "run_id", type=int, default=None, help="Only this run.")
@click.option(
    "--status",
    "status_",
    type=click.Choice(LOG_STATUSES, case_sensitive=False),
    default=None,
    help="Only entries with this status.",
)
@click.option(
    "--action",
    type=click.Choice(LOG_ACTIONS, case_sensitive=False),
    default=None,
    help="Only entries with this action.",
)
@click.option("--user", default=None, help="A Graph object id or a userName.")
@click.option("--since", default=None, help="Only entries since: 90m, 24h, 7d or 2026-11-28.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="How many entries: the newest ones (0 for all).",
)
@click.option("--oldest", is_flag=True, help="The oldest entries instead of the newest.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@click.option(
    "--csv",
    "csv_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write Entra-shaped CSV (log, steps, modified properties) into this directory.",
)
def logs(
    config_path: Path,
    run_id: int | None,
    status_: str | None,
    action: str | None,
    user: str | None,
    since: str | None,
    limit: int,
    oldest: bool,
    as_json: bool,
    csv_dir: Path | None,
) -> None:
    """Show or export the provisioning log (one entry per user per run).

    Shows the newest ``--limit`` entries that match (100 by default), oldest first; entries
    older than ``state.log_retention_days`` (default 30) are deleted when a run
    starts.

    \b
    Examples:
      bulkprov logs --status failure
      bulkprov logs --user jane@contoso.com --json
      bulkprov logs --since 24h --action disable
      bulkprov logs --run 12 --limit 0 --csv ./export    # like Entra's CSV download
    """
    from bulkprov.checkpoint.store import StateStore
    from bulkprov.observe.logexport import parse_since, write_entra_csv

    cfg = _load(config_path)
    try:
        since_ts = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    if not cfg.state.path.exists():
        echo(f"error: no state database at {cfg.state.path} (no run yet)", fg="red", err=True)
        sys.exit(6)

    async def read() -> list[dict[str, Any]]:
        async with await StateStore.open(cfg.state.path, verify=True) as store:
            return await store.log_entries(
                run_id=run_id,
                status=status_,
                action=action,
                user=user,
                since=since_ts,
                limit=limit or None,
                newest=not oldest,
            )

    entries = _run(read)
    if csv_dir is not None:
        for path in write_entra_csv(entries, csv_dir):
            echo(str(path))
        echo(f"{len(entries)} entries", err=True)
        return
    for e in entries:
        if as_json:
            echo_json(e)
        else:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
            reason = f"  {e['reason']}" if e["reason"] else ""
            echo(
                f"{at} run {e['run_id']} {e['status']:<8} {e['action']:<8} "
                f"{e['user_name'] or e['graph_id']}{reason}"
            )


@click.command(epilog=EPILOG)
@config_option
@click.argument("run_id", type=int, required=False)
@click.option("--open", "open_", is_flag=True, help="Open the report in a web browser.")
def report(config_path: Path, run_id: int | None, open_: bool) -> None:
    """Write the HTML report of a run (the last one by default) and print its path.

    Every sync writes its report when it ends; this command rewrites it from the state
    database and the run's samples (counts, failures with reasons, throughput and 429s
    over time), for example after an interrupted run.

    \b
    Examples:
      bulkprov report              # the last run
      bulkprov report 12 --open
    """
    from bulkprov.observe.report import write_report

    cfg = _load(config_path)
    if not cfg.state.path.exists():
        echo(f"error: no state database at {cfg.state.path} (no run yet)", fg="red", err=True)
        sys.exit(6)
    path = _run(write_report, cfg, run_id)
    if path is None:
        echo(f"error: no run {run_id if run_id else ''} in {cfg.state.path}", fg="red", err=True)
        sys.exit(6)
    echo(str(path))
    if open_:
        import webbrowser  # only here: it costs every other command's start-up

        webbrowser.open(path.resolve().as_uri())


@click.command(epilog=EPILOG)
@config_option
@click.option("--all", "show_all", is_flag=True, help="Also done, failed and superseded ones.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
def staged(config_path: Path, show_all: bool, as_json: bool) -> None:
    """List disables and deletes held by the accidental-deletion threshold.

    A cycle that would disable or delete more accounts than ``deprovision.threshold`` sends
    none of them; they wait here until ``bulkprov approve`` (or a later full cycle that no
    longer wants them).

    \b
    Example:
      bulkprov staged -c zoom.toml
    """
    from bulkprov.checkpoint.staging import LifecycleStore, Staged
    from bulkprov.checkpoint.store import StateStore

    cfg = _load(config_path)
    statuses = ("held", "pending", "done", "failed", "superseded") if show_all else ("held",)

    async def read() -> list[Staged]:
        async with await StateStore.open(cfg.state.path) as store:
            return await LifecycleStore(store).staged(status=statuses)

    items = _run(read)
    for s in items:
        if as_json:
            echo_json(dataclasses.asdict(s))
        else:
            echo(
                f"{s.id:>6}  run {s.run_id:<5} {s.status:<10} {s.action:<8} "
                f"{s.user_name or s.graph_id}  {(s.reason or '').removeprefix('staged: ')}"
            )
    if not as_json:
        held = sum(1 for s in items if s.status == "held")
        echo(f"{held} held action(s)" + ("; run `bulkprov approve` to send them" if held else ""))


@click.command(epilog=EPILOG)
@config_option
@click.option("--id", "ids", type=int, multiple=True, help="Only these staged ids (repeatable).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def approve(config_path: Path, ids: tuple[int, ...], yes: bool) -> None:
    """Send the held disables/deletes (Entra's "Allow deletes").

    \b
    Examples:
      bulkprov staged               # review first
      bulkprov approve --yes
      bulkprov approve --id 12 --id 13
    """
    from bulkprov.checkpoint.lock import StateLock
    from bulkprov.checkpoint.staging import LifecycleStore
    from bulkprov.checkpoint.store import StateStore
    from bulkprov.pipeline import approve as run_approve
    from bulkprov.pipeline import open_clients

    cfg = _load(config_path)

    async def count() -> int:
        async with await StateStore.open(cfg.state.path) as store:
            held = await LifecycleStore(store).staged(status=("held",))
            return len([s for s in held if not ids or s.id in ids])

    n = _run(count)
    if not n:
        echo("nothing held")
        return
    if not yes:
        click.confirm(
            f"send {n} held disable/delete action(s) to {cfg.target.base_url}?", abort=True
        )
    secrets = _secrets(cfg)

    async def go() -> dict[str, int]:
        with StateLock(cfg.state.path):
            store = await StateStore.open(cfg.state.path, verify=True)
            async with store, open_clients(cfg, secrets) as (_, scim):
                return await run_approve(store, scim, cfg, list(ids) or None)

    counts = _run(go)
    echo(", ".join(f"{k} {v}" for k, v in counts.items() if v) or "nothing to do")
    sys.exit(EXIT_FAILURES if counts.get("failed") else 0)


@click.command("retry-failed", epilog=EPILOG)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Emit JSON-lines events (automation).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final summary (cron).")
def retry_failed(config_path: Path, as_json: bool, quiet: bool) -> None:
    """Retry every user in escrow now (failed users wait 6 h, 12 h, 24 h… otherwise), then sync.

    \b
    Example:
      bulkprov retry-failed -c zoom.toml
    """
    from bulkprov.observe.progress import run_with_progress

    cfg = _load(config_path)
    released = _run(release_escrow, cfg)
    if not quiet and not as_json:
        echo(f"{released} escrowed user(s) retried now", err=True)
    result = _run(run_with_progress, cfg, False, as_json, quiet, None)
    sys.exit(result_exit(result))


@click.group(epilog=EPILOG)
def state() -> None:
    """Back up the state database.

    \b
    Example:
      bulkprov state export backup.sqlite3
    """


@state.command("export", epilog=EPILOG)
@config_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def state_export(config_path: Path, dest: Path) -> None:
    """Copy the state database to DEST (consistent even during a sync; mode 0600).

    \b
    Example:
      bulkprov state export backup-2026-11-28.sqlite3
    """
    cfg = _load(config_path)
    _run(export_state, cfg, dest)
    echo(f"wrote {dest}")


async def release_escrow(cfg: Config) -> int:
    """Make every escrowed user due now; returns how many (under the sync lock)."""
    from bulkprov.checkpoint.lock import StateLock
    from bulkprov.checkpoint.store import StateStore

    if not cfg.state.path.exists():
        return 0
    with StateLock(cfg.state.path):
        async with await StateStore.open(cfg.state.path, verify=True) as store:
            return await store.release_escrow()


async def export_state(cfg: Config, dest: Path) -> None:
    """Online backup of the state database (a running sync may keep writing)."""
    from bulkprov.checkpoint.store import StateStore

    if not cfg.state.path.exists():
        raise StateError(f"{cfg.state.path}: no state database to export")
    async with await StateStore.open(cfg.state.path) as store:
        await store.backup(dest)
