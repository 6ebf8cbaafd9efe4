"""On-demand commands: ``bulkprov provision`` (one user now) and ``bulkprov test-connection``.

Both do what the Entra portal's buttons of the same names do and print the steps the same
way (:func:`_print_steps`: numbered, ✓/✗, or JSON lines, through ``echo``/``echo_json``:
a step quotes what the target or Graph answered, which may echo the token or hold a user's
hostile name); the pipeline's
:func:`~bulkprov.pipeline.provision_user` and :func:`~bulkprov.pipeline.check_connection`
do the work and are imported inside each command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from bulkprov import _json
from bulkprov.commands._shared import (
    EPILOG,
    _load,
    _run,
    _secrets,
    config_option,
    echo,
    echo_json,
)


@click.command(epilog=EPILOG)
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
    sys.exit(_exit_code(steps))


@click.command("test-connection", epilog=EPILOG)
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
    sys.exit(_exit_code(steps))


def _exit_code(steps: list[Any]) -> int:
    """The exit code of the first failed step (README's table: 3 refused credentials, 4
    Graph, 5 the target; provision: 2 a user Entra ID does not have, 10 the user failed);
    0 when none failed. A user out of scope is not a failure."""
    for s in steps:
        if not s.ok and s.exit_code:
            return int(s.exit_code)
    return 0


def _print_steps(steps: list[Any], as_json: bool) -> None:
    for i, s in enumerate(steps, 1):
        if as_json:
            echo_json({"step": s.title, "ok": s.ok, "detail": s.detail, "data": s.data})
            continue
        mark = click.style("✓", fg="green") if s.ok else click.style("✗", fg="red")
        echo(f"{s.title}: {s.detail}", prefix=f"{i}. {mark} ")
        if s.title == "Modified properties":
            for k, v in s.data.items():
                echo(f"     {k} = {_json.dumps(v).decode()}")
