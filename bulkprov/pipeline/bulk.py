"""② SCIM workers, the Bulk way: when ``target.bulk`` is on and the target offers SCIM Bulk
(RFC 7644 §3.7), a few workers each send up to ``maxOperations`` creates and updates in one
request instead of one request per user.

Each operation's result settles its user; an operation answered 409, 429 or 5xx, or a Bulk
request that failed as a whole (unknown outcome, 413, an unreadable answer), goes the
single-request way (:class:`~bulkprov.pipeline.workers.Applier`), whose create resolves a
maybe-created account by matching.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from anyio.abc import ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from bulkprov.checkpoint.store import UserWrite
from bulkprov.errors import TargetError, TargetRejected, TargetStop
from bulkprov.pipeline.messages import Message, WorkItem
from bulkprov.pipeline.workers import Applier
from bulkprov.scim import bulk as scim_bulk
from bulkprov.scim import requests as rq
from bulkprov.scim.bulk import BulkBatch, BulkResult, BulkSupport
from bulkprov.scim.responses import is_uniqueness_conflict

#: Bulk: this many requests in flight (operations per request: bulk.MAX_OPERATIONS)
BULK_WORKERS = scim_bulk.IN_FLIGHT
#: how long a Bulk worker waits for more work before sending a partial batch (seconds)
BULK_LINGER = 0.05


async def bulk_worker(
    apply: Applier,
    support: BulkSupport,
    filling: anyio.Lock,
    work_recv: MemoryObjectReceiveStream[WorkItem],
    out_send: ObjectSendStream[Message],
    stopping: Callable[[], bool],
) -> None:
    """Take up to ``maxOperations`` items at a time and send them as Bulk requests."""
    async with work_recv, out_send:
        while not stopping():  # stopping: finish the batch sent, take no more
            # One worker fills its batch at a time: the others, waiting in receive(),
            # would otherwise take items one by one and send them in tiny batches.
            async with filling:
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
                op = _operation(apply, item, str(n))
                if op is None:  # nothing to send (a link without changes)
                    await out_send.send((item.page, await apply.apply_one(item)))
                    continue
                if not batch.fits(op):
                    await _send(apply, batch, sent, out_send)
                    batch = BulkBatch(support.max_operations, support.max_payload_size)
                    sent = {}
                batch.add(str(n), op)
                sent[str(n)] = item
            if len(batch):
                await _send(apply, batch, sent, out_send)


def _operation(apply: Applier, item: WorkItem, bulk_id: str) -> bytes | None:
    d = item.decision
    if d.kind == "create" and not apply.must_match_first(item.graph_id):
        assert item.mapped is not None
        return scim_bulk.post_operation(bulk_id, "/Users", item.mapped.body)
    if d.kind == "create":
        return None  # escrowed or maybe created: matched before it is POSTed again
    # Disables and deletes never reach the workers: they are staged (deprovision.py).
    if d.kind not in ("update", "link") or d.scim_id is None or not d.changes:
        return None  # anything else goes the single-request way
    # A bulk path is JSON, not a URL: the id goes in as it is (Zoom ids hold '&').
    ops = rq.patch_operations(d.changes, apply.dialect, d.known)
    return scim_bulk.patch_operation(bulk_id, f"/Users/{d.scim_id}", ops)


async def _send(
    apply: Applier,
    batch: BulkBatch,
    sent: dict[str, WorkItem],
    out_send: ObjectSendStream[Message],
) -> None:
    """Send one Bulk request and checkpoint each operation's user by its result."""
    for item in sent.values():
        if item.decision.kind == "create":
            apply.mark_inflight(item.graph_id)
    try:
        results = scim_bulk.read_results(await apply.scim.send(batch.request()), batch.bulk_ids)
    except TargetStop:
        raise
    except TargetError:
        # Unknown outcome (5xx, timeout), 413 or an unreadable answer: each user goes the
        # single-request way, whose create resolves a maybe-created account by matching.
        results = {}
    for bulk_id, item in sent.items():
        result = results.get(bulk_id)
        write: UserWrite | None = None
        if result is not None and result.error is None:
            write = _written(apply, item, result)
        elif (
            result is not None
            and isinstance(result.error, TargetRejected)
            and not is_uniqueness_conflict(result.error)
        ):
            write = apply.failed(item, result.error)
        if write is None:
            # 409 (already there), 429, 5xx or unanswered: retry it alone
            write = await apply.apply_one(item)
        await out_send.send((item.page, write))


def _written(apply: Applier, item: WorkItem, result: BulkResult) -> UserWrite | None:
    d = item.decision
    if d.kind == "create":
        return apply.created(item, result.scim_id) if result.scim_id else None
    assert d.scim_id is not None
    return apply.linked(item, d.scim_id, "update", d.changes, d.reason, d.known)
