"""One sync: opens the clients and the store, wires the stages, handles signals.

This is the only module that starts the pipeline's tasks (the drawing of the stages, each
naming its file, is in :mod:`bulkprov.pipeline`). A cycle, in order:

1. read the cycle's sources completely (:mod:`~bulkprov.pipeline.sources`) and choose its
   user read (full, incremental, or resuming an unfinished full read at its cursor; an
   unfinished incremental cycle is closed and its changes read again:
   :attr:`~bulkprov.checkpoint.store.Run.resumable`);
2. list the target for matching when needed (:mod:`~bulkprov.pipeline.matching`);
3. provision: one task group runs the producer (:mod:`~bulkprov.pipeline.pages`), the SCIM
   workers (:mod:`~bulkprov.pipeline.workers`, or :mod:`~bulkprov.pipeline.bulk`) and the
   checkpoint writer (:mod:`~bulkprov.pipeline.writer`), joined by bounded streams;
4. only once the read completed: deprovision (:mod:`~bulkprov.pipeline.deprovision`), then
   groups (:mod:`~bulkprov.pipeline.groups`); then, over a clean cycle only, save the
   watermarks (deltaLinks, the config's fingerprint, the assignments) the next cycle reads
   from.

A run the quarantine breaker stops is marked ``quarantined`` and the reasons it reported
are kept (``sync_state``), so that later runs go on past failures for them until a cycle
ends with no failure (:class:`~bulkprov.breaker.Breaker`). A 401/403 from the target raises :class:`~bulkprov.errors.TargetAuthError` in a worker,
which cancels the group: the run stops at once with one message. SIGINT/SIGTERM stop the
reading, let the workers finish what they sent, and flush within :data:`SHUTDOWN_GRACE`.
"""

from __future__ import annotations

import contextlib
import signal
import time
from functools import partial
from pathlib import Path

import anyio
import httpx
from anyio.abc import ObjectSendStream

from bulkprov import _json
from bulkprov.breaker import Breaker
from bulkprov.checkpoint.health import read_health
from bulkprov.checkpoint.inflight import InflightLog, inflight_path
from bulkprov.checkpoint.lock import StateLock
from bulkprov.checkpoint.staging import (
    FINGERPRINT,
    GROUPS_DELTA,
    QUARANTINE,
    USERS_DELTA,
    LifecycleStore,
)
from bulkprov.checkpoint.store import NEW_RUN, UNFINISHED, Run, StateStore
from bulkprov.config import Config, check_state_filesystem
from bulkprov.credentials import Secrets
from bulkprov.errors import Quarantined, RunAborted, StateError
from bulkprov.graph.client import GraphClient
from bulkprov.pipeline.bulk import BULK_WORKERS, bulk_worker
from bulkprov.pipeline.clients import open_clients
from bulkprov.pipeline.decide import Engine
from bulkprov.pipeline.deprovision import Deprovisioner
from bulkprov.pipeline.groups import GroupGuard, GroupSync
from bulkprov.pipeline.matching import Claims, build_target_index
from bulkprov.pipeline.messages import Message, UserGuard, WorkItem
from bulkprov.pipeline.pages import Reader, produce
from bulkprov.pipeline.seats import Seats
from bulkprov.pipeline.sources import choose_read, config_fingerprint, read_cycle_sources
from bulkprov.pipeline.stats import HELD_BACK, RunResult, RunStats
from bulkprov.pipeline.workers import Applier, recovered_create, worker
from bulkprov.pipeline.writer import write_checkpoints
from bulkprov.retry import RetryPolicy
from bulkprov.scim.bulk import BulkSupport
from bulkprov.scim.client import ScimClient

#: seconds a signalled run has to finish its in-flight requests and flush (then it is
#: cancelled; the writer's final flush is shielded), well within the 5 s an init system waits
SHUTDOWN_GRACE = 3.5


async def run_sync(
    cfg: Config,
    secrets: Secrets,
    *,
    stats: RunStats | None = None,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    scim_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
    rematch: bool = False,
    full: bool = False,
    handle_signals: bool = False,
    engine: Engine | None = None,
    guard: UserGuard | None = None,
    group_guard: GroupGuard | None = None,
    hold_staged: bool = False,
) -> RunResult:
    """Run (or resume) one full sync from Graph into the SCIM target.

    ``full`` reads every user even when the last cycle left a deltaLink (``sync --full``,
    Entra's "restart provisioning" without clearing the state: unchanged users still cost
    no request). ``guard`` and ``group_guard`` (``bulkprov apply``) hold back every user and group
    operation they do not let through: counted as ``held back``, it keeps the cycle's
    watermarks (deltaLinks, assignments) where they were, as a failure does, so the next
    cycle reads those users again. ``hold_staged`` (apply of a plan that showed them held)
    holds every staged disable and delete for ``bulkprov approve``.
    """
    engine = engine or Engine(cfg)
    stats = stats or RunStats()
    check_state_filesystem(cfg)  # load_config checked it; a Config built in code too
    with StateLock(cfg.state.path):
        store = await StateStore.open(cfg.state.path, verify=True)
        store.escrow_policy = cfg.escrow.policy()
        async with store:
            # An unfinished full read resumes at its cursor (``--full`` too: it is one); any
            # other unfinished run is closed, and this one reads from the last completed
            # cycle's watermarks (StateStore.start_run, Run.resumable).
            run = await store.start_run()
            if cfg.state.log_retention_days and not run.resumes:
                # a new run prunes; a resume goes straight back to work (a scan of the
                # whole log is time to the first write at a million users)
                cutoff = time.time() - cfg.state.log_retention_days * 86400
                stats.pruned = await store.prune_log(cutoff)
            stats.health = await read_health(store)
            stats.run_id, stats.resumed = run.id, run.resumes > 0
            for key, value in run.counts.items():
                stats.counts[key] = value
            stats.processed = sum(stats.counts.values())
            # Matching against a listing of the target: on a first sync (accounts may exist
            # already) and with --rematch. A resumed run reuses its own complete listing.
            # The accounts an interrupted attempt (resumed, or closed by this run: its
            # ``follows_unfinished``) may have created without a record are those left in
            # the in-flight file (checkpoint/inflight.py), each looked up before its POST:
            # no listing of the whole target for them.
            need_index = rematch or run.target_index > 0 or not await store.has_completed_run()
            list_target = rematch or (need_index and run.target_index != 2)
            inflight, maybe_created = await _open_inflight(cfg, store, run, stats)
            stats.processed = sum(stats.counts.values())
            async with open_clients(
                cfg,
                secrets,
                graph_transport=graph_transport,
                scim_transport=scim_transport,
                policy=policy,
                scim_connections=cfg.target.concurrency,
            ) as (graph, scim):
                stats.scim = scim
                cycle = _Cycle(
                    engine,
                    store,
                    run,
                    graph,
                    scim,
                    stats,
                    guard=guard,
                    group_guard=group_guard,
                    hold_staged=hold_staged,
                    full=full,
                )
                cycle.inflight, cycle.maybe_created = inflight, maybe_created
                status, message = "completed", None
                try:
                    await cycle.run(
                        need_index=need_index,
                        list_target=list_target,
                        handle_signals=handle_signals,
                    )
                    message = cycle.note
                except BaseException as exc:
                    # unfinished: resumed (a full read) or closed by the next run
                    status = "quarantined" if _quarantined(exc) else "running"
                    message = _first_message(exc)
                    stats.phase = "stopped"
                    raise
                finally:
                    with anyio.CancelScope(shield=True):
                        if status in UNFINISHED:
                            await store.mark_unfinished(run, status, dict(stats.counts), message)
                            if status == "quarantined":
                                await cycle.enter_quarantine()
                        else:
                            if stats.counts["failed"]:
                                status = "completed_with_failures"
                            await store.finish_run(run, status, dict(stats.counts), message)
                            await cycle.leave_quarantine()
                        with contextlib.suppress(StateError):  # figures only: never masks
                            stats.health = await read_health(store)
                    inflight.close(completed=status not in UNFINISHED)
                    stats.phase = "done" if status not in UNFINISHED else stats.phase
    return RunResult(
        run.id,
        status,
        dict(stats.counts),
        time.monotonic() - stats.started,
        scim.stats.requests,
        scim.stats.throttled,
        stats.resumed,
        message,
    )


async def _open_inflight(
    cfg: Config, store: StateStore, run: Run, stats: RunStats
) -> tuple[InflightLog, frozenset[str]]:
    """This attempt's in-flight file, and the users an interrupted attempt may have
    created without a record.

    Its creates that were answered are recorded now, as the killed attempt would have
    (logged on the run's cursor page, so the resumed read skips them: no request); the
    ones still unanswered at the kill are returned, to be looked up by their matching
    attributes before they are POSTed again (Applier.create).
    """
    path = inflight_path(Path(cfg.state.path))
    leftover = InflightLog.leftover(path)
    unanswered: set[str] = set()
    if leftover:
        states = await store.lookup_users(sorted(leftover))
        recovered = []
        for graph_id, record in sorted(leftover.items()):
            state = states.get(graph_id)
            if state is not None and state.scim_id:
                continue  # committed after all
            write = recovered_create(graph_id, record) if record is not None else None
            if write is None:
                unanswered.add(graph_id)
            else:
                recovered.append((run.cursor_page, write))
        if recovered:
            stats.counts["created"] += len(recovered)
            await store.write_batch(run, recovered, dict(stats.counts), None)
    slots = cfg.state.commit_every + 8 * cfg.target.concurrency
    return InflightLog(path, slots, carried=sorted(unanswered)), frozenset(unanswered)


def _quarantined(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(Quarantined) is not None
    return isinstance(exc, Quarantined)


def _first_message(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


class _Cycle:
    """One cycle of a run: its phases in order, and the signal handling that stops them."""

    def __init__(
        self,
        engine: Engine,
        store: StateStore,
        run: Run,
        graph: GraphClient,
        scim: ScimClient,
        stats: RunStats,
        *,
        guard: UserGuard | None = None,
        group_guard: GroupGuard | None = None,
        hold_staged: bool = False,
        full: bool = False,
    ) -> None:
        self.engine = engine
        self.cfg = engine.cfg
        self.store = store
        self.ls = LifecycleStore(store)
        self.run_ = run
        self.graph = graph
        self.scim = scim
        self.stats = stats
        self.guard = guard
        self.group_guard = group_guard
        self.hold_staged = hold_staged
        #: ``sync --full``: a full read even where a deltaLink would do
        self.force_full = full
        #: the creates in flight (checkpoint/inflight.py), and the users an interrupted
        #: attempt may have created without a record (looked up before their POST)
        self.inflight: InflightLog | None = None
        self.maybe_created: frozenset[str] = frozenset()
        #: a message for the run's summary (e.g. actions held by the deletion threshold)
        self.note: str | None = None
        #: set by the first SIGINT/SIGTERM (its name); workers then take no new item
        self.stop_signal: str | None = None
        self._stages = anyio.CancelScope()
        self._grace = 0.0
        self._producer_scope = anyio.CancelScope()
        #: the quarantine breaker of this cycle (made when it provisions)
        self.breaker: Breaker | None = None

    async def enter_quarantine(self) -> None:
        """The breaker stopped the cycle: keep the reasons it reported, so that a later run
        goes on past failures for them (:class:`~bulkprov.breaker.Breaker`)."""
        if self.breaker is None:
            return
        known = await self._acknowledged()
        reasons = sorted(known | set(self.breaker.top_reasons()))
        await self.ls.put(QUARANTINE, _json.dumps(reasons).decode())

    async def leave_quarantine(self) -> None:
        """A cycle that completed with no failure and nothing left in escrow ends the
        quarantine ("removed from quarantine after all errors are fixed", facts.md §2.4)."""
        if not self.stats.counts["failed"] and not await self.store.escrow_entries():
            await self.ls.put(QUARANTINE, None)

    async def _acknowledged(self) -> frozenset[str]:
        saved = await self.ls.get(QUARANTINE)
        if not saved:
            return frozenset()
        try:
            reasons = _json.loads(saved)
        except _json.JSONDecodeError:
            return frozenset()
        return frozenset(str(r) for r in reasons) if isinstance(reasons, list) else frozenset()

    def stopping(self) -> bool:
        return self.stop_signal is not None

    async def run(self, *, need_index: bool, list_target: bool, handle_signals: bool) -> None:
        async with anyio.create_task_group() as outer:
            if handle_signals:
                outer.start_soon(self._watch_signals)
            await self._cycle(need_index, list_target)
            if self.stop_signal is not None:
                raise RunAborted(
                    f"interrupted by {self.stop_signal}; in-flight requests were finished and "
                    "the state is saved — run the same command again to resume"
                )
            # The stages ended by themselves; only the signal watcher needs stopping.
            outer.cancel_scope.cancel()

    async def _cycle(self, need_index: bool, list_target: bool) -> None:
        cfg, run, store = self.cfg, self.run_, self.store
        self.stats.phase = "reading assignments"
        # Read completely before deciding anything: a failure here changes nothing.
        sources, groups_link = await read_cycle_sources(self.graph, self.ls, cfg)
        already_done: set[str] = set()
        if run.resumes and run.kind != NEW_RUN:
            already_done = await store.logged_since_page(run)
        else:
            # A new run reads a delta round when the last cycle left a usable deltaLink.
            link = None if self.force_full else await choose_read(self.ls, cfg, sources)
            await self.ls.set_run_read(run, "full" if link is None else "incremental", link)
        if list_target:
            self.stats.phase = "matching"
            # a signal while listing the target stops at once (nothing to finish)
            with self._phase(grace=0.0):
                await build_target_index(
                    self.engine,
                    self.scim,
                    store,
                    page_size=cfg.target.list_page_size,
                    concurrency=cfg.target.concurrency,
                    run=run,
                )
        if self.stop_signal is not None:
            return
        support = await self.scim.bulk_support() if cfg.target.bulk else None
        escrow = await store.escrow_entries()
        waiting = frozenset(await store.waiting())
        seats = await Seats.load(cfg, store)
        self.stats.seat_figures = seats.figures if seats is not None else None
        claims = Claims()
        reader = Reader(
            self.engine,
            store,
            self.ls,
            run,
            self.graph,
            self.stats,
            sources,
            escrow,
            claims,
            self.guard,
            use_index=need_index,
            already_done=already_done,
            next_page=run.cursor_page,
            waiting=waiting,
            seats=seats,
        )
        apply = Applier(self.engine, self.scim, store, claims, escrow, waiting)
        apply.inflight, apply.maybe_created = self.inflight, self.maybe_created
        self.stats.phase = "provisioning"
        await self._provision(reader, apply, support)
        if self.stop_signal is not None:
            return  # stopped by a signal: the read is partial, nothing is deprovisioned
        # The source read completed: only now may anything be deprovisioned.
        counts = self.stats.counts
        self.stats.phase = "deprovisioning"
        self.note = await Deprovisioner(
            cfg,
            store,
            self.scim,
            counts,
            guard=self.guard,
            group_guard=self.group_guard,
            hold_staged=self.hold_staged,
            bulk_limits=support,
        ).deprovision(
            run,
            full_read=run.kind == "full",
            sources=sources if cfg.groups.enabled else None,
        )
        if cfg.groups.enabled and sources.groups:
            self.stats.phase = "groups"
            groups = GroupSync(cfg, store, self.scim, counts, group_guard=self.group_guard)
            await groups.sync(run, sources)
        if seats is not None and (seat_notes := seats.warnings()):
            seat_note = "; ".join(seat_notes)
            self.note = f"{self.note}; {seat_note}" if self.note else seat_note
        if counts[HELD_BACK]:
            held = (
                f"{counts[HELD_BACK]} operation(s) held back (not in the plan, or changed "
                "since): nothing was sent for them; make a new plan"
            )
            self.note = f"{self.note}; {held}" if self.note else held
        if not counts[HELD_BACK] and not await store.failures_holding_watermark(run):
            # Watermarks advance over a cycle whose failed users are all escrowed: each is
            # read again by id when its retry is due (pages.py), as Entra's escrow retries
            # on its own schedule, so one user that keeps failing does not make every later
            # cycle a full read. They stay where they were over a failure no retry by id
            # makes good (a staged disable, a group, an entry without id) and over what
            # `bulkprov apply` held back: the next cycle reads those again.
            if run.delta_link:
                await self.ls.put(USERS_DELTA, run.delta_link)
            if groups_link:
                await self.ls.put(GROUPS_DELTA, groups_link)
            await self.ls.put(FINGERPRINT, config_fingerprint(cfg))
            await self.ls.replace_assigned(sources.snapshot())

    async def _provision(self, reader: Reader, apply: Applier, support: BulkSupport | None) -> None:
        """The task group: producer ══WorkItem══▶ workers ══Message══▶ writer."""
        concurrency = workers = buffered = self.cfg.target.concurrency
        if support is not None:
            # A few large requests in flight keep client and target busy; each worker's
            # next batch waits in the stream, so batches fill up to maxOperations.
            workers = min(concurrency, BULK_WORKERS)
            buffered = workers * support.max_operations
        work_send, work_recv = anyio.create_memory_object_stream[WorkItem](buffered)
        self.stats.work = work_send
        out_send, out_recv = anyio.create_memory_object_stream[Message](concurrency * 4)
        self.breaker = Breaker(self.cfg.quarantine.policy(), await self._acknowledged())
        writer = partial(
            write_checkpoints,
            store=self.store,
            run=self.run_,
            stats=self.stats,
            breaker=self.breaker,
            claims=apply.claims,
            cfg=self.cfg.state,
            inflight=self.inflight,
        )
        filling = anyio.Lock()  # one Bulk worker fills its batch at a time
        with self._phase(grace=SHUTDOWN_GRACE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer, out_recv)
                async with work_recv, out_send:
                    for _ in range(workers):
                        if support is None:
                            tg.start_soon(
                                worker, apply, work_recv.clone(), out_send.clone(), self.stopping
                            )
                        else:
                            tg.start_soon(
                                bulk_worker,
                                apply,
                                support,
                                filling,
                                work_recv.clone(),
                                out_send.clone(),
                                self.stopping,
                            )
                    tg.start_soon(self._produce, reader, work_send, out_send.clone())

    async def _produce(
        self,
        reader: Reader,
        work_send: ObjectSendStream[WorkItem],
        out_send: ObjectSendStream[Message],
    ) -> None:
        with self._producer_scope:  # the first signal cancels the reading only
            await produce(reader, work_send, out_send)

    def _phase(self, grace: float) -> anyio.CancelScope:
        """A fresh scope for one phase; a signal gives it ``grace`` seconds to end."""
        self._stages = anyio.CancelScope()
        self._grace = grace
        if self.stop_signal is not None:
            self._stages.cancel()
        return self._stages

    async def _watch_signals(self) -> None:
        """SIGINT/SIGTERM: stop reading, let the workers finish the requests they have sent,
        flush, and stop within :data:`SHUTDOWN_GRACE` seconds; a second signal stops at once.
        """
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stop_signal is not None:
                    self._stages.cancel()
                    continue
                self.stop_signal = name
                self.stats.phase = f"stopping ({name})"
                self._producer_scope.cancel()  # no new work; workers drop queued items
                self._stages.deadline = anyio.current_time() + self._grace
