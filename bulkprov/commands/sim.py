"""``bulkprov sim``: the simulated Graph tenant and SCIM service, served alone on loopback.

A thin door to ``python -m bulkprov.sim``: every argument goes to its parser untouched
(so ``bulkprov sim --help`` is the simulators' own help). With :mod:`.demo`, the only
command module that imports :mod:`bulkprov.sim`.
"""

from __future__ import annotations

import sys

import click


@click.command(
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
