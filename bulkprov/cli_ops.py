"""The operator commands of the ``bulkprov`` CLI: report, plan, apply and mapping.

They live apart from :mod:`bulkprov.cli` (which keeps the shared helpers, the exit codes
and the core commands) so each family of commands stays a small module; :func:`register`
adds them to the one ``bulkprov`` group.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import click

from bulkprov import _json
from bulkprov.cli import EPILOG, EXIT_FAILURES, _fail, _load, _run, _secrets, config_option
from bulkprov.errors import BulkProvError, ConfigError


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
        click.secho(
            f"error: no state database at {cfg.state.path} (no run yet)", fg="red", err=True
        )
        sys.exit(6)
    path = _run(write_report, cfg, run_id)
    if path is None:
        click.secho(
            f"error: no run {run_id if run_id else ''} in {cfg.state.path}", fg="red", err=True
        )
        sys.exit(6)
    click.echo(str(path))
    if open_:
        import webbrowser  # only here: it costs every other command's start-up

        webbrowser.open(path.resolve().as_uri())


@click.command(epilog=EPILOG)
@config_option
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default="plan.json",
    show_default=True,
    help="Where to write the plan ('-' for standard output).",
)
@click.option("--rematch", is_flag=True, help="Plan as `sync --rematch` would run.")
@click.option("--full", is_flag=True, help="Plan as `sync --full` would run (read everyone).")
@click.option("--show", type=int, default=10, show_default=True, help="Operations to list.")
def plan(config_path: Path, out: Path, rematch: bool, full: bool, show: int) -> None:
    """Compute what a sync would do, without writing to the target, into a plan file.

    Reads what a sync reads, and writes nothing: Graph (only the users changed since the
    last sync when it left a deltaLink, everyone on a first or full read; the groups'
    changes), the state database, and from the target its user listing when a sync would
    match accounts and the groups not provisioned yet. The plan lists the counts per
    action and every user's operation (create with a placeholder id `new:N`, link,
    update, disable, delete for a hard delete with deprovision.delete_hard_deleted), and
    every group's (create `new-group:N`, link, rename, members added and removed, delete),
    with fingerprints so that `bulkprov apply` can refuse when anything moved on. It
    holds no secret.

    \b
    Examples:
      bulkprov plan --out plan.json
      bulkprov plan --full --out plan.json   # as `sync --full`: everyone read again
      bulkprov apply plan.json
    """
    from bulkprov.pipeline import make_plan, summary

    cfg = _load(config_path)
    secrets = _secrets(cfg)
    result: dict[str, Any] = _run(partial(make_plan, rematch=rematch, full=full), cfg, secrets)
    text = _json.dumps_sorted(result).decode()
    if str(out) == "-":
        click.echo(text)
        return
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(f"plan ({result['read']} read): {summary(result)}")
    if result.get("note"):
        click.secho(f"note: {result['note']}", fg="yellow")
    for op in result["operations"][:show]:
        click.echo(
            f"  {op['action']:<8} {op.get('user_name') or op['graph_id']}  "
            f"{op.get('scim_id') or ''}  {op.get('reason') or ''}"
        )
    if len(result["operations"]) > show:
        click.echo(f"  … {len(result['operations']) - show:,} more in {out}")
    for op in result["group_operations"][:show]:
        members = op.get("members") or {}
        changes = [f"+{len(members.get('add', ()))} -{len(members.get('remove', ()))} members"]
        if op.get("renamed_from") is not None:
            changes.insert(0, f"renamed from {op['renamed_from']!r}")
        click.echo(
            f"  group {op['action']:<6} {op['display_name']}  {op.get('scim_id') or ''}  "
            + ("" if op["action"] == "delete" else ", ".join(changes))
        )
    if len(result["group_operations"]) > show:
        click.echo(f"  … {len(result['group_operations']) - show:,} more groups in {out}")
    click.echo(f"wrote {out}: `bulkprov apply {out}` runs exactly this")


@click.command(epilog=EPILOG)
@config_option
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Emit JSON-lines events.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final summary.")
def apply(config_path: Path, plan_file: Path, as_json: bool, quiet: bool) -> None:
    """Execute exactly the operations of a plan; refuse (exit 7) if anything moved on.

    The plan is computed again first: if the users' or groups' operations, the state or
    the config differ from what the plan saw, nothing is sent. During the run, a user or
    group whose operation differs from the plan is held back (logged as skipped, counted
    as "held back"; the next sync reads it again) and apply ends with exit 10: make a new
    plan. Disables and deletes the plan showed held by the accidental-deletion threshold
    are held for `bulkprov approve`.

    \b
    Example:
      bulkprov plan --out plan.json && bulkprov apply plan.json
    """
    from bulkprov.observe.progress import run_with_progress
    from bulkprov.pipeline import Engine, apply_options, held_back_message, verify_plan

    cfg = _load(config_path)
    try:
        planned = _json.loads(plan_file.read_bytes())
    except (OSError, _json.JSONDecodeError) as exc:
        click.secho(f"error: {plan_file}: not a readable plan ({exc})", fg="red", err=True)
        sys.exit(2)
    secrets = _secrets(cfg)
    engine = Engine(cfg)
    _run(partial(verify_plan, engine=engine), cfg, secrets, planned)
    if not as_json and not quiet:
        click.echo("the plan still holds: applying it")
    result = _run(
        partial(run_with_progress, **apply_options(planned)),
        cfg,
        bool(planned.get("rematch")),
        as_json,
        quiet,
        int(planned.get("fingerprints", {}).get("source_users", 0)) or None,
    )
    held = held_back_message(result.counts)
    if held is not None:
        click.secho(f"warning: {held}", fg="yellow", err=True)
    problems = result.status == "completed_with_failures" or held is not None
    sys.exit(EXIT_FAILURES if problems else 0)


# -- mapping ---------------------------------------------------------------------------------


@click.group(epilog=EPILOG)
def mapping() -> None:
    """Try attribute mappings on a user; export and import them (Graph JSON or TOML)."""


@mapping.command("test", epilog=EPILOG)
@config_option
@click.option("--expression", "-e", default=None, help="Evaluate this one expression instead.")
@click.option(
    "--user-json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A Graph user as JSON (what GET /users/{id} returns).",
)
@click.option("--user", "user_key", default=None, help="Fetch this user from Graph (UPN or id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mapping_test(
    config_path: Path,
    expression: str | None,
    user_json: Path | None,
    user_key: str | None,
    as_json: bool,
) -> None:
    """Evaluate the config's mappings (or one --expression) for one Graph user.

    \b
    Examples:
      bulkprov mapping test --user-json jane.json
      bulkprov mapping test --user jane@contoso.com
      bulkprov mapping test --user-json jane.json -e 'Join(" ", [givenName], [surname])'
    """
    from bulkprov.mapping.exchange import evaluate_user

    if (user_json is None) == (user_key is None):
        raise click.UsageError("give exactly one of --user-json FILE or --user UPN")
    cfg = _load(config_path)
    if user_json is not None:
        try:
            user = _json.loads(user_json.read_bytes())
        except _json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--user-json") from None
    else:
        assert user_key is not None
        user = _run(_fetch_user, cfg, user_key)
    if not isinstance(user, dict):
        raise click.BadParameter("the user must be a JSON object", param_hint="--user-json")
    try:
        result = evaluate_user(list(cfg.mappings), user, expression)
    except BulkProvError as exc:
        _fail(exc)
    if as_json:
        click.echo(_json.dumps(result).decode())
        return
    if expression is not None:
        click.echo(_json.dumps(result["value"]).decode())
        return
    for path, value in result["values"].items():
        flag = "" if path in result["on_update"] else "   (creation only / default)"
        click.echo(f"{path} = {_json.dumps(value).decode()}{flag}")
    click.echo(f"matching on: {', '.join(result['matching'])}")


async def _fetch_user(cfg: Any, key: str) -> Any:
    from urllib.parse import quote, urlencode

    from bulkprov import credentials
    from bulkprov.graph.client import GraphClient
    from bulkprov.pipeline import Engine
    from bulkprov.transport import make_client

    cert = cfg.graph.certificate
    secret = (
        cert.private_key.read("graph.certificate.private_key", cfg.source_path)
        if cert
        else cfg.graph.client_secret.read("graph.client_secret", cfg.source_path)
    )
    select = Engine(cfg).select
    async with make_client(
        timeout=cfg.graph.timeout,
        max_connections=2,
        verify=credentials.verify(cfg.graph.ca_file),
    ) as http:
        graph = GraphClient(
            authority=cfg.graph.authority,
            tenant_id=cfg.graph.tenant_id,
            client_id=cfg.graph.client_id,
            client_secret=secret,
            base_url=cfg.graph.base_url,
            http=http,
            token_source=credentials.graph_tokens(cfg, secret),
        )
        query = urlencode({"$select": ",".join(select)}, safe="$,")
        return await graph.get_json(f"{graph.base_url}/users/{quote(key, safe='@')}?{query}")


@mapping.command("export", epilog=EPILOG)
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["graph-json", "toml"]),
    default="graph-json",
    show_default=True,
)
def mapping_export(config_path: Path, fmt: str) -> None:
    """Print the config's mappings as Graph attributeMapping JSON or as TOML.

    \b
    Examples:
      bulkprov mapping export > mappings.json
      bulkprov mapping export --format toml
    """
    from bulkprov.mapping.exchange import to_graph, to_toml

    cfg = _load(config_path)
    if fmt == "toml":
        click.echo(to_toml(list(cfg.mappings)), nl=False)
    else:
        click.echo(_json.dumps(to_graph(list(cfg.mappings))).decode())


@mapping.command("import", epilog=EPILOG)
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "graph-json", "toml"]),
    default="auto",
    show_default=True,
)
def mapping_import(source: Path, fmt: str) -> None:
    """Read mappings (Graph attributeMapping JSON or TOML), check them, print [[mappings]].

    Paste the output into bulkprov.toml in place of its [[mappings]] tables. The mappings
    are compiled first, so an error names the row and points at the column.

    \b
    Examples:
      bulkprov mapping import entra-mappings.json >> new-config.toml
      bulkprov mapping import old.toml
    """
    from bulkprov.mapping.exchange import check, from_graph, from_toml, to_toml

    text = source.read_text(encoding="utf-8")
    if fmt == "auto":  # by suffix; else JSON if it parses (TOML's [[mappings]] starts with "[")
        if source.suffix.lower() in (".json", ".toml"):
            fmt = "graph-json" if source.suffix.lower() == ".json" else "toml"
        else:
            try:
                _json.loads(text)
                fmt = "graph-json"
            except _json.JSONDecodeError:
                fmt = "toml"
    try:
        if fmt == "graph-json":
            try:
                doc = _json.loads(text)
            except _json.JSONDecodeError as exc:
                raise ConfigError(f"not JSON: {exc}", path=str(source)) from None
            rows = from_graph(doc)
        else:
            rows = from_toml(text)
        check(rows)
    except BulkProvError as exc:
        _fail(exc)
    click.echo(to_toml(rows), nl=False)
    click.echo(f"{len(rows)} mappings checked", err=True)


def register(main: click.Group) -> None:
    """Add this module's commands to the ``bulkprov`` group."""
    for command in (report, plan, apply, mapping):
        main.add_command(command)
