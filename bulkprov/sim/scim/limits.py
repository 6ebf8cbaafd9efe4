"""The shapes of rate limiter a SCIM target may count requests with, without I/O.

Zoom does not document how its per-second limits are counted (facts.md §6.6), and other SaaS
targets use every shape, so the simulator offers the common ones. Each is a deterministic
function of the arrival time ``now`` (seconds, any monotonic origin): :meth:`take` admits the
request (``None``) or answers how long until one would be admitted (the ``Retry-After`` of a
429). Rejected requests consume nothing.

=========== ==========================================================================
shape       what it allows at ``rate`` per second
=========== ==========================================================================
``bucket``  token bucket: ``burst`` tokens, refilled continuously at ``rate`` (``burst``
            1 is strict spacing: no two requests closer than ``1/rate``)
``gcra``    the generic cell rate algorithm (ATM's, used by redis-cell and many API
            gateways): a theoretical arrival time that moves ``1/rate`` per request,
            with a tolerance of ``burst - 1`` intervals. The same admissions as a
            token bucket of ``burst``, computed from one timestamp
``fixed``   fixed one-second windows (``window`` seconds) of ``rate × window`` requests,
            counted from the window's start: ``2 × rate`` can pass around a boundary
``sliding`` a sliding log: at most ``rate × window`` requests in any ``window`` seconds
=========== ==========================================================================
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

__all__ = ["SHAPES", "FixedWindow", "Gcra", "Limiter", "SlidingWindow", "TokenBucket", "limiter"]

SHAPES: tuple[str, ...] = ("bucket", "gcra", "fixed", "sliding")


class Limiter(Protocol):
    """One target-wide limiter: every SCIM request is counted by it."""

    shape: str
    rate: float
    burst: float

    def take(self, now: float) -> float | None:
        """Admit a request arriving at ``now`` (``None``) or say how long until one would be
        admitted (seconds, > 0)."""
        ...


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; a request takes one."""

    shape = "bucket"

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float) -> float | None:
        tokens = min(self.burst, self._tokens + max(0.0, now - self._last) * self.rate)
        self._last = max(self._last, now)
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return None
        self._tokens = tokens
        return (1.0 - tokens) / self.rate


class Gcra:
    """GCRA (virtual scheduling): admit when ``now >= tat - tolerance``, then
    ``tat = max(tat, now) + 1/rate``; ``tolerance = (burst - 1) / rate``."""

    shape = "gcra"

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1.0) / rate
        self._tat = now

    def take(self, now: float) -> float | None:
        tat = max(self._tat, now)
        early = tat - self._tolerance - now
        # a hair of slack for float rounding: "exactly on time" is on time
        if early <= 1e-9:
            self._tat = tat + self._interval
            return None
        return early


class FixedWindow:
    """At most ``rate × window`` requests per window; windows start every ``window``
    seconds of the clock (their phase is arbitrary to the client, as a server's is)."""

    shape = "fixed"

    def __init__(self, rate: float, burst: float, now: float, window: float = 1.0) -> None:
        self.rate = rate
        self.burst = burst
        self.window = window
        self.limit = max(1, math.floor(rate * window + 1e-9))
        self._index = math.floor(now / window)
        self._count = 0

    def take(self, now: float) -> float | None:
        index = math.floor(now / self.window)
        if index != self._index:
            self._index, self._count = index, 0
        if self._count < self.limit:
            self._count += 1
            return None
        return (index + 1) * self.window - now


class SlidingWindow:
    """At most ``rate × window`` admitted requests in any ``window`` seconds (a log of
    admission times)."""

    shape = "sliding"

    def __init__(self, rate: float, burst: float, now: float, window: float = 1.0) -> None:
        self.rate = rate
        self.burst = burst
        self.window = window
        self.limit = max(1, math.floor(rate * window + 1e-9))
        self._log: deque[float] = deque()

    def take(self, now: float) -> float | None:
        log = self._log
        edge = now - self.window
        while log and log[0] <= edge:
            log.popleft()
        if len(log) < self.limit:
            log.append(now)
            return None
        return log[0] + self.window - now


def limiter(shape: str, rate: float, burst: float | None, now: float) -> Limiter:
    """A limiter of ``shape`` (one of :data:`SHAPES`) at ``rate`` per second.

    ``burst``: bucket or GCRA capacity (default one second's worth, at least 1); the window
    shapes ignore it (their burst is the window's count).
    """
    if not rate > 0 or math.isinf(rate):
        raise ValueError("rate_limit must be a positive number")
    cap = float(burst) if burst is not None else max(1.0, rate)
    if cap < 1:
        raise ValueError("burst must be at least 1")
    if shape == "bucket":
        return TokenBucket(rate, cap, now)
    if shape == "gcra":
        return Gcra(rate, cap, now)
    if shape == "fixed":
        return FixedWindow(rate, cap, now)
    if shape == "sliding":
        return SlidingWindow(rate, cap, now)
    raise ValueError(f"unknown limiter {shape!r}; expected one of {list(SHAPES)}")
