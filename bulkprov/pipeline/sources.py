"""What a cycle reads: its sources (assignments, groups) and whether it reads every user.

Before a cycle decides anything it reads, completely, the app's assignments and the groups
to provision (:func:`read_cycle_sources`; a failure here changes nothing), then chooses its
user read (:func:`choose_read`): a full ``users/delta`` round, or the changes since the
deltaLink the last completed cycle saved, plus the users whose assignment changed
(:func:`assignment_changes`, fetched one by one with :func:`fetch_users`: ``users/delta``
does not show them). The producer (:mod:`~bulkprov.pipeline.pages`) then reads the pages;
``bulkprov plan`` reads the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Container
from typing import Any

import anyio

from bulkprov import _json
from bulkprov.checkpoint.staging import FINGERPRINT, GROUPS_DELTA, USERS_DELTA, LifecycleStore
from bulkprov.config import Config
from bulkprov.errors import SourceError
from bulkprov.graph.client import GraphClient
from bulkprov.graph.directory import GroupMirror, ScopeSources, read_sources
from bulkprov.graph.groups_delta import DeltaOverlay, read_groups_delta

#: a new incremental cycle with more assignment changes than this reads every user instead
MAX_ASSIGNMENT_FETCHES = 1000


def config_fingerprint(cfg: Config) -> str:
    """Digest of what decides scope and values: a change forces a full read.

    Entra restarts with a full cycle when a scoping filter is saved (SCOPING, facts.md §2.6);
    a delta round would only show users that changed in Entra, not the ones the new filter
    or mapping now treats differently.
    """
    doc = {
        "scope": cfg.scope.model_dump(mode="json"),
        "mappings": [m.model_dump(mode="json") for m in cfg.mappings],
        "flatten": cfg.groups.flatten_nested,
    }
    return hashlib.sha256(_json.dumps_sorted(doc)).hexdigest()


async def read_cycle_sources(
    graph: GraphClient, ls: LifecycleStore, cfg: Config, *, dry_run: bool = False
) -> tuple[ScopeSources, str | None]:
    """A cycle's assignments and groups, and its ``groups/delta`` round's deltaLink.

    A sync applies the round to the state's mirror first (the link is saved when the
    cycle completes); ``dry_run`` (``bulkprov plan``) reads the same round and overlays it
    in memory, writing nothing.
    """
    groups_link = None
    mirror: GroupMirror | None = None
    if cfg.scope.mode == "assigned" or cfg.groups.enabled:
        if dry_run:
            delta = await read_groups_delta(
                graph, await ls.get(GROUPS_DELTA), page_size=cfg.graph.page_size
            )
            mirror, groups_link = DeltaOverlay(ls, delta), delta.delta_link
        else:
            groups_link = await refresh_group_mirror(graph, ls, cfg.graph.page_size)
            mirror = ls
    sources = await read_sources(
        graph,
        mode=cfg.scope.mode,
        service_principal_id=cfg.scope.service_principal_id,
        groups=cfg.groups.enabled,
        flatten=cfg.groups.flatten_nested,
        mirror=mirror if groups_link else None,
    )
    return sources, groups_link


async def refresh_group_mirror(
    graph: GraphClient, ls: LifecycleStore, page_size: int
) -> str | None:
    """Bring the SQLite mirror of Entra's groups up to date with one ``groups/delta`` round.

    Starts from the deltaLink saved by the last completed cycle (a first round without
    one, or when it expired); returns the round's deltaLink, for the caller to save only
    when its cycle completes.
    """
    delta = await read_groups_delta(graph, await ls.get(GROUPS_DELTA), page_size=page_size)
    await ls.apply_group_delta(delta)
    return delta.delta_link


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


def is_partial(user: Any, select: frozenset[str]) -> bool:
    """A delta entry that carries only some of the selected properties (not a removal).

    Graph: "Updated instances are represented by their id with at least the properties that
    have been updated, but additional properties may be included" (delta query overview);
    with ``Prefer: return=minimal`` "If the property has not changed, the property is not
    included in the response at all", while a property set to null is included as null
    (user: delta, Microsoft Learn). A full entry has every ``$select``-ed property.
    """
    if user.__class__ is not dict or "@removed" in user:
        return False
    return not user.keys() >= select


#: OData annotations a Graph user entry may carry: not kept with its values
_ANNOTATIONS = frozenset({"@odata.type", "@odata.id", "@odata.etag", "@odata.context"})


def source_blob(user: dict[str, Any]) -> bytes:
    """The Graph attributes of a user as kept in the state (``users.source``)."""
    if user.keys() & _ANNOTATIONS:
        user = {k: v for k, v in user.items() if k not in _ANNOTATIONS}
    return _json.dumps(user)


async def complete_entries(
    graph: GraphClient,
    users: list[Any],
    select: list[str],
    known: Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]],
) -> tuple[list[Any], set[str]]:
    """A page's partial delta entries made whole; returns (the page, the ids completed).

    Each partial entry is merged over the source values last seen for that user
    (``known(ids)``: the state's, 0 requests); one still missing a selected property (a
    user never kept, or kept before schema 5) is fetched by id (``GET
    /users/{id}?$select=…``: one request), and left out if Graph no longer has it (its
    removal comes in a later round). Entries already whole pass as they are.
    """
    wanted = frozenset(select)
    partial = [u for u in users if is_partial(u, wanted)]
    if not partial:
        return users, set()
    ids = [str(u.get("id")) for u in partial if isinstance(u.get("id"), str)]
    stored = await known(ids) if ids else {}
    merged: dict[int, dict[str, Any]] = {}
    fetch: list[str] = []
    for user in partial:
        gid = user.get("id")
        base = stored.get(gid) if isinstance(gid, str) else None
        whole = {**base, **user} if base is not None else user
        if is_partial(whole, wanted):
            if isinstance(gid, str):
                fetch.append(gid)
            continue
        merged[id(user)] = whole
    fetched = {u["id"]: u for u in await fetch_users(graph, fetch, select)} if fetch else {}
    out: list[Any] = []
    for user in users:
        if id(user) in merged:
            out.append(merged[id(user)])
        elif is_partial(user, wanted):
            gid = user.get("id")
            if gid in fetched:
                out.append(fetched[gid])
            elif not isinstance(gid, str):
                out.append(user)  # fails validation: no id
        else:
            out.append(user)
    return out, {str(u.get("id")) for u in partial}
