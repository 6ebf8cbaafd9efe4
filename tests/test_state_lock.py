"""The state lock (bulkprov/checkpoint/lock.py): one sync per state database, held across
processes, never waited for, released when its holder exits however it exits."""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkprov.checkpoint.lock import StateLock
from bulkprov.errors import StateError

BULKPROV = Path(__file__).resolve().parent.parent / "bulkprov"

_HOLDER = """
import sys
from collections.abc import Iterator
from pathlib import Path
from bulkprov.checkpoint.lock import StateLock
with StateLock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""

#: how bulkprov 0.1 held it (fcntl.flock): a sync of the old version still running
_OLD_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
sys.stdin.readline()
"""


@contextlib.contextmanager
def _hold(code: str, state: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding the lock until the block ends (then it is killed)."""
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "held\n"
            yield proc
        finally:
            proc.kill()


def test_lock_held_by_another_process_refuses_at_once_and_frees_when_it_ends(tmp_path):
    state = tmp_path / "s.db"
    with _hold(_HOLDER, state) as holder:
        with pytest.raises(StateError) as info, StateLock(state):
            pytest.fail("took a lock another process holds")
        assert str(info.value) == (
            f"another bulkprov sync is using {state} (its lock is held); wait for it to finish"
        )
        # the refused one did not erase the holder's pid
        assert (tmp_path / "s.db.lock").read_text() == f"{holder.pid}\n"
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "released\n"
    with StateLock(state):
        assert (tmp_path / "s.db.lock").read_text() == f"{os.getpid()}\n"


def test_lock_of_a_killed_holder_is_free(tmp_path):
    """SIGKILL runs no cleanup: the OS drops the lock, nothing stale is left behind."""
    state = tmp_path / "s.db"
    with _hold(_HOLDER, state) as holder:
        holder.send_signal(signal.SIGKILL)
    with StateLock(state):
        pass


def test_lock_held_by_an_older_bulkprov_refuses(tmp_path):
    """bulkprov 0.1 took the same file with fcntl.flock: the two versions exclude each other."""
    state = tmp_path / "s.db"
    with (
        _hold(_OLD_HOLDER, state),
        pytest.raises(StateError, match="its lock is held"),
        StateLock(state),
    ):
        pytest.fail("took a lock an older bulkprov holds")


def test_lock_is_released_on_exit_even_by_an_exception(tmp_path):
    state = tmp_path / "deep" / "s.db"  # the folder is created
    with pytest.raises(RuntimeError), StateLock(state):
        with pytest.raises(StateError), StateLock(state):
            pass
        raise RuntimeError("the sync failed")
    with StateLock(state):
        pass
    assert (tmp_path / "deep" / "s.db.lock").stat().st_mode & 0o777 == 0o600


def test_no_module_of_bulkprov_locks_files_itself():
    """fcntl is POSIX-only and msvcrt Windows-only: file locks come from filelock."""
    offenders = []
    for path in BULKPROV.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(BULKPROV)}: {n}" for n in names if n in {"fcntl", "msvcrt"}
            ]
    assert offenders == []
