"""The run's live figures (what the progress display, the report and the metrics read) and
its result.

Only the checkpoint writer (:mod:`bulkprov.pipeline.writer`) counts users, through
:func:`count`, as their outcomes arrive; the end-of-cycle phases
(:mod:`~bulkprov.pipeline.deprovision`, :mod:`~bulkprov.pipeline.groups`) count through
:func:`bump`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from anyio.streams.memory import MemoryObjectSendStream

from bulkprov.checkpoint.health import StateHealth
from bulkprov.checkpoint.store import UserWrite
from bulkprov.pipeline.messages import WorkItem
from bulkprov.scim.client import ScimClient

#: the run count of operations ``bulkprov apply``'s guards held back (users, sweep disables,
#: groups): not sent, not forgotten — the cycle's watermarks do not advance past them
HELD_BACK = "held back"

COUNT_KEYS = (
    "created",
    "updated",
    "linked",
    "disabled",
    "deleted",
    "unchanged",
    "skipped",
    "failed",
    "warning",
    "staged",
    "held",
    HELD_BACK,
)


@dataclass(slots=True)
class RunStats:
    """Live figures of the run, read by the progress display."""

    run_id: int = 0
    resumed: bool = False
    started: float = field(default_factory=time.monotonic)
    processed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    pages: int = 0
    phase: str = "starting"
    scim: ScimClient | None = None
    #: the work stream's send side while the run provisions (metrics read its depth)
    work: MemoryObjectSendStream[WorkItem] | None = None
    #: provisioning-log rows removed by the retention setting when the run started
    pruned: int = 0
    #: users a full read will go through (Graph ``users/$count``); None when unknown
    total: int | None = None
    #: profile "zoom": the seat pools' figures now (pool → used, left, cap, held)
    seat_figures: Callable[[], dict[str, dict[str, int]]] | None = None
    #: the state's health figures (last completed cycle, held actions, escrow), read when
    #: the run starts and again when it ends, for the metrics
    health: StateHealth | None = None

    @property
    def queue_depth(self) -> int:
        """Users decided and waiting for a SCIM worker."""
        return self.work.statistics().current_buffer_used if self.work is not None else 0

    @property
    def requests(self) -> int:
        return self.scim.stats.requests if self.scim else 0

    @property
    def throttled(self) -> int:
        return self.scim.stats.throttled if self.scim else 0


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: int
    status: str
    counts: dict[str, int]
    seconds: float
    requests: int
    throttled: int
    resumed: bool
    message: str | None = None

    @property
    def users(self) -> int:
        return sum(self.counts.values())


def count(stats: RunStats, write: UserWrite) -> None:
    """Count one user's outcome under its key of :data:`COUNT_KEYS`."""
    stats.processed += 1
    if write.status == "failure":
        key = "failed"
    elif write.status == "warning":
        # done, but not all of it as asked (Zoom kept a value, renamed a userType…):
        # Entra's "Warning" status; the reason says what
        key = "warning"
    elif write.held_back:
        key = HELD_BACK
    elif write.wait == "license":
        key = "staged"  # held for want of a seat (LicenseLimitExceeded)
    elif write.stage is not None:
        key = "staged"
    elif write.action == "create":
        key = "created"
    elif write.action == "update":
        key = "updated"
    elif write.action == "disable":
        key = "disabled"
    elif write.action == "link":
        key = "linked"
    elif write.reason == "unchanged":
        key = "unchanged"
    else:
        key = "skipped"
    stats.counts[key] += 1


def bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    """Add ``n`` to a count the end-of-cycle phases keep (deprovisioning, groups)."""
    if n:
        counts[key] = counts.get(key, 0) + n
