"""Retry policy and the shared pause gate, used by both the Graph and the SCIM clients.

Retries are bounded twice, by attempts and by total time, and apply only to errors whose
class says ``retryable``. A ``Retry-After`` from either service pauses *every* task that
talks to it (Graph's throttling guide: "Wait the number of seconds specified in the
Retry-After header"; facts.md §7.5), not just the one that got the 429.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import anyio


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before attempt ``n + 1`` and when to give up.

    Attributes:
        max_attempts: attempts in all, the first included.
        max_seconds: give up when the next wait would end past this many seconds.
        base: the first backoff wait (seconds) when no Retry-After was given.
        cap: the longest single backoff wait.
        jitter: fraction of each backoff wait that is randomised (0 = none).
    """

    max_attempts: int = 8
    max_seconds: float = 300.0
    base: float = 0.25
    cap: float = 30.0
    jitter: float = 0.5

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return retry_after
        wait = min(self.cap, self.base * 2.0 ** (attempt - 1))
        if self.jitter:
            wait *= 1 - self.jitter * random.random()
        return wait

    def gives_up(self, attempt: int, started: float, wait: float) -> bool:
        return attempt >= self.max_attempts or (
            time.monotonic() - started + wait > self.max_seconds
        )


#: for tests: one attempt, no waiting
NO_RETRY = RetryPolicy(max_attempts=1, max_seconds=0.001)


class PauseGate:
    """A shared "not before" time: every caller of :meth:`wait` sleeps until it passes."""

    def __init__(self) -> None:
        self._resume_at = 0.0
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        if until > self._resume_at:
            self._resume_at = until
            self.pauses += 1

    @property
    def paused(self) -> bool:
        return time.monotonic() < self._resume_at

    async def wait(self) -> None:
        while True:
            left = self._resume_at - time.monotonic()
            if left <= 0:
                return
            await anyio.sleep(left)
