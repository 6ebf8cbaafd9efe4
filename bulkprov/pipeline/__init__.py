"""The provisioning pipeline: one sync, as the data flows. Every box is a file here.

::

    sources.py       pages.py                  workers.py ×N          writer.py
    ┌──────────┐     ┌───────────────────┐     ┌───────────────┐      ┌────────────────┐
    │ this     │────▶│ the producer:     │═W══▶│ one request   │══M══▶│ the checkpoint │
    │ cycle's  │     │ Graph page, then  │     │ per user (or  │      │ writer: batches│──▶ SQLite
    │ read     │     │ decide.py per user│     │ bulk.py: Bulk)│      │ and the resume │
    └──────────┘     └─────────╥─────────┘     └───────────────┘      │ cursor         │
                               ╚═══════════ M: no request needed ════▶└───────┬────────┘
                       ▲  matching.py: the target index and the Claims        │
                       │  (who owns which account), shared by the stages      │
                       └──── resume cursor: the first page not yet durable ◀──┘

    then, once the read completed: deprovision.py (staged disables and deletes, the
    threshold) ─▶ groups.py (groups, members) ─▶ the watermarks of a clean cycle saved

    ═W═ WorkItem, ═M═ Message (messages.py): bounded anyio memory streams. The work stream
    holds at most ``target.concurrency`` items, so a slow or throttled target slows the
    Graph reading (backpressure) and memory stays flat however large the tenant. A user
    that needs no request (unchanged, skipped, failed validation, staged) goes from the
    producer to the writer directly.

=================  ================================================================
file               what it holds
=================  ================================================================
``run.py``         one sync: opens the clients (``clients.py``) and the store, runs the
                   phases, starts every task (the one task group), handles signals
``sources.py``     the cycle's sources and which read it is (full, delta, assignments)
``pages.py``       ① the producer: Graph page → scope → mapping → decision → WorkItem
``decide.py``      the pure per-user decision, and :class:`Engine` (compiled config)
``source_checks``  malformed source users, refused before anything is sent
``matching.py``    the target index (list once, match by attribute) and the Claims
``workers.py``     ② SCIM workers: one WorkItem's request(s), its outcome out
``bulk.py``        ② the SCIM Bulk worker (``target.bulk``)
``writer.py``      ③ the one checkpoint writer: batches, resume cursor, final flush
``messages.py``    WorkItem, PageDone, Message: what flows on the streams
``stats.py``       RunStats (what the display reads), RunResult, the counts
``deprovision.py`` ④ staged disables and deletes, the accidental-deletion threshold
``groups.py``      ⑤ groups and memberships after the users
``seats.py``       profile "zoom": the seat guard (LicenseLimitExceeded holds)
``plan.py``        ``bulkprov plan``/``apply``: the same stages, deciding without sending
``ondemand.py``    ``bulkprov provision``/``test-connection``: one user, now
=================  ================================================================

Each stage is a function of its streams (``produce(reader, work_send, out_send)``,
``worker(apply, work_recv, out_send, stopping)``, ``write_checkpoints(out_recv, ...)``),
started in one place (:mod:`~bulkprov.pipeline.run`). The order of imports inside the
package is a contract too (``[tool.importlinter]``, "The pipeline"): ``run`` over the
stages, the stages over ``messages``, ``messages`` over ``decide``.

Resume: an interrupted run restarts at its cursor. Users already done are skipped by their
stored digest (0 requests). Creates whose outcome was not committed at the kill are in the
in-flight file (:mod:`bulkprov.checkpoint.inflight`: the Graph id written before each POST,
the new account when it is answered, the slot freed once committed): an answered one is
recorded on restart with no request; one still unanswered (at most the concurrency) is
looked up by its matching attributes before its POST, so it is linked, never POSTed twice.
The target is listed once on a first run (accounts may exist before bulkprov) and with
``--rematch``; a resume reuses that listing.
"""

from bulkprov.pipeline.clients import open_clients as open_clients
from bulkprov.pipeline.clients import open_graph as open_graph
from bulkprov.pipeline.decide import Engine as Engine
from bulkprov.pipeline.deprovision import approve as approve
from bulkprov.pipeline.ondemand import check_connection as check_connection
from bulkprov.pipeline.ondemand import provision_user as provision_user
from bulkprov.pipeline.plan import apply_options as apply_options
from bulkprov.pipeline.plan import held_back_message as held_back_message
from bulkprov.pipeline.plan import make_plan as make_plan
from bulkprov.pipeline.plan import summary as summary
from bulkprov.pipeline.plan import verify_plan as verify_plan
from bulkprov.pipeline.run import run_sync as run_sync
from bulkprov.pipeline.seats import Seats as Seats
from bulkprov.pipeline.stats import COUNT_KEYS as COUNT_KEYS
from bulkprov.pipeline.stats import RunResult as RunResult
from bulkprov.pipeline.stats import RunStats as RunStats
