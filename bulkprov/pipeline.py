"""Run one provisioning sync: the only module that wires the stages together.

::

    graph.pages ─▶ scope ─▶ mapping ─▶ decide ══WorkItem══▶ scim workers ×N ══Outcome══╗
        ▲         (inline, pure, per user, per page)          │ PauseGate+AsyncLimiter   ║
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
* A 401/403 from the target raises :class:`~bulkprov.errors.TargetAuthError` in a worker,
  which cancels the group: the run stops at once with one message. The writer's final flush
  runs shielded, so what was done is kept.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import anyio
import httpx
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from pydantic import SecretStr

from . import _json, validate
from .auth import ZoomOAuth
from .breaker import Breaker
from .checkpoint.store import Run, StateStore, UserState, UserWrite
from .config import Config
from .decide import Decision, decide, target_values
from .errors import (
    ConfigError,
    Quarantined,
    RunAborted,
    SourceError,
    StateError,
    TargetAuthError,
    TargetError,
    TargetRejected,
    UserDataError,
)
from .escrow import EscrowEntry
from .graph.client import GraphClient, Page
from .graph.tokens import MsalToken
from .http import make_client
from .mapping import MappedUser, MappingContext, UserMapper, compile_mappings
from .retry import RetryPolicy
from .scim import requests as rq
from .scim.client import OutcomeUnknown, ScimClient
from .scim.paths import get_value
from .scim.responses import is_uniqueness_conflict, list_resources
from .scope import ScopeEvaluator, compile_scope

#: cursor value meaning "every page of this run is durable"
END_OF_PAGES = "#end"

#: seconds a signalled run has to finish its in-flight requests and flush (then it is
#: cancelled; the writer's final flush is shielded), well within the 5 s an init system waits
SHUTDOWN_GRACE = 3.5

COUNT_KEYS = ("created", "updated", "linked", "disabled", "unchanged", "skipped", "failed")


@dataclass(slots=True)
class Secrets:
    #: the Graph client secret, or with ``graph.certificate`` its PEM private key
    graph_client_secret: SecretStr
    #: the static SCIM token, or with ``target.oauth`` the OAuth client secret
    scim_token: SecretStr

    @classmethod
    def from_config(cls, cfg: Config) -> Secrets:
        path = cfg.source_path
        oauth = cfg.target.oauth
        cert = cfg.graph.certificate
        return cls(
            cert.private_key.read("graph.certificate.private_key", path)
            if cert
            else cfg.graph.client_secret.read("graph.client_secret", path),
            oauth.client_secret.read("target.oauth.client_secret", path)
            if oauth
            else cfg.target.token.read("target.token", path),
        )


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


class StateLock:
    """An exclusive lock beside the state database: one sync per state at a time."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"another bulkprov sync is using {self.path.with_suffix('')} "
                "(its lock is held); wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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

    def evaluate(self, user: dict[str, Any]) -> tuple[str, bool, str, MappedUser | None]:
        """Validate, scope and map one Graph user: (graph id, in scope, reason, mapped).

        Raises :class:`UserDataError` when the user cannot be processed at all.
        """
        graph_id = validate.check_source(user)
        decision = self.scope.evaluate(user)
        in_scope, reason = decision.in_scope, decision.reason
        if in_scope and user.get("accountEnabled") is False:
            # Entra: "Provisioning a user that is disabled in Microsoft Entra ID isn't
            # supported" and IsSoftDeleted is true for accountEnabled=false (facts.md §2.6).
            in_scope, reason = False, "accountEnabled is false"
        if not in_scope:
            return graph_id, False, reason, None
        mapped = self.mapper.map_user(user, MappingContext(is_soft_deleted=False))
        if not mapped.user_name or not isinstance(mapped.user_name, str):
            raise UserDataError("the mapping gave no userName (the matching attribute is empty)")
        for path, value in mapped.values.items():
            validate.check_value(path, value)
        validate.check_user_name(mapped.user_name, email=self.cfg.target.user_name_is_email)
        return graph_id, True, reason, mapped

    def match_keys(self, mapped: MappedUser) -> list[str]:
        """Index keys for the mapping's matching attributes, in precedence order."""
        keys = []
        for path in self.mapper.matching:
            value = mapped.values.get(path)
            if isinstance(value, str) and value:
                keys.append(f"{path}\x00{value.lower()}")
        return keys


async def run_sync(
    cfg: Config,
    secrets: Secrets,
    *,
    stats: RunStats | None = None,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    scim_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
    rematch: bool = False,
    handle_signals: bool = False,
    engine: Engine | None = None,
) -> RunResult:
    """Run (or resume) one full sync from Graph into the SCIM target."""
    engine = engine or Engine(cfg)
    stats = stats or RunStats()
    with StateLock(cfg.state.path):
        store = await StateStore.open(cfg.state.path)
        store.escrow_policy = cfg.escrow.policy()
        async with store:
            run = await store.start_run()
            stats.run_id, stats.resumed = run.id, run.resumes > 0
            for key, value in run.counts.items():
                stats.counts[key] = value
            stats.processed = sum(stats.counts.values())
            need_index = rematch or run.resumes > 0 or not await store.has_completed_run()
            graph_http = make_client(
                timeout=cfg.graph.timeout,
                max_connections=4,
                transport=graph_transport,
                verify=_ca(cfg.graph.ca_file),
            )
            scim_http = make_client(
                timeout=cfg.target.timeout,
                max_connections=cfg.target.concurrency,
                transport=scim_transport,
                verify=_ca(cfg.target.ca_file),
            )
            async with graph_http, scim_http:
                graph = GraphClient(
                    authority=cfg.graph.authority,
                    tenant_id=cfg.graph.tenant_id,
                    client_id=cfg.graph.client_id,
                    client_secret=secrets.graph_client_secret,
                    base_url=cfg.graph.base_url,
                    http=graph_http,
                    policy=policy,
                    token_source=_msal(cfg, secrets) if graph_transport is None else None,
                )
                oauth = cfg.target.oauth
                scim = ScimClient(
                    cfg.target.base_url,
                    ZoomOAuth(
                        oauth.token_url,
                        oauth.account_id,
                        oauth.client_id,
                        secrets.scim_token,
                        scim_http,
                    )
                    if oauth
                    else secrets.scim_token,
                    scim_http,
                    rate_limit=cfg.target.rate_limit,
                    policy=policy
                    or RetryPolicy(
                        max_attempts=cfg.target.max_attempts,
                        max_seconds=cfg.target.max_retry_seconds,
                    ),
                )
                stats.scim = scim
                sync = _Sync(engine, store, run, graph, scim, stats)
                status, message = "completed", None
                try:
                    await sync.run(need_index=need_index, handle_signals=handle_signals)
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


def _msal(cfg: Config, secrets: Secrets) -> MsalToken | None:
    """msal for an https authority; ``None`` keeps the plain POST (http loopback only)."""
    g = cfg.graph
    if not g.authority.startswith("https://"):
        return None
    _ca(g.ca_file)
    return MsalToken(
        authority=g.authority,
        tenant_id=g.tenant_id,
        client_id=g.client_id,
        secret=None if g.certificate else secrets.graph_client_secret,
        private_key=secrets.graph_client_secret if g.certificate else None,
        thumbprint=g.certificate.thumbprint if g.certificate else None,
        ca_file=g.ca_file,
        timeout=g.timeout,
    )


def _ca(path: Path | None) -> str | bool:
    """``make_client``'s ``verify``: a custom CA bundle, or the system's (never off)."""
    if path is None:
        return True
    if not path.is_file():
        raise ConfigError(f"CA file {path} does not exist", key="ca_file")
    return str(path)


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
    ) -> None:
        self.engine = engine
        self.cfg = engine.cfg
        self.store = store
        self.run_ = run
        self.graph = graph
        self.scim = scim
        self.stats = stats
        self.dialect = self.cfg.target.patch_dialect
        self.use_index = False
        #: users of this run already logged on partly durable pages (filled on resume)
        self.already_done: set[str] = set()
        #: failed users waiting for their next retry (bulkprov.escrow)
        self.escrow: dict[str, EscrowEntry] = {}
        self.breaker = Breaker(self.cfg.quarantine.policy())
        #: set by the first SIGINT/SIGTERM (its name); workers then take no new item
        self.stop_signal: str | None = None
        self._stages = anyio.CancelScope()
        self._grace = 0.0
        self._producer_scope = anyio.CancelScope()

    async def run(self, *, need_index: bool, handle_signals: bool) -> None:
        if self.run_.resumes:
            self.already_done = await self.store.logged_since_page(self.run_)
        self.escrow = await self.store.escrow_entries()
        async with anyio.create_task_group() as outer:
            if handle_signals:
                outer.start_soon(self._watch_signals)
            if need_index:
                self.stats.phase = "matching"
                # a signal while listing the target stops at once (nothing to finish)
                with self._phase(grace=0.0):
                    await self.build_target_index()
                self.use_index = True
            if self.stop_signal is None:
                await self._provision()
            if self.stop_signal is not None:
                raise RunAborted(
                    f"interrupted by {self.stop_signal}; in-flight requests were finished and "
                    "the state is saved — run the same command again to resume"
                )
            outer.cancel_scope.cancel()  # only the signal watcher is left

    async def _provision(self) -> None:
        self.stats.phase = "provisioning"
        concurrency = self.cfg.target.concurrency
        work_send, work_recv = anyio.create_memory_object_stream[WorkItem](concurrency)
        out_send, out_recv = anyio.create_memory_object_stream[Message](concurrency * 4)
        with self._phase(grace=SHUTDOWN_GRACE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, out_recv)
                async with work_recv, out_send:
                    for _ in range(concurrency):
                        tg.start_soon(self._worker, work_recv.clone(), out_send.clone())
                    tg.start_soon(self._produce, work_send, out_send.clone())

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
        matching = self.engine.mapper.matching
        doc = await self.scim.send(rq.list_users(1, size))
        first, total = list_resources(doc)

        async def index(resources: list[dict[str, Any]]) -> None:
            rows = []
            for res in resources:
                scim_id = res.get("id")
                if not isinstance(scim_id, str):
                    continue
                blob = _json.dumps(res)
                for path in matching:
                    value = get_value(res, path)
                    if isinstance(value, str) and value:
                        rows.append((f"{path}\x00{value.lower()}", scim_id, blob))
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
        async with work_send, out_send:
            if run.cursor == END_OF_PAGES:
                return
            first = run.cursor or self.graph.users_url(engine.select, self.cfg.graph.page_size)
            try:
                async for page in self.graph.pages(first, first_number=run.cursor_page):
                    await self._page(page, work_send, out_send)
            except SourceError as exc:
                if run.cursor is None or "answered 4" not in str(exc):
                    raise
                # The saved link expired at the source: start the read over; users already
                # done are skipped by digest, so this costs reads, not writes.
                await self.store.restart_cursor(run)
                raise SourceError(
                    f"the saved Graph page link no longer works ({exc}); "
                    "run again to restart the read from the first page"
                ) from None

    async def _page(
        self,
        page: Page,
        work_send: ObjectSendStream[WorkItem],
        out_send: ObjectSendStream[Message],
    ) -> None:
        engine = self.engine
        evaluated: list[tuple[str, bool, str, MappedUser | None] | UserWrite] = []
        ids: list[str] = []
        for user in page.users:
            try:
                if not isinstance(user, dict):
                    raise UserDataError(f"the Graph page holds a {type(user).__name__}, not a user")
                result = engine.evaluate(user)
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
        count = 0
        seen_names: set[str] = set()
        for item in evaluated:
            if isinstance(item, UserWrite):
                count += 1
                await out_send.send((page.number, item))
                continue
            graph_id, in_scope, reason, mapped = item
            if graph_id in self.already_done:
                continue  # provisioned, counted and logged by this run before it stopped
            count += 1
            state = states.get(graph_id)
            match = None
            if mapped is not None and matches:
                for key in engine.match_keys(mapped):
                    if key in matches:
                        match = matches[key]
                        break
            if mapped is not None and mapped.user_name:
                low = mapped.user_name.lower()
                if low in seen_names:
                    await out_send.send(
                        (
                            page.number,
                            UserWrite(
                                graph_id,
                                mapped.user_name,
                                "other",
                                "failure",
                                reason=f"userName {mapped.user_name!r} is mapped from another user too",
                            ),
                        )
                    )
                    continue
                seen_names.add(low)
            decision = decide(
                in_scope=in_scope,
                scope_reason=reason,
                update_values=mapped.update_values if mapped else None,
                digest=mapped.digest if mapped else None,
                state=state,
                match=match,
            )
            user_name = mapped.user_name if mapped else (state.user_name if state else None)
            held = self.escrow.get(graph_id) if decision.kind != "skip" else None
            if held is not None and not held.is_due():
                write = UserWrite(
                    graph_id, user_name, "other", "skipped", held.deferral(), deferred=True
                )
                await out_send.send((page.number, write))
            elif decision.kind == "skip":
                write = _skip_write(graph_id, user_name, decision, mapped, state)
                await out_send.send((page.number, write))
            else:
                await work_send.send(
                    WorkItem(page.number, graph_id, user_name, decision, mapped, state)
                )
        self.stats.pages += 1
        await out_send.send(PageDone(page.number, count, page.next_link))

    # -- SCIM workers ---------------------------------------------------------------------

    async def _worker(
        self, work_recv: ObjectReceiveStream[WorkItem], out_send: ObjectSendStream[Message]
    ) -> None:
        async with work_recv, out_send:
            async for item in work_recv:
                if self.stop_signal is not None:
                    break  # stopping: the item's page stays not durable and is redone
                try:
                    write = await self._apply(item)
                except TargetAuthError:
                    raise  # stops the whole run (the client's message says what to do)
                except TargetError as exc:
                    write = UserWrite(
                        item.graph_id,
                        item.user_name,
                        item.decision.kind,
                        "failure",
                        reason=str(exc),
                        scim_id=item.decision.scim_id,
                    )
                await out_send.send((item.page, write))

    async def _apply(self, item: WorkItem) -> UserWrite:
        d = item.decision
        if d.kind == "create":
            return await self._create(item)
        assert d.scim_id is not None
        if d.kind == "disable":
            await self.scim.send(rq.set_active(d.scim_id, False, self.dialect))
            attrs = dict(item.state.attrs or {}) if item.state else {}
            attrs["active"] = False
            return UserWrite(
                item.graph_id,
                item.user_name,
                "disable",
                "success",
                reason=d.reason,
                scim_id=d.scim_id,
                digest=None,
                attrs=_json.dumps(attrs),
                active=False,
                modified=_modified({"active": False}),
                link=True,
            )
        # update or link: PATCH only what differs
        mapped = item.mapped
        assert mapped is not None
        if d.changes:
            ops = rq.patch_operations(d.changes, self.dialect)
            await self.scim.send(rq.patch_user(d.scim_id, ops))
        action = "update" if d.changes or d.kind == "update" else "link"
        return self._linked(item, d.scim_id, action, d.changes, d.reason)

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
            active=_active(mapped.update_values),
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
            return UserWrite(
                item.graph_id,
                mapped.user_name,
                "create",
                "success",
                scim_id=scim_id,
                digest=mapped.digest,
                attrs=_json.dumps(mapped.update_values),
                active=_active(mapped.values),
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

    async def _link_found(self, item: WorkItem, resource: dict[str, Any], reason: str) -> UserWrite:
        mapped = item.mapped
        assert mapped is not None
        scim_id = str(resource["id"])
        changes = rq.diff_values(
            mapped.update_values, target_values(resource, mapped.update_values)
        )
        if changes:
            await self.scim.send(rq.patch_user(scim_id, rq.patch_operations(changes, self.dialect)))
        return self._linked(item, scim_id, "update" if changes else "link", changes, reason)

    # -- checkpoint writer ------------------------------------------------------------------

    async def _writer(self, out_recv: ObjectReceiveStream[Message]) -> None:
        cfg, store, run, stats = self.cfg.state, self.store, self.run_, self.stats
        pending: list[tuple[int, UserWrite]] = []
        done: defaultdict[int, int] = defaultdict(int)
        totals: dict[int, tuple[int, str | None]] = {}
        ack = run.cursor_page
        last = time.monotonic()

        async def flush() -> None:
            nonlocal ack, last
            cursor = None
            while ack in totals and done[ack] >= totals[ack][0]:
                next_link = totals.pop(ack)[1]
                done.pop(ack, None)
                ack += 1
                cursor = (next_link or END_OF_PAGES, ack)
            if pending or cursor is not None:
                await store.write_batch(run, pending, dict(stats.counts), cursor)
                pending.clear()
            last = time.monotonic()

        try:
            async with out_recv:
                while True:
                    msg: Message | None = None
                    with anyio.move_on_after(cfg.commit_seconds):
                        try:
                            msg = await out_recv.receive()
                        except anyio.EndOfStream:
                            break
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
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                await flush()


def _count(stats: RunStats, write: UserWrite) -> None:
    stats.processed += 1
    if write.status == "failure":
        key = "failed"
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


def _active(values: dict[str, Any]) -> bool:
    value = values.get("active", True)
    return value is not False


def _modified(changes: dict[str, Any], redacted: frozenset[str] = frozenset()) -> str:
    shown = {k: ("[Redact]" if k in redacted else v) for k, v in changes.items()}
    return _json.dumps(shown).decode()
