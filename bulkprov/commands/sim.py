"""``bulkprov sim``: the simulated Graph tenant and SCIM service, served alone on loopback.

Every argument goes to the simulators' own parser (:func:`bulkprov.sim.__main__.build_parser`,
named ``bulkprov sim`` here), with one more option: ``--config-out FILE`` writes a config
ready for the simulators it starts (their URLs, tenant and client id; the secrets in two
files beside it, mode 0600, since a config never holds one), so ``bulkprov sync -c FILE``
runs against them at once; with ``--zoom`` (the strict Zoom mode) the config has the Zoom
profile, paced at the simulator's label limits. With :mod:`.demo`, the only command module that imports
:mod:`bulkprov.sim`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def sim(ctx: click.Context) -> None:
    """Serve the simulated Graph tenant and SCIM service on loopback.

    All options are listed by ``bulkprov sim --help``; ``--config-out FILE`` writes a
    config for the simulators started, e.g. ``bulkprov sim --users 5000 --config-out
    sim.toml`` and, in another shell, ``bulkprov sync -c sim.toml``.
    """
    from bulkprov.sim.__main__ import run

    parser = sim_parser()
    args = parser.parse_args(list(ctx.args))
    on_ready = None
    if args.config_out is not None:
        out = Path(args.config_out)
        if args.no_graph or args.no_scim:
            parser.error("--config-out needs both simulators (no --no-graph, --no-scim)")
        if args.graph_tls_cert:
            parser.error("--config-out cannot name the CA of --graph-tls-cert: write graph.ca_file")
        if out.exists():
            parser.error(f"--config-out: {out} exists; nothing was overwritten")

        def on_ready(info: dict[str, Any]) -> None:
            write_sim_config(out, info, args)
            sys.stderr.write(f"wrote {out}: run `bulkprov sync -c {out}`\n")
            sys.stderr.flush()

    sys.exit(run(args, on_ready))


def sim_parser() -> argparse.ArgumentParser:
    """The simulators' parser named ``bulkprov sim``, with ``--config-out``."""
    from bulkprov.sim.__main__ import build_parser

    parser = build_parser(prog="bulkprov sim")
    parser.epilog = (
        "Example: bulkprov sim --users 5000 --config-out sim.toml, then in another shell "
        "bulkprov sync -c sim.toml"
    )
    parser.add_argument_group("bulkprov").add_argument(
        "--config-out",
        default=None,
        metavar="FILE",
        help="write a bulkprov config for the simulators started (the Graph secret and the "
        "SCIM token go to FILE.graph-secret and FILE.scim-token beside it, mode 0600; the "
        "state beside it too); an existing FILE is not overwritten",
    )
    return parser


def write_sim_config(path: Path, info: dict[str, Any], args: argparse.Namespace) -> None:
    """The starter config pointed at the simulators ``info`` announces, with their secrets
    in files beside it (relative paths resolve against the config's folder)."""
    from bulkprov.commands.demo import write_demo_config

    secrets = {"graph-secret": args.graph_secret, "scim-token": args.scim_token}
    for suffix, value in secrets.items():
        secret = path.with_name(f"{path.name}.{suffix}")
        fd = os.open(secret, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
    zoom = bool(getattr(args, "zoom", False))
    write_demo_config(
        path,
        info,
        Path(f"{path.name}.state.sqlite3"),
        concurrency=16,
        rate_limit=args.rate_limit or 0,
        page_size=999,
        # `--zoom`: the Zoom profile, paced at the strict simulator's own label limits
        profile="zoom" if zoom else "rfc",
        light=(args.zoom_light or 0) if zoom else 0,
        medium=(args.zoom_medium or 0) if zoom else 0,
    )
    text = path.read_text(encoding="utf-8")
    if zoom and args.zoom_post_label != "medium":
        text = text.replace('# post_label = "medium"', f'post_label = "{args.zoom_post_label}"', 1)
    for env, suffix in (
        ("BULKPROV_GRAPH_SECRET", "graph-secret"),
        ("BULKPROV_SCIM_TOKEN", "scim-token"),
    ):
        old = f'{{ env = "{env}" }}'
        assert old in text, env
        text = text.replace(old, f'{{ file = "{path.name}.{suffix}" }}', 1)
    path.write_text(text, encoding="utf-8")
