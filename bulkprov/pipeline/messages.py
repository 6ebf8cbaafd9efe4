"""What flows on the pipeline's streams, and the two stream helpers of the hot path.

::

    pages.py ══WorkItem══▶ workers.py / bulk.py ══Message══▶ writer.py
        ╚══════════════════ Message (skips, failures, PageDone) ══╝

* :class:`WorkItem`: one user decided by the producer that needs a request to the target.
* :data:`Message`: what the checkpoint writer receives: ``(page, UserWrite)``, one user's
  outcome, or :class:`PageDone`, a page's user count (the writer advances the resume cursor
  past a page once that many outcomes of it are durable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkprov.checkpoint.store import UserState, UserWrite
from bulkprov.mapping import MappedUser
from bulkprov.pipeline.decide import Decision

#: cursor value meaning "every page of this run is durable"
END_OF_PAGES = "#end"


@dataclass(slots=True)
class WorkItem:
    page: int
    graph_id: str
    user_name: str | None
    decision: Decision
    mapped: MappedUser | None
    state: UserState | None
    #: the user's Graph attributes (JSON) to keep with the outcome (``users.source``)
    source: bytes | None = None


@dataclass(frozen=True, slots=True)
class PageDone:
    page: int
    items: int
    next_link: str | None


Message = tuple[int, UserWrite] | PageDone

#: ``guard(graph_id, decision, mapped)`` → a reason to hold the user back, or ``None``
#: (``bulkprov apply`` lets only the plan's own operations through); the sweep asks it too
UserGuard = Callable[[str, Decision, MappedUser | None], str | None]


async def put(stream: ObjectSendStream[Any], item: Any) -> None:
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


async def get(stream: ObjectReceiveStream[WorkItem]) -> WorkItem:
    """``stream.receive()`` without its checkpoint when an item is waiting (see :func:`put`)."""
    if isinstance(stream, MemoryObjectReceiveStream):
        try:
            item: WorkItem = stream.receive_nowait()
            return item
        except anyio.WouldBlock:
            pass
    return await stream.receive()
