"""Creates in flight: the users whose POST may have landed without a durable outcome.

A killed run loses the outcomes it had not committed: the requests in flight, and the
answers the checkpoint writer held for its next batch (up to ``state.commit_seconds`` of
work: thousands of users at full speed). A user among them may have been created in the
target without a link in the state, and a resumed run that POSTed it again would create a
second account where the target does not refuse duplicates. Listing the whole target to
find them (what a resume did before) costs ``users / list_page_size`` requests before the
first write: at 1M users and Zoom's 60 requests/s, minutes.

Instead, each create leaves a trace in a small file next to the state database
(``<state>.inflight``), one fixed-size slot per user whose outcome is not committed yet:

* a SCIM worker writes the user's Graph id into a free slot just before its POST;
* when the target answers with the new account, the worker adds the outcome to the slot
  (SCIM id, userName, digest and values sent: what the checkpoint would record);
* once the checkpoint writer has committed the outcome, the slot is free again.

The file is mapped shared (``mmap``): a slot written is in the kernel's page cache at
once, which a SIGKILL of the process does not lose, for the cost of a memory copy. The
file holds only the users whose outcome is not durable (at most ``commit_every`` plus the
streams' buffers, whatever the size of the tenant). A run starting after an interrupted
one reads what is left (:meth:`InflightLog.leftover`): an answered create is recorded in
the state as it would have been (no request), and only the POSTs that were still unanswered
at the kill, at most ``target.concurrency`` (a Bulk request's operations with
``target.bulk``), are looked up by their matching attributes before they are sent again.

The file holds Graph ids and what the state holds for those users (no secrets); it is
created 0600 like the state database (checkpoint/files.py). A run that completes empties it.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable
from pathlib import Path

from bulkprov.checkpoint.files import PRIVATE_FILE

#: bytes per slot: the id (2-byte length, then at most 256 UTF-8 bytes: what
#: :func:`bulkprov.pipeline.source_checks.check_source` lets through), then the answered
#: outcome (2-byte length, then JSON), zero padded. An outcome too large for its slot is
#: not kept: that user is looked up after a kill instead.
SLOT = 1024
_ID = 258
_LENGTH = struct.Struct("<H")
_MAX_ID = _ID - _LENGTH.size
_MAX_RECORD = SLOT - _ID - _LENGTH.size


def inflight_path(state: Path) -> Path:
    """Where the creates in flight of the state database ``state`` are kept."""
    return state.with_name(state.name + ".inflight")


class InflightLog:
    """The slots file of one attempt of a run (see the module docstring).

    Args:
        path: the file (:func:`inflight_path`).
        slots: slots to start with (the file grows when every slot is taken).
        carried: ids an interrupted attempt left unanswered: kept in the file until this
            attempt commits their outcome (it may stop again before it reaches them).
    """

    def __init__(self, path: Path, slots: int, carried: Iterable[str] = ()) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        try:  # whatever the umask, and a file left looser (a copy, an older bulkprov)
            os.fchmod(self._fd, PRIVATE_FILE)
        except BaseException:
            os.close(self._fd)
            raise
        self._map: mmap.mmap | None = None
        self._size = 0
        self._free: list[int] = []
        #: Graph id → its slot, for the ids whose outcome is not committed yet
        self._slot: dict[str, int] = {}
        self._grow(max(1, slots))
        for graph_id in carried:
            self.mark(graph_id)

    @staticmethod
    def leftover(path: Path) -> dict[str, bytes | None]:
        """What an interrupted attempt left: Graph id → its answered outcome (JSON), or
        ``None`` for a POST that may have landed, unanswered."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        out: dict[str, bytes | None] = {}
        for start in range(0, len(data) - SLOT + 1, SLOT):
            (length,) = _LENGTH.unpack_from(data, start)
            if not 0 < length <= _MAX_ID:
                continue
            graph_id = data[start + 2 : start + 2 + length].decode("utf-8", "replace")
            (size,) = _LENGTH.unpack_from(data, start + _ID)
            record = None
            if 0 < size <= _MAX_RECORD:
                record = data[start + _ID + 2 : start + _ID + 2 + size]
            if record is not None or graph_id not in out:
                out[graph_id] = record
        return out

    def _grow(self, slots: int) -> None:
        first = self._size
        self._size += slots
        os.ftruncate(self._fd, self._size * SLOT)
        if self._map is not None:
            self._map.close()
        self._map = mmap.mmap(self._fd, self._size * SLOT)
        self._free.extend(range(self._size - 1, first - 1, -1))  # lowest slots first

    def mark(self, graph_id: str) -> None:
        """Before a POST: ``graph_id``'s account may exist from now on."""
        if graph_id in self._slot:
            return
        raw = graph_id.encode("utf-8")
        if len(raw) > _MAX_ID:
            raw = raw[:_MAX_ID]
        if not self._free:
            self._grow(self._size)
        slot = self._free.pop()
        at = slot * SLOT
        assert self._map is not None
        # an empty outcome first (a reused slot's old one goes), then the id, its length last
        self._map[at + _ID : at + _ID + 2] = b"\0\0"
        self._map[at + 2 : at + 2 + len(raw)] = raw
        self._map[at : at + 2] = _LENGTH.pack(len(raw))
        self._slot[graph_id] = slot

    def answered(self, graph_id: str, record: bytes) -> None:
        """The POST was answered with a new account: keep what the checkpoint will record."""
        slot = self._slot.get(graph_id)
        if slot is not None and len(record) <= _MAX_RECORD and self._map is not None:
            at = slot * SLOT + _ID
            self._map[at + 2 : at + 2 + len(record)] = record
            self._map[at : at + 2] = _LENGTH.pack(len(record))

    def release(self, graph_ids: Iterable[str]) -> None:
        """After a commit: these users' outcomes are durable; their slots may be reused.

        A slot is freed in memory only: what it held stays in the file until the slot is
        reused, and a run that reads it later finds the user linked (nothing to do).
        """
        slots = self._slot
        if not slots:
            return
        for graph_id in graph_ids:
            slot = slots.pop(graph_id, None)
            if slot is not None:
                self._free.append(slot)

    def __len__(self) -> int:
        return len(self._slot)

    def close(self, *, completed: bool) -> None:
        """Close the file; a completed run leaves nothing in flight, so it is emptied."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if completed:
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
