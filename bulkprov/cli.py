"""The ``bulkprov`` command line: the click group and the commands registered on it.

The commands live in :mod:`bulkprov.commands`, one module per family (sync, operate, plan,
ondemand, mapping, duplicates, migrate, init, demo, sim); this module holds only the group,
its options and epilog, and the list of commands. ``bulkprov = "bulkprov.cli:main"`` in pyproject.toml
and ``python -m bulkprov`` run :func:`main`.

Exit codes (also in ``bulkprov --help``):

==  ===========================================================
0   done
1   unexpected error
2   configuration error (the message names the file and key); ``bulkprov migrate``:
    Entra's job cannot be taken over as it is (nothing written, paused or sent)
3   authentication refused (Graph or the SCIM target)
4   Microsoft Graph could not be read
5   the SCIM target failed
6   the state database cannot be used, or is in use
7   ``bulkprov apply``: the plan is out of date (nothing was sent)
8   quarantined: too many users failed (the report says why; the next sync goes on)
9   the sync completed but held disables/deletes behind the accidental-deletion
    threshold (see ``bulkprov staged``; ``bulkprov approve`` sends them)
10  the sync completed but some users failed (see ``bulkprov logs --status failure``);
    ``bulkprov apply``: or some operations were held back (changed since the plan)
11  TLS with Microsoft Graph or the SCIM target failed (a certificate that cannot be
    verified: ``graph.ca_file`` / ``target.ca_file``; or a failed handshake)
12  the SCIM target's daily request limit is spent (resumable after its reset)
130 interrupted (the state is saved; run the same command to resume)
==  ===========================================================
"""

from __future__ import annotations

import click

from bulkprov.commands._shared import EPILOG
from bulkprov.commands.demo import demo
from bulkprov.commands.duplicates import duplicates
from bulkprov.commands.init import init
from bulkprov.commands.mapping import mapping
from bulkprov.commands.migrate import migrate
from bulkprov.commands.ondemand import provision, test_connection
from bulkprov.commands.operate import approve, logs, report, retry_failed, staged, state, status
from bulkprov.commands.plan import apply, plan
from bulkprov.commands.sim import sim
from bulkprov.commands.sync import sync


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


# in the order of bulkprov/commands/'s families; `bulkprov --help` sorts them by name
for command in (
    sync,
    status,
    logs,
    report,
    staged,
    approve,
    retry_failed,
    state,
    duplicates,
    plan,
    apply,
    provision,
    test_connection,
    mapping,
    migrate,
    init,
    demo,
    sim,
):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
