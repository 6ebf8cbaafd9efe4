"""① The producer: Graph pages in, decisions out.

For each ``users/delta`` page (the next one is fetched while this one is decided: one page of
lookahead), :func:`produce` validates, scopes and maps every user
(:meth:`~bulkprov.pipeline.decide.Engine.entry`), looks up the page's stored links and
matching target accounts with one query each, and decides
(:meth:`~bulkprov.pipeline.decide.Engine.decide`). A user that needs a request goes to the
SCIM workers as a :class:`~bulkprov.pipeline.messages.WorkItem`; one that needs none
(unchanged, out of scope, failed validation, waiting in escrow, held back by ``apply``, or a
disable or delete, which is only *staged* here) goes straight to the checkpoint writer. Last
comes the page's :class:`~bulkprov.pipeline.messages.PageDone`, so the writer knows how many
outcomes make the page durable.

The work stream is bounded: a slow or throttled target slows the reading (backpressure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import ObjectSendStream

from bulkprov import _json
from bulkprov.checkpoint.staging import LifecycleStore
from bulkprov.checkpoint.store import Run, StateStore, UserState, UserWrite
from bulkprov.errors import DeltaExpired, SourceError, UserDataError
from bulkprov.escrow import EscrowEntry
from bulkprov.graph.client import GraphClient, Page, latest_per_id
from bulkprov.graph.directory import ScopeSources
from bulkprov.mapping import MappedUser
from bulkprov.pipeline.decide import (
    Decision,
    Engine,
    Evaluated,
    UserNames,
    escrow_deferral,
    user_name_of,
)
from bulkprov.pipeline.matching import Claims, duplicate_source
from bulkprov.pipeline.messages import END_OF_PAGES, Message, PageDone, UserGuard, WorkItem, put
from bulkprov.pipeline.seats import Seats
from bulkprov.pipeline.sources import (
    assignment_changes,
    complete_entries,
    fetch_users,
    page_headers,
    source_blob,
)
from bulkprov.pipeline.stats import RunStats


@dataclass(slots=True)
class Reader:
    """What the producer reads with, and where its read stands."""

    engine: Engine
    store: StateStore
    ls: LifecycleStore
    run: Run
    graph: GraphClient
    stats: RunStats
    #: this cycle's assignments and groups (read before any page)
    sources: ScopeSources
    #: failed users waiting for their next retry (bulkprov.escrow)
    escrow: Mapping[str, EscrowEntry]
    claims: Claims
    #: ``bulkprov apply``: what the plan did not show is held back
    guard: UserGuard | None
    #: whether the target was listed for matching (:mod:`~bulkprov.pipeline.matching`)
    use_index: bool
    #: users of this run already logged on partly durable pages (filled on resume)
    already_done: set[str]
    #: the number the next page read gets (the run's cursor page on resume)
    next_page: int
    #: Graph ids read by this run's delta pages (not fetched again for assignment changes);
    #: kept for incremental reads only, where they are the changes: a full read of a 1M-user
    #: tenant would otherwise hold 1M ids (≈ 110 MB) that nothing looks at
    seen: set[str] = field(default_factory=set)
    hard_deleted: set[str] = field(default_factory=set)
    #: users the target held back (a pending Zoom invitation, no seat left): an
    #: incremental cycle reads them again even when Graph reports no change of theirs
    waiting: frozenset[str] = frozenset()
    #: profile "zoom": the seat guard (a user with no seat left is held, not sent)
    seats: Seats | None = None


async def produce(
    reader: Reader, work_send: ObjectSendStream[WorkItem], out_send: ObjectSendStream[Message]
) -> None:
    """The producer: read the cycle's pages, decide each user, send each decision on.

    A full round from the first page, an incremental round from the saved deltaLink, or a
    resumed read from the run's cursor; then, in an incremental cycle, the users whose
    assignment changed. Closes both streams when done: the workers then drain and end.
    """
    run, engine, graph = reader.run, reader.engine, reader.graph
    full_round = engine.delta_url(graph.base_url)
    async with work_send, out_send:
        if run.cursor != END_OF_PAGES:
            if run.kind == "full":
                reader.stats.total = await graph.user_count()
            first = run.cursor or full_round
            try:
                await _read(reader, first, work_send, out_send)
            except DeltaExpired:
                # Graph forgot the sync state: read everything again. Unchanged users
                # match their stored digest (0 requests) and the sweep after the full
                # read goes through the deletion threshold: no mass change.
                await reader.ls.set_run_kind(run, "full")
                reader.stats.total = await graph.user_count()
                await _read(reader, full_round, work_send, out_send)
            except SourceError as exc:
                if run.cursor is None or exc.status is None or not 400 <= exc.status < 500:
                    raise
                # The saved link expired at the source: start the read over; users
                # already done are skipped by digest, so this costs reads, not writes.
                await reader.store.restart_cursor(run)
                raise SourceError(
                    f"the saved Graph page link no longer works ({exc}); "
                    "run again to restart the read from the first page"
                ) from exc
        if run.kind == "incremental" and (reader.sources.assigned is not None or reader.waiting):
            await _assignment_changes(reader, work_send, out_send)
        if run.kind == "incremental":
            await _escrow_retries(reader, work_send, out_send)


async def _read(
    reader: Reader,
    first: str,
    work_send: ObjectSendStream[WorkItem],
    out_send: ObjectSendStream[Message],
) -> None:
    prefer = page_headers(reader.engine.cfg)
    # One page of lookahead: the next page is fetched while this one is evaluated and
    # sent. Read one after the other, the workers sat idle for every page's round trip:
    # with Graph answering a page in 200 ms, 30k users took 12.0 s instead of 7.8 s
    # (benchmarks/RESULTS.md, "page lookahead"). On loopback it makes no difference.
    ahead_send, ahead_recv = anyio.create_memory_object_stream[Page | Exception](0)

    async def fetch() -> None:
        async with ahead_send:
            try:
                async for page in reader.graph.pages(
                    first, first_number=reader.next_page, headers=prefer
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
                reader.next_page = item.number + 1
                if item.delta_link:
                    await reader.ls.set_run_delta(reader.run, item.delta_link)
                await _page(reader, item, work_send, out_send)
    except BaseExceptionGroup as group:
        # callers handle DeltaExpired and SourceError as such, not inside a group
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    if failure is not None:
        raise failure


async def _assignment_changes(
    reader: Reader, work_send: ObjectSendStream[WorkItem], out_send: ObjectSendStream[Message]
) -> None:
    """Users whose assignment or app roles changed: ``users/delta`` does not show them; and
    the users the target held back, looked at again every cycle until it lets them in."""
    ids: list[str] = []
    if reader.sources.assigned is not None:
        ids = assignment_changes(await reader.ls.assigned(), reader.sources.snapshot(), reader.seen)
    ids = sorted({*ids, *(reader.waiting - reader.seen)})
    if not ids:
        return
    users = await fetch_users(reader.graph, ids, reader.engine.select)
    page = Page(reader.next_page, "#assignments", users, None)
    await _page(reader, page, work_send, out_send)
    reader.next_page += 1


async def _escrow_retries(
    reader: Reader, work_send: ObjectSendStream[WorkItem], out_send: ObjectSendStream[Message]
) -> None:
    """Escrowed users whose retry is due, read by id: a round of changes lists only users
    that changed, and the watermark advanced past the cycle they failed in."""
    ids = [g for g in await reader.store.due_escrowed_users() if g not in reader.seen]
    if not ids:
        return
    users = await fetch_users(reader.graph, ids, reader.engine.select)
    page = Page(reader.next_page, "#escrow", users, None)
    await _page(reader, page, work_send, out_send)
    reader.next_page += 1


async def _page(
    reader: Reader,
    page: Page,
    work_send: ObjectSendStream[WorkItem],
    out_send: ObjectSendStream[Message],
) -> None:
    engine = reader.engine
    evaluated: list[Evaluated | UserWrite] = []
    ids: list[str] = []
    incremental = reader.run.kind == "incremental"
    users = latest_per_id(page.users)
    if incremental:
        # A round of changes may list a user with only the properties that changed: merged
        # over the values last seen for that user (or fetched by id), it is evaluated as the
        # whole user it stands for. An initial round lists whole users (an entry without a
        # selected property there is malformed, and fails as such).
        users, _ = await complete_entries(
            reader.graph, users, engine.select, reader.store.lookup_sources
        )
    raw: dict[str, dict[str, Any]] = {}
    for user in users:
        try:
            if not isinstance(user, dict):
                raise UserDataError(f"the Graph page holds a {type(user).__name__}, not a user")
            result, hard = engine.entry(user, reader.sources)
            if hard:
                reader.hard_deleted.add(result[0])
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
        if not hard and "@removed" not in user:
            raw[result[0]] = user
    if incremental:
        reader.seen.update(ids)
    states = await reader.store.lookup_users(ids)
    if incremental and states:
        # The page's Graph values, kept now (not with the outcomes, which the writer makes
        # durable later): a later page of the round that lists the same user with other
        # changed properties merges over these, whatever its outcome's progress.
        await reader.store.put_sources(
            [(source_blob(raw[g]), g) for g in states if g in raw and states[g].scim_id]
        )
    matches: dict[str, tuple[str, dict[str, Any]]] = {}
    if reader.use_index:
        keys = [
            k
            for item in evaluated
            if isinstance(item, tuple) and item[3] is not None and item[0] not in states
            for k in engine.match_keys(item[3])
        ]
        matches = await reader.store.lookup_target(keys) if keys else {}
    # target accounts already linked to a Graph user (this page's matches only)
    owners = await reader.store.owners([m[0] for m in matches.values()]) if matches else {}
    count = 0
    names = UserNames()
    escrow = reader.escrow
    for item in evaluated:
        if isinstance(item, UserWrite):
            count += 1
            await out_send.send((page.number, item))
            continue
        graph_id, _, _, mapped = item
        if graph_id in reader.already_done:
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
            owner = reader.claims.claim(match[0], graph_id, owners)
            if owner is not None:
                await out_send.send(
                    (page.number, duplicate_source(graph_id, mapped, match[0], owner))
                )
                continue
        decision = engine.decide(item, state, match, hard_deleted=graph_id in reader.hard_deleted)
        user_name = user_name_of(mapped, state)
        # kept for merging later partial entries: with the outcome for a user without a
        # row yet (or in a full read); an incremental round kept linked users' above
        blob = (
            source_blob(raw[graph_id])
            if graph_id in raw
            and (
                decision.kind in ("create", "link")
                or (state is not None and state.scim_id and not incremental)
            )
            else None
        )
        # An escrowed user waits, whatever the guard says: the plan shows it deferred.
        waiting = escrow_deferral(escrow, graph_id, decision.kind) if escrow else None
        if waiting is not None:
            write = UserWrite(
                graph_id, user_name, "other", "skipped", waiting, deferred=True, source=blob
            )
            await out_send.send((page.number, write))
        elif reader.seats is not None and (no_seat := reader.seats.hold(decision, mapped, state)):
            # before the apply guard: a plan shows the same hold, so apply holds it too
            write = UserWrite(
                graph_id, user_name, "other", "skipped", no_seat, wait="license", source=blob
            )
            await out_send.send((page.number, write))
        elif (
            reader.guard is not None
            and decision.kind != "skip"
            and (held := reader.guard(graph_id, decision, mapped)) is not None
        ):
            write = UserWrite(
                graph_id, user_name, "other", "skipped", held, held_back=True, source=blob
            )
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
                source=blob,
            )
            await out_send.send((page.number, write))
        elif decision.kind == "skip":
            write = skip_write(graph_id, user_name, decision, mapped, state, blob)
            if graph_id in reader.waiting:
                write = replace(write, wait="")  # out of scope: nothing to wait for
            await put(out_send, (page.number, write))
        else:
            await put(
                work_send,
                WorkItem(page.number, graph_id, user_name, decision, mapped, state, blob),
            )
    reader.stats.pages += 1
    await put(out_send, PageDone(page.number, count, page.next_link))


def skip_write(
    graph_id: str,
    user_name: str | None,
    d: Decision,
    mapped: MappedUser | None,
    state: UserState | None,
    source: bytes | None = None,
) -> UserWrite:
    if (
        mapped is not None
        and state is not None
        and state.scim_id
        and d.reason == "unchanged"
        and mapped.digest != state.digest
    ):
        # Values equal but the digest moved (the mapping's shape changed, or a source was
        # cleared and the target keeps its value, as Entra leaves it): store it.
        return UserWrite(
            graph_id,
            user_name,
            "other",
            "skipped",
            reason="unchanged",
            scim_id=state.scim_id,
            digest=mapped.digest,
            attrs=_json.dumps({**(state.attrs or {}), **mapped.update_values}),
            active=state.active,
            link=True,
            source=source,
        )
    return UserWrite(
        graph_id, user_name, "other", "skipped", reason=d.reason, scim_id=d.scim_id, source=source
    )
