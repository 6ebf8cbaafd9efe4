"""Run one provisioning sync: the only module that wires the stages together.

::

    graph.pages ─▶ scope ─▶ mapping ─▶ decide ══WorkItem══▶ scim workers ×N ══Outcome══╗
        ▲         (inline, pure, per user, per page)          │ gate+pacer+AsyncLimiter  ║
        │                       ╚═══════ skips ═══════════════╪══════════════▶ checkpoint writer
        │                                                      ▼                         │
        └──── resume cursor: link of the first page not yet durable ◀──── SQLite ◀───────┘

* ``══`` are bounded anyio memory streams. The work stream holds at most ``concurrency``
  items, so a slow or throttled SCIM target slows Graph paging (backpressure) and memory
  stays flat however large the tenant.
* Scope, mapping and the decision are pure and run inline in the page task; the state rows
  and matching accounts of a page are fetched with one query each.
* One writer task owns every write: outcomes are committed in batches (every
  ``state.commit_every`` outcomes or ``state.commit_seconds``), and the page cursor
  advances in the same transaction, only past pages whose every user is durable.
* Resume: an interrupted run restarts at its cursor. Users already done are skipped by
  their stored digest (0 requests). Users in flight at the kill were maybe created: a
  resumed (or first) run lists the target once and matches on the mapping's matching
  attributes, so they are linked, never POSTed twice.
* Lifecycle (lifecycle.py): users are read from Graph's ``users/delta``. The first cycle
  (and any cycle after the scope or mappings changed, or the delta token expired) is a
  full round; later ones read only the changes since the deltaLink saved when the last
  cycle completed, plus the users whose app assignment changed. Disables and deletes are
  only *staged* on the way; they run after the read completed, within the
  accidental-deletion threshold, and groups are provisioned last.
* A 401/403 from the target raises :class:`~bulkprov.errors.TargetAuthError` in a worker,
  which cancels the group: the run stops at once with one message. The writer's final flush
  runs shielded, so what was done is kept.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkprov import _json
from bulkprov.breaker import Breaker
from bulkprov.checkpoint.lock import StateLock
from bulkprov.checkpoint.staging import FINGERPRINT, GROUPS_DELTA, USERS_DELTA, LifecycleStore
from bulkprov.checkpoint.store import Run, StateStore, UserState, UserWrite, disabled
from bulkprov.config import Config
from bulkprov.credentials import Secrets
from bulkprov.errors import (
    DeltaExpired,
    Quarantined,
    RunAborted,
    SourceError,
    StateError,
    TargetAuthError,
    TargetError,
    TargetRejected,
    UserDataError,
)
from bulkprov.escrow import EscrowEntry
from bulkprov.graph.client import GraphClient, Page, latest_per_id
from bulkprov.graph.directory import ScopeSources
from bulkprov.mapping import MappedUser, MappingContext, UserMapper, compile_mappings
from bulkprov.pipeline import source_checks as validate
from bulkprov.pipeline.clients import open_clients
from bulkprov.pipeline.decide import Decision, decide, target_values
from bulkprov.pipeline.lifecycle import (
    HELD_BACK,
    GroupGuard,
    Lifecycle,
    UserGuard,
    config_fingerprint,
    read_cycle_sources,
)
from bulkprov.retry import RetryPolicy
from bulkprov.scim import bulk
from bulkprov.scim import requests as rq
from bulkprov.scim.bulk import BulkBatch, BulkResult, BulkSupport
from bulkprov.scim.client import OutcomeUnknown, ScimClient
from bulkprov.scim.paths import get_value
from bulkprov.scim.responses import is_uniqueness_conflict, list_resources
from bulkprov.scope import ScopeEvaluator, compile_scope

#: cursor value meaning "every page of this run is durable"
END_OF_PAGES = "#end"

#: seconds a signalled run has to finish its in-flight requests and flush (then it is
#: cancelled; the writer's final flush is shielded), well within the 5 s an init system waits
SHUTDOWN_GRACE = 3.5

#: Bulk: this many requests in flight (operations per request: bulk.MAX_OPERATIONS)
BULK_WORKERS = bulk.IN_FLIGHT
#: how long a Bulk worker waits for more work before sending a partial batch (seconds)
BULK_LINGER = 0.05

COUNT_KEYS = (
    "created",
    "updated",
    "linked",
    "disabled",
    "deleted",
    "unchanged",
    "skipped",
    "failed",
    "staged",
    "held",
    HELD_BACK,
)
#: decisions an escrowed user waits for (bulkprov.escrow); deprovisioning is never held back
_ESCROWED_KINDS = frozenset({"create", "update", "link"})
#: a new incremental cycle with more assignment changes than this reads every user instead
MAX_ASSIGNMENT_FETCHES = 1000
NOT_ASSIGNED = "not assigned to the application (directly or through a group)"


@dataclass(slots=True)
class RunStats:
    """Live figures of the run, read by the progress display."""

    run_id: int = 0
    resumed: bool = False
    started: float = field(default_factory=time.monotonic)
    processed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    pages: int = 0
    phase: str = "starting"
    scim: ScimClient | None = None
    #: the work stream's send side while the run provisions (metrics read its depth)
    work: MemoryObjectSendStream[WorkItem] | None = None
    #: provisioning-log rows removed by the retention setting when the run started
    pruned: int = 0
    #: users a full read will go through (Graph ``users/$count``); None when unknown
    total: int | None = None

    @property
    def queue_depth(self) -> int:
        """Users decided and waiting for a SCIM worker."""
        return self.work.statistics().current_buffer_used if self.work is not None else 0

    @property
    def requests(self) -> int:
        return self.scim.stats.requests if self.scim else 0

    @property
    def throttled(self) -> int:
        return self.scim.stats.throttled if self.scim else 0


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: int
    status: str
    counts: dict[str, int]
    seconds: float
    requests: int
    throttled: int
    resumed: bool
    message: str | None = None

    @property
    def users(self) -> int:
        return sum(self.counts.values())


@dataclass(slots=True)
class WorkItem:
    page: int
    graph_id: str
    user_name: str | None
    decision: Decision
    mapped: MappedUser | None
    state: UserState | None


@dataclass(frozen=True, slots=True)
class PageDone:
    page: int
    items: int
    next_link: str | None


Message = tuple[int, UserWrite] | PageDone

#: ``guard(graph_id, decision, mapped)`` → a reason to hold the user back, or ``None``
#: (``bulkprov apply`` lets only the plan's own operations through)
Guard = UserGuard

#: (graph id, in scope, scope reason, mapped values or ``None``) of one source user
Evaluated = tuple[str, bool, str, MappedUser | None]
HARD_DELETED = "deleted permanently in Entra ID"
SOFT_DELETED = "deleted in Entra ID (soft delete, restorable)"


def removed_entry(item: dict[str, Any]) -> tuple[Evaluated, bool]:
    """A delta ``@removed`` entry: ``changed`` = soft delete, ``deleted`` = hard delete.

    Returns the user as out of scope, and whether it was hard-deleted.
    """
    graph_id = item.get("id")
    if not isinstance(graph_id, str) or not graph_id:
        raise UserDataError("a removed Graph user has no 'id'")
    removed = item.get("@removed")
    if isinstance(removed, dict) and removed.get("reason") == "deleted":
        return (graph_id, False, HARD_DELETED, None), True
    return (graph_id, False, SOFT_DELETED, None), False


def escrow_deferral(escrow: Mapping[str, EscrowEntry], graph_id: str, kind: str) -> str | None:
    """Why a user waits in escrow instead of being sent now (the Skipped reason), or ``None``.

    A user escrowed after a failure waits until its next retry is due for a create, update
    or link; deprovisioning never waits. Sync and plan both ask this.
    """
    if kind not in _ESCROWED_KINDS:
        return None
    waiting = escrow.get(graph_id)
    if waiting is None or waiting.is_due():
        return None
    return waiting.deferral()


def user_name_of(mapped: MappedUser | None, state: UserState | None) -> str | None:
    """The userName to log a user under: the mapped one, else the one last sent."""
    if mapped is not None:
        return mapped.user_name
    return state.user_name if state is not None else None


class UserNames:
    """The userNames mapped on one Graph page, to fail a second user mapped to the same one.

    Two users of one page sending the same userName would race (two POSTs in flight): the
    second one in page order fails instead. The same Graph id again (a delta round may list
    a user twice) is not a duplicate. Across pages the target's uniqueness stops a second
    POST (409, then matching). Sync and plan both check each page through one of these;
    the scope is the page, not the read, so the sync keeps no per-user memory for it.
    """

    __slots__ = ("_owners",)

    def __init__(self) -> None:
        #: lowercased userName → Graph id of the first user of the page mapped to it
        self._owners: dict[str, str] = {}

    def duplicate(self, graph_id: str, mapped: MappedUser | None) -> str | None:
        """The failure reason when another user of the page has ``mapped``'s userName."""
        if mapped is None or not mapped.user_name:
            return None
        if self._owners.setdefault(mapped.user_name.lower(), graph_id) == graph_id:
            return None
        return f"userName {mapped.user_name!r} is mapped from another user too"


def page_headers(cfg: Config) -> dict[str, str]:
    """Headers of every ``users/delta`` page request."""
    return {"Prefer": f"odata.maxpagesize={cfg.graph.page_size}"}


async def choose_read(ls: LifecycleStore, cfg: Config, sources: ScopeSources) -> str | None:
    """The deltaLink a new cycle reads from, or ``None`` for a full round.

    A full round when no cycle left a deltaLink, when the scope or mappings changed since
    (Entra restarts with a full cycle), or when more assignments changed than are worth
    fetching one by one (:data:`MAX_ASSIGNMENT_FETCHES`).
    """
    link = await ls.get(USERS_DELTA)
    if link is None or await ls.get(FINGERPRINT) != config_fingerprint(cfg):
        return None
    if sources.assigned is not None:
        changed = len(assignment_changes(await ls.assigned(), sources.snapshot()))
        if changed > MAX_ASSIGNMENT_FETCHES:
            return None
    return link


def assignment_changes(
    old: dict[str, str], new: dict[str, str], seen: Container[str] = frozenset()
) -> list[str]:
    """Users whose assignment or app roles changed since the last cycle, not in ``seen``."""
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in seen)


async def fetch_users(
    graph: GraphClient, ids: list[str], select: list[str]
) -> list[dict[str, Any]]:
    """``GET /users/{id}`` for each id (4 at a time), in id order; a user gone (404) is left
    out. The order is the fetches' own, not their completion's: plan and sync see one page.
    """
    users: list[dict[str, Any]] = []
    limiter = anyio.CapacityLimiter(4)
    fields = ",".join(select)

    async def fetch(graph_id: str) -> None:
        async with limiter:
            try:
                doc = await graph.get_json(f"{graph.base_url}/users/{graph_id}?$select={fields}")
            except SourceError as exc:
                if exc.status == 404:
                    return  # deleted: the delta round reports it
                raise
        if isinstance(doc, dict):
            doc.pop("@odata.context", None)
            users.append(doc)

    async with anyio.create_task_group() as tg:
        for graph_id in ids:
            tg.start_soon(fetch, graph_id)
    users.sort(key=lambda u: str(u.get("id")))
    return users


class Engine:
    """Everything compiled from one config, reused across runs (``--watch``) and commands."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.mapper: UserMapper = compile_mappings(cfg.mappings, config_path=cfg.source_path)
        self.scope: ScopeEvaluator = compile_scope(cfg.scope.filters, config_path=cfg.source_path)
        self.select = sorted(
            self.mapper.source_attributes
            | self.scope.source_attributes
            | {"id", "userPrincipalName", "accountEnabled"}
        )

    def evaluate(self, user: dict[str, Any], sources: ScopeSources | None = None) -> Evaluated:
        """Validate, scope and map one Graph user: (graph id, in scope, reason, mapped).

        ``sources`` (scope mode "assigned"): users not assigned are out of scope, before any
        scoping filter (Entra applies assignment first); assigned users' app roles feed
        ``[appRoleAssignments]``. Raises :class:`UserDataError` when the user cannot be
        processed at all.
        """
        graph_id = validate.check_source(user)
        assigned = sources.assigned if sources is not None else None
        if assigned is not None and graph_id not in assigned:
            return graph_id, False, NOT_ASSIGNED, None
        decision = self.scope.evaluate(user)
        in_scope, reason = decision.in_scope, decision.reason
        if in_scope and user.get("accountEnabled") is False:
            # Entra: "Provisioning a user that is disabled in Microsoft Entra ID isn't
            # supported" and IsSoftDeleted is true for accountEnabled=false (facts.md §2.6).
            in_scope, reason = False, "accountEnabled is false"
        if not in_scope:
            return graph_id, False, reason, None
        roles = sources.roles_of(graph_id) if sources is not None else ()
        mapped = self.mapper.map_user(
            user, MappingContext(is_soft_deleted=False, app_role_assignments=roles)
        )
        if not mapped.user_name or not isinstance(mapped.user_name, str):
            raise UserDataError("the mapping gave no userName (the matching attribute is empty)")
        for path, value in mapped.values.items():
            validate.check_value(path, value)
        validate.check_user_name(mapped.user_name, email=self.cfg.target.user_name_is_email)
        return graph_id, True, reason, mapped

    def entry(
        self, item: dict[str, Any], sources: ScopeSources | None = None
    ) -> tuple[Evaluated, bool]:
        """One item of a Graph page: a user (see :meth:`evaluate`) or a delta ``@removed``
        entry; and whether it is a hard delete. Sync and plan both read pages through here.
        """
        if "@removed" in item:
            return removed_entry(item)
        return self.evaluate(item, sources), False

    def decide(
        self,
        evaluated: Evaluated,
        state: UserState | None,
        match: tuple[str, dict[str, Any]] | None,
        *,
        hard_deleted: bool,
    ) -> Decision:
        """The decision for one evaluated user: sync and plan both decide through here."""
        _, in_scope, reason, mapped = evaluated
        return decide(
            in_scope=in_scope,
            scope_reason=reason,
            update_values=mapped.update_values if mapped else None,
            digest=mapped.digest if mapped else None,
            state=state,
            match=match,
            delete=hard_deleted and self.cfg.deprovision.delete_hard_deleted,
        )

    def delta_url(self, base_url: str) -> str:
        """The first request of a full ``users/delta`` round (facts.md §7.3)."""
        return f"{base_url}/users/delta?$select={','.join(self.select)}"

    def pick_match(
        self,
        mapped: MappedUser | None,
        state: UserState | None,
        index: Mapping[str, tuple[str, dict[str, Any]]] | None,
    ) -> tuple[str, dict[str, Any]] | None:
        """The target account a user not in the state matches, from ``index`` (matching key
        → account): the first matching attribute found, in precedence order (Entra's way).

        Pure: sync and plan both match through here.
        """
        if mapped is None or state is not None or not index:
            return None
        for key in self.match_keys(mapped):
            found = index.get(key)
            if found is not None:
                return found
        return None

    def match_keys(self, mapped: MappedUser) -> list[str]:
        """Index keys for the mapping's matching attributes, in precedence order."""
        values = mapped.values
        return [
            f"{path}\x00{value.lower()}"  # the key format: resource_keys() writes the same
            for path in self.mapper.matching
            if isinstance(value := values.get(path), str) and value
        ]

    def resource_keys(self, resource: dict[str, Any]) -> list[str]:
        """The same keys for an account listed from the target (what :meth:`match_keys`
        of a user is looked up against)."""
        return [
            f"{path}\x00{value.lower()}"
            for path in self.mapper.matching
            if isinstance(value := get_value(resource, path), str) and value
        ]


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
    guard: Guard | None = None,
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
    with StateLock(cfg.state.path):
        store = await StateStore.open(cfg.state.path)
        store.escrow_policy = cfg.escrow.policy()
        async with store:
            if cfg.state.log_retention_days:
                cutoff = time.time() - cfg.state.log_retention_days * 86400
                stats.pruned = await store.prune_log(cutoff)
            if full:
                last = await store.last_run()
                if last is not None and last.status == "running":
                    raise StateError(
                        f"run {last.id} was interrupted: `bulkprov sync` resumes it (nothing is "
                        "sent twice); then run `bulkprov sync --full`"
                    )
            run = await store.start_run()
            stats.run_id, stats.resumed = run.id, run.resumes > 0
            for key, value in run.counts.items():
                stats.counts[key] = value
            stats.processed = sum(stats.counts.values())
            need_index = rematch or run.resumes > 0 or not await store.has_completed_run()
            async with open_clients(
                cfg,
                secrets,
                graph_transport=graph_transport,
                scim_transport=scim_transport,
                policy=policy,
                scim_connections=cfg.target.concurrency,
            ) as (graph, scim):
                stats.scim = scim
                sync = _Sync(
                    engine,
                    store,
                    run,
                    graph,
                    scim,
                    stats,
                    guard,
                    group_guard,
                    hold_staged,
                    full=full,
                )
                status, message = "completed", None
                try:
                    await sync.run(need_index=need_index, handle_signals=handle_signals)
                    message = sync.note
                except BaseException as exc:
                    status = "running"  # stays resumable
                    message = _first_message(exc)
                    stats.phase = "stopped"
                    raise
                finally:
                    if status != "running":
                        if stats.counts["failed"]:
                            status = "completed_with_failures"
                        with anyio.CancelScope(shield=True):
                            await store.finish_run(run, status, dict(stats.counts), message)
                    stats.phase = "done" if status != "running" else stats.phase
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


def _first_message(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


class _Sync:
    def __init__(
        self,
        engine: Engine,
        store: StateStore,
        run: Run,
        graph: GraphClient,
        scim: ScimClient,
        stats: RunStats,
        guard: Guard | None = None,
        group_guard: GroupGuard | None = None,
        hold_staged: bool = False,
        *,
        full: bool = False,
    ) -> None:
        self.engine = engine
        self.guard = guard
        self.group_guard = group_guard
        self.hold_staged = hold_staged
        self.cfg = engine.cfg
        self.store = store
        self.run_ = run
        self.graph = graph
        self.scim = scim
        self.stats = stats
        self.dialect = self.cfg.target.patch_dialect
        self.use_index = False
        #: target accounts linked by matching in this run, and the ones it created until
        #: their links are durable: scim id -> Graph id
        self.claimed: dict[str, str] = {}
        #: users of this run already logged on partly durable pages (filled on resume)
        self.already_done: set[str] = set()
        self.bulk_filling = anyio.Lock()
        self.ls = LifecycleStore(store)
        self.sources = ScopeSources()
        #: Graph ids read by this run's delta pages (not fetched again for assignment changes);
        #: kept for incremental reads only, where they are the changes: a full read of a 1M-user
        #: tenant would otherwise hold 1M ids (≈ 110 MB) that nothing looks at
        self.seen: set[str] = set()
        self.hard_deleted: set[str] = set()
        #: ``sync --full``: a full read even where a deltaLink would do
        self.force_full = full
        self.next_page = run.cursor_page
        #: a message for the run's summary (e.g. actions held by the deletion threshold)
        self.note: str | None = None

        #: failed users waiting for their next retry (bulkprov.escrow)
        self.escrow: dict[str, EscrowEntry] = {}
        self.breaker = Breaker(self.cfg.quarantine.policy())
        #: set by the first SIGINT/SIGTERM (its name); workers then take no new item
        self.stop_signal: str | None = None
        self._stages = anyio.CancelScope()
        self._grace = 0.0
        self._producer_scope = anyio.CancelScope()

    async def run(self, *, need_index: bool, handle_signals: bool) -> None:
        self.escrow = await self.store.escrow_entries()
        async with anyio.create_task_group() as outer:
            if handle_signals:
                outer.start_soon(self._watch_signals)
            await self._cycle(need_index)
            if self.stop_signal is not None:
                raise RunAborted(
                    f"interrupted by {self.stop_signal}; in-flight requests were finished and "
                    "the state is saved — run the same command again to resume"
                )
            # The stages ended by themselves; only the signal watcher needs stopping.
            outer.cancel_scope.cancel()

    async def _cycle(self, need_index: bool) -> None:
        cfg, run = self.cfg, self.run_
        self.stats.phase = "reading assignments"
        # Read completely before deciding anything: a failure here changes nothing.
        self.sources, groups_link = await read_cycle_sources(self.graph, self.ls, cfg)
        if run.resumes:
            self.already_done = await self.store.logged_since_page(run)
        else:
            await self._choose_read()
        if need_index:
            self.stats.phase = "matching"
            # a signal while listing the target stops at once (nothing to finish)
            with self._phase(grace=0.0):
                await self.build_target_index()
            self.use_index = True
        if self.stop_signal is not None:
            return
        support = await self.scim.bulk_support() if self.cfg.target.bulk else None
        self.stats.phase = "provisioning"
        concurrency = workers = buffered = cfg.target.concurrency
        if support is not None:
            # A few large requests in flight keep client and target busy; each worker's
            # next batch waits in the stream, so batches fill up to maxOperations.
            workers = min(concurrency, BULK_WORKERS)
            buffered = workers * support.max_operations
        work_send, work_recv = anyio.create_memory_object_stream[WorkItem](buffered)
        self.stats.work = work_send
        out_send, out_recv = anyio.create_memory_object_stream[Message](concurrency * 4)
        with self._phase(grace=SHUTDOWN_GRACE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, out_recv)
                async with work_recv, out_send:
                    for _ in range(workers):
                        if support is None:
                            tg.start_soon(self._worker, work_recv.clone(), out_send.clone())
                        else:
                            tg.start_soon(
                                self._bulk_worker, support, work_recv.clone(), out_send.clone()
                            )
                    tg.start_soon(self._produce, work_send, out_send.clone())
        if self.stop_signal is not None:
            return  # stopped by a signal: the read is partial, nothing is deprovisioned
        # The source read completed: only now may anything be deprovisioned.
        life = Lifecycle(
            cfg,
            self.store,
            self.scim,
            self.stats.counts,
            guard=self.guard,
            group_guard=self.group_guard,
            hold_staged=self.hold_staged,
            bulk_limits=support,
        )
        self.stats.phase = "deprovisioning"
        self.note = await life.deprovision(
            run,
            full_read=run.kind == "full",
            sources=self.sources if cfg.groups.enabled else None,
        )
        if cfg.groups.enabled and self.sources.groups:
            self.stats.phase = "groups"
            await life.sync_groups(run, self.sources)
        counts = self.stats.counts
        if counts[HELD_BACK]:
            held = (
                f"{counts[HELD_BACK]} operation(s) held back (not in the plan, or changed "
                "since): nothing was sent for them; make a new plan"
            )
            self.note = f"{self.note}; {held}" if self.note else held
        if not counts["failed"] and not counts[HELD_BACK] and not await self.store.escrow_entries():
            # Watermarks advance only over a clean cycle: failed users come back next time
            # (escrowed ones too: a later delta round would not list them again), and so
            # do the ones `bulkprov apply` held back.
            if run.delta_link:
                await self.ls.put(USERS_DELTA, run.delta_link)
            if groups_link:
                await self.ls.put(GROUPS_DELTA, groups_link)
            await self.ls.put(FINGERPRINT, config_fingerprint(cfg))
            await self.ls.replace_assigned(self.sources.snapshot())

    async def _choose_read(self) -> None:
        """A new run reads a delta round when the last cycle left a usable deltaLink."""
        link = None if self.force_full else await choose_read(self.ls, self.cfg, self.sources)
        await self.ls.set_run_read(self.run_, "full" if link is None else "incremental", link)

    def _phase(self, grace: float) -> anyio.CancelScope:
        """A fresh scope for one phase; a signal gives it ``grace`` seconds to end."""
        self._stages = anyio.CancelScope()
        self._grace = grace
        if self.stop_signal is not None:
            self._stages.cancel()
        return self._stages

    async def _produce(
        self, work_send: ObjectSendStream[WorkItem], out_send: ObjectSendStream[Message]
    ) -> None:
        with self._producer_scope:
            await self._producer(work_send, out_send)

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

    # -- matching index -----------------------------------------------------------------

    async def build_target_index(self) -> None:
        """List the target's users once and index them by the matching attributes."""
        store, size = self.store, self.cfg.target.list_page_size
        await store.clear_target_index()
        doc = await self.scim.send(rq.list_users(1, size))
        first, total = list_resources(doc)

        async def index(resources: list[dict[str, Any]]) -> None:
            rows = []
            for res in resources:
                scim_id = res.get("id")
                if not isinstance(scim_id, str):
                    continue
                blob = _json.dumps(res)
                rows += [(key, scim_id, blob) for key in self.engine.resource_keys(res)]
            await store.add_target_index(rows)

        await index(first)
        if total <= len(first) or not first:
            return
        page = len(first)
        starts = list(range(1 + page, total + 1, page))
        limiter = anyio.CapacityLimiter(self.cfg.target.concurrency)

        async def fetch(start: int) -> None:
            async with limiter:
                resources, _ = list_resources(await self.scim.send(rq.list_users(start, page)))
                await index(resources)

        async with anyio.create_task_group() as tg:
            for start in starts:
                tg.start_soon(fetch, start)

    # -- producer -----------------------------------------------------------------------

    async def _producer(
        self, work_send: ObjectSendStream[WorkItem], out_send: ObjectSendStream[Message]
    ) -> None:
        run, engine = self.run_, self.engine
        full_round = engine.delta_url(self.graph.base_url)
        async with work_send, out_send:
            if run.cursor != END_OF_PAGES:
                if run.kind == "full":
                    self.stats.total = await self.graph.user_count()
                first = run.cursor or full_round
                try:
                    await self._read(first, work_send, out_send)
                except DeltaExpired:
                    # Graph forgot the sync state: read everything again. Unchanged users
                    # match their stored digest (0 requests) and the sweep after the full
                    # read goes through the deletion threshold: no mass change.
                    await self.ls.set_run_kind(run, "full")
                    self.stats.total = await self.graph.user_count()
                    await self._read(full_round, work_send, out_send)
                except SourceError as exc:
                    if run.cursor is None or exc.status is None or not 400 <= exc.status < 500:
                        raise
                    # The saved link expired at the source: start the read over; users
                    # already done are skipped by digest, so this costs reads, not writes.
                    await self.store.restart_cursor(run)
                    raise SourceError(
                        f"the saved Graph page link no longer works ({exc}); "
                        "run again to restart the read from the first page"
                    ) from None
            if run.kind == "incremental" and self.sources.assigned is not None:
                await self._assignment_changes(work_send, out_send)

    async def _read(
        self,
        first: str,
        work_send: ObjectSendStream[WorkItem],
        out_send: ObjectSendStream[Message],
    ) -> None:
        prefer = page_headers(self.cfg)
        # One page of lookahead: the next page is fetched while this one is evaluated and
        # sent. Read one after the other, the workers sat idle for every page's round trip:
        # with Graph answering a page in 200 ms, 30k users took 12.0 s instead of 7.8 s
        # (benchmarks/RESULTS.md, "page lookahead"). On loopback it makes no difference.
        ahead_send, ahead_recv = anyio.create_memory_object_stream[Page | Exception](0)

        async def fetch() -> None:
            async with ahead_send:
                try:
                    async for page in self.graph.pages(
                        first, first_number=self.next_page, headers=prefer
                    ):
                        await ahead_send.send(page)
                except Exception as exc:  # noqa: BLE001 - handed over, raised by the reader
                    # Not raised here: that would cancel the page being processed halfway
                    # (its PageDone never sent, the cursor stuck there for the rest of the
                    # run). It is raised once that page is done, as a sequential read would.
                    await ahead_send.send(exc)

        failure: Exception | None = None
        try:
            async with ahead_recv, anyio.create_task_group() as tg:
                tg.start_soon(fetch)
                async for item in ahead_recv:
                    if isinstance(item, Exception):
                        failure = item
                        break
                    self.next_page = item.number + 1
                    if item.delta_link:
                        await self.ls.set_run_delta(self.run_, item.delta_link)
                    await self._page(item, work_send, out_send)
        except BaseExceptionGroup as group:
            # callers handle DeltaExpired and SourceError as such, not inside a group
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        if failure is not None:
            raise failure

    async def _assignment_changes(
        self, work_send: ObjectSendStream[WorkItem], out_send: ObjectSendStream[Message]
    ) -> None:
        """Users whose assignment or app roles changed: ``users/delta`` does not show them."""
        ids = assignment_changes(await self.ls.assigned(), self.sources.snapshot(), self.seen)
        if not ids:
            return
        users = await fetch_users(self.graph, ids, self.engine.select)
        await self._page(Page(self.next_page, "#assignments", users, None), work_send, out_send)
        self.next_page += 1

    async def _page(
        self,
        page: Page,
        work_send: ObjectSendStream[WorkItem],
        out_send: ObjectSendStream[Message],
    ) -> None:
        engine = self.engine
        evaluated: list[Evaluated | UserWrite] = []
        ids: list[str] = []
        for user in latest_per_id(page.users):
            try:
                if not isinstance(user, dict):
                    raise UserDataError(f"the Graph page holds a {type(user).__name__}, not a user")
                result, hard = engine.entry(user, self.sources)
                if hard:
                    self.hard_deleted.add(result[0])
            except UserDataError as exc:
                gid = user.get("id") if isinstance(user, dict) else None
                upn = user.get("userPrincipalName") if isinstance(user, dict) else None
                evaluated.append(
                    UserWrite(
                        str(gid) if isinstance(gid, str) else f"(page {page.number})",
                        upn if isinstance(upn, str) else None,
                        "other",
                        "failure",
                        reason=str(exc),
                    )
                )
                continue
            evaluated.append(result)
            ids.append(result[0])
        if self.run_.kind == "incremental":
            self.seen.update(ids)
        states = await self.store.lookup_users(ids)
        matches: dict[str, tuple[str, dict[str, Any]]] = {}
        if self.use_index:
            keys = [
                k
                for item in evaluated
                if isinstance(item, tuple) and item[3] is not None and item[0] not in states
                for k in engine.match_keys(item[3])
            ]
            matches = await self.store.lookup_target(keys) if keys else {}
        # target accounts already linked to a Graph user (this page's matches only)
        owners = await self.store.owners([m[0] for m in matches.values()]) if matches else {}
        count = 0
        names = UserNames()
        escrow = self.escrow
        for item in evaluated:
            if isinstance(item, UserWrite):
                count += 1
                await out_send.send((page.number, item))
                continue
            graph_id, _, _, mapped = item
            if graph_id in self.already_done:
                continue  # provisioned, counted and logged by this run before it stopped
            count += 1
            duplicate = names.duplicate(graph_id, mapped)
            if duplicate is not None:
                assert mapped is not None
                write = UserWrite(graph_id, mapped.user_name, "other", "failure", duplicate)
                await out_send.send((page.number, write))
                continue
            state = states.get(graph_id)
            match = engine.pick_match(mapped, state, matches) if matches else None
            if match is not None:
                owner = self._claim(match[0], graph_id, owners)
                if owner is not None:
                    await out_send.send(
                        (page.number, self._duplicate_source(graph_id, mapped, match[0], owner))
                    )
                    continue
            decision = engine.decide(item, state, match, hard_deleted=graph_id in self.hard_deleted)
            user_name = user_name_of(mapped, state)
            # An escrowed user waits, whatever the guard says: the plan shows it deferred.
            waiting = escrow_deferral(escrow, graph_id, decision.kind) if escrow else None
            if waiting is not None:
                write = UserWrite(graph_id, user_name, "other", "skipped", waiting, deferred=True)
                await out_send.send((page.number, write))
            elif (
                self.guard is not None
                and decision.kind != "skip"
                and (held := self.guard(graph_id, decision, mapped)) is not None
            ):
                write = UserWrite(graph_id, user_name, "other", "skipped", held, held_back=True)
                await out_send.send((page.number, write))
            elif decision.kind in ("disable", "delete"):
                # Staged, not sent: it runs once the read completed, within the threshold.
                write = UserWrite(
                    graph_id,
                    user_name,
                    decision.kind,
                    "skipped",
                    reason=f"staged: {decision.reason}",
                    scim_id=decision.scim_id,
                    stage=decision.kind,
                )
                await out_send.send((page.number, write))
            elif decision.kind == "skip":
                write = _skip_write(graph_id, user_name, decision, mapped, state)
                await _put(out_send, (page.number, write))
            else:
                await _put(
                    work_send, WorkItem(page.number, graph_id, user_name, decision, mapped, state)
                )
        self.stats.pages += 1
        await _put(out_send, PageDone(page.number, count, page.next_link))

    # -- SCIM workers ---------------------------------------------------------------------

    async def _worker(
        self, work_recv: ObjectReceiveStream[WorkItem], out_send: ObjectSendStream[Message]
    ) -> None:
        async with work_recv, out_send:
            while True:
                try:
                    item = await _get(work_recv)
                except anyio.EndOfStream:
                    return
                if self.stop_signal is not None:
                    break  # stopping: the item's page stays not durable and is redone
                await _put(out_send, (item.page, await self._apply_one(item)))

    async def _apply_one(self, item: WorkItem) -> UserWrite:
        """Apply one decision; a target error is this user's Failure (auth stops the run)."""
        try:
            return await self._apply(item)
        except TargetAuthError:
            raise  # stops the whole run (the client's message says what to do)
        except TargetError as exc:
            return self._failed(item, exc)

    def _failed(self, item: WorkItem, exc: TargetError) -> UserWrite:
        return UserWrite(
            item.graph_id,
            item.user_name,
            item.decision.kind,
            "failure",
            reason=str(exc),
            scim_id=item.decision.scim_id,
        )

    async def _apply(self, item: WorkItem) -> UserWrite:
        d = item.decision
        if d.kind == "create":
            return await self._create(item)
        assert d.scim_id is not None
        if d.kind == "disable":
            await self.scim.send(rq.set_active(d.scim_id, False, self.dialect))
            return self._disabled(item)
        # update or link: PATCH only what differs
        mapped = item.mapped
        assert mapped is not None
        if d.changes:
            ops = rq.patch_operations(d.changes, self.dialect)
            await self.scim.send(rq.patch_user(d.scim_id, ops))
        action = "update" if d.changes or d.kind == "update" else "link"
        return self._linked(item, d.scim_id, action, d.changes, d.reason)

    def _disabled(self, item: WorkItem) -> UserWrite:
        d = item.decision
        assert d.scim_id is not None
        return disabled(item.graph_id, item.user_name, d.reason, d.scim_id, item.state)

    def _linked(
        self, item: WorkItem, scim_id: str, action: str, changes: dict[str, Any], reason: str
    ) -> UserWrite:
        mapped = item.mapped
        assert mapped is not None
        return UserWrite(
            item.graph_id,
            mapped.user_name,
            action,
            "success",
            reason=reason,
            scim_id=scim_id,
            digest=mapped.digest,
            attrs=_json.dumps(mapped.update_values),
            active=is_active(mapped.update_values),
            modified=_modified(changes, self.engine.mapper.redacted_paths) if changes else None,
            link=True,
        )

    async def _create(self, item: WorkItem) -> UserWrite:
        mapped = item.mapped
        assert mapped is not None
        if item.graph_id in self.escrow:
            # It failed before, maybe after its create landed (a timeout, then a failed
            # match): look before POSTing again, as Entra does before every create.
            found = await self._find(mapped)
            if found is not None:
                return await self._link_found(item, found, "matched on retry")
        attempts = 0
        while True:
            attempts += 1
            try:
                doc = await self.scim.send(rq.create_user(mapped.body))
            except OutcomeUnknown:
                # The POST may have landed: look before sending it again.
                found = await self._find(mapped)
                if found is not None:
                    return await self._link_found(item, found, "created (confirmed by matching)")
                if attempts >= self.scim.policy.max_attempts:
                    raise
                continue
            except TargetRejected as exc:
                if not is_uniqueness_conflict(exc):
                    raise
                found = await self._find(mapped)
                if found is None:
                    raise TargetRejected(
                        f"{exc.detail}; and no account matched userName {mapped.user_name!r}",
                        status=exc.status,
                        scim_type=exc.scim_type,
                    ) from None
                return await self._link_found(item, found, "matched an existing account (409)")
            scim_id = doc.get("id") if isinstance(doc, dict) else None
            if not isinstance(scim_id, str) or not scim_id:
                raise TargetRejected("the target's create answer has no 'id'", status=201)
            return self._created(item, scim_id)

    def _created(self, item: WorkItem, scim_id: str) -> UserWrite:
        mapped = item.mapped
        assert mapped is not None
        # Claimed until the writer made it durable (then the state answers who owns it): a
        # user with the same userName on another page, whose POST answers 409 and matches
        # this account meanwhile, fails as DuplicateSourceEntries instead of taking it.
        owner = self._claim(scim_id, item.graph_id, {})
        if owner is not None:  # that user's 409 linked it while this POST was answered
            return self._duplicate_source(item.graph_id, mapped, scim_id, owner)
        return UserWrite(
            item.graph_id,
            mapped.user_name,
            "create",
            "success",
            scim_id=scim_id,
            digest=mapped.digest,
            attrs=_json.dumps(mapped.update_values),
            active=is_active(mapped.values),
            modified=_modified(mapped.values, self.engine.mapper.redacted_paths),
            link=True,
        )

    async def _find(self, mapped: MappedUser) -> dict[str, Any] | None:
        """Query the target by the matching attributes in precedence order (Entra's way)."""
        for path in self.engine.mapper.matching:
            value = mapped.values.get(path)
            if not isinstance(value, str) or not value:
                continue
            resources, _ = list_resources(await self.scim.send(rq.find_users(path, value)))
            if len(resources) > 1:
                raise TargetRejected(
                    f"{len(resources)} target accounts match {path} {value!r} "
                    "(DuplicateTargetEntries)"
                )
            if resources:
                return resources[0]
        return None

    def _claim(self, scim_id: str, graph_id: str, owners: dict[str, str]) -> str | None:
        """Link ``scim_id`` to ``graph_id`` for this run; return the other owner if taken.

        Two Graph users that map to one target account (the same userName on different
        pages) must not both be linked to it: Entra logs that as DuplicateSourceEntries
        (facts.md §2.4). Links made earlier live in the state; links made in this run are
        claimed here, synchronously, so two workers cannot both take one account.
        """
        owner = self.claimed.get(scim_id) or owners.get(scim_id)
        if owner is not None and owner != graph_id:
            return owner
        self.claimed[scim_id] = graph_id
        return None

    @staticmethod
    def _duplicate_source(
        graph_id: str, mapped: MappedUser | None, scim_id: str, owner: str
    ) -> UserWrite:
        return UserWrite(
            graph_id,
            mapped.user_name if mapped else None,
            "other",
            "failure",
            reason=f"DuplicateSourceEntries: the matching target account {scim_id} is already "
            f"linked to Graph user {owner}; two source users map to the same account",
        )

    async def _link_found(self, item: WorkItem, resource: dict[str, Any], reason: str) -> UserWrite:
        mapped = item.mapped
        assert mapped is not None
        scim_id = str(resource["id"])
        owner = self._claim(scim_id, item.graph_id, await self.store.owners([scim_id]))
        if owner is not None:
            dup = self._duplicate_source(item.graph_id, mapped, scim_id, owner)
            raise TargetRejected(dup.reason or "DuplicateSourceEntries", status=409)
        changes = rq.diff_values(
            mapped.update_values, target_values(resource, mapped.update_values)
        )
        if changes:
            await self.scim.send(rq.patch_user(scim_id, rq.patch_operations(changes, self.dialect)))
        return self._linked(item, scim_id, "update" if changes else "link", changes, reason)

    def _release_created(self, writes: list[tuple[int, UserWrite]]) -> None:
        """Drop the claims of accounts this run created once their links are durable.

        From then on :meth:`StateStore.owners` answers for them; no page matches them
        (the target index predates them), so the claims would only cost memory.
        """
        claimed = self.claimed
        if not claimed:
            return
        for _, w in writes:
            if w.action == "create" and w.scim_id and claimed.get(w.scim_id) == w.graph_id:
                del claimed[w.scim_id]

    # -- SCIM Bulk ---------------------------------------------------------------------------

    async def _bulk_worker(
        self,
        support: BulkSupport,
        work_recv: MemoryObjectReceiveStream[WorkItem],
        out_send: ObjectSendStream[Message],
    ) -> None:
        """Take up to ``maxOperations`` items at a time and send them as Bulk requests."""
        async with work_recv, out_send:
            while self.stop_signal is None:  # stopping: finish the batch sent, take no more
                # One worker fills its batch at a time: the others, waiting in receive(),
                # would otherwise take items one by one and send them in tiny batches.
                async with self.bulk_filling:
                    try:
                        items = [await work_recv.receive()]
                    except anyio.EndOfStream:
                        return
                    deadline = time.monotonic() + BULK_LINGER
                    while len(items) < support.max_operations:
                        try:
                            items.append(work_recv.receive_nowait())
                        except anyio.WouldBlock:
                            if time.monotonic() >= deadline:
                                break
                            await anyio.sleep(BULK_LINGER / 10)
                        except anyio.EndOfStream:
                            break
                batch = BulkBatch(support.max_operations, support.max_payload_size)
                sent: dict[str, WorkItem] = {}
                for n, item in enumerate(items):
                    op = self._bulk_operation(item, str(n))
                    if op is None:  # nothing to send (a link without changes)
                        await out_send.send((item.page, await self._apply_one(item)))
                        continue
                    if not batch.fits(op):
                        await self._send_bulk(batch, sent, out_send)
                        batch = BulkBatch(support.max_operations, support.max_payload_size)
                        sent = {}
                    batch.add(str(n), op)
                    sent[str(n)] = item
                if len(batch):
                    await self._send_bulk(batch, sent, out_send)

    def _bulk_operation(self, item: WorkItem, bulk_id: str) -> bytes | None:
        d = item.decision
        if d.kind == "create" and item.graph_id not in self.escrow:
            assert item.mapped is not None
            return bulk.post_operation(bulk_id, "/Users", item.mapped.body)
        if d.kind == "create":
            return None  # escrowed: matched before it is POSTed again (see _create)
        # Disables and deletes never reach the workers: they are staged (lifecycle.py).
        if d.kind not in ("update", "link") or d.scim_id is None or not d.changes:
            return None  # anything else goes the single-request way
        # A bulk path is JSON, not a URL: the id goes in as it is (Zoom ids hold '&').
        ops = rq.patch_operations(d.changes, self.dialect)
        return bulk.patch_operation(bulk_id, f"/Users/{d.scim_id}", ops)

    async def _send_bulk(
        self, batch: BulkBatch, sent: dict[str, WorkItem], out_send: ObjectSendStream[Message]
    ) -> None:
        """Send one Bulk request and checkpoint each operation's user by its result."""
        try:
            results = bulk.read_results(await self.scim.send(batch.request()), batch.bulk_ids)
        except TargetAuthError:
            raise
        except TargetError:
            # Unknown outcome (5xx, timeout), 413 or an unreadable answer: each user goes the
            # single-request way, whose create resolves a maybe-created account by matching.
            results = {}
        for bulk_id, item in sent.items():
            result = results.get(bulk_id)
            write: UserWrite | None = None
            if result is not None and result.error is None:
                write = self._bulk_written(item, result)
            elif (
                result is not None
                and isinstance(result.error, TargetRejected)
                and not is_uniqueness_conflict(result.error)
            ):
                write = self._failed(item, result.error)
            if write is None:
                # 409 (already there), 429, 5xx or unanswered: retry it alone
                write = await self._apply_one(item)
            await out_send.send((item.page, write))

    def _bulk_written(self, item: WorkItem, result: BulkResult) -> UserWrite | None:
        d = item.decision
        if d.kind == "create":
            return self._created(item, result.scim_id) if result.scim_id else None
        assert d.scim_id is not None
        return self._linked(item, d.scim_id, "update", d.changes, d.reason)

    # -- checkpoint writer ------------------------------------------------------------------

    async def _writer(self, out_recv: MemoryObjectReceiveStream[Message]) -> None:
        cfg, store, run, stats = self.cfg.state, self.store, self.run_, self.stats
        pending: list[tuple[int, UserWrite]] = []
        done: defaultdict[int, int] = defaultdict(int)
        totals: dict[int, tuple[int, str | None]] = {}
        ack = run.cursor_page
        last = time.monotonic()
        #: something received is not durable yet (an outcome, or a page that may advance the
        #: cursor): only then is there a commit deadline to wake up for
        dirty = False

        async def flush() -> None:
            nonlocal ack, last, dirty
            cursor = None
            while ack in totals and done[ack] >= totals[ack][0]:
                next_link = totals.pop(ack)[1]
                done.pop(ack, None)
                ack += 1
                cursor = (next_link or END_OF_PAGES, ack)
            if pending or cursor is not None:
                await store.write_batch(run, pending, dict(stats.counts), cursor)
                self._release_created(pending)
                pending.clear()
            last = time.monotonic()
            dirty = False

        try:
            async with out_recv:
                while True:
                    msg: Message | None = None
                    try:
                        try:
                            msg = out_recv.receive_nowait()
                        except anyio.WouldBlock:
                            # Wait for the next message; while something is not durable, no
                            # longer than its commit deadline. An idle writer never wakes up.
                            if not dirty:
                                msg = await out_recv.receive()
                            else:
                                wait = last + cfg.commit_seconds - time.monotonic()
                                if wait > 0:
                                    with anyio.move_on_after(wait):
                                        msg = await out_recv.receive()
                    except anyio.EndOfStream:
                        break
                    if msg is not None and not dirty:
                        dirty = True
                        last = time.monotonic()  # committed within commit_seconds from now
                    if isinstance(msg, PageDone):
                        totals[msg.page] = (msg.items, msg.next_link)
                    elif msg is not None:
                        pending.append(msg)
                        done[msg[0]] += 1
                        _count(stats, msg[1])
                        if msg[1].status != "skipped":
                            verdict = self.breaker.record(msg[1].status == "success", msg[1].reason)
                            if verdict is not None:
                                raise Quarantined(self.breaker.report(verdict))
                    if (
                        len(pending) >= cfg.commit_every
                        or time.monotonic() - last >= cfg.commit_seconds
                    ):
                        await flush()
        finally:
            # One transaction, itself shielded (StateStore transactions finish once begun);
            # a lock held by another process is waited for busy_timeout (5 s) at most.
            with anyio.CancelScope(shield=True):
                await flush()


async def _put(stream: ObjectSendStream[Any], item: Any) -> None:
    """``stream.send(item)`` without its checkpoint when the buffer has room.

    anyio's ``send`` and ``receive`` yield to the event loop on every call, even when they
    need not wait: one extra loop pass per user per hop on the hot path. The tasks that use
    these still wait on the network or the stream whenever they have nothing to do.
    """
    if isinstance(stream, MemoryObjectSendStream):
        try:
            stream.send_nowait(item)
            return
        except anyio.WouldBlock:
            pass
    await stream.send(item)


async def _get(stream: ObjectReceiveStream[WorkItem]) -> WorkItem:
    """``stream.receive()`` without its checkpoint when an item is waiting (see :func:`_put`)."""
    if isinstance(stream, MemoryObjectReceiveStream):
        try:
            item: WorkItem = stream.receive_nowait()
            return item
        except anyio.WouldBlock:
            pass
    return await stream.receive()


def _count(stats: RunStats, write: UserWrite) -> None:
    stats.processed += 1
    if write.status == "failure":
        key = "failed"
    elif write.held_back:
        key = HELD_BACK
    elif write.stage is not None:
        key = "staged"
    elif write.action == "create":
        key = "created"
    elif write.action == "update":
        key = "updated"
    elif write.action == "disable":
        key = "disabled"
    elif write.action == "link":
        key = "linked"
    elif write.reason == "unchanged":
        key = "unchanged"
    else:
        key = "skipped"
    stats.counts[key] += 1


def _skip_write(
    graph_id: str,
    user_name: str | None,
    d: Decision,
    mapped: MappedUser | None,
    state: UserState | None,
) -> UserWrite:
    if (
        mapped is not None
        and state is not None
        and state.scim_id
        and d.reason == "unchanged"
        and mapped.digest != state.digest
    ):
        # Values equal but the digest moved (e.g. the mapping's shape changed): store it.
        return UserWrite(
            graph_id,
            user_name,
            "other",
            "skipped",
            reason="unchanged",
            scim_id=state.scim_id,
            digest=mapped.digest,
            attrs=_json.dumps(mapped.update_values),
            active=state.active,
            link=True,
        )
    return UserWrite(graph_id, user_name, "other", "skipped", reason=d.reason, scim_id=d.scim_id)


def is_active(values: dict[str, Any]) -> bool:
    """Whether the account is active once ``values`` are sent (absent ``active``: it is)."""
    value = values.get("active", True)
    return value is not False


def _modified(changes: dict[str, Any], redacted: frozenset[str] = frozenset()) -> str:
    shown = {k: ("[Redact]" if k in redacted else v) for k, v in changes.items()}
    return _json.dumps(shown).decode()
