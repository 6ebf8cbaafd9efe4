"""The SQLite state: migrations, refusals, idempotent batches, the resume cursor."""

from __future__ import annotations

import os
import sqlite3
import stat
import time

import anyio
import pytest

from bulkprov.checkpoint.store import SCHEMA_VERSION, StateStore, UserWrite
from bulkprov.errors import StateError


async def test_new_database_is_private_and_wal(tmp_path):
    path = tmp_path / "s.sqlite3"
    async with await StateStore.open(path):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )


async def test_newer_schema_is_refused_and_untouched(tmp_path):
    path = tmp_path / "s.sqlite3"
    async with await StateStore.open(path):
        pass
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="newer bulkprov"):
        await StateStore.open(path)
    assert path.read_bytes() == before


async def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(StateError, match="not a bulkprov state database"):
        await StateStore.open(path)


async def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "bad.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    before = path.read_bytes()
    with pytest.raises(StateError):
        await StateStore.open(path)
    assert path.read_bytes() == before


async def test_batches_are_idempotent_and_cursor_advances(tmp_path):
    async with await StateStore.open(tmp_path / "s.sqlite3") as store:
        run = await store.start_run()
        w = UserWrite(
            "g1",
            "a@x.com",
            "create",
            "success",
            scim_id="s1",
            digest="d",
            attrs=b'{"userName":"a@x.com"}',
            active=True,
            link=True,
        )
        await store.write_batch(run, [(0, w)], {"created": 1}, ("http://next", 1))
        await store.write_batch(run, [(0, w)], {"created": 1}, None)
        users = await store.lookup_users(["g1", "g2"])
        assert list(users) == ["g1"]
        assert users["g1"].scim_id == "s1" and users["g1"].attrs == {"userName": "a@x.com"}
        assert await store.user_count() == 1
        assert len(await store.log_entries(run_id=run.id)) == 2
        last = await store.last_run()
        assert last is not None and last.cursor == "http://next" and last.cursor_page == 1


async def test_unfinished_run_resumes_and_finished_does_not(tmp_path):
    path = tmp_path / "s.sqlite3"
    async with await StateStore.open(path) as store:
        run = await store.start_run()
        await store.write_batch(run, [], {"created": 5}, ("http://p2", 2))
    async with await StateStore.open(path) as store:
        again = await store.start_run()
        assert again.id == run.id and again.resumes == 1
        assert again.cursor == "http://p2" and again.counts == {"created": 5}
        await store.finish_run(again, "completed", {"created": 5})
        assert await store.has_completed_run()
        fresh = await store.start_run()
        assert fresh.id != run.id and fresh.cursor is None


async def test_failure_write_keeps_existing_link(tmp_path):
    async with await StateStore.open(tmp_path / "s.sqlite3") as store:
        run = await store.start_run()
        ok = UserWrite(
            "g1", "a", "create", "success", scim_id="s1", digest="d", attrs=b"{}", link=True
        )
        bad = UserWrite("g1", "a", "update", "failure", reason="400 bad")
        await store.write_batch(run, [(0, ok)], {}, None)
        await store.write_batch(run, [(0, bad)], {}, None)
        assert (await store.lookup_users(["g1"]))["g1"].scim_id == "s1"
        failures = await store.log_entries(status="failure")
        assert failures[0]["reason"] == "400 bad"


async def test_target_index_lookup(tmp_path):
    async with await StateStore.open(tmp_path / "s.sqlite3") as store:
        await store.add_target_index([("userName\x00a@x.com", "s1", b'{"id":"s1"}')])
        assert await store.lookup_target(["userName\x00a@x.com", "nope"]) == {
            "userName\x00a@x.com": ("s1", {"id": "s1"})
        }
        await store.clear_target_index()
        assert await store.lookup_target(["userName\x00a@x.com"]) == {}


@pytest.mark.parametrize("delay", [0.0, 0.0005, 0.002])
async def test_a_batch_cancelled_midway_leaves_no_open_transaction(tmp_path, delay):
    """A cancelled checkpoint write is finished before the cancellation lands.

    aiosqlite runs each statement in its own thread: cancelling the await does not stop the
    statement. A write cancelled just after its BEGIN used to leave the transaction open, so
    the shielded final flush then failed with "cannot start a transaction within a
    transaction" (seen in CI when a Graph error cancelled the writer mid-commit).
    """
    async with await StateStore.open(tmp_path / "s.sqlite3") as store:
        run = await store.start_run()
        rows = [
            (
                0,
                UserWrite(
                    f"g{i}",
                    f"u{i}@x.com",
                    "create",
                    "success",
                    scim_id=f"s{i}",
                    digest="d",
                    attrs=b"{}",
                    active=True,
                    link=True,
                ),
            )
            for i in range(2000)
        ]
        started = time.monotonic()
        with anyio.move_on_after(delay) as scope:
            await store.write_batch(run, rows, {"created": 2000}, ("http://p1", 1))
            await anyio.sleep(5)  # the cancellation still lands, right after the write
        assert scope.cancelled_caught and time.monotonic() - started < 4
        assert not store._conn.in_transaction
        await store.write_batch(run, rows[:1], {"created": 2000}, ("http://p2", 2))
        last = await store.last_run()
        assert last is not None and last.cursor == "http://p2"
        assert await store.user_count() == 2000


def test_inflight_file_keeps_what_a_kill_would_lose(tmp_path):
    """Issue 20 item 15: ids written before a POST, outcomes when answered; a slot freed
    after the commit is reused; the file grows when full; a completed run empties it."""
    from bulkprov.checkpoint.inflight import InflightLog, inflight_path

    path = inflight_path(tmp_path / "s.db")
    assert path.name == "s.db.inflight" and InflightLog.leftover(path) == {}
    log = InflightLog(path, slots=2, carried=["old"])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    log.mark("a")
    log.mark("b")  # the file grows: three ids in flight in two slots
    log.answered("a", b'{"s":"scim-a"}')
    assert InflightLog.leftover(path) == {"old": None, "a": b'{"s":"scim-a"}', "b": None}
    log.release(["a"])
    log.mark("c")  # takes a's slot: its old outcome is cleared with it
    assert InflightLog.leftover(path) == {"old": None, "c": None, "b": None}
    log.answered("zzz-not-marked", b"{}")  # nothing to attach it to
    log.answered("b", b"x" * 5000)  # too large for a slot: looked up after a kill instead
    assert InflightLog.leftover(path)["b"] is None
    assert len(log) == 3
    log.close(completed=False)
    assert set(InflightLog.leftover(path)) == {"old", "b", "c"}
    again = InflightLog(path, slots=4, carried=["b"])
    assert InflightLog.leftover(path) == {"b": None}
    again.close(completed=True)
    assert InflightLog.leftover(path) == {} and path.stat().st_size == 0
