"""``bulkprov init``: write the commented starter config (:mod:`bulkprov.commands.starter`).

The first command against a real tenant: it writes the file every other command reads
with ``--config``, and touches nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bulkprov.commands._shared import EPILOG, echo


@click.command(epilog=EPILOG)
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
    from bulkprov.checkpoint.files import write_private
    from bulkprov.commands.starter import STARTER_TOML

    if path.exists() and not force:
        echo(f"error: {path} exists (use --force to overwrite)", fg="red", err=True)
        sys.exit(2)
    # 0600: the ids of the tenant and the app, the scoping filters' values (and a secret's
    # place): nobody else's business
    write_private(path, STARTER_TOML)
    echo(f"wrote {path}: fill in graph.tenant_id, graph.client_id and target.base_url")
