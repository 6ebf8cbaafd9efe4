"""The ``bulkprov`` commands, one module per command family.

:mod:`bulkprov.cli` holds the click group and adds these modules' commands to it; the
modules here never import :mod:`bulkprov.cli` (the layers point down: cli → commands →
observe → pipeline → …). What several commands share (the ``--config`` option, the epilog,
the exit-code handling, loading the config and the secrets) is in :mod:`._shared`.

==============  =================================================================
module          commands
==============  =================================================================
sync            ``sync`` (``--watch`` runs the loop in :mod:`.sync_watch`)
operate         ``status``, ``logs``, ``report``, ``staged``, ``approve``,
                ``retry-failed``, ``state export``
plan            ``plan``, ``apply``
ondemand        ``provision``, ``test-connection``
mapping         ``mapping test``, ``mapping import``, ``mapping export``
migrate         ``migrate`` (the cut-over from Entra's provisioning job; what it makes of
                the job, without I/O, is in :mod:`.cutover`)
init            ``init`` (the text it writes is :mod:`.starter`, which the demo uses too)
demo            ``demo`` (the simulators, a sync interrupted and resumed, the check)
sim             ``sim`` (the simulators alone)
==============  =================================================================

Heavy imports (the pipeline, the state store, httpx, the simulators) stay inside the
command functions so that ``bulkprov --help`` starts fast; only :mod:`.demo` and
:mod:`.sim` import :mod:`bulkprov.sim`.
"""
