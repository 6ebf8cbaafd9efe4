"""The request pacer: holds a target's rate limit whatever the shape of its limiter, without I/O.

Zoom counts its per-second limits per account and per label, shared by every app of the
account, and documents neither how it counts nor a ``Retry-After`` (facts.md §6.6, §6.8);
other SaaS targets count with token buckets of any burst, fixed or sliding one-second
windows, or GCRA. A fixed client-side rate is then either too low (slow) or too high (429s),
and a plain AIMD (cut by a sixth on every 429, climb back one request per second per second)
loses a quarter of the throughput against a strict limiter, because on a real machine
requests arrive a millisecond early or late and a strict limiter refuses some of them even
below its rate: the cuts answer jitter as if it were overload. :class:`RatePacer` tells the
two apart.

**Slots and admission.** :meth:`RatePacer.reserve` hands out send slots ``1/rate`` apart (a
grid: the rate holds over time whoever sleeps late); :meth:`RatePacer.admit`, asked again
just before sending, keeps each send at least ``(1 - SPACING)/rate`` after the previous one.
Timers fire on 1 ms ticks (uvloop) and a busy event loop wakes several sleepers at once; a
strict limiter would refuse the second of two sends that leave together, so admission
spreads them and the grid lets them catch up by ``SPACING`` per send.

**Finding an unannounced limit** (no ``rate_limit``): requests are not paced until the first
429 (an unlimited target is never slowed down); the rate is then the rate achieved in the
last ``window`` seconds times ``decrease``, and it grows by a quarter every second (TCP's
slow start) until a 429 again, which marks the limit: the level is set 1 % below the rate
that request was sent at.

**Telling jitter from overload.** Only a 429 for a request sent after the last correction
counts (the ones already in flight were sent at the old rate). The pacer then compares what
got through since the last correction (successes per second of sending, a ``Retry-After``
pause included, idle time not) with what it sent:

* *jitter*: nearly all got through, over more than ``SHORT`` seconds: a request landed too
  close to another. The rate dips by ``STEP`` (1 %) and is back at its level within about
  a second; the level itself comes down by ``STEP`` only while more than ``TARGET`` of the
  recent answers are 429s (0.8 %), or when each 429 pauses everyone (``Retry-After``).
  Below that, 429s are noise: a strict limiter refuses a few requests whatever the margin
  (measured here: a garbage collection or a busy event loop delays a send by 1-20 ms), and
  cutting further would lose throughput, not 429s;
* *a storm*: 429s in quick succession (less than ``SHORT`` seconds apart): cuts of 2, 4,
  8 then 15 %, and the level with them, until they stop; from the rate that held after
  them, the pacer bisects up to the rate of the storm's last 429, as below;
* *overload*: clearly less got through than was sent (the limit dropped, or a bucket's
  burst hid an overshoot): the rate is cut to what got through, and between a rate that
  held for ``HOLD`` seconds and the one that failed the pacer bisects, recovering quickly
  (e-fold in a second) to each midpoint: each step either holds ``HOLD`` seconds or fails
  once. When the two are within 2 ``STEP`` of each other the limit is found.

**Probing** above the level is slow and paid for: the rate grows so that, at a steady limit,
probes cost about ``SHARE`` of requests (0.2 %: one 429 every eight seconds at 60/s), or,
when the target answers with ``Retry-After`` (which pauses every worker), about ``BUDGET``
of the time (1 %: with ``Retry-After: 1``, one probe every 100 seconds).

**An announced limit** (``target.rate_limit``) is the starting level and a ceiling never
exceeded; a 429 below it is a small correction, so the margin below it is learnt in steps
of 1 % instead of a cut by a sixth. ``adaptive=False`` keeps the ceiling fixed.

A 429 with no success at all since the last correction (nothing to measure) is answered as
AIMD would: ``rate *= decrease``, then a climb of ``increase`` requests/s per second.

One pacer is one limit: the SCIM client has one for the target; a target with several
limits (Zoom's Light and Medium labels) has one pacer per limit, side by side. Every method
that depends on time takes ``now`` (any monotonic clock's seconds), so tests drive it on a
fake clock; the pacer never sleeps and needs no task: the caller sleeps for what
:meth:`~RatePacer.reserve` and :meth:`~RatePacer.admit` return.
"""

from __future__ import annotations

import math
from collections import deque

#: never pace slower than this (requests/s): a target that throttles even at this rate is
#: handled by the retry loop's time bound, not by starving the run
MIN_RATE = 0.5
#: a correction for jitter, and the first step of a storm's
STEP = 0.01
#: how much closer than ``1/rate`` admission lets a late send follow the previous one
SPACING = 0.01
#: slow start: the rate grows by this fraction of itself per second without a 429
STARTUP_GAIN = 0.25
#: 429s less than this many seconds of sending apart are a storm, not jitter
SHORT = 1.0
#: a rate held this many seconds of sending without a 429 is known to hold
HOLD = 5.0
#: what got through below this fraction of what was sent is overload
OVERLOAD = 0.95
#: probing pays for itself with this share of requests answered 429...
SHARE = 0.002
#: ...or this share of the time when a 429 pauses every worker (``Retry-After``)
BUDGET = 0.01
#: the deepest single cut of a storm
STORM_MAX = 0.15
#: the level is lowered by a correction only while more than this share of the recent
#: answers are 429s (a strict limiter refuses some requests whatever the margin: timers,
#: a busy event loop, the network; cutting further would lose throughput and not 429s)
TARGET = 0.008
#: "recent": an exponential average over about this many answers
RECENT = 3000


class RatePacer:
    """Paces requests at ``rate`` per second, adapting it to 429s when ``adaptive``.

    Args:
        ceiling: the announced limit in requests/s (0: none, start unbounded).
        adaptive: adjust the rate on 429s; ``False`` keeps the ceiling fixed.
        decrease: the factor of a cut that has nothing to measure (0 < decrease < 1).
        increase: requests/s added per second of successes after such a cut.
        window: seconds over which the achieved rate is measured for the first cut.

    The interface, for every caller (the SCIM client; one pacer per Zoom label):

    * ``delay = reserve(now)``: sleep ``delay`` seconds (this request's slot);
    * ``wait = admit(now)`` until it returns 0.0 (sleeping ``wait`` in between): send now;
    * ``on_success()`` for any answer but 429; ``on_throttle(sent_at, now, retry_after)``
      for a 429 (``sent_at``: when it was admitted).
    """

    __slots__ = (
        "_confirmed",
        "_held",
        "_hold_rate",
        "_idle",
        "_next",
        "_ok",
        "_paused_until",
        "_rates",
        "_recent",
        "_sent",
        "_share",
        "_since",
        "adaptive",
        "aim",
        "ceiling",
        "cuts",
        "decrease",
        "events",
        "gain",
        "hi",
        "increase",
        "last_cut",
        "lo",
        "phase",
        "rate",
        "storm",
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
        #: "unbounded", "startup" (slow start), "aimd" (after a blind cut) or "steady"
        self.phase = "steady" if self.ceiling else "unbounded"
        #: the bracket while a limit is being bisected: a rate that held, one that failed
        self.lo: float | None = None
        self.hi: float | None = None
        #: the level: the rate recovered to within about a second after a dip (above it,
        #: only the slow probe climbs)
        self.aim: float | None = self.ceiling
        #: the slow probe: requests/s added per success (at 60/s: 1 % every 8 s)
        self.gain = STEP * SHARE * (self.ceiling or 0.0)
        #: consecutive storm cuts
        self.storm = 0
        #: monotonic time of the last correction (``-inf``: never)
        self.last_cut = -math.inf
        self.cuts = 0
        #: the last corrections: (time, kind, rate before, rate after), for tests and logs
        self.events: deque[tuple[float, str, float, float]] = deque(maxlen=32)
        self._next = -math.inf  # the next free slot of the grid
        self._sent = -math.inf  # when the last send was admitted
        self._recent: deque[float] = deque()  # send times, while unbounded (first cut)
        self._rates: deque[tuple[float, float]] = deque()  # (slot, rate) when it changed
        # since the last correction: successes, its start, idle time (no one waiting)
        self._ok = 0
        self._since = -math.inf
        self._idle = 0.0
        self._paused_until = -math.inf
        # seconds of sending without a 429 at (at least) _hold_rate
        self._held = 0.0
        self._hold_rate = self.rate or 0.0
        # the share of recent answers that were 429s; whether any request got through yet
        self._share = 0.0
        self._confirmed = False

    # ---------------------------------------------------------------------- sending

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
        nxt = self._next
        if now > nxt:  # no one was waiting: the time since the free slot was idle
            start = max(nxt, self._paused_until, self._since)
            if start == -math.inf:
                self._since = now
            elif now > start:
                self._idle += now - start
            slot = now
        else:
            slot = nxt
        slot = max(slot, self._paused_until)
        self._next = slot + 1.0 / rate
        rates = self._rates
        if not rates or abs(rates[-1][1] - rate) > 0.002 * rate:
            rates.append((slot, rate))
            if len(rates) > 64:
                rates.popleft()
        return slot - now

    def admit(self, now: float) -> float:
        """Just before sending: 0.0 (send now; recorded) or how long to wait and ask again,
        so that no send follows the previous one by less than ``(1 - SPACING)/rate``."""
        rate = self.rate
        if rate is None:
            return 0.0
        due = self._sent + (1.0 - SPACING) / rate
        if now + 1e-9 >= due:
            self._sent = now
            return 0.0
        return due - now

    # ---------------------------------------------------------------------- answers

    def on_success(self) -> None:
        """A request was answered (anything but 429): the rate grows as its phase says."""
        rate = self.rate
        if rate is None or not self.adaptive:
            return
        self._ok += 1
        self._confirmed = True
        self._share *= 1 - 1 / RECENT
        phase = self.phase
        if phase == "steady":
            self._held += 1.0 / rate
            if self._held >= HOLD:
                self._holds(self._hold_rate)
                self._hold_rate = rate
                self._held = 0.0
            aim = self.aim
            if aim is not None and rate < aim:
                rate += max(aim - rate, self.gain * rate) / rate  # e-fold in a second
            else:
                rate += self.gain
                if self.hi is None:
                    self.aim = rate  # probing up: the level follows
        elif phase == "startup":
            rate += STARTUP_GAIN
        else:  # aimd
            rate += self.increase / rate
        ceiling = self.ceiling
        self.rate = ceiling if ceiling is not None and rate > ceiling else rate

    def on_throttle(self, sent_at: float, now: float, retry_after: float | None = None) -> bool:
        """A request admitted at ``sent_at`` was answered 429 at ``now`` (with
        ``retry_after`` seconds, if the target said); return True when the rate was cut."""
        if retry_after is not None and now + retry_after > self._paused_until:
            self._paused_until = now + retry_after  # a pause: sending time, not idle
        self._share += (1 - self._share) / RECENT
        if not self.adaptive or sent_at < self.last_cut:
            return False  # sent before the last cut: already accounted for
        rate = self.rate
        if rate is None:
            achieved = len(self._recent) / self.window
            self._recent.clear()
            self.rate = max(MIN_RATE, achieved * self.decrease)
            self.phase = "startup"
            self._corrected(now, "first", 0.0, retry_after)
            return True
        sent_rate = self._rate_at(sent_at)
        busy = now - self._since - self._idle
        # what got through per second of sending since the last correction (from a few
        # answers over less than a second it says nothing)
        delivered = self._ok / busy if self._ok >= 8 and busy >= 0.25 else None
        if (self._ok == 0 and (self.phase != "steady" or not self._confirmed)) or (
            delivered is None and self.phase == "startup"
        ):
            # nothing to measure yet (and no level known): AIMD's blind cut; slow start
            # goes on from there, an unconfirmed ceiling climbs back additively
            self.rate = max(MIN_RATE, rate * self.decrease)
            if self.phase == "steady":
                self.phase = "aimd"
                self.lo = self.hi = self.aim = None
            self._corrected(now, "blind", rate, retry_after)
            return True
        lo, hi = self.lo, self.hi
        if self.phase != "steady":  # the end of slow start or of an AIMD climb
            kind = "found"
            self.hi, self.lo, self.storm = None, None, 0
            new = sent_rate * (1 - STEP)
            self.aim = new
        elif delivered is not None and busy >= SHORT and delivered < OVERLOAD * sent_rate:
            kind = "overload"
            hi = sent_rate if hi is None else min(hi, sent_rate)
            if lo is None:
                lo = delivered
            elif lo >= hi * (1 - 2 * STEP):  # "held" failed at that very rate (a burst)
                lo = max(delivered, lo * (1 - 4 * STEP))
            else:
                lo = max(lo, delivered)
            self.lo, self.hi, self.storm = lo, hi, 0
            new = max(delivered * (1 - STEP), sent_rate * 0.5, lo)
            self.aim = (lo + hi) / 2
        elif busy < SHORT or self._ok == 0:
            kind = "storm"
            self.storm += 1
            new = min(rate, sent_rate) * (1 - min(STORM_MAX, STEP * 2**self.storm))
            # the storm's failing rate bounds the limit: once a rate holds, bisect up to it
            self.hi = sent_rate if hi is None else min(hi, sent_rate)
            if lo is not None and lo >= new:
                self.lo = None
            self.aim = new
        else:
            kind = "jitter"
            self.storm = 0
            new = min(rate, sent_rate) * (1 - STEP)
            if hi is not None and lo is not None:  # a step of the bisection failed
                hi = self.hi = min(hi, sent_rate)
                if lo < hi * (1 - 2 * STEP):
                    self.aim = (lo + hi) / 2
                else:
                    self.hi = None  # found
                    self.aim = lo
                new = min(new, self.aim)
            else:  # nothing held since the storm or overload, or no bracket at all
                if hi is not None:
                    self.hi = min(hi, sent_rate)
                aim = self.aim if self.aim is not None else sent_rate
                if retry_after is not None or self._share > TARGET:
                    # too many 429s (or each pauses everyone): the level comes down
                    aim = max(new, min(aim, sent_rate) * (1 - STEP))
                else:  # noise: back to the level within a second
                    aim = max(aim, sent_rate)
                self.aim = aim if self.hi is None else min(aim, self.hi * (1 - STEP))
        self.phase = "steady"
        self.rate = max(MIN_RATE, new)
        self._corrected(now, kind, rate, retry_after)
        return True

    # ---------------------------------------------------------------------- internals

    def _holds(self, held: float) -> None:
        """``held`` was sent at for ``HOLD`` seconds without a 429: the next bisection step."""
        self.storm = 0
        if self.hi is None:
            return
        lo = held if self.lo is None else max(self.lo, held)
        self.lo = lo
        if self.hi - lo <= 2 * STEP * self.hi:
            self.hi = None  # found: from here on, small corrections and slow probes
            self.aim = lo
        else:
            self.aim = (lo + self.hi) / 2

    def _corrected(self, now: float, kind: str, before: float, retry_after: float | None) -> None:
        rate = self.rate
        assert rate is not None
        share = SHARE
        if retry_after is not None:  # every worker waits: a 429 costs the pause
            share = min(share, BUDGET / (rate * max(retry_after, 1e-3)))
        self.gain = STEP * share * rate
        self.events.append((now, kind, before, rate))
        self.last_cut = now
        self.cuts += 1
        self._ok = 0
        self._since = now
        self._idle = 0.0
        self._held = 0.0
        self._hold_rate = rate

    def _rate_at(self, when: float) -> float:
        """The rate the slot at ``when`` was given at."""
        found = self.rate or 0.0
        for start, rate in reversed(self._rates):
            found = rate
            if start <= when:
                break
        return found
