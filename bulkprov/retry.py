"""Retry policy, the shared pause gate and the ``Retry-After`` reader, used by both the Graph
and the SCIM clients.

Retries are bounded twice, by attempts and by total time, and apply only to errors whose
class says ``retryable``. A ``Retry-After`` from either service pauses *every* task that
talks to it (Graph's throttling guide: "Wait the number of seconds specified in the
Retry-After header"; facts.md §7.5), not just the one that got the 429.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass
from typing import Protocol

import anyio


class Clock(Protocol):
    """Where the retry loops, the pause gate and the pacer's caller read the time and wait.

    ``now()`` is monotonic seconds (any origin); ``sleep(seconds)`` returns after that much
    of the same clock's time has passed.
    """

    def now(self) -> float: ...

    async def sleep(self, seconds: float, /) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``anyio.sleep`` themselves, unwrapped.

    Static methods, so ``SYSTEM_CLOCK.now`` *is* ``time.monotonic``: a client that keeps
    ``clock.now`` and ``clock.sleep`` pays nothing for the indirection on its hot path.
    """

    __slots__ = ()
    now = staticmethod(time.monotonic)
    sleep = staticmethod(anyio.sleep)


#: the default clock of every client, gate and policy
SYSTEM_CLOCK: Clock = SystemClock()


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

    def gives_up(
        self, attempt: int, started: float, wait: float, clock: Clock = SYSTEM_CLOCK
    ) -> bool:
        """True when attempt ``attempt`` was the last, or waiting ``wait`` more seconds would
        end past ``max_seconds`` from ``started`` (a ``clock.now()`` reading)."""
        return attempt >= self.max_attempts or (clock.now() - started + wait > self.max_seconds)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds (fractions allowed, as
    Graph sends ``2.128``) or an HTTP date (against ``now``, wall-clock seconds: the system's
    ``time.time()`` by default). ``None`` when absent or unreadable; at most an hour.

    Here, below both clients, because SCIM and Graph read the header alike.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, min(seconds, 3600.0))


#: for tests: one attempt, no waiting
NO_RETRY = RetryPolicy(max_attempts=1, max_seconds=0.001)


class PauseGate:
    """A shared "not before" time: every caller of :meth:`wait` sleeps until it passes.

    ``clock``: whose time the pause is measured in (the client's own clock).
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._resume_at = 0.0
        self.pauses = 0
        # kept bound: wait() runs before every request
        self._now = clock.now
        self._sleep = clock.sleep

    def pause(self, seconds: float) -> None:
        until = self._now() + seconds
        if until > self._resume_at:
            self._resume_at = until
            self.pauses += 1

    @property
    def paused(self) -> bool:
        return self._now() < self._resume_at

    async def wait(self) -> None:
        while True:
            left = self._resume_at - self._now()
            if left <= 0:
                return
            await self._sleep(left)
