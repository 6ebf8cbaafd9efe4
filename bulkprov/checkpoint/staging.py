"""SQL of the lifecycle: watermarks, assignment snapshots, staged deprovisioning, groups.

Kept beside :mod:`bulkprov.checkpoint.store` (whose connection it shares, so every query
queues on the one aiosqlite thread in order) and out of it, so the hot per-user paths stay
short to read. Table definitions and migrations live in ``store.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bulkprov import _json
from bulkprov.checkpoint.store import Run, StateStore, UserWrite, _chunks

#: ``sync_state`` keys
USERS_DELTA = "users_delta"
GROUPS_DELTA = "groups_delta"
FINGERPRINT = "fingerprint"
#: the form of each kind of group PATCH operation the target was seen to accept
#: (bulkprov.pipeline.groups: learned when it refuses the configured dialect's form)
GROUP_FORMS = "group_forms"
#: the (shaped) failure reasons of the quarantines reported since the state was last out
#: of quarantine, a JSON list (bulkprov.breaker.Breaker.acknowledged)
QUARANTINE = "quarantine"

#: ``staged.action`` of a provisioned group that left scope (DELETE /Groups/{id})
DELETE_GROUP = "delete-group"


class GroupRound(Protocol):
    """One merged ``groups/delta`` round, as the mirror stores it.

    :class:`bulkprov.graph.groups_delta.GroupDelta` is one; the state layer names only the
    fields it stores, so it does not import the Graph layer above it (as
    :class:`bulkprov.graph.directory.GroupMirror` names what Graph reads of the mirror).
    """

    #: a first round: it lists every group, and replaces the mirror
    full: bool
    #: group id → displayName, for groups listed with their properties
    names: dict[str, str]
    #: group id → {member id: USER or GROUP} added (all members, on a first round)
    added: dict[str, dict[str, str]]
    #: group id → member ids removed
    removed: dict[str, set[str]]
    #: groups deleted in Entra
    deleted: set[str]


@dataclass(frozen=True, slots=True)
class Staged:
    """A disable or delete waiting for the read to complete or for an admin's approval."""

    id: int
    run_id: int
    graph_id: str
    scim_id: str
    user_name: str | None
    action: str
    reason: str | None
    status: str
    at: float


@dataclass(frozen=True, slots=True)
class GroupState:
    graph_id: str
    scim_id: str
    display_name: str
    members: frozenset[str]


class LifecycleStore:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._c = store._conn

    # -- watermarks ----------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        row = await (
            await self._c.execute("SELECT value FROM sync_state WHERE key=?", (key,))
        ).fetchone()
        return str(row[0]) if row else None

    async def put(self, key: str, value: str | None) -> None:
        if value is None:
            await self._c.execute("DELETE FROM sync_state WHERE key=?", (key,))
        else:
            await self._c.execute(
                "INSERT INTO sync_state(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    async def set_run_read(self, run: Run, kind: str, cursor: str | None) -> None:
        """Fix what a new run reads: a full round, or a delta round from ``cursor``."""
        run.kind, run.cursor, run.cursor_page = kind, cursor, 0
        await self._c.execute(
            "UPDATE runs SET kind=?, cursor=?, cursor_page=0 WHERE id=?", (kind, cursor, run.id)
        )

    async def set_run_kind(self, run: Run, kind: str) -> None:
        """Switch a running read to a full one (its delta token expired); cursor kept."""
        run.kind = kind
        await self._c.execute("UPDATE runs SET kind=? WHERE id=?", (kind, run.id))

    async def set_run_delta(self, run: Run, link: str) -> None:
        run.delta_link = link
        await self._c.execute("UPDATE runs SET delta_link=? WHERE id=?", (link, run.id))

    # -- assignments -----------------------------------------------------------------------

    async def assigned(self) -> dict[str, str]:
        cur = await self._c.execute("SELECT graph_id, roles FROM assigned")
        return {r[0]: r[1] for r in await cur.fetchall()}

    async def replace_assigned(self, rows: dict[str, str]) -> None:
        c = self._c
        async with c.transaction():
            await c.execute("DELETE FROM assigned")
            await c.executemany("INSERT INTO assigned(graph_id, roles) VALUES(?, ?)", rows.items())

    # -- deprovisioning ----------------------------------------------------------------------

    async def unseen_managed(self, run: Run) -> list[tuple[str, str, str | None]]:
        """Active managed users this run neither read nor logged: gone from the source.

        Only meaningful after a *complete full* read, where every live user was logged.
        """
        cur = await self._c.execute(
            "SELECT graph_id, scim_id, user_name FROM users WHERE scim_id IS NOT NULL "
            "AND active=1 AND (last_run IS NULL OR last_run<>?) "
            "AND graph_id NOT IN (SELECT graph_id FROM staged WHERE run_id=?)",
            (run.id, run.id),
        )
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

    async def staged(
        self, *, status: Sequence[str] = ("held",), run_id: int | None = None
    ) -> list[Staged]:
        marks = ",".join("?" * len(status))
        sql = (
            "SELECT id, run_id, graph_id, scim_id, user_name, action, reason, status, at "
            f"FROM staged WHERE status IN ({marks})"
        )
        args: list[Any] = list(status)
        if run_id is not None:
            sql += " AND run_id=?"
            args.append(run_id)
        cur = await self._c.execute(sql + " ORDER BY id", args)
        return [Staged(*r) for r in await cur.fetchall()]

    async def supersede(self, run: Run, *, full: bool) -> None:
        """Older held/pending actions this run decided again (all of them after a full read)."""
        sql = (
            "UPDATE staged SET status='superseded', done_at=? "
            "WHERE status IN ('held','pending') AND run_id<?"
        )
        args: list[Any] = [time.time(), run.id]
        if not full:
            sql += " AND graph_id IN (SELECT graph_id FROM log WHERE run_id=?)"
            args.append(run.id)
        await self._c.execute(sql, args)

    async def set_staged_status(self, ids: Iterable[int], status: str) -> None:
        now = time.time()
        rows = [(status, now, i) for i in ids]
        if rows:
            await self._c.executemany("UPDATE staged SET status=?, done_at=? WHERE id=?", rows)

    async def forget_user(self, graph_id: str) -> None:
        """After a DELETE in the target: bulkprov no longer manages this account."""
        await self._c.execute(
            "DELETE FROM group_members WHERE member_scim_id IN "
            "(SELECT scim_id FROM users WHERE graph_id=?)",
            (graph_id,),
        )
        await self._c.execute("DELETE FROM users WHERE graph_id=?", (graph_id,))

    async def run_by_id(self, run_id: int) -> Run | None:
        row = await (
            await self._c.execute(
                "SELECT id, status, cursor, cursor_page, resumes, counts, started_at, kind, "
                "delta_link FROM runs WHERE id=?",
                (run_id,),
            )
        ).fetchone()
        if row is None:
            return None
        return Run(
            row[0], row[1], row[2], row[3], row[4], _json.loads(row[5]), row[6], row[7], row[8]
        )

    async def log_outcomes(
        self, run: Run, writes: list[UserWrite], counts: Mapping[str, int]
    ) -> None:
        """Persist outcomes of the deprovision phase (user rows and log) with the run's live
        counts: ``held back`` among them must survive a crash, or a resumed run would
        advance the deltaLinks past the users it held back."""
        await self.store.write_batch(run, [(None, w) for w in writes], dict(counts), None)

    # -- groups ---------------------------------------------------------------------------------

    async def groups(self) -> dict[str, GroupState]:
        members: dict[str, set[str]] = {}
        cur = await self._c.execute("SELECT group_id, member_scim_id FROM group_members")
        for gid, mid in await cur.fetchall():
            members.setdefault(gid, set()).add(mid)
        # in the order they were linked: the first of two Entra groups an older version linked
        # to one target group keeps it (bulkprov.pipeline.groups.release_shared)
        cur = await self._c.execute(
            "SELECT graph_id, scim_id, display_name FROM groups ORDER BY rowid"
        )
        return {
            r[0]: GroupState(r[0], r[1], r[2], frozenset(members.get(r[0], ())))
            for r in await cur.fetchall()
        }

    async def put_group(self, graph_id: str, scim_id: str, display_name: str) -> None:
        await self._c.execute(
            "INSERT INTO groups(graph_id, scim_id, display_name, updated_at) VALUES(?,?,?,?) "
            "ON CONFLICT(graph_id) DO UPDATE SET scim_id=excluded.scim_id, "
            "display_name=excluded.display_name, updated_at=excluded.updated_at",
            (graph_id, scim_id, display_name, time.time()),
        )

    async def groups_leaving(self, run: Run, in_scope: Iterable[str]) -> list[tuple[str, str, str]]:
        """Provisioned groups not in ``in_scope`` and not yet staged by this run.

        Group scope is read completely every cycle, so a delete staged by an older run is
        decided again now: superseded first (restaged below if the group is still gone).
        """
        await self._c.execute(
            "UPDATE staged SET status='superseded', done_at=? "
            "WHERE action=? AND status IN ('held','pending') AND run_id<?",
            (time.time(), DELETE_GROUP, run.id),
        )
        keep = set(in_scope)
        cur = await self._c.execute(
            "SELECT graph_id, scim_id, display_name FROM groups WHERE graph_id NOT IN "
            "(SELECT graph_id FROM staged WHERE run_id=? AND action=?) ORDER BY display_name",
            (run.id, DELETE_GROUP),
        )
        return [(r[0], r[1], r[2]) for r in await cur.fetchall() if r[0] not in keep]

    async def forget_group(self, graph_id: str) -> None:
        await self._c.execute("DELETE FROM groups WHERE graph_id=?", (graph_id,))
        await self._c.execute("DELETE FROM group_members WHERE group_id=?", (graph_id,))

    async def release_group(self, graph_id: str, keeper: str) -> None:
        """Drop ``graph_id``'s link to a target group ``keeper`` also holds: the members sent
        for it are now the keeper's (its next diff removes those that do not belong)."""
        c = self._c
        async with c.transaction():
            await c.execute(
                "INSERT OR IGNORE INTO group_members(group_id, member_scim_id) "
                "SELECT ?, member_scim_id FROM group_members WHERE group_id=?",
                (keeper, graph_id),
            )
            await c.execute("DELETE FROM groups WHERE graph_id=?", (graph_id,))
            await c.execute("DELETE FROM group_members WHERE group_id=?", (graph_id,))

    async def drop_group_escrow(self) -> None:
        """Forget escrow entries an older version made for failed groups (never retried
        through escrow, they held every later cycle's watermarks back)."""
        await self._c.execute(
            "DELETE FROM escrow WHERE EXISTS (SELECT 1 FROM log WHERE "
            "log.graph_id = escrow.graph_id AND log.action = 'group')"
        )

    async def change_members(
        self, graph_id: str, added: Iterable[str], removed: Iterable[str]
    ) -> None:
        """Record members sent (after each successful PATCH, so a retry resends nothing)."""
        await self._c.executemany(
            "INSERT OR IGNORE INTO group_members(group_id, member_scim_id) VALUES(?, ?)",
            [(graph_id, m) for m in added],
        )
        await self._c.executemany(
            "DELETE FROM group_members WHERE group_id=? AND member_scim_id=?",
            [(graph_id, m) for m in removed],
        )

    # -- the mirror of Entra's groups (Graph groups/delta) -----------------------------------

    async def apply_group_delta(self, delta: GroupRound) -> None:
        """Apply one merged round at once; a first round replaces the mirror.

        Re-applying a later round over an earlier one (the deltaLink is saved only when the
        cycle completes, so a failed cycle replays its round) gives the same mirror.
        """
        c = self._c
        async with c.transaction():
            if delta.full:
                await c.execute("DELETE FROM source_groups")
                await c.execute("DELETE FROM source_group_members")
            for gid in delta.deleted:
                await c.execute("DELETE FROM source_groups WHERE graph_id=?", (gid,))
                await c.execute("DELETE FROM source_group_members WHERE group_id=?", (gid,))
                await c.execute("DELETE FROM source_group_members WHERE member_id=?", (gid,))
            await c.executemany(
                "INSERT INTO source_groups(graph_id, display_name) VALUES(?, ?) "
                "ON CONFLICT(graph_id) DO UPDATE SET display_name=excluded.display_name",
                delta.names.items(),
            )
            await c.executemany(
                "INSERT OR REPLACE INTO source_group_members(group_id, member_id, kind) "
                "VALUES(?, ?, ?)",
                [(g, m, k) for g, ms in delta.added.items() for m, k in ms.items()],
            )
            await c.executemany(
                "DELETE FROM source_group_members WHERE group_id=? AND member_id=?",
                [(g, m) for g, ms in delta.removed.items() for m in ms],
            )

    async def source_group_names(self) -> dict[str, str]:
        cur = await self._c.execute(
            "SELECT graph_id, display_name FROM source_groups ORDER BY rowid"
        )
        return {r[0]: r[1] or "" for r in await cur.fetchall()}

    async def source_group(self, graph_id: str) -> tuple[str, list[tuple[str, str]]] | None:
        """(displayName, [(member id, kind)]) from the mirror, ``None`` if not in it."""
        row = await (
            await self._c.execute(
                "SELECT display_name FROM source_groups WHERE graph_id=?", (graph_id,)
            )
        ).fetchone()
        if row is None:
            return None
        cur = await self._c.execute(
            "SELECT member_id, kind FROM source_group_members WHERE group_id=? ORDER BY rowid",
            (graph_id,),
        )
        return str(row[0] or ""), [(r[0], r[1]) for r in await cur.fetchall()]

    async def scim_ids(self, graph_ids: Sequence[str]) -> dict[str, str]:
        """Managed, active users' SCIM ids by Graph id (the group members we may send)."""
        out: dict[str, str] = {}
        for chunk in _chunks(graph_ids, 900):
            marks = ",".join("?" * len(chunk))
            cur = await self._c.execute(
                f"SELECT graph_id, scim_id FROM users WHERE graph_id IN ({marks}) "
                "AND scim_id IS NOT NULL AND active=1",
                chunk,
            )
            for r in await cur.fetchall():
                out[r[0]] = r[1]
        return out
