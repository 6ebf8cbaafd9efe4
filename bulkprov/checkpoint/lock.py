"""The state's lock file: one sync (or apply, approve, provision) per state database at a time.

The lock is the ``filelock`` package's native lock (``flock`` on POSIX, ``msvcrt.locking``
on Windows): the operating system drops it when the holder exits, however it exits, so a
killed sync never leaves a stale lock behind. It is taken without waiting: a second sync on
the same state stops at once with :class:`~bulkprov.errors.StateError`.

The holder writes its pid into the lock file (for an admin wondering which process holds
it) through filelock's ``on_acquired`` hook, which runs on the locked descriptor before the
acquisition completes; filelock never truncates the file of a lock it does not hold, so a
waiter cannot erase the holder's pid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

import filelock

from bulkprov.errors import StateError


def _write_pid(fd: int) -> None:
    """Replace the lock file's content with this process's pid (the lock is held)."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode())


class StateLock:
    """An exclusive lock beside the state database: one sync per state at a time."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._lock = filelock.FileLock(
            self.path,
            mode=0o600,
            blocking=False,
            # no soft (marker-file) fallback: only a lock the OS releases when the holder dies
            fallback_to_soft=False,
            on_acquired=_write_pid,
        )

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout as exc:
            raise StateError(
                f"another bulkprov sync is using {self.path.with_suffix('')} "
                "(its lock is held); wait for it to finish"
            ) from exc
        return self

    @classmethod
    def held(cls, state_path: Path) -> bool:
        """Whether a bulkprov process holds the lock now (a sync in progress): the lock cannot
        be had. A lock this probe gets is let go at once, so a sync starting that very instant
        is kept out for no more than that."""
        path = cls(state_path).path
        if not path.exists():
            return False
        probe = filelock.FileLock(path, blocking=False, fallback_to_soft=False)
        try:
            probe.acquire()
        except filelock.Timeout:
            return True
        probe.release()
        return False

    def __exit__(self, *exc: object) -> None:
        if self._lock.is_locked:
            self._lock.release()
