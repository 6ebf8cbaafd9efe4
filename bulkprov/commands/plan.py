"""``bulkprov plan`` and ``bulkprov apply``: what a sync would do, then exactly that.

``plan`` reads what a sync reads and writes only the plan file (the pipeline's
:func:`~bulkprov.pipeline.make_plan`); ``apply`` checks the plan still holds
(:func:`~bulkprov.pipeline.verify_plan`, exit 7 if not) and runs the sync held to it. The
pipeline is imported inside each command.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

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
    holds no secret, but the tenant's names: the file is written mode 0600.

    \b
    Examples:
      bulkprov plan --out plan.json
      bulkprov plan --full --out plan.json   # as `sync --full`: everyone read again
      bulkprov apply plan.json
    """
    from bulkprov.checkpoint.files import write_private
    from bulkprov.pipeline import make_plan, summary

    cfg = _load(config_path)
    secrets = _secrets(cfg)
    result: dict[str, Any] = _run(partial(make_plan, rematch=rematch, full=full), cfg, secrets)
    if str(out) == "-":
        echo_json(result, sort_keys=True)
        return
    text = _json.dumps_sorted(result).decode()
    write_private(out, text + "\n")  # the whole tenant's names: mode 0600
    echo(f"plan ({result['read']} read): {summary(result)}")
    if result.get("note"):
        echo(f"note: {result['note']}", fg="yellow")
    for op in result["operations"][:show]:
        echo(
            f"  {op['action']:<8} {op.get('user_name') or op['graph_id']}  "
            f"{op.get('scim_id') or ''}  {op.get('reason') or ''}"
        )
    if len(result["operations"]) > show:
        echo(f"  … {len(result['operations']) - show:,} more in {out}")
    for op in result["group_operations"][:show]:
        members = op.get("members") or {}
        changes = [f"+{len(members.get('add', ()))} -{len(members.get('remove', ()))} members"]
        if op.get("renamed_from") is not None:
            changes.insert(0, f"renamed from {op['renamed_from']!r}")
        echo(
            f"  group {op['action']:<6} {op['display_name']}  {op.get('scim_id') or ''}  "
            + ("" if op["action"] == "delete" else ", ".join(changes))
        )
    if len(result["group_operations"]) > show:
        echo(f"  … {len(result['group_operations']) - show:,} more groups in {out}")
    echo(f"wrote {out}: `bulkprov apply {out}` runs exactly this")


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
        echo(f"error: {plan_file}: not a readable plan ({exc})", fg="red", err=True)
        sys.exit(2)
    secrets = _secrets(cfg)
    engine = Engine(cfg)
    _run(partial(verify_plan, engine=engine), cfg, secrets, planned)
    if not as_json and not quiet:
        echo("the plan still holds: applying it")
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
        echo(f"warning: {held}", fg="yellow", err=True)
    code = result_exit(result)
    sys.exit(EXIT_FAILURES if code == 0 and held is not None else code)
