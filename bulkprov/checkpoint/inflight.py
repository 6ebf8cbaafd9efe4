"""Creates in flight: the users whose POST may have landed without a durable outcome.

A killed run loses the outcomes it had not committed: the requests in flight, and the
answers the checkpoint writer held for its next batch (at most ``state.commit_every``, at
most ``state.commit_seconds`` old). A user among them may have been created in the target
without a link in the state, and a resumed run that POSTed it again would create a second
account where the target does not refuse duplicates. Listing the whole target to find them
(what a resume did before) costs ``users / list_page_size`` requests before the first write:
at 1M users and Zoom's 60 requests/s, minutes.

Instead, a SCIM worker writes the user's Graph id into a slot of a small file next to the
state database (``<state>.inflight``) just before it POSTs, and the checkpoint writer frees
the slot once the user's outcome is committed. The file holds only the ids whose outcome
is not durable yet (at most ``commit_every`` + the streams' buffers, whatever the size of
the tenant), and a slot is written with one ``pwrite``: the kernel keeps it across a
SIGKILL of the process. A run starting after an interrupted one reads the ids left in the
file (:meth:`InflightLog.leftover`): those users, and only those, are looked up by their
matching attributes before a POST (``GET /Users?filter=…``, one request each), while every
other user is written at once.

The file holds Graph object ids only, no names or secrets; it is created 0600 like the
state database. A run that completes empties it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

#: bytes per slot: a 2-byte length, then the UTF-8 id (Graph ids are 36; at most 256 bytes
#: pass :func:`bulkprov.pipeline.source_checks.check_source`), zero padded
SLOT = 260
_LENGTH = struct.Struct("<H")


def inflight_path(state: Path) -> Path:
    """Where the creates in flight of the state database ``state`` are kept."""
    return state.with_name(state.name + ".inflight")


class InflightLog:
    """The slots file of one run's attempt (see the module docstring).

    Args:
        path: the file (:func:`inflight_path`).
        slots: slots to start with (the file grows when every slot is taken).
        carried: ids left by the interrupted attempt before this one: written first and
            kept until their own outcome is committed (this attempt may stop before it
            reaches them).
    """

    def __init__(self, path: Path, slots: int, carried: Iterable[str] = ()) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fd = fd
        self._size = 0
        self._free: list[int] = []
        #: Graph id → its slot, for the ids whose outcome is not committed yet
        self._slot: dict[str, int] = {}
        self._grow(max(1, slots))
        for graph_id in carried:
            self.mark(graph_id)

    @staticmethod
    def leftover(path: Path) -> set[str]:
        """The ids a previous attempt left in ``path``: maybe created, never recorded."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return set()
        out: set[str] = set()
        for start in range(0, len(data) - SLOT + 1, SLOT):
            (length,) = _LENGTH.unpack_from(data, start)
            if 0 < length <= SLOT - _LENGTH.size:
                raw = data[start + _LENGTH.size : start + _LENGTH.size + length]
                out.add(raw.decode("utf-8", "replace"))
        return out

    def _grow(self, slots: int) -> None:
        first = self._size
        self._size += slots
        os.ftruncate(self._fd, self._size * SLOT)
        self._free.extend(range(self._size - 1, first - 1, -1))  # lowest slots first

    def mark(self, graph_id: str) -> None:
        """Before a POST: ``graph_id`` may be created from now on."""
        if graph_id in self._slot:
            return
        raw = graph_id.encode("utf-8")[: SLOT - _LENGTH.size]
        if not self._free:
            self._grow(self._size)
        slot = self._free.pop()
        os.pwrite(self._fd, _LENGTH.pack(len(raw)) + raw, slot * SLOT)
        self._slot[graph_id] = slot

    def release(self, graph_ids: Iterable[str]) -> None:
        """After a commit: these users' outcomes are durable; their slots may be reused.

        The slot is only freed in memory: its id stays in the file until overwritten, and
        a user whose outcome is durable is linked (or logged failed), so a later read that
        finds it again only costs that user one lookup if it is created again.
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
        if completed:
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
