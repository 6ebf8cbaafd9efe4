"""③ The checkpoint writer: outcomes in, SQLite transactions out.

One task owns every write of the run: the workers and the producer send it
messages (:data:`~bulkprov.pipeline.messages.Message`), it batches them into transactions and
advances the resume cursor (the link of the first page not yet durable). A killed run
resumes at that cursor: users already done are skipped by their stored digest.
"""

from __future__ import annotations

import time
from collections import defaultdict

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from bulkprov.breaker import Breaker
from bulkprov.checkpoint.inflight import InflightLog
from bulkprov.checkpoint.store import Run, StateStore, UserWrite
from bulkprov.config import StateConfig
from bulkprov.errors import Quarantined
from bulkprov.pipeline.matching import Claims
from bulkprov.pipeline.messages import END_OF_PAGES, Message, PageDone
from bulkprov.pipeline.stats import RunStats, count


async def write_checkpoints(
    out_recv: MemoryObjectReceiveStream[Message],
    *,
    store: StateStore,
    run: Run,
    stats: RunStats,
    breaker: Breaker,
    claims: Claims,
    cfg: StateConfig,
    inflight: InflightLog | None = None,
) -> None:
    """The one checkpoint writer: every outcome of the run is made durable here.

    Outcomes are committed in batches, every ``state.commit_every`` outcomes or
    ``state.commit_seconds`` after the first one not yet durable, whichever comes first; in
    the same transaction the resume cursor advances past the pages whose every user is
    durable (a page's count comes with its :class:`PageDone`). Each outcome is counted
    (:func:`~bulkprov.pipeline.stats.count`) and fed to the quarantine breaker, which stops
    the run (:class:`~bulkprov.errors.Quarantined`) when users fail en masse. The final flush
    runs shielded from cancellation, so what was done is kept however the run ends. Once
    committed, the users' slots in the in-flight file (``inflight``) are freed.
    """
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
            claims.release_created(pending)
            if inflight is not None and len(inflight):
                # committed: these users' creates are no longer "maybe done, unrecorded"
                inflight.release(w.graph_id for _, w in pending)
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
                    count(stats, msg[1])
                    if msg[1].status != "skipped":
                        verdict = breaker.record(msg[1].status != "failure", msg[1].reason)
                        if verdict is not None:
                            raise Quarantined(breaker.report(verdict))
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
