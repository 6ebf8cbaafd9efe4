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
7   quarantined: too many users failed (the report says why; resumable)
10  the sync completed but some users failed (see ``bulkprov logs --status failure``)
130 interrupted (the state is saved; run the same command to resume)
==  ===========================================================
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import click

from . import _json
from .config import Config, load_config
from .errors import BulkProvError
from .redact import scrub

T = TypeVar("T")

EXIT_FAILURES = 10

EPILOG = """\b
Exit codes: 0 done, 1 unexpected error, 2 config error, 3 auth refused,
4 Graph unreadable, 5 SCIM target failed, 6 state unusable or in use,
7 quarantined, 10 completed with failed users, 130 interrupted (resumable).
"""

config_option = click.option(
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
    from .starter import STARTER_TOML

    if path.exists() and not force:
        click.secho(f"error: {path} exists (use --force to overwrite)", fg="red", err=True)
        sys.exit(2)
    path.write_text(STARTER_TOML, encoding="utf-8")
    click.echo(f"wrote {path}: fill in graph.tenant_id, graph.client_id and target.base_url")


@main.command(epilog=EPILOG)
@config_option
@click.option("--rematch", is_flag=True, help="List the target and re-match every account.")
@click.option("--json", "as_json", is_flag=True, help="Emit JSON-lines events (automation).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final summary (cron).")
@click.option(
    "--expect", type=int, default=None, help="Expected user count, for the ETA (optional)."
)
def sync(config_path: Path, rematch: bool, as_json: bool, quiet: bool, expect: int | None) -> None:
    """Run the sync: create, update and disable users in the SCIM target.

    An interrupted run (Ctrl-C, SIGTERM, a crash, a kill) resumes where it stopped when the
    same command runs again: users already done are not sent again, and users that were in
    flight are found by matching, never created twice.

    \b
    Examples:
      bulkprov sync -c zoom.toml
      bulkprov sync --json > events.jsonl
    """
    from .progress import run_with_progress

    cfg = _load(config_path)
    result = _run(run_with_progress, cfg, rematch, as_json, quiet, expect)
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
    from .escrow_cli import release_escrow
    from .progress import run_with_progress

    cfg = _load(config_path)
    released = _run(release_escrow, cfg)
    if not quiet and not as_json:
        click.echo(f"{released} escrowed user(s) retried now", err=True)
    result = _run(run_with_progress, cfg, False, as_json, quiet, None)
    sys.exit(EXIT_FAILURES if result.status == "completed_with_failures" else 0)


@main.group()
def state() -> None:
    """Back up the state database."""


@state.command("export", epilog=EPILOG)
@config_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def state_export(config_path: Path, dest: Path) -> None:
    """Copy the state database to DEST (consistent even during a sync; mode 0600).

    \b
    Example:
      bulkprov state export backup-2026-11-28.sqlite3
    """
    from .escrow_cli import export_state

    cfg = _load(config_path)
    _run(export_state, cfg, dest)
    click.echo(f"wrote {dest}")


@main.command(epilog=EPILOG)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config_path: Path, as_json: bool) -> None:
    """Show the recent runs, their counts and whether one can resume.

    \b
    Example:
      bulkprov status -c zoom.toml
    """
    from .checkpoint.store import StateStore

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
@click.option("--action", default=None, help="create, update, disable, link, other.")
@click.option("--user", default=None, help="A Graph object id or a userName.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
def logs(
    config_path: Path,
    run_id: int | None,
    status_: str | None,
    action: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show the provisioning log (one entry per user per run).

    \b
    Examples:
      bulkprov logs --status failure
      bulkprov logs --user jane@contoso.com --json
    """
    from .checkpoint.store import StateStore

    cfg = _load(config_path)

    async def read() -> list[dict[str, Any]]:
        async with await StateStore.open(cfg.state.path) as store:
            return await store.log_entries(
                run_id=run_id, status=status_, action=action, user=user, limit=limit
            )

    for e in _run(read):
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
    from .sim.__main__ import main as sim_main

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
    from .demo import run_demo

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


if __name__ == "__main__":  # pragma: no cover
    main()
