"""``bulkprov migrate``: take over from Entra's provisioning job, with nothing duplicated and
nothing missed.

One command, run twice: first to read the job and see the cut-over, then with
``--pause-entra`` to switch.

1. **Read the job** (:mod:`bulkprov.graph.synchronization`, the app's own credentials):
   the service principal's jobs (the provisioning one is taken, the others listed), its
   schema through the importer ``bulkprov mapping import`` uses
   (:func:`bulkprov.mapping.exchange.from_graph`, every row checked before failing), its
   scope, status and schedule. A quarantined job is refused (``--accept-quarantine``).
2. **Write the config** (:func:`bulkprov.commands.cutover.render_config`) when ``--config``
   does not exist yet: validated as a config load validates it, then written whole (a
   temporary file renamed), or not at all. An existing config is used as it is; where it
   differs from the job is said.
3. **Show the cut-over**: a plan against the live target (:func:`bulkprov.pipeline.make_plan`,
   matching every account, listing those nobody manages), read by
   :func:`~bulkprov.commands.cutover.analyse`: "safe to switch" only with no create for a
   user who has an account and nothing held by the accidental-deletion threshold.
4. **Switch** (``--pause-entra``): pause the job, wait until Graph says it is paused (an
   Entra job still running is never joined by a first sync unless ``--force``), plan again,
   run the first sync held to that plan (as ``bulkprov apply`` runs one), and say how to
   roll back. ``--resume-entra`` is the roll-back: it starts Entra's job again.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bulkprov import _json
from bulkprov.commands._shared import (
    EPILOG,
    EXIT_FAILURES,
    _fail,
    _load,
    _run,
    config_option,
    echo,
    result_exit,
)
from bulkprov.errors import BulkProvError, ConfigError, CutoverRefused, SourceAuthError

if TYPE_CHECKING:
    from bulkprov.commands.cutover import Connection, CutoverReport
    from bulkprov.config import Config
    from bulkprov.graph.synchronization import ProvisioningSettings, SyncJob

#: job status codes of a job that still provisions (a quarantined job retries, daily)
_RUNNING = ("Active", "Quarantine")
#: seconds between two reads of the job while waiting for the pause to take effect
_POLL = 5.0


def _say(text: str = "", *, err: bool = False, fg: str | None = None) -> None:
    """Output, line by line through :func:`~bulkprov.commands._shared.echo`: scrubbed of
    any registered secret, control characters (a job's or a user's values) escaped."""
    for line in text.split("\n"):
        echo(line, err=err, fg=fg)


@dataclass(frozen=True)
class _Read:
    job: SyncJob
    others: list[SyncJob]
    schema: dict[str, Any]
    settings: ProvisioningSettings | None
    settings_problem: str | None


@click.command(epilog=EPILOG)
@config_option
@click.option(
    "--service-principal",
    "sp",
    required=True,
    metavar="ID",
    help="The enterprise application whose provisioning job to take over (its Object ID).",
)
@click.option("--job", "job_id", default=None, metavar="ID", help="The job, when it has several.")
@click.option("--tenant-id", default=None, help="With no config yet: the Directory (tenant) ID.")
@click.option(
    "--client-id", default=None, help="With no config yet: bulkprov's app registration (its ID)."
)
@click.option("--authority", default=None, help="With no config yet: the token authority.")
@click.option("--graph-url", default=None, help="With no config yet: Graph's base URL (v1.0).")
@click.option(
    "--target-url", default=None, help="With no config yet: the SCIM base URL (else Entra's)."
)
@click.option(
    "--plan-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the cut-over plan (default: cutover-plan.json beside the config).",
)
@click.option("--show", type=int, default=10, show_default=True, help="Users to list per kind.")
@click.option("--accept-quarantine", is_flag=True, help="Take over a quarantined job.")
@click.option("--pause-entra", is_flag=True, help="Pause Entra's job and run the first sync.")
@click.option(
    "--force", is_flag=True, help="Run the first sync even if Entra's job is still running."
)
@click.option(
    "--wait",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for Entra's job to report Paused.",
)
@click.option("--resume-entra", is_flag=True, help="Roll back: start Entra's job again.")
@click.option("--quiet", "-q", is_flag=True, help="The first sync prints only its summary.")
def migrate(
    config_path: Path,
    sp: str,
    job_id: str | None,
    tenant_id: str | None,
    client_id: str | None,
    authority: str | None,
    graph_url: str | None,
    target_url: str | None,
    plan_out: Path | None,
    show: int,
    accept_quarantine: bool,
    pause_entra: bool,
    force: bool,
    wait: float,
    resume_entra: bool,
    quiet: bool,
) -> None:
    """Take over from Entra's provisioning job: its config, the cut-over plan, the switch.

    Reads the job of the enterprise application (Graph's synchronization API, with this
    app's credentials: Synchronization.ReadWrite.All, or Application.ReadWrite.OwnedBy when
    the app owns the enterprise application), writes --config from it when that file does
    not exist yet (its mappings, scoping filters, scope and matching attribute; comments
    where a choice was made and what to fill in), then plans the first sync against the
    live target: the users Entra provisioned are matched, only the drift is sent, accounts
    nobody manages are left alone. Nothing is paused or sent without --pause-entra.

    \b
    Examples:
      bulkprov migrate --service-principal SP_ID --tenant-id TENANT --client-id APP
      export BULKPROV_SCIM_TOKEN=...     # Entra's SCIM token: it cannot be read
      bulkprov migrate --service-principal SP_ID           # the cut-over plan again
      bulkprov migrate --service-principal SP_ID --pause-entra
      bulkprov migrate --service-principal SP_ID --resume-entra   # roll back
    """
    from bulkprov.commands.cutover import DEFAULT_AUTHORITY, DEFAULT_GRAPH, Connection

    if pause_entra and resume_entra:
        raise click.UsageError("give --pause-entra or --resume-entra, not both")
    exists = config_path.exists()
    if exists:
        cfg = _load(config_path)
        conn = None
    else:
        if resume_entra or not tenant_id or not client_id:
            raise click.UsageError(
                f"no config at {config_path}: give --tenant-id and --client-id (the app "
                "registration bulkprov reads Graph with) and migrate writes one from Entra's job"
                + ("; --resume-entra needs the config of the cut-over" if resume_entra else "")
            )
        conn = Connection(
            tenant_id,
            client_id,
            authority=authority or DEFAULT_AUTHORITY,
            graph_url=graph_url or DEFAULT_GRAPH,
            target_url=target_url,
        )
        cfg = _connection_config(conn, config_path)
    read = _run(_read_job, cfg, sp, job_id)
    _show_job(read, sp)
    if resume_entra:
        _resume(cfg, sp, read.job)
        return
    refusal = _refusal(read.job, accept_quarantine)
    if refusal is not None:
        _fail(refusal)
    imported = _import(read)
    mode = None
    if read.settings is not None and read.settings.sync_all is not None:
        mode = "all" if read.settings.sync_all else "assigned"
    if conn is not None:
        cfg = _write_config(config_path, read, imported, conn, sp)
    else:
        _compare(cfg, imported, mode, config_path, sp)
    secrets = _plan_secrets(cfg, sp, config_path)
    report = _plan_and_show(
        cfg, secrets, plan_out or config_path.parent / "cutover-plan.json", show, read.job
    )
    if not pause_entra:
        if not report.safe:
            _fail(CutoverRefused("not safe to switch: " + "; ".join(report.reasons())))
        _say(
            "next: check the config, then switch with "
            f"`bulkprov migrate -c {config_path} --service-principal {sp} --pause-entra`"
        )
        return
    if not report.safe:
        _fail(
            CutoverRefused(
                "not safe to switch, nothing was paused or sent: " + "; ".join(report.reasons())
            )
        )
    _switch(cfg, secrets, sp, read.job, force=force, wait=wait, quiet=quiet, show=show)


# --- reading ----------------------------------------------------------------------------------


def _connection_config(conn: Connection, path: Path) -> Config:
    """A config that only says how to reach Graph (and the target): what the job is read with
    before bulkprov.toml exists."""
    from bulkprov.config import parse_config, resolve_paths

    data = {
        "graph": {
            "tenant_id": conn.tenant_id,
            "client_id": conn.client_id,
            "authority": conn.authority,
            "base_url": conn.graph_url,
        },
        "target": {"base_url": conn.target_url or "https://api.zoom.us/scim2"},
        "mappings": [{"target": "userName", "source": "id", "matching_precedence": 1}],
    }
    try:
        return resolve_paths(parse_config(data, path="(command line)"), path.parent)
    except BulkProvError as exc:
        _fail(exc)


async def _read_job(cfg: Config, sp: str, wanted: str | None) -> _Read:
    from bulkprov.graph.synchronization import JobClient, choose_job
    from bulkprov.pipeline import open_graph

    async with open_graph(cfg) as graph:
        api = JobClient(graph, sp)
        job, others = choose_job(await api.jobs(), sp, wanted)
        schema = await api.schema(job.id)
        settings, problem = await api.settings()
    return _Read(job, others, schema, settings, problem)


def _show_job(read: _Read, sp: str) -> None:
    job = read.job
    _say(f"Entra's provisioning job on service principal {sp}: {job.id}")
    _say(f"  template: {job.template_id or '?'}")
    for line in job.describe():
        _say(f"  {line}")
    if read.others:
        _say("other jobs of this service principal (not taken over):")
        for other in read.others:
            _say(f"  {other.label()}")
    if read.settings is None:
        _say(f"  scope and deletion settings: not readable ({read.settings_problem})")
    else:
        s = read.settings
        scope = {True: "all users and groups", False: "assigned users and groups"}
        _say(
            f"  scope: {scope.get(s.sync_all, 'not said') if s.sync_all is not None else 'not said'}"
        )


def _refusal(job: SyncJob, accept_quarantine: bool) -> CutoverRefused | None:
    from bulkprov.graph.synchronization import quarantine_refusal

    refusal = quarantine_refusal(job)
    if refusal is not None and accept_quarantine:
        _say(f"warning: {refusal}", err=True, fg="yellow")
        return None
    return refusal


def _import(read: _Read) -> Any:
    from bulkprov.mapping.exchange import from_graph

    try:
        imported = from_graph(read.schema, all_errors=True)
    except ConfigError as exc:
        _fail(
            ConfigError(
                f"Entra's job {read.job.id} cannot be taken over as it is (nothing was "
                f"written): {exc}"
            )
        )
    for warning in imported.warnings:
        _say(f"warning: {warning}", err=True, fg="yellow")
    return imported


# --- the config -------------------------------------------------------------------------------


def _write_config(path: Path, read: _Read, imported: Any, conn: Connection, sp: str) -> Config:
    """Render, validate, then write ``path`` whole (never a partial file)."""
    from bulkprov.commands.cutover import render_config, validated

    text = render_config(
        job=read.job,
        imported=imported,
        settings=read.settings,
        settings_problem=read.settings_problem,
        conn=conn,
        service_principal_id=sp,
        read_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    try:
        cfg = validated(text, path)
    except BulkProvError as exc:
        _fail(ConfigError(f"the config of Entra's job does not load, nothing was written: {exc}"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():  # written meanwhile by someone else: never overwritten
            raise FileExistsError(path)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _fail(ConfigError(f"cannot write {path}: {exc.strerror or exc}"))
    _say(
        f"wrote {path}: {len(imported.mappings)} mappings, {len(imported.filters)} scoping "
        f"filter(s), scope {cfg.scope.mode!r}, groups {'on' if cfg.groups.enabled else 'off'}"
    )
    _say("fill in what Entra does not let bulkprov read (the FILL IN comments):")
    _say("  - the SCIM secret token: export BULKPROV_SCIM_TOKEN=... (and BULKPROV_GRAPH_SECRET)")
    s = read.settings
    if s is None or not s.delete_threshold_enabled or not s.delete_threshold:
        _say("  - the accidental-deletion threshold: deprovision.threshold (500 for now)")
    if s is None or s.skip_out_of_scope_deletions is None:
        _say(
            "  - skip out-of-scope deletions: bulkprov always deactivates users who leave "
            "scope (check that Entra's job did not skip them)"
        )
    elif s.skip_out_of_scope_deletions:
        _say(
            "  - Entra skipped out-of-scope deletions; bulkprov deactivates those users",
            fg="yellow",
        )
    if s is None or s.sync_all is None:
        _say('  - the scope: "assigned" was chosen (Entra\'s setting could not be read)')
    return cfg


def _compare(cfg: Config, imported: Any, mode: str | None, path: Path, sp: str) -> None:
    from bulkprov.commands.cutover import differences

    diffs = differences(cfg, imported, mode, sp)
    if not diffs:
        _say(f"{path} holds Entra's mappings, scoping filters and scope")
        return
    _say(f"{path} is used as it is; it differs from Entra's job:", fg="yellow")
    for line in diffs:
        _say(f"  - {line}", fg="yellow")


def _plan_secrets(cfg: Config, sp: str, path: Path) -> Any:
    from bulkprov.credentials import Secrets

    try:
        return Secrets.from_config(cfg)
    except ConfigError as exc:
        _fail(
            ConfigError(
                f"{exc} — the cut-over plan reads the target with the SCIM token Entra uses "
                "(Entra never reveals it): set it, then run "
                f"`bulkprov migrate -c {path} --service-principal {sp}` again"
            )
        )


# --- the plan ---------------------------------------------------------------------------------


def _plan_and_show(cfg: Config, secrets: Any, out: Path, show: int, job: SyncJob) -> CutoverReport:
    from bulkprov.commands.cutover import analyse
    from bulkprov.pipeline import make_plan

    plan: dict[str, Any] = _run(partial(make_plan, unmanaged=True), cfg, secrets)
    out.write_text(_json.dumps_sorted(plan).decode() + "\n", encoding="utf-8")
    report = analyse(plan)
    _show_report(report, cfg, show)
    users = dict(job.synchronized).get("User")
    if users is not None and report.listed:
        matched = len(report.in_sync) + len(report.drifted)
        _say(
            f"Entra's job counts {users:,} synchronized users; the plan matched {matched:,} "
            f"accounts in scope and {len(report.unmanaged_inactive):,} inactive ones out of it"
        )
    _say(f"wrote the plan to {out}")
    return report


def _names(ops: list[dict[str, Any]], show: int, detail: bool = False) -> None:
    for op in ops[:show]:
        name = op.get("user_name") or op["graph_id"]
        if detail and op.get("changes"):
            changes = "; ".join(
                f"{k} = {_json.dumps(v).decode()}" for k, v in sorted(op["changes"].items())
            )
            _say(f"      {name}: {changes}")
        elif op.get("reason") and op["action"] == "failed":
            _say(f"      {name}: {op['reason']}")
        else:
            _say(f"      {name}")
    if len(ops) > show:
        _say(f"      … {len(ops) - show:,} more in the plan file")


def _show_report(report: CutoverReport, cfg: Config, show: int) -> None:
    _say("the cut-over (a plan against the live target; nothing was sent):")
    _say(f"  matched, in sync: {len(report.in_sync):,}  (accounts Entra made; nothing to send)")
    _say(f"  matched, drifted: {len(report.drifted):,}  (one PATCH each: values Entra left behind)")
    _names(report.drifted, show, detail=True)
    _say(
        f"  absent:           {len(report.absent):,}  (created: users Entra failed, or new since "
        "its last cycle)"
    )
    _names(report.absent, show)
    if report.failed:
        _say(f"  failed:           {len(report.failed):,}  (their source data fails; nothing sent)")
        _names(report.failed, show)
    if report.other:
        _say(f"  other operations: {len(report.other):,}  (the state already manages users)")
        _names(report.other, show)
    if report.listed:
        active, inactive = report.unmanaged_active, report.unmanaged_inactive
        _say(
            f"  left alone:       {len(active) + len(inactive):,} accounts nobody manages "
            f"({len(active):,} active; {len(inactive):,} inactive, most likely deactivated by "
            "Entra when their users left scope): bulkprov never touches them"
        )
        for account in (active + inactive)[:show]:
            state = "active" if account["active"] else "inactive"
            _say(f"      {account.get('user_name')} ({state})")
        if len(active) + len(inactive) > show:
            _say(f"      … {len(active) + len(inactive) - show:,} more in the plan file")
    for op, account in report.duplicates[:show]:
        _say(
            f"  would duplicate: {op.get('user_name')} looks like the account "
            f"{account.get('user_name')} ({account.get('scim_id')})",
            fg="red",
        )
    threshold = cfg.deprovision.threshold
    if report.safe:
        _say(
            f"safe to switch: no create for a user who has an account, no disables beyond the "
            f"threshold ({threshold}); the first sync sends {len(report.drifted):,} PATCH(es) "
            f"and {len(report.absent):,} POST(s)",
            fg="green",
        )
    else:
        _say("NOT safe to switch:", fg="red")
        for reason in report.reasons():
            _say(f"  - {reason}", fg="red")


# --- the switch -------------------------------------------------------------------------------


async def _pause(
    cfg: Config, sp: str, job_id: str, wait: float, force: bool
) -> tuple[SyncJob, bool]:
    """Pause the job unless it is already stopped; wait until Graph reports it paused.
    Returns the job as last read, and whether bulkprov paused it."""
    import anyio

    from bulkprov.graph.synchronization import JobClient
    from bulkprov.pipeline import open_graph

    async with open_graph(cfg) as graph:
        api = JobClient(graph, sp)
        job = await api.job(job_id)
        if job.code not in _RUNNING:
            return job, False
        try:
            await api.pause(job_id)
        except SourceAuthError as exc:
            if not force:
                raise
            _say(f"warning: {exc}", err=True, fg="yellow")
            return await api.job(job_id), False
        deadline = time.monotonic() + wait
        while True:
            job = await api.job(job_id)
            left = deadline - time.monotonic()
            if job.code not in _RUNNING or left <= 0:
                return job, True
            await anyio.sleep(min(_POLL, left))


def _rollback(cfg: Config, sp: str, job: SyncJob, linked: int | None) -> list[str]:
    """How to give the job back to Entra: after the first sync (``linked`` accounts), or
    before it (``None``: bulkprov sent nothing)."""
    url = f"{cfg.graph.base_url}/servicePrincipals/{sp}/synchronization/jobs/{job.id}/start"
    command = f"  bulkprov migrate -c {cfg.source_path} --service-principal {sp} --resume-entra"
    if linked is None:
        return [
            "bulkprov sent nothing to the target; to let Entra's job go on:",
            command,
            f"  (POST {url})",
        ]
    return [
        "to roll back to Entra:",
        command,
        f"  (POST {url})",
        "  Entra resumes where it paused and matches the accounts bulkprov made on its matching",
        "  attribute: none is created twice.",
        f"  bulkprov's state ({cfg.state.path}) then still holds the {linked:,}",
        "  accounts of the first sync as managed:",
        "  stop every scheduled `bulkprov sync` first (two provisioners on one account double",
        "  the requests against Zoom's shared rate limit and overwrite each other's values);",
        "  keep the state for a later cut-over, or delete it to start the next one afresh.",
    ]


def _switch(
    cfg: Config,
    secrets: Any,
    sp: str,
    job: SyncJob,
    *,
    force: bool,
    wait: float,
    quiet: bool,
    show: int,
) -> None:
    from bulkprov.commands.cutover import analyse
    from bulkprov.observe.progress import run_with_progress
    from bulkprov.pipeline import apply_options, held_back_message, make_plan

    job, paused = _run(_pause, cfg, sp, job.id, wait, force)
    if paused and job.code not in _RUNNING:
        _say(f"paused Entra's job {job.id}: its status is now {job.code}")
    elif paused:
        _say(f"asked Entra to pause its job {job.id}: its status is still {job.code}")
    elif job.code not in _RUNNING:
        _say(f"Entra's job {job.id} is {job.code}: nothing to pause")
    if job.code in _RUNNING:
        why = (
            f"Entra's job {job.id} is still {job.code}"
            + (f" {wait:g} s after the pause request" if paused else "")
            + ": two provisioners on one account double the requests against Zoom's rate "
            "limit (shared by every app of the account) and overwrite each other's values"
        )
        if not force:
            for line in _rollback(cfg, sp, job, None) if paused else ():
                _say(line)
            _fail(
                CutoverRefused(
                    f"{why}. The first sync was not started: wait until Entra reports it "
                    "Paused (the Entra admin center: the app → Provisioning) and run this "
                    "again, or give --force to start it anyway"
                )
            )
        _say(f"warning: {why}; --force: starting the first sync anyway", err=True, fg="yellow")
    # Entra may have written between the first plan and the pause: plan again, and send
    # exactly what this plan shows
    plan: dict[str, Any] = _run(partial(make_plan, unmanaged=True), cfg, secrets)
    report = analyse(plan)
    if not report.safe:
        for line in _rollback(cfg, sp, job, None):
            _say(line)
        _fail(
            CutoverRefused(
                "not safe to switch after the pause, nothing was sent: "
                + "; ".join(report.reasons())
            )
        )
    _say(
        f"first sync: {len(report.drifted):,} drifted account(s) to update, "
        f"{len(report.absent):,} absent user(s) to create, {len(report.in_sync):,} to link"
    )
    result = _run(
        partial(run_with_progress, **apply_options(plan)),
        cfg,
        False,
        False,
        quiet,
        int(plan["fingerprints"]["source_users"]) or None,
    )
    c = result.counts
    _say(
        f"first sync {result.status}: created {c.get('created', 0):,}, updated "
        f"{c.get('updated', 0):,}, linked {c.get('linked', 0):,}, failed {c.get('failed', 0):,}"
    )
    linked = len(report.in_sync) + len(report.drifted) + len(report.absent)
    for line in _rollback(cfg, sp, job, linked):
        _say(line)
    _say("bulkprov is now the provisioner: run `bulkprov sync` on a schedule (cron, a timer)")
    held = held_back_message(c)
    if held is not None:
        _say(f"warning: {held}", err=True, fg="yellow")
    code = result_exit(result)
    sys.exit(EXIT_FAILURES if code == 0 and held is not None else code)


async def _resume_job(cfg: Config, sp: str, job_id: str) -> SyncJob:
    from bulkprov.graph.synchronization import JobClient
    from bulkprov.pipeline import open_graph

    async with open_graph(cfg) as graph:
        api = JobClient(graph, sp)
        await api.start(job_id)
        return await api.job(job_id)


async def _managed(cfg: Config) -> int:
    from bulkprov.checkpoint.store import StateStore

    if not cfg.state.path.exists():
        return 0
    async with await StateStore.open(cfg.state.path) as store:
        return await store.user_count()


def _resume(cfg: Config, sp: str, job: SyncJob) -> None:
    """``--resume-entra``: start Entra's job again (the roll-back)."""
    job = _run(_resume_job, cfg, sp, job.id)
    managed = _run(_managed, cfg)
    _say(f"started Entra's job {job.id}: its status is now {job.code}")
    _say(
        f"bulkprov's state ({cfg.state.path}) holds {managed:,} user(s): stop every scheduled "
        "`bulkprov sync` now (two provisioners on one account fight over its values); keep the "
        "state for a later cut-over, or delete it to start the next one afresh"
    )
