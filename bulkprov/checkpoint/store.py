"""The SQLite state: per-user links, runs with their resume cursor, and the provisioning log.

All SQL of bulkprov lives here. One aiosqlite connection (one thread) serves the run: the
writer's batched UPSERTs and the producer's per-page lookups queue on it in order, so a
lookup sees every outcome written before it, committed or not. Every write is an idempotent
UPSERT: a write that was queued when a task was cancelled may still run, harmlessly.

Tables (schema version 6; older databases are migrated in place when opened):

``users``         one row per Graph user bulkprov manages: SCIM id, the last values sent
                  (for PATCH diffs) and their digest (for change detection), active flag.
``runs``          one row per sync; ``cursor`` is the Graph link of the first page not yet
                  fully durable, so a killed run resumes there. ``status``: running,
                  quarantined (both unfinished), completed, completed_with_failures, or
                  abandoned (an unfinished incremental cycle the next run read again);
                  ``kind``: new (no read chosen yet), full or incremental.
``log``           the provisioning log: one row per user per run (Success/Skipped/Failure).
``target_index``  the target's existing accounts by matching key, listed once per run
                  when matching is needed (first run, resumed run).
``sync_state``    watermarks kept between cycles: the Graph ``users/delta`` deltaLink (saved
                  only when a cycle completes) and the fingerprint of the scope and mappings
                  (a change forces a full read, as Entra restarts on a new scoping filter),
                  and while in quarantine the failure reasons already reported.
``assigned``      the users assigned to the app (directly or as direct group members) at
                  the end of the last cycle, with their app roles: the next cycle re-reads
                  the users whose assignment changed, which ``users/delta`` does not report.
``staged``        disables and deletes decided in a cycle, executed only after the source
                  read completes and only within the accidental-deletion threshold; above it
                  they are ``held`` until ``bulkprov approve``.
``groups``        provisioned groups (Graph id → SCIM id, displayName) and ``group_members``
                  the member SCIM ids sent, so memberships are diffed locally.
``escrow``        (schema 3) failed users and when each is retried next (bulkprov.escrow).
``source_groups`` (schema 4) the Entra groups and their direct members
                  (``source_group_members``) as Graph ``groups/delta`` last reported them, so
                  an incremental cycle reads only the groups that changed.
``waiting``       (schema 5) users the target holds back for a reason of its own: a pending
                  Zoom invitation holds their userName (``pending``), or no seat of their
                  licence is left (``license``). Skipped, never failed; every cycle reads
                  them again until the reason is gone.

Schema 6 adds ``users.source`` (the selected Graph attributes last read for the user: a
``users/delta`` entry that carries only the changed properties is merged with them) and
``runs.target_indexed`` (1: the run began listing the target into ``target_index``, 2: the
listing is complete, so its resume matches against that index instead of listing again).

Schema changes: v1 → v2 adds columns (``_ADDED_COLUMNS``) and tables (``_SCHEMA``, created if
missing); from v3 on, numbered steps in ``_MIGRATIONS``, applied in place, in order, in the
same transaction as the version bump. A database newer than this code is refused untouched.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiosqlite
import anyio

from bulkprov import _json
from bulkprov.checkpoint.files import PRIVATE_FILE, private_dir, tighten
from bulkprov.errors import StateError
from bulkprov.escrow import EscrowEntry, EscrowPolicy
from bulkprov.redact import scrub_optional

SCHEMA_VERSION = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    graph_id    TEXT PRIMARY KEY,
    scim_id     TEXT,
    user_name   TEXT,
    digest      TEXT,
    attrs       BLOB,
    active      INTEGER NOT NULL DEFAULT 1,
    last_action TEXT,
    last_status TEXT,
    last_reason TEXT,
    last_run    INTEGER,
    updated_at  REAL
);
CREATE INDEX IF NOT EXISTS users_scim_id ON users(scim_id);
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    status      TEXT NOT NULL,
    cursor      TEXT,
    cursor_page INTEGER NOT NULL DEFAULT 0,
    resumes     INTEGER NOT NULL DEFAULT 0,
    counts      TEXT NOT NULL DEFAULT '{}',
    message     TEXT
);
CREATE TABLE IF NOT EXISTS log (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL,
    page      INTEGER,
    at        REAL NOT NULL,
    graph_id  TEXT,
    user_name TEXT,
    action    TEXT NOT NULL,
    status    TEXT NOT NULL,
    reason    TEXT,
    scim_id   TEXT,
    modified  TEXT
);
CREATE INDEX IF NOT EXISTS log_run_page ON log(run_id, page);
CREATE INDEX IF NOT EXISTS log_user ON log(graph_id);
CREATE TABLE IF NOT EXISTS target_index (
    key      TEXT PRIMARY KEY,
    scim_id  TEXT NOT NULL,
    resource BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assigned (graph_id TEXT PRIMARY KEY, roles TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staged (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL,
    graph_id  TEXT NOT NULL,
    scim_id   TEXT NOT NULL,
    user_name TEXT,
    action    TEXT NOT NULL,
    reason    TEXT,
    status    TEXT NOT NULL,
    at        REAL NOT NULL,
    done_at   REAL
);
CREATE INDEX IF NOT EXISTS staged_status ON staged(status, run_id);
CREATE TABLE IF NOT EXISTS groups (
    graph_id     TEXT PRIMARY KEY,
    scim_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    updated_at   REAL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_id       TEXT NOT NULL,
    member_scim_id TEXT NOT NULL,
    PRIMARY KEY (group_id, member_scim_id)
);
"""

#: columns added to older tables, each when missing (idempotent): v1 → v2, then schema 6
_ADDED_COLUMNS = (
    ("runs", "kind", "TEXT NOT NULL DEFAULT 'full'"),
    ("runs", "delta_link", "TEXT"),
    # 6 (issue 20): the Graph attributes last read for each managed user, merged with delta
    # entries that carry only the changed properties; whether the run's target index is
    # complete, so a resume after a kill does not list the target again
    ("users", "source", "BLOB"),
    ("runs", "target_indexed", "INTEGER NOT NULL DEFAULT 0"),
)


#: Versioned, in-place migrations from version 3 on: step N turns a version N-1 database into
#: version N (run in one transaction with the version bump).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 3: escrow (issue 7): failed users and when to retry them (bulkprov.escrow)
    3: (
        """CREATE TABLE IF NOT EXISTS escrow (
            graph_id     TEXT PRIMARY KEY,
            user_name    TEXT,
            first_failed REAL NOT NULL,
            last_failed  REAL NOT NULL,
            failures     INTEGER NOT NULL,
            next_retry   REAL,
            reason       TEXT
        )""",
    ),
    # 4: the mirror of Entra's groups read with Graph groups/delta (bulkprov.graph.groups_delta)
    4: (
        "CREATE TABLE IF NOT EXISTS source_groups (graph_id TEXT PRIMARY KEY, display_name TEXT)",
        """CREATE TABLE IF NOT EXISTS source_group_members (
            group_id  TEXT NOT NULL,
            member_id TEXT NOT NULL,
            kind      TEXT NOT NULL,
            PRIMARY KEY (group_id, member_id)
        )""",
    ),
    # 5: users the target holds back (issue 18): pending Zoom invitations, seats exhausted
    5: (
        """CREATE TABLE IF NOT EXISTS waiting (
            graph_id  TEXT PRIMARY KEY,
            user_name TEXT,
            kind      TEXT NOT NULL,
            since     REAL NOT NULL,
            last_seen REAL NOT NULL,
            detail    TEXT
        )""",
    ),
    # 6 (issue 20): the columns of _ADDED_COLUMNS marked 6; the log's run index covers the
    # page too (log_run_page, in _SCHEMA: a resume's "logged since the cursor page" at 1M
    # users reads only those rows), so the run-only one goes
    6: ("DROP INDEX IF EXISTS log_run",),
}


def unusable(path: Path, exc: sqlite3.DatabaseError) -> BaseException:
    """The :class:`StateError` an SQLite failure of the state database becomes (exit 6).

    A damaged file (pages overwritten: "database disk image is malformed", "file is not a
    database") or a lock held too long is the state, not a bug, and is named as such with
    the file; an error of bulkprov's own SQL (integrity, misuse) stays what it is.
    """
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
        return exc
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StateError(
            f"{path}: the state database is locked by another process ({text}); "
            "wait for it to finish or close it — nothing was changed"
        )
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return damaged(path, text)
    return StateError(f"{path}: the state database cannot be used ({text})")


def damaged(path: Path, cause: str) -> StateError:
    return StateError(
        f"{path}: the state database is damaged ({cause}); bulkprov writes nothing to it — "
        "restore it from a backup (`bulkprov state export` makes one), or move it aside "
        "and run `bulkprov sync` to start a new state (existing accounts are matched)"
    )


class _Result:
    """Rows already fetched, with the cursor closed (see :class:`_Db`)."""

    __slots__ = ("lastrowid", "rows")

    def __init__(self, rows: list[Any], lastrowid: int | None) -> None:
        self.rows = rows
        self.lastrowid = lastrowid

    async def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[Any]:
        return self.rows


class _Db:
    """aiosqlite with every cursor fetched and closed in aiosqlite's own thread.

    A cursor dropped on the event-loop thread is finalised there while the worker thread
    may be stepping the same cached statement (two identical ``executemany`` calls in a
    row): sqlite3 then fails with "bad parameter or other API misuse". Seen under load in
    tests/test_kill_resume.py; closing each cursor inside aiosqlite's thread prevents it.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        try:
            async with self.conn.execute(sql, params) as cur:
                return _Result(list(await cur.fetchall()), cur.lastrowid)
        except sqlite3.DatabaseError as exc:
            raise unusable(self.path, exc) from exc

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            async with self.conn.executemany(sql, rows):
                pass
        except sqlite3.DatabaseError as exc:
            raise unusable(self.path, exc) from exc

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error), shielded from cancellation.

        Cancelling an await does not stop the statement in aiosqlite's thread, and in a
        cancelled scope every later await is cancelled too: an unshielded transaction
        cancelled after its ``BEGIN`` stayed open, and the next one (the writer's shielded
        final flush) failed with "cannot start a transaction within a transaction". Each
        transaction here is a short local write (a checkpoint batch: ~0.1 s), so it finishes
        and the cancellation lands right after it; no deadline or signal cuts one short. A
        lock held by another process is waited for ``busy_timeout`` at most, then raises.
        """
        with anyio.CancelScope(shield=True):
            await self.execute("BEGIN IMMEDIATE")
            try:
                yield
                await self.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # some errors (disk full) have rolled back already
                    await self.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        await self.conn.close()


@dataclass(frozen=True, slots=True)
class UserState:
    graph_id: str
    scim_id: str | None
    user_name: str | None
    digest: str | None
    attrs: dict[str, Any] | None
    active: bool


#: run statuses of a run that did not finish: ``running`` (in progress, or stopped by a
#: signal, a crash, a kill or a failed read) and ``quarantined`` (the breaker stopped it)
UNFINISHED = ("running", "quarantined")
#: ``runs.kind`` of a run that has not chosen its read yet (then "full" or "incremental")
NEW_RUN = "new"


@dataclass(slots=True)
class Run:
    id: int
    status: str
    cursor: str | None
    cursor_page: int
    resumes: int
    counts: dict[str, int]
    started_at: float
    #: "full" (read every user) or "incremental" (a Graph delta round)
    kind: str = "full"
    #: the deltaLink that ended this run's read, promoted to ``sync_state`` on completion
    delta_link: str | None = None
    #: this run's target listing (``target_index``): 0 none, 1 begun, 2 complete
    target_index: int = 0
    #: a new run that closed an unfinished one (``abandoned``): requests may have been in
    #: flight when it stopped, so this run matches accounts as a resumed one does
    follows_unfinished: bool = False
    #: why it stopped (for an unfinished run)
    message: str | None = None

    @property
    def resumable(self) -> bool:
        """Whether the next run resumes this one: an unfinished full read (at its cursor),
        or an unfinished run that stopped before it chose its read (kind :data:`NEW_RUN`:
        it chooses it when resumed). An unfinished incremental cycle is not resumed: the
        next run closes it and reads the changes again from the last completed cycle's
        watermarks — nothing it did is sent twice (done users are unchanged, failed ones
        wait in escrow, its staged disables and deletes are decided again), and ``sync
        --full``, ``plan`` and ``retry-failed`` never have to wait for it."""
        return self.status in UNFINISHED and self.kind in ("full", NEW_RUN)


@dataclass(frozen=True, slots=True)
class UserWrite:
    """One outcome to persist: the user row (when ``scim_id`` is known) and a log row."""

    graph_id: str
    user_name: str | None
    action: str
    status: str
    reason: str | None = None
    scim_id: str | None = None
    digest: str | None = None
    attrs: bytes | None = None
    active: bool | None = None
    modified: str | None = None
    #: False for outcomes that only log (skips, failures before any link)
    link: bool = False
    #: "disable" or "delete": stage this deprovisioning (run after the read, threshold)
    stage: str | None = None
    #: a skip because the user waits in escrow (keeps its escrow entry)
    deferred: bool = False
    #: a skip because ``bulkprov apply``'s guard held the operation back (it differs from
    #: the plan): counted as "held back", and it keeps the user's escrow entry
    held_back: bool = False
    #: the user's Graph attributes as read (JSON), kept for merging partial delta entries
    source: bytes | None = None
    #: the target holds the user back (``waiting``): "pending" (a pending Zoom invitation
    #: holds its userName) or "license" (no seat left) records it; "" clears it
    wait: str | None = None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A user the target holds back (table ``waiting``)."""

    graph_id: str
    user_name: str | None
    #: "pending" (a pending Zoom invitation holds its userName) or "license" (no seat)
    kind: str
    since: float
    last_seen: float
    detail: str | None


def disabled(
    graph_id: str, user_name: str | None, reason: str, scim_id: str, state: UserState | None
) -> UserWrite:
    """The outcome of a sent ``active=false``: the last values sent, now inactive."""
    attrs = dict(state.attrs or {}) if state is not None else {}
    attrs["active"] = False
    return UserWrite(
        graph_id,
        user_name,
        "disable",
        "success",
        reason=reason,
        scim_id=scim_id,
        attrs=_json.dumps(attrs),
        active=False,
        modified='{"active":false}',
        link=True,
    )


class StateStore:
    """Open with :meth:`open`; use as an async context manager to close."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = _Db(conn, path)
        self.path = path

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, verify: bool = False) -> StateStore:
        """Open (creating with mode 0600) and migrate; refuse a newer or foreign database.

        ``verify`` (the commands that write: sync, approve, retry-failed, provision) reads
        every page first (``PRAGMA quick_check``: 0.16 s for a 228 MB state of 300,000
        users and their log) and refuses a damaged file before anything is written to it.
        SQLite finds damage only on the pages a query touches, so without it a sync would
        start a run and write outcomes before it met the overwritten pages. A database
        whose schema is current is opened without any write.
        """
        p = Path(path)
        if not os.path.exists(p):  # noqa: ASYNC240 - one stat at open, before any I/O loop
            private_dir(p.parent)
            # Created 0600 before SQLite touches it: the log holds user names and emails.
            # SQLite gives the -wal and -shm files the database's mode.
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, PRIVATE_FILE)
            try:
                os.fchmod(fd, PRIVATE_FILE)  # whatever the umask
            finally:
                os.close(fd)
        else:
            with contextlib.suppress(OSError):  # not ours to chmod: SQLite says what is wrong
                for f in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
                    if f.exists():
                        tighten(f)
        try:
            conn = await aiosqlite.connect(p, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"{p}: cannot open the state database: {exc}") from exc
        store = cls(conn, p)
        try:
            await store._migrate(verify=verify)
        except StateError as exc:
            await conn.close()
            cause = exc.__cause__
            text = str(cause)
            if isinstance(cause, sqlite3.DatabaseError) and not (
                "locked" in text or "busy" in text or "malformed" in text
            ):
                raise StateError(
                    f"{p}: not a usable bulkprov state database ({cause}); nothing was changed"
                ) from cause
            raise
        except BaseException:
            await conn.close()
            raise
        return store

    #: how long to wait for another connection's lock before giving up (milliseconds)
    busy_timeout_ms = 5000

    async def _migrate(self, *, verify: bool = False) -> None:
        c = self._conn
        await c.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        mode = await (await c.execute("PRAGMA journal_mode = WAL")).fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StateError(f"{self.path}: cannot switch the database to WAL mode")
        await c.execute("PRAGMA synchronous = NORMAL")
        # 16 MiB of page cache (SQLite's default is 2 MiB): the users and log indexes are
        # keyed by random GUIDs, so every commit touches pages all over them. 100k users,
        # 2 A/B rounds: 94.1, 95.5 → 92.8, 91.0 µs/user, +16 MB RSS (benchmarks/RESULTS.md,
        # "Checkpoint batches").
        await c.execute("PRAGMA cache_size = -16384")
        tables = {
            r[0]
            for r in await (
                await c.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ).fetchall()
        }
        if tables and "meta" not in tables:
            raise StateError(
                f"{self.path}: this SQLite file is not a bulkprov state database; "
                "nothing was changed"
            )
        if "meta" in tables:
            row = await (
                await c.execute("SELECT value FROM meta WHERE key='schema_version'")
            ).fetchone()
            try:
                version = int(row[0]) if row else 0
            except ValueError:
                raise StateError(
                    f"{self.path}: its schema_version is {str(row[0])[:40]!r}, not a number: "
                    "not a usable bulkprov state database (damaged or edited by hand); "
                    "nothing was changed"
                ) from None
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{self.path}: written by a newer bulkprov (schema {version}, this one "
                    f"knows {SCHEMA_VERSION}); upgrade bulkprov — nothing was changed"
                )
        else:
            version = 0
        if verify and tables:
            problems = [str(r[0]) for r in (await c.execute("PRAGMA quick_check(5)")).rows]
            if problems != ["ok"]:
                raise damaged(self.path, "; ".join(problems)[:300])
        if version == SCHEMA_VERSION:
            return  # current: opened without a write (a damaged file stays as it was)
        async with c.transaction():
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                await c.execute(stmt)
            for table, column, decl in _ADDED_COLUMNS:  # v1 → v2, schema 6
                cols = {
                    r[1] for r in await (await c.execute(f"PRAGMA table_info({table})")).fetchall()
                }
                if column not in cols:
                    await c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            for step in range(max(version, 2) + 1, SCHEMA_VERSION + 1):  # v2 → v3 …
                for stmt in _MIGRATIONS[step]:
                    await c.execute(stmt)
            await c.execute(
                "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(SCHEMA_VERSION),),
            )

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- runs -------------------------------------------------------------------------

    async def last_run(self) -> Run | None:
        row = await (
            await self._conn.execute(
                "SELECT id, status, cursor, cursor_page, resumes, counts, started_at, kind, "
                "delta_link, target_indexed, message FROM runs ORDER BY id DESC LIMIT 1"
            )
        ).fetchone()
        if row is None:
            return None
        return Run(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            _json.loads(row[5]),
            row[6],
            row[7],
            row[8],
            int(row[9]),
            message=row[10],
        )

    async def runs(self, limit: int = 20, *, run_id: int | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` runs, newest first (or only run ``run_id``)."""
        cur = await self._conn.execute(
            "SELECT id, started_at, finished_at, status, cursor_page, resumes, counts, message, "
            "kind FROM runs WHERE ? IS NULL OR id = ? ORDER BY id DESC LIMIT ?",
            (run_id, run_id, limit),
        )
        return [
            {
                "id": r[0],
                "started_at": r[1],
                "finished_at": r[2],
                "status": r[3],
                "pages_done": r[4],
                "resumes": r[5],
                "counts": _json.loads(r[6]),
                "message": r[7],
                "kind": r[8],
            }
            for r in await cur.fetchall()
        ]

    async def start_run(self) -> Run:
        """Resume the last run if it is :attr:`Run.resumable`, else start a new one
        (closing an unfinished last run as ``abandoned``)."""
        last = await self.last_run()
        if last is not None and last.resumable:
            last.resumes += 1
            last.status = "running"
            await self._conn.execute(
                "UPDATE runs SET resumes=?, status='running' WHERE id=?", (last.resumes, last.id)
            )
            return last
        now = time.time()
        unfinished = last is not None and last.status in UNFINISHED
        async with self._conn.transaction():
            cur = await self._conn.execute(
                "INSERT INTO runs(started_at, status, counts, kind) VALUES(?, 'running', '{}', ?)",
                (now, NEW_RUN),
            )
            assert cur.lastrowid is not None
            if unfinished:
                assert last is not None
                await self._conn.execute(
                    "UPDATE runs SET status='abandoned', finished_at=?, cursor=NULL, "
                    "message=? WHERE id=?",
                    (
                        now,
                        f"not resumed: run {cur.lastrowid} read its changes again "
                        f"(was {last.status}: {last.message or 'stopped'})"[:2000],
                        last.id,
                    ),
                )
        return Run(
            cur.lastrowid, "running", None, 0, 0, {}, now, NEW_RUN, follows_unfinished=unfinished
        )

    async def mark_unfinished(
        self, run: Run, status: str, counts: dict[str, int], message: str | None
    ) -> None:
        """Record why an unfinished run stopped (``quarantined``, or ``running``: resumable
        or to be closed by the next run), its cursor kept."""
        run.status, run.message = status, message
        await self._conn.execute(
            "UPDATE runs SET status=?, counts=?, message=? WHERE id=?",
            (status, _json.dumps(counts).decode(), scrub_optional(message), run.id),
        )

    async def has_completed_run(self) -> bool:
        row = await (
            await self._conn.execute("SELECT 1 FROM runs WHERE status LIKE 'completed%' LIMIT 1")
        ).fetchone()
        return row is not None

    async def finish_run(
        self, run: Run, status: str, counts: dict[str, int], message: str | None = None
    ) -> None:
        await self._conn.execute(
            "UPDATE runs SET status=?, finished_at=?, counts=?, message=?, cursor=NULL WHERE id=?",
            (status, time.time(), _json.dumps(counts).decode(), scrub_optional(message), run.id),
        )

    async def restart_cursor(self, run: Run) -> None:
        """Forget the resume cursor (it expired at the source): the next read starts over."""
        run.cursor, run.cursor_page = None, 0
        await self._conn.execute("UPDATE runs SET cursor=NULL, cursor_page=0 WHERE id=?", (run.id,))

    # -- users ------------------------------------------------------------------------

    async def lookup_users(self, graph_ids: Sequence[str]) -> dict[str, UserState]:
        out: dict[str, UserState] = {}
        for chunk in _chunks(graph_ids, 900):
            marks = ",".join("?" * len(chunk))
            cur = await self._conn.execute(
                "SELECT graph_id, scim_id, user_name, digest, attrs, active FROM users "
                f"WHERE graph_id IN ({marks})",
                chunk,
            )
            for r in await cur.fetchall():
                out[r[0]] = UserState(
                    r[0], r[1], r[2], r[3], _json.loads(r[4]) if r[4] else None, bool(r[5])
                )
        return out

    async def lookup_sources(self, graph_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The Graph attributes last read for these users (those that have them)."""
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(graph_ids, 900):
            marks = ",".join("?" * len(chunk))
            cur = await self._conn.execute(
                f"SELECT graph_id, source FROM users WHERE graph_id IN ({marks}) "
                "AND source IS NOT NULL",
                chunk,
            )
            for r in await cur.fetchall():
                doc = _json.loads(r[1])
                if isinstance(doc, dict):
                    out[r[0]] = doc
        return out

    async def put_sources(self, rows: Sequence[tuple[bytes, str]]) -> None:
        """Keep (source, graph id) for linked users: what their next partial entry merges over."""
        if rows:
            await self._conn.executemany("UPDATE users SET source=? WHERE graph_id=?", rows)

    async def write_batch(
        self,
        run: Run,
        writes: Iterable[tuple[int | None, UserWrite]],
        counts: dict[str, int],
        cursor: tuple[str | None, int] | None,
    ) -> None:
        """Persist (page, outcome) pairs, the run's counts and (maybe) its new cursor at once."""
        now = time.time()
        link_rows = []
        state_rows = []
        log_rows = []
        stage_rows = []
        wait_rows: list[tuple[Any, ...]] = []
        unwait_rows: list[tuple[str]] = []
        for page, w in writes:
            if w.wait is not None:
                if w.wait:
                    wait_rows.append((w.graph_id, w.user_name, w.wait, now, now, w.reason))
                else:
                    unwait_rows.append((w.graph_id,))
            if w.stage is not None and w.scim_id:
                stage_rows.append(
                    (run.id, w.graph_id, w.scim_id, w.user_name, w.stage, w.reason, now)
                )
            log_rows.append(
                (
                    run.id,
                    page,
                    now,
                    w.graph_id,
                    w.user_name,
                    w.action,
                    w.status,
                    scrub_optional(w.reason),
                    w.scim_id,
                    w.modified,
                )
            )
            if w.link:
                link_rows.append(
                    (
                        w.graph_id,
                        w.scim_id,
                        w.user_name,
                        w.digest,
                        w.attrs,
                        1 if w.active is None or w.active else 0,
                        w.action,
                        w.status,
                        scrub_optional(w.reason),
                        run.id,
                        now,
                        w.source,
                    )
                )
            else:
                state_rows.append(
                    (
                        w.action,
                        w.status,
                        scrub_optional(w.reason),
                        run.id,
                        now,
                        w.source,
                        w.graph_id,
                    )
                )
        c = self._conn
        async with c.transaction():
            await self._escrow([w for _, w in writes], now)
            if link_rows:
                await c.executemany(
                    "INSERT INTO users(graph_id, scim_id, user_name, digest, attrs, active, "
                    "last_action, last_status, last_reason, last_run, updated_at, source) "
                    "VALUES(?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(graph_id) DO UPDATE SET "
                    "scim_id=excluded.scim_id, user_name=excluded.user_name, "
                    "digest=excluded.digest, attrs=excluded.attrs, active=excluded.active, "
                    "last_action=excluded.last_action, last_status=excluded.last_status, "
                    "last_reason=excluded.last_reason, last_run=excluded.last_run, "
                    "updated_at=excluded.updated_at, "
                    "source=coalesce(excluded.source, users.source)",
                    link_rows,
                )
            if state_rows:
                await c.executemany(
                    "UPDATE users SET last_action=?, last_status=?, last_reason=?, last_run=?, "
                    "updated_at=?, source=coalesce(?, source) WHERE graph_id=?",
                    state_rows,
                )
            if log_rows:
                await c.executemany(
                    "INSERT INTO log(run_id, page, at, graph_id, user_name, action, status, "
                    "reason, scim_id, modified) VALUES(?,?,?,?,?,?,?,?,?,?)",
                    log_rows,
                )
            if wait_rows:
                await c.executemany(
                    "INSERT INTO waiting(graph_id, user_name, kind, since, last_seen, detail) "
                    "VALUES(?,?,?,?,?,?) ON CONFLICT(graph_id) DO UPDATE SET "
                    "user_name=excluded.user_name, last_seen=excluded.last_seen, "
                    "detail=excluded.detail, since=CASE WHEN waiting.kind=excluded.kind "
                    "THEN waiting.since ELSE excluded.since END, kind=excluded.kind",
                    wait_rows,
                )
            if unwait_rows:
                await c.executemany("DELETE FROM waiting WHERE graph_id=?", unwait_rows)
            if stage_rows:
                await c.executemany(
                    "INSERT INTO staged(run_id, graph_id, scim_id, user_name, action, reason, "
                    "status, at) VALUES(?,?,?,?,?,?,'pending',?)",
                    stage_rows,
                )
            if cursor is not None:
                run.cursor, run.cursor_page = cursor
                await c.execute(
                    "UPDATE runs SET cursor=?, cursor_page=?, counts=? WHERE id=?",
                    (cursor[0], cursor[1], _json.dumps(counts).decode(), run.id),
                )
            else:
                await c.execute(
                    "UPDATE runs SET counts=? WHERE id=?", (_json.dumps(counts).decode(), run.id)
                )

    async def backup(self, dest: str | os.PathLike[str]) -> None:
        """Copy the live database to ``dest`` with SQLite's online backup API (mode 0600).

        Consistent even while a sync writes (WAL readers see one snapshot); refuses to
        overwrite an existing file.
        """
        d = Path(dest)
        try:
            fd = os.open(d, os.O_CREAT | os.O_WRONLY | os.O_EXCL, PRIVATE_FILE)
        except FileExistsError as exc:
            raise StateError(f"{d} exists; nothing was overwritten") from exc
        except OSError as exc:
            raise StateError(f"cannot create {d}: {exc.strerror}") from exc
        try:
            os.fchmod(fd, PRIVATE_FILE)  # whatever the umask
        finally:
            os.close(fd)
        target = await aiosqlite.connect(d)
        try:
            await self._conn.conn.backup(target)
        except sqlite3.DatabaseError as exc:
            raise unusable(self.path, exc) from exc
        finally:
            await target.close()

    # -- escrow (bulkprov.escrow) -------------------------------------------------------

    #: set by the pipeline from the config before the first write
    escrow_policy: EscrowPolicy = EscrowPolicy()

    async def _escrow(self, writes: Sequence[UserWrite], now: float) -> None:
        """Inside write_batch's transaction: escrow failures, release everything else.

        A user deferred (still waiting) or held back by ``bulkprov apply`` keeps its entry.
        Groups are not escrowed: every cycle diffs them again, and no later success would
        clear the entry of a group that failed and then left scope.
        """
        failed = [
            w
            for w in writes
            if w.status == "failure" and w.action != "group" and not w.graph_id.startswith("(")
        ]
        cleared = [
            (w.graph_id,)
            for w in writes
            if w.status != "failure" and not w.deferred and not w.held_back
        ]
        c = self._conn
        if cleared:
            await c.executemany("DELETE FROM escrow WHERE graph_id=?", cleared)
        if not failed:
            return
        known = await self.escrow_entries([w.graph_id for w in failed])
        rows = []
        for w in failed:
            old = known.get(w.graph_id)
            first = old.first_failed if old else now
            failures = old.failures + 1 if old else 1
            nxt = self.escrow_policy.next_retry(first, failures)
            reason = scrub_optional(w.reason)
            rows.append((w.graph_id, w.user_name, first, now, failures, nxt, reason))
            known[w.graph_id] = EscrowEntry(w.graph_id, w.user_name, first, failures, nxt, w.reason)
        await c.executemany(
            "INSERT INTO escrow(graph_id, user_name, first_failed, last_failed, failures, "
            "next_retry, reason) VALUES(?,?,?,?,?,?,?) ON CONFLICT(graph_id) DO UPDATE SET "
            "user_name=excluded.user_name, last_failed=excluded.last_failed, "
            "failures=excluded.failures, next_retry=excluded.next_retry, reason=excluded.reason",
            rows,
        )

    async def escrow_entries(
        self, graph_ids: Sequence[str] | None = None
    ) -> dict[str, EscrowEntry]:
        """Escrowed users (all, or those of ``graph_ids``) by Graph id."""
        sql = "SELECT graph_id, user_name, first_failed, failures, next_retry, reason FROM escrow"
        out: dict[str, EscrowEntry] = {}
        chunks: Iterable[Sequence[str] | None] = (
            [None] if graph_ids is None else _chunks(graph_ids, 900)
        )
        for chunk in chunks:
            if chunk is None:
                cur = await self._conn.execute(sql + " ORDER BY first_failed")
            else:
                marks = ",".join("?" * len(chunk))
                cur = await self._conn.execute(sql + f" WHERE graph_id IN ({marks})", chunk)
            for r in await cur.fetchall():
                out[r[0]] = EscrowEntry(r[0], r[1], r[2], r[3], r[4], r[5])
        return out

    async def due_escrowed_users(self, now: float | None = None) -> list[str]:
        """Escrowed users (not groups) whose retry is due: an incremental cycle reads each
        by id, since its delta round lists only users that changed (Entra retries escrowed
        objects on their own schedule, facts.md §2.4)."""
        cur = await self._conn.execute(
            "SELECT graph_id FROM escrow WHERE next_retry IS NOT NULL AND next_retry <= ? "
            "AND graph_id NOT LIKE '(%' "
            "AND graph_id NOT IN (SELECT graph_id FROM groups) "
            "AND graph_id NOT IN (SELECT graph_id FROM source_groups) ORDER BY graph_id",
            (time.time() if now is None else now,),
        )
        return [r[0] for r in await cur.fetchall()]

    async def failures_holding_watermark(self, run: Run) -> int:
        """Failures of ``run`` that no retry by id can make good: an unreadable entry (no
        id), a staged disable or delete (its user may be gone from Graph: the delta round
        that reported it must come again), a group. Other failed users are escrowed and
        read again by id when due, so they do not hold the users/delta watermark back."""
        row = await (
            await self._conn.execute(
                "SELECT count(*) FROM log WHERE run_id=? AND status='failure' AND "
                "(graph_id IS NULL OR graph_id LIKE '(%' OR action IN ('disable', 'delete', "
                "'group'))",
                (run.id,),
            )
        ).fetchone()
        return int(row[0]) if row else 0

    async def waiting(self, kind: str | None = None) -> dict[str, Waiting]:
        """Users the target holds back (all, or of one ``kind``), by Graph id."""
        cur = await self._conn.execute(
            "SELECT graph_id, user_name, kind, since, last_seen, detail FROM waiting "
            "WHERE ? IS NULL OR kind = ? ORDER BY since",
            (kind, kind),
        )
        return {r[0]: Waiting(*r) for r in await cur.fetchall()}

    async def release_escrow(self) -> int:
        """Make every escrowed user due now (``bulkprov retry-failed``); returns how many."""
        row = await (await self._conn.execute("SELECT count(*) FROM escrow")).fetchone()
        await self._conn.execute("UPDATE escrow SET next_retry=0")
        return int(row[0]) if row else 0

    async def user_count(self) -> int:
        row = await (await self._conn.execute("SELECT count(*) FROM users")).fetchone()
        return int(row[0]) if row else 0

    async def owners(self, scim_ids: Sequence[str]) -> dict[str, str]:
        """The Graph user each of these target accounts is linked to (linked ones only)."""
        out: dict[str, str] = {}
        for chunk in _chunks(scim_ids, 900):
            marks = ",".join("?" * len(chunk))
            cur = await self._conn.execute(
                f"SELECT scim_id, graph_id FROM users WHERE scim_id IN ({marks})", chunk
            )
            out.update({r[0]: r[1] for r in await cur.fetchall()})
        return out

    async def user_by_key(self, key: str) -> UserState | None:
        """A managed user by Graph id or (case-insensitively) by userName."""
        row = await (
            await self._conn.execute(
                "SELECT graph_id, scim_id, user_name, digest, attrs, active FROM users "
                "WHERE graph_id=? OR lower(user_name)=lower(?) LIMIT 1",
                (key, key),
            )
        ).fetchone()
        if row is None:
            return None
        return UserState(
            row[0], row[1], row[2], row[3], _json.loads(row[4]) if row[4] else None, bool(row[5])
        )

    # -- provisioning log ---------------------------------------------------------------

    async def log_entries(
        self,
        *,
        run_id: int | None = None,
        status: str | None = None,
        action: str | None = None,
        user: str | None = None,
        since: float | None = None,
        limit: int | None = 100,
        newest: bool = False,
    ) -> list[dict[str, Any]]:
        """Log entries in the order written; with ``newest`` and a ``limit``, the last
        ``limit`` of them (still oldest first), else the first."""
        where, args = [], []
        for clause, value in (
            ("run_id = ?", run_id),
            ("status = ?", status),
            ("action = ?", action),
            ("at >= ?", since),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if user is not None:
            where.append("(graph_id = ? OR lower(user_name) = lower(?))")
            args += [user, user]
        sql = (
            "SELECT id, run_id, page, at, graph_id, user_name, action, status, reason, scim_id, "
            "modified FROM log"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest else " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cur = await self._conn.execute(sql, args)
        rows = await cur.fetchall()
        if newest:
            rows.reverse()
        keys = (
            "id",
            "run_id",
            "page",
            "at",
            "graph_id",
            "user_name",
            "action",
            "status",
            "reason",
            "scim_id",
            "modified",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def prune_log(self, before: float) -> int:
        """Delete provisioning-log rows written before ``before`` (the retention setting)."""
        # Never the rows of an interrupted run: its resume skips the users they record.
        await self._conn.execute(
            "DELETE FROM log WHERE at < ? AND run_id NOT IN "
            "(SELECT id FROM runs WHERE status IN ('running', 'quarantined'))",
            (before,),
        )
        row = await (await self._conn.execute("SELECT changes()")).fetchone()
        return int(row[0]) if row else 0

    async def run_info(self, run_id: int | None = None) -> dict[str, Any] | None:
        """One run as :meth:`runs` shows it (the last one when ``run_id`` is ``None``)."""
        rows = await self.runs(1, run_id=run_id)
        return rows[0] if rows else None

    async def active_managed(self) -> list[tuple[str, str, str | None]]:
        """(graph id, SCIM id, userName) of every linked account bulkprov keeps active."""
        cur = await self._conn.execute(
            "SELECT graph_id, scim_id, user_name FROM users WHERE scim_id IS NOT NULL AND active=1"
        )
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

    async def active_attrs(self) -> list[dict[str, Any]]:
        """The last values sent of every linked account bulkprov keeps active (the seat
        guard counts licence types in them)."""
        cur = await self._conn.execute(
            "SELECT attrs FROM users WHERE scim_id IS NOT NULL AND active=1 AND attrs IS NOT NULL"
        )
        out = []
        for (raw,) in await cur.fetchall():
            attrs = _json.loads(raw)
            if isinstance(attrs, dict):
                out.append(attrs)
        return out

    async def users_fingerprint(self) -> tuple[int, float]:
        """(managed users, last update time): changes whenever a user row is written."""
        row = await (
            await self._conn.execute("SELECT count(*), coalesce(max(updated_at), 0) FROM users")
        ).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    async def logged_since_page(self, run: Run) -> set[str]:
        """Graph ids this run already logged on pages at or past its cursor.

        Those pages were partly durable when the run stopped; on resume their users are
        read again and must not be provisioned, counted or logged twice.
        """
        cur = await self._conn.execute(
            "SELECT graph_id FROM log WHERE run_id=? AND page>=?", (run.id, run.cursor_page)
        )
        return {r[0] for r in await cur.fetchall()}

    async def log_counts(self, run_id: int) -> dict[str, int]:
        cur = await self._conn.execute(
            "SELECT action || ':' || status, count(*) FROM log WHERE run_id=? GROUP BY 1",
            (run_id,),
        )
        return {r[0]: r[1] for r in await cur.fetchall()}

    # -- target index (matching) ---------------------------------------------------------

    async def clear_target_index(self, run: Run | None = None) -> None:
        """Empty the index before listing the target (for ``run``: its listing has begun)."""
        if run is not None:
            run.target_index = 1
            await self._conn.execute("UPDATE runs SET target_indexed=1 WHERE id=?", (run.id,))
        await self._conn.execute("DELETE FROM target_index")

    async def target_index_done(self, run: Run) -> None:
        """The target was listed completely for ``run``: a resume matches against it."""
        run.target_index = 2
        await self._conn.execute("UPDATE runs SET target_indexed=2 WHERE id=?", (run.id,))

    async def add_target_index(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        if rows:
            await self._conn.executemany(
                "INSERT INTO target_index(key, scim_id, resource) VALUES(?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET scim_id=excluded.scim_id, "
                "resource=excluded.resource",
                rows,
            )

    async def lookup_target(self, keys: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for chunk in _chunks(keys, 900):
            marks = ",".join("?" * len(chunk))
            cur = await self._conn.execute(
                f"SELECT key, scim_id, resource FROM target_index WHERE key IN ({marks})", chunk
            )
            for r in await cur.fetchall():
                out[r[0]] = (r[1], _json.loads(r[2]))
        return out


def _chunks(seq: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
