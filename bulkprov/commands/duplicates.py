"""``bulkprov duplicates``: the admin guide's "Duplicate users in Zoom", as a report.

Read-only (:mod:`bulkprov.observe.duplicates` does the reading and the comparing): Zoom
accounts that hold an in-scope user's mail but not its UPN (they would be duplicated under
userName ← UPN), case-only differences, two Entra users mapping to one userName, pending
invitations that block users, and accounts bulkprov does not manage; each row says what to do.
"""

from __future__ import annotations

from pathlib import Path

import click

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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "csv", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report to this file instead of the terminal.",
)
def duplicates(config_path: Path, fmt: str, out: Path | None) -> None:
    """Report duplicate and mismatched accounts between Entra ID and Zoom (read-only).

    Lists Zoom accounts whose email is an in-scope user's mail but not its UPN (a sync
    would create a second account), letter-case-only differences, two Entra users that
    map to one userName, pending Zoom invitations that block users, and accounts bulkprov
    does not manage. Each row says what to do. Nothing is changed anywhere.

    \b
    Examples:
      bulkprov duplicates
      bulkprov duplicates --format csv --out duplicates.csv
    """
    from bulkprov.checkpoint.files import private_dir, write_private
    from bulkprov.observe.duplicates import (
        as_dicts,
        csv_lines,
        duplicate_report,
        render,
        text_lines,
    )

    cfg = _load(config_path)
    secrets = _secrets(cfg)
    rows = _run(duplicate_report, cfg, secrets)
    if out is not None:
        # the tenant's names and emails: mode 0600, as every file bulkprov writes them to
        private_dir(out.parent)
        write_private(out, render(rows, fmt))
        echo(f"wrote {out}: {len(rows)} row(s)")
    elif fmt == "json":
        echo_json(as_dicts(rows))
    else:
        for line in csv_lines(rows) if fmt == "csv" else text_lines(rows):
            echo(line)
