"""Escrow: users whose provisioning failed are retried in later runs, less and less often.

Entra's schedule (facts.md §2.4, QUARANTINE): "the first retry will happen in 6 hours. The
second retry happens 12 hours after the first failure. The third retry happens 24 hours after
the first failure. There will be retries every 24 hours after the 3rd retry. The retries will
go on for 28 days after the first failure after which the escrow entry is removed".

Until its next retry is due, an escrowed user is skipped (logged as Skipped with the time of
the next retry) instead of being sent again on every run; a success, or the user leaving the
work (out of scope, unchanged), clears the entry. After ``give_up_days`` the entry *expires*:
no more automatic retries, only ``bulkprov retry-failed`` (which retries every entry now).

This module is pure (no I/O): the store keeps the rows, the pipeline asks :func:`is_due`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class EscrowPolicy:
    """When the ``n``-th retry of a failed user is due, counted from its first failure.

    Attributes:
        delays_hours: the first retries, in hours after the first failure (Entra: 6, 12, 24).
        then_every_hours: the interval after those (Entra: 24).
        give_up_days: no automatic retry is scheduled past this (Entra: 28).
    """

    delays_hours: tuple[float, ...] = (6.0, 12.0, 24.0)
    then_every_hours: float = 24.0
    give_up_days: float = 28.0

    def next_retry(self, first_failed: float, failures: int) -> float | None:
        """When to retry after the ``failures``-th failure (1-based); ``None``: expired."""
        n = failures - 1  # retries already made
        if n < len(self.delays_hours):
            offset = self.delays_hours[n] * HOUR
        else:
            last = self.delays_hours[-1] * HOUR if self.delays_hours else 0.0
            offset = last + (n - len(self.delays_hours) + 1) * self.then_every_hours * HOUR
        if offset > self.give_up_days * DAY:
            return None
        return first_failed + offset


@dataclass(frozen=True, slots=True)
class EscrowEntry:
    """One escrowed user, as the store holds it."""

    graph_id: str
    user_name: str | None
    first_failed: float
    failures: int
    #: ``None``: expired (only ``retry-failed`` retries it)
    next_retry: float | None
    reason: str | None

    def is_due(self, now: float | None = None) -> bool:
        """True when this run may retry the user."""
        if self.next_retry is None:
            return False
        return (time.time() if now is None else now) >= self.next_retry

    def deferral(self) -> str:
        """The Skipped reason logged while the user waits."""
        if self.next_retry is None:
            when = "no automatic retry left (run `bulkprov retry-failed`)"
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.next_retry))
            when = f"next retry at {stamp} (or now: `bulkprov retry-failed`)"
        return f"escrowed after {self.failures} failure(s): {when}; last: {self.reason or '?'}"
