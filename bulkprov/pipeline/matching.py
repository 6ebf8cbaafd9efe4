"""Matching: who a Graph user is in the target before bulkprov has linked them.

* :func:`build_target_index`: before a first (or ``--rematch``) run provisions,
  the target's users are listed once and indexed in SQLite by the mapping's matching
  attributes; the producer looks each page's unlinked users up in it (one query a page), so
  an account made by hand is linked, never POSTed twice. A resumed run reuses its run's
  complete listing (the accounts its killed attempt created are found through the
  in-flight file, :mod:`bulkprov.checkpoint.inflight`).
* :class:`Claims`: which target accounts this run has linked, so two Graph users that map to
  one account (the same userName on two pages) cannot both take it. The producer, the SCIM
  workers and the checkpoint writer share one instance.
"""

from __future__ import annotations

from typing import Any

import anyio

from bulkprov import _json
from bulkprov.checkpoint.store import Run, StateStore, UserWrite
from bulkprov.mapping import MappedUser
from bulkprov.pipeline.decide import Engine
from bulkprov.scim import requests as rq
from bulkprov.scim.client import ScimClient
from bulkprov.scim.responses import list_resources


async def build_target_index(
    engine: Engine,
    scim: ScimClient,
    store: StateStore,
    *,
    page_size: int,
    concurrency: int,
    run: Run | None = None,
) -> None:
    """List the target's users once and index them by the matching attributes.

    ``run``: the index is marked complete for it once every page is in, so a resume of the
    run matches against it instead of listing the target again.
    """
    await store.clear_target_index(run)
    await _list_into_index(engine, scim, store, page_size=page_size, concurrency=concurrency)
    if run is not None:
        await store.target_index_done(run)


async def _list_into_index(
    engine: Engine, scim: ScimClient, store: StateStore, *, page_size: int, concurrency: int
) -> None:
    doc = await scim.send(rq.list_users(1, page_size))
    first, total = list_resources(doc)

    async def index(resources: list[dict[str, Any]]) -> None:
        rows = []
        for res in resources:
            scim_id = res.get("id")
            if not isinstance(scim_id, str):
                continue
            blob = _json.dumps(res)
            rows += [(key, scim_id, blob) for key in engine.resource_keys(res)]
        await store.add_target_index(rows)

    await index(first)
    if total <= len(first) or not first:
        return
    page = len(first)
    starts = list(range(1 + page, total + 1, page))
    limiter = anyio.CapacityLimiter(concurrency)

    async def fetch(start: int) -> None:
        async with limiter:
            resources, _ = list_resources(await scim.send(rq.list_users(start, page)))
            await index(resources)

    async with anyio.create_task_group() as tg:
        for start in starts:
            tg.start_soon(fetch, start)


class Claims:
    """Target accounts linked by matching in this run, and the ones it created until their
    links are durable: scim id → Graph id.

    Two Graph users that map to one target account (the same userName on different pages)
    must not both be linked to it: Entra logs that as DuplicateSourceEntries (facts.md
    §2.4). Links made earlier live in the state; links made in this run are claimed here,
    synchronously, so two workers cannot both take one account.
    """

    __slots__ = ("_claimed",)

    def __init__(self) -> None:
        self._claimed: dict[str, str] = {}

    def claim(self, scim_id: str, graph_id: str, owners: dict[str, str]) -> str | None:
        """Link ``scim_id`` to ``graph_id`` for this run; return the other owner if taken.

        ``owners``: scim id → Graph id of the links the state already holds for it.
        """
        owner = self._claimed.get(scim_id) or owners.get(scim_id)
        if owner is not None and owner != graph_id:
            return owner
        self._claimed[scim_id] = graph_id
        return None

    def release_created(self, writes: list[tuple[int, UserWrite]]) -> None:
        """Drop the claims of accounts this run created once their links are durable.

        From then on :meth:`StateStore.owners` answers for them; no page matches them
        (the target index predates them), so the claims would only cost memory.
        """
        claimed = self._claimed
        if not claimed:
            return
        for _, w in writes:
            if w.action == "create" and w.scim_id and claimed.get(w.scim_id) == w.graph_id:
                del claimed[w.scim_id]


def duplicate_source(
    graph_id: str, mapped: MappedUser | None, scim_id: str, owner: str
) -> UserWrite:
    """The failure of a user whose matching account another Graph user already owns."""
    return UserWrite(
        graph_id,
        mapped.user_name if mapped else None,
        "other",
        "failure",
        reason=f"DuplicateSourceEntries: the matching target account {scim_id} is already "
        f"linked to Graph user {owner}; two source users map to the same account",
    )
