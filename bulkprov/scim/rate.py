"""The request pacer and its adaptive (AIMD) rate, without I/O.

Zoom documents a per-account rate limit (Business+ about 60–80 requests/s, shared by every
app of the account) and may answer 429 *without* ``Retry-After`` (facts.md §6.5). A fixed
client-side limit is then either too low (slow) or too high (a stream of 429s). The
:class:`RatePacer` finds the real limit by itself, like TCP's congestion control:

* **unbounded start** (no ceiling configured): requests are not paced until the first 429;
  the first rate is then the rate actually achieved in the last second, times ``decrease``;
* **multiplicative decrease** on a 429: ``rate *= decrease``, at most once per *window*:
  only a 429 for a request sent *after* the last cut counts (the requests already in flight
  when we cut were sent at the old rate and say nothing new, as in TCP's one cut per RTT);
* **additive increase**: every success adds ``increase / rate``, i.e. the rate climbs by
  about ``increase`` requests/s every second without a 429, and never above ``ceiling``.

A configured limit (``target.rate_limit``) is the ceiling and the starting rate: an announced
limit is used at once, and AIMD only ever goes below it. ``adaptive=False`` keeps a fixed rate.

Pacing is by reservation: each request takes the next free slot ``1/rate`` after the previous
one, so the pacer needs no background task, only the caller's clock; the caller sleeps for the
returned delay. Every method that depends on time takes ``now``, so the tests drive it with a
fake clock.
"""

from __future__ import annotations

from collections import deque

#: never pace slower than this (requests/s): a target that throttles even at this rate is
#: handled by the retry loop's time bound, not by starving the run
MIN_RATE = 0.5


class RatePacer:
    """Paces requests at ``rate`` per second, adapting it to 429s when ``adaptive``.

    Args:
        ceiling: the configured limit in requests/s (0: none, start unbounded).
        adaptive: adjust the rate on 429s (AIMD); ``False`` keeps the ceiling fixed.
        decrease: the multiplicative factor applied on a 429 (0 < decrease < 1).
        increase: requests/s added per second of successes.
        window: seconds over which the achieved rate is measured for the first cut.
    """

    __slots__ = (
        "_next",
        "_recent",
        "adaptive",
        "ceiling",
        "cuts",
        "decrease",
        "increase",
        "last_cut",
        "rate",
        "window",
    )

    def __init__(
        self,
        ceiling: float = 0.0,
        *,
        adaptive: bool = True,
        decrease: float = 0.85,
        increase: float = 1.0,
        window: float = 1.0,
    ) -> None:
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self.ceiling = ceiling if ceiling > 0 else None
        self.adaptive = adaptive
        self.decrease = decrease
        self.increase = increase
        self.window = window
        #: current rate in requests/s; ``None`` while unbounded
        self.rate: float | None = self.ceiling
        #: monotonic time of the last decrease (``-inf``: never)
        self.last_cut = float("-inf")
        self.cuts = 0
        self._next = float("-inf")
        # send times within the last window, kept only while unbounded (for the first cut)
        self._recent: deque[float] = deque()

    def reserve(self, now: float) -> float:
        """Take the next send slot; return how long to wait before sending (seconds)."""
        rate = self.rate
        if rate is None:
            if self.adaptive:
                recent = self._recent
                recent.append(now)
                edge = now - self.window
                while recent[0] < edge:
                    recent.popleft()
            return 0.0
        slot = max(now, self._next)
        self._next = slot + 1.0 / rate
        return slot - now

    def on_success(self) -> None:
        """A request was answered (anything but 429): climb by ``increase / rate``."""
        rate = self.rate
        if rate is None or not self.adaptive:
            return
        rate += self.increase / rate
        ceiling = self.ceiling
        self.rate = ceiling if ceiling is not None and rate > ceiling else rate

    def on_throttle(self, sent_at: float, now: float) -> bool:
        """A request sent at ``sent_at`` was answered 429; return True when the rate was cut."""
        if not self.adaptive or sent_at < self.last_cut:
            return False  # sent before the last cut: already accounted for
        if self.rate is None:
            achieved = len(self._recent) / self.window
            self._recent.clear()
            base = max(achieved, MIN_RATE)
        else:
            base = self.rate
        self.rate = max(MIN_RATE, base * self.decrease)
        self.last_cut = now
        self.cuts += 1
        # slots already handed out stay; new ones follow the new spacing
        return True
