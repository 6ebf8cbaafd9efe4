"""The ``bulkprov`` command line.

Exit codes (also in ``bulkprov --help``):

==  ===========================================================
0   done
1   unexpected error
2   configuration error (the message names the file and key)
3   authentication refused (Graph or the SCIM target)
4   Microsoft Graph could not be read
5   the SCIM target failed
6   the state database cannot be used, or is in use
7   ``bulkprov apply``: the plan is out of date (nothing was sent)
8   quarantined: too many users failed (the report says why; resumable)
10  the sync completed but some users failed (see ``bulkprov logs --status failure``);
    ``bulkprov apply``: or some operations were held back (changed since the plan)
130 interrupted (the state is saved; run the same command to resume)
==  ===========================================================
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import click

from bulkprov import _json
from bulkprov.config import Config, load_config
from bulkprov.errors import BulkProvError
from bulkprov.redact import scrub

if TYPE_CHECKING:
    from bulkprov.credentials import Secrets

T = TypeVar("T")

EXIT_FAILURES = 10

EPILOG = """\b
Exit codes: 0 done, 1 unexpected error, 2 config error, 3 auth refused,
4 Graph unreadable, 5 SCIM target failed, 6 state unusable or in use,
7 plan out of date, 8 quarantined, 10 completed with failed users (apply: or held back),
130 interrupted (resumable).
Environment: BULKPROV_CONFIG (--config), and the secrets the config names
(default BULKPROV_GRAPH_SECRET, BULKPROV_SCIM_TOKEN).
"""

#: annotated so that modules adding commands (cli_ops) type-check despite the import cycle
config_option: Callable[[Callable[..., Any]], Callable[..., Any]] = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="bulkprov.toml",
    show_default=True,
    envvar="BULKPROV_CONFIG",
    show_envvar=True,
    help="The TOML configuration file.",
)


def _unwrap(exc: BaseException) -> BaseException:
    """Collapse one-member exception groups so the user sees the real error."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _fail(exc: BaseException) -> NoReturn:
    exc = _unwrap(exc)
    if isinstance(exc, BaseExceptionGroup):
        errors = [e for e in exc.exceptions if isinstance(e, BulkProvError)]
        if errors:
            exc = errors[0]
    if isinstance(exc, BulkProvError):
        click.secho(f"error: {scrub(str(exc))}", fg="red", err=True)
        sys.exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        click.secho("interrupted: the state is saved; run the same command to resume", err=True)
        sys.exit(130)
    raise exc


def _run(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    # A Graph page holds ~1,000 users of nested dicts alive at once: at the default gen-0
    # threshold (700) every page set off several collections that walked them. Measured
    # with gc.callbacks over a 100k-user sync: 0.49-0.69 s of CPU in ~1,460 collections,
    # against 0.03 s in 13 at 10,000, for ~10 MB more peak RSS (benchmarks/RESULTS.md).
    gc.set_threshold(10_000, 10, 10)
    try:
        return anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": _uvloop()})
    except (BulkProvError, BaseExceptionGroup, KeyboardInterrupt) as exc:
        _fail(exc)


def _uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except BulkProvError as exc:
        _fail(exc)


def _secrets(cfg: Config) -> Secrets:
    """The Graph secret and SCIM token the config names (env or file); exit 2 if unreadable."""
    from bulkprov.credentials import Secrets as _Secrets

    try:
        return _Secrets.from_config(cfg)
    except BulkProvError as exc:
        _fail(exc)


@click.group(epilog=EPILOG)
@click.version_option(package_name="bulkprov")
def main() -> None:
    """bulkprov: provision Microsoft Entra ID (Graph) users into a SCIM 2.0 service, fast.

    \b
    Quick start on the embedded simulators:
      bulkprov demo
    Against your tenant:
      bulkprov init                 # writes bulkprov.toml (Zoom defaults)
      export BULKPROV_GRAPH_SECRET=... BULKPROV_SCIM_TOKEN=...
      bulkprov sync                 # initial sync; run again to resume or update
    """


@main.command(epilog=EPILOG)
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="bulkprov.toml",
    show_default=True,
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented starter config for Zoom with the admin guide's mapping table.

    \b
    Example:
      bulkprov init --path zoom.toml
    """
    from bulkprov.starter import STARTER_TOML

    if path.exists() and not force:
        click.secho(f"error: {path} exists (use --force to overwrite)", fg="red", err=True)
        sys.exit(2)
    path.write_text(STARTER_TOML, encoding="utf-8")
    click.echo(f"wrote {path}: fill in graph.tenant_id, graph.client_id and target.base_url")


@main.command(epilog=EPILOG)
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
        _watch(cfg, interval, as_json)
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
    sys.exit(EXIT_FAILURES if result.status == "completed_with_failures" else 0)


@main.command("retry-failed", epilog=EPILOG)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Emit JSON-lines events (automation).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final summary (cron).")
def retry_failed(config_path: Path, as_json: bool, quiet: bool) -> None:
    """Retry every user in escrow now (failed users wait 6 h, 12 h, 24 h… otherwise), then sync.

    \b
    Example:
      bulkprov retry-failed -c zoom.toml
    """
    from bulkprov.escrow_cli import release_escrow
    from bulkprov.observe.progress import run_with_progress

    cfg = _load(config_path)
    released = _run(release_escrow, cfg)
    if not quiet and not as_json:
        click.echo(f"{released} escrowed user(s) retried now", err=True)
    result = _run(run_with_progress, cfg, False, as_json, quiet, None)
    sys.exit(EXIT_FAILURES if result.status == "completed_with_failures" else 0)


@main.group(epilog=EPILOG)
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
    from bulkprov.escrow_cli import export_state

    cfg = _load(config_path)
    _run(export_state, cfg, dest)
    click.echo(f"wrote {dest}")


def _watch(cfg: Config, interval: str, as_json: bool) -> NoReturn:
    from bulkprov.observe.progress import event, summary_line
    from bulkprov.pipeline import RunResult
    from bulkprov.watch import parse_interval, watch

    try:
        seconds = parse_interval(interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--interval") from None

    def on_result(result: RunResult) -> None:
        if as_json:
            event("cycle", run_id=result.run_id, status=result.status, counts=result.counts)
        else:
            click.echo(summary_line(result) + (f"\n  {result.message}" if result.message else ""))

    def on_error(exc: BulkProvError) -> None:
        click.secho(f"cycle failed (retried in {interval}): {exc}", fg="yellow", err=True)

    secrets = _secrets(cfg)
    _run(
        lambda: watch(
            cfg, secrets, seconds, on_result=on_result, on_error=on_error, handle_signals=True
        )
    )
    sys.exit(0)


@main.command(epilog=EPILOG)
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
            click.echo(_json.dumps(dataclasses.asdict(s)).decode())
        else:
            click.echo(
                f"{s.id:>6}  run {s.run_id:<5} {s.status:<10} {s.action:<8} "
                f"{s.user_name or s.graph_id}  {(s.reason or '').removeprefix('staged: ')}"
            )
    if not as_json:
        held = sum(1 for s in items if s.status == "held")
        click.echo(
            f"{held} held action(s)" + ("; run `bulkprov approve` to send them" if held else "")
        )


@main.command(epilog=EPILOG)
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
        click.echo("nothing held")
        return
    if not yes:
        click.confirm(
            f"send {n} held disable/delete action(s) to {cfg.target.base_url}?", abort=True
        )
    secrets = _secrets(cfg)

    async def go() -> dict[str, int]:
        with StateLock(cfg.state.path):
            store = await StateStore.open(cfg.state.path)
            async with store, open_clients(cfg, secrets) as (_, scim):
                return await run_approve(store, scim, cfg, list(ids) or None)

    counts = _run(go)
    click.echo(", ".join(f"{k} {v}" for k, v in counts.items() if v) or "nothing to do")
    sys.exit(EXIT_FAILURES if counts.get("failed") else 0)


@main.command(epilog=EPILOG)
@config_option
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
def provision(config_path: Path, user: str, as_json: bool) -> None:
    """Provision one user now (UPN or object id) and show Entra's steps.

    \b
    Example:
      bulkprov provision jane.doe@contoso.com
    """
    from bulkprov.pipeline import provision_user

    cfg = _load(config_path)
    secrets = _secrets(cfg)
    steps = _run(provision_user, cfg, secrets, user)
    _print_steps(steps, as_json)
    sys.exit(0 if all(s.ok or s.title.startswith("Determine") for s in steps) else 1)


@main.command("test-connection", epilog=EPILOG)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def test_connection(config_path: Path, as_json: bool) -> None:
    """Check the Graph credentials and the SCIM target the way Entra's button does.

    \b
    Example:
      bulkprov test-connection -c zoom.toml
    """
    from bulkprov.pipeline import check_connection as check

    cfg = _load(config_path)
    secrets = _secrets(cfg)
    steps = _run(check, cfg, secrets)
    _print_steps(steps, as_json)
    failed = [s for s in steps if not s.ok]
    if not failed:
        sys.exit(0)
    sys.exit(5 if failed[0].title.startswith("SCIM") else 4)


def _print_steps(steps: list[Any], as_json: bool) -> None:
    for i, s in enumerate(steps, 1):
        if as_json:
            click.echo(
                _json.dumps(
                    {"step": s.title, "ok": s.ok, "detail": s.detail, "data": s.data}
                ).decode()
            )
            continue
        mark = click.style("✓", fg="green") if s.ok else click.style("✗", fg="red")
        click.echo(f"{i}. {mark} {s.title}: {s.detail}")
        if s.title == "Modified properties":
            for k, v in s.data.items():
                click.echo(f"     {k} = {_json.dumps(v).decode()}")


@main.command(epilog=EPILOG)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config_path: Path, as_json: bool) -> None:
    """Show the recent runs, their counts and whether one can resume.

    \b
    Example:
      bulkprov status -c zoom.toml
    """
    from bulkprov.checkpoint.store import StateStore

    cfg = _load(config_path)

    async def read() -> tuple[list[dict[str, Any]], int]:
        if not cfg.state.path.exists():
            return [], 0
        async with await StateStore.open(cfg.state.path) as store:
            return await store.runs(10), await store.user_count()

    runs, users = _run(read)
    if as_json:
        click.echo(_json.dumps({"managed_users": users, "runs": runs}).decode())
        return
    if not runs:
        click.echo(f"no runs yet in {cfg.state.path}")
        return
    click.echo(f"state: {cfg.state.path}   managed users: {users}")
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"]))
        counts = ", ".join(f"{k} {v}" for k, v in r["counts"].items() if v)
        note = "  (interrupted: `bulkprov sync` resumes it)" if r["status"] == "running" else ""
        click.echo(f"run {r['id']:>4}  {started}  {r['status']:<24} {counts}{note}")


@main.command(epilog=EPILOG)
@config_option
@click.option("--run", "run_id", type=int, default=None, help="Only this run.")
@click.option(
    "--status", "status_", type=click.Choice(["success", "skipped", "failure"]), default=None
)
@click.option("--action", default=None, help="create, update, disable, delete, link, group, other.")
@click.option("--user", default=None, help="A Graph object id or a userName.")
@click.option("--since", default=None, help="Only entries since: 90m, 24h, 7d or 2026-11-28.")
@click.option("--limit", type=int, default=100, show_default=True, help="0 for all.")
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
    as_json: bool,
    csv_dir: Path | None,
) -> None:
    """Show or export the provisioning log (one entry per user per run).

    Entries older than ``state.log_retention_days`` (default 30) are deleted when a run
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
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if not cfg.state.path.exists():
        click.secho(
            f"error: no state database at {cfg.state.path} (no run yet)", fg="red", err=True
        )
        sys.exit(6)

    async def read() -> list[dict[str, Any]]:
        async with await StateStore.open(cfg.state.path) as store:
            return await store.log_entries(
                run_id=run_id,
                status=status_,
                action=action,
                user=user,
                since=since_ts,
                limit=limit or None,
            )

    entries = _run(read)
    if csv_dir is not None:
        for path in write_entra_csv(entries, csv_dir):
            click.echo(str(path))
        click.echo(f"{len(entries)} entries", err=True)
        return
    for e in entries:
        if as_json:
            click.echo(_json.dumps(e).decode())
        else:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
            reason = f"  {e['reason']}" if e["reason"] else ""
            click.echo(
                f"{at} run {e['run_id']} {e['status']:<8} {e['action']:<8} "
                f"{e['user_name'] or e['graph_id']}{reason}"
            )


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def sim(ctx: click.Context) -> None:
    """Serve the simulated Graph tenant and SCIM service on loopback.

    All options are those of ``python -m bulkprov.sim`` (see ``bulkprov sim --help``).
    """
    from bulkprov.sim.__main__ import main as sim_main

    sys.exit(sim_main(list(ctx.args)))


@main.command(epilog=EPILOG)
@click.option("--users", type=int, default=20_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo's config and state go (default: a temporary directory).",
)
@click.option("--concurrency", type=int, default=32, show_default=True)
@click.option("--no-interrupt", is_flag=True, help="Do not interrupt and resume mid-run.")
def demo(users: int, seed: int, workdir: Path | None, concurrency: int, no_interrupt: bool) -> None:
    """Sync a simulated tenant into a simulated Zoom, interrupt it once, resume, and check.

    Starts both simulators on free loopback ports, seeds USERS users, runs the initial sync
    with a progress bar, interrupts it (SIGINT) mid-run and resumes it, then checks the SCIM
    store against the mapping's output for every in-scope user.

    \b
    Example:
      bulkprov demo --users 5000
    """
    from bulkprov.demo import run_demo

    try:
        ok = run_demo(
            users=users,
            seed=seed,
            workdir=workdir,
            concurrency=concurrency,
            interrupt=not no_interrupt,
        )
    except BulkProvError as exc:
        _fail(exc)
    sys.exit(0 if ok else 1)


# last: cli_ops imports the helpers above
from bulkprov.cli_ops import register

register(main)

if __name__ == "__main__":  # pragma: no cover
    main()
