"""What the state says about a job's health: its last completed cycle, its last run, the
actions waiting for approval, the users in escrow, the quarantine.

One read of a few rows, for ``bulkprov status --check`` (the container's HEALTHCHECK, the
Kubernetes probes, a cron wrapper) and for the metrics a sync serves
(``bulkprov_last_success_timestamp_seconds``, ``bulkprov_held_actions``,
``bulkprov_escrowed_users``, ``bulkprov_quarantined``). Judging it is
:mod:`bulkprov.observe.health`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

from bulkprov import _json
from bulkprov.checkpoint.staging import QUARANTINE, LifecycleStore
from bulkprov.checkpoint.store import StateStore


@dataclass(frozen=True, slots=True)
class LastRun:
    id: int
    #: running, quarantined, completed, completed_with_failures (runs.status)
    status: str
    #: new, full or incremental
    kind: str
    started_at: float
    finished_at: float | None
    message: str | None
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class StateHealth:
    #: when the newest completed cycle ended (with or without failed users); None: never
    last_success: float | None
    #: the id of that cycle
    last_success_run: int | None
    #: the newest run, finished or not; None before the first
    last_run: LastRun | None
    #: disables and deletes held behind the accidental-deletion threshold (``approve``)
    held: int
    #: failed users waiting in escrow for their next retry
    escrowed: int
    #: the failure reasons of a quarantine not yet ended by a clean cycle (empty: none)
    quarantine: tuple[str, ...]


async def read_health(store: StateStore) -> StateHealth:
    """The health figures of the state ``store`` holds (a few indexed reads)."""
    c = store._conn
    row = await (
        await c.execute(
            "SELECT id, finished_at FROM runs WHERE status LIKE 'completed%' "
            "ORDER BY id DESC LIMIT 1"
        )
    ).fetchone()
    last_success, last_success_run = (row[1], row[0]) if row else (None, None)
    row = await (
        await c.execute(
            "SELECT id, status, kind, started_at, finished_at, message, counts FROM runs "
            "ORDER BY id DESC LIMIT 1"
        )
    ).fetchone()
    last = (
        LastRun(row[0], row[1], row[2], row[3], row[4], row[5], _json.loads(row[6]))
        if row
        else None
    )
    held = await (await c.execute("SELECT count(*) FROM staged WHERE status='held'")).fetchone()
    escrowed = await (await c.execute("SELECT count(*) FROM escrow")).fetchone()
    saved = await LifecycleStore(store).get(QUARANTINE)
    reasons = tuple(str(r) for r in _json.loads(saved)) if saved else ()
    return StateHealth(
        last_success, last_success_run, last, int(held[0]), int(escrowed[0]), reasons
    )
