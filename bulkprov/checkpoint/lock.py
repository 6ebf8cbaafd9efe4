"""The state's lock file: one sync (or apply, approve, provision) per state database at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from bulkprov.errors import StateError


class StateLock:
    """An exclusive lock beside the state database: one sync per state at a time."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StateError(
                f"another bulkprov sync is using {self.path.with_suffix('')} "
                "(its lock is held); wait for it to finish"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
