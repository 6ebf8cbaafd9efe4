"""A fake :class:`bulkprov.retry.Clock` for the tests of pauses, retries and pacing.

Sleeping on it costs no real time. Like trio's ``MockClock`` with ``autojump_threshold=0``:
time stands still while any task can still run, and jumps to the earliest sleeper's deadline
the moment none can (every task waits on this clock, or on something outside the event
loop's ready queue). Concurrent sleeps therefore overlap as they do on a real clock: two
tasks sleeping 1 s and 2 s from the same moment end at +1 s and +2 s, not +3 s, so a test
can assert *who* waited *until when*, not only that some time went by.

Every ``sleep`` is recorded in :attr:`FakeClock.sleeps` as ``(started_at, seconds)``.

asyncio only (the tests run on pytest-asyncio): "can any task still run" is the event loop's
ready queue (``loop._ready``), which CPython's loop has always had.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """``now()`` and ``sleep()`` on simulated time, starting at ``start`` seconds."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        #: every sleep, in call order: (clock time when it started, seconds asked)
        self.sleeps: list[tuple[float, float]] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._jumper: asyncio.Handle | None = None

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float, /) -> None:
        self.sleeps.append((self._now, seconds))
        if seconds <= 0:  # like anyio.sleep(0): let the others run, no time passes
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        if not hasattr(loop, "_ready"):
            raise RuntimeError("FakeClock needs CPython's asyncio event loop")
        done: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), done))
        if self._jumper is None:
            self._jumper = loop.call_soon(self._jump, loop)
        await done

    def _jump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Advance to the earliest deadline once no task can run; wake everyone due then."""
        self._jumper = None
        sleepers = self._sleepers
        while sleepers and sleepers[0][2].done():  # cancelled while asleep
            heapq.heappop(sleepers)
        if not sleepers:
            return
        if not loop._ready:  # type: ignore[attr-defined]
            self._now = max(self._now, sleepers[0][0])
            while sleepers and sleepers[0][0] <= self._now:
                _, _, done = heapq.heappop(sleepers)
                if not done.done():
                    done.set_result(None)
        if sleepers:  # look again after the tasks that can run now
            self._jumper = loop.call_soon(self._jump, loop)
