"""A discrete-event model of ScimClient's workers against a limiter, on simulated time.

It runs the real :class:`bulkprov.scim.rate.RatePacer` and the simulator's real limiters
(:mod:`bulkprov.sim.scim.limits`) with no event loop and no sleeping: 90 s of a 60 req/s sync
take a fraction of a second. What it models, because a pacer that only works on an exact clock
would fail against a real target:

* each worker does what :meth:`ScimClient.send` does: wait at the pause gate, reserve a slot,
  sleep until it, look at the gate again, ask the pacer to admit the send, send; a 429 with
  ``Retry-After`` pauses every worker, one without is retried at the next slot;
* timers fire like uvloop's: on a 1 ms tick, sometimes up to 1 ms early (libuv's cached loop
  time) — what was measured on this machine (a 60/s pacer's sends land 15–18 ms apart);
  waits under a millisecond cost an event-loop turn (tens of µs);
* the event loop stalls now and then (a Graph page being parsed): whatever was due fires
  together at the end of the stall;
* between the pacer's admission and the limiter, a send takes 0.05–0.3 ms (sometimes up to
  2 ms: another task ran first), and the answer comes ``latency`` seconds after arrival.

Every random draw comes from one seeded generator, so a run is reproducible.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Any

from bulkprov.scim.rate import RatePacer
from bulkprov.sim.scim.limits import Limiter

TICK = 0.001  # uvloop's timer resolution


@dataclass
class Run:
    """What a model run did: successes and 429s with their times."""

    limit: float
    seconds: float
    ok_times: list[float] = field(default_factory=list)
    throttle_times: list[float] = field(default_factory=list)
    pauses: int = 0
    pacer: Any = None

    def rate(self, start: float, end: float | None = None) -> float:
        """Successes per second answered in [start, end)."""
        end = self.seconds if end is None else end
        n = sum(1 for t in self.ok_times if start <= t < end)
        return n / (end - start)

    def share_429(self, start: float = 0.0) -> float:
        ok = sum(1 for t in self.ok_times if t >= start)
        bad = sum(1 for t in self.throttle_times if t >= start)
        return bad / (ok + bad) if ok + bad else 0.0

    def found_at(self, fraction: float = 0.9, span: float = 5.0) -> float:
        """When the ``span``-second average first reached ``fraction`` of the limit
        (``inf``: never)."""
        per_second = [0] * (int(self.seconds) + 1)
        for t in self.ok_times:
            per_second[int(t)] += 1
        for start in range(int(self.seconds) - int(span) + 1):
            if sum(per_second[start : start + int(span)]) / span >= fraction * self.limit:
                return float(start + span)
        return math.inf


class _Timers:
    """uvloop-like wake-ups, with event-loop stalls."""

    def __init__(self, rng: random.Random, stalls: bool, seconds: float) -> None:
        self.rng = rng
        self.phase = rng.random() * TICK
        self.stalls: list[tuple[float, float]] = []
        if stalls:
            t = rng.uniform(0.3, 1.5)
            while t < seconds:
                self.stalls.append((t, t + rng.uniform(0.002, 0.015)))
                t += rng.uniform(0.5, 2.0)

    def _unstall(self, t: float) -> float:
        for start, end in self.stalls:  # few enough (one a second) for a scan
            if start <= t < end:
                return end + self.rng.uniform(0, 0.0002)
            if start > t:
                break
        return t

    def sleep(self, now: float, seconds: float) -> float:
        """When a task that sleeps ``seconds`` at ``now`` runs again."""
        rng = self.rng
        if seconds <= 0:
            return self._unstall(now + rng.uniform(0.00001, 0.00005))
        if seconds < TICK:  # a sub-millisecond timer: the next loop turns, a spin
            return self._unstall(now + seconds + rng.uniform(0.00001, 0.00005))
        due = now + seconds
        fire = math.ceil((due - self.phase) / TICK) * TICK + self.phase
        if rng.random() < 0.2:  # the loop's cached time was stale: early by up to a tick
            fire -= rng.uniform(0, TICK)
        fire = max(now, fire) + rng.uniform(0, 0.0002)
        return self._unstall(fire)


def clean(rng: random.Random) -> float:
    """Admission to arrival on a machine that does nothing else: 0.1-0.2 ms."""
    return rng.uniform(0.0001, 0.0002)


def quiet(rng: random.Random) -> float:
    """Admission to arrival on an idle machine: 0.05-0.3 ms, 5 % of sends up to 2 ms more
    (another task ran first)."""
    extra = rng.uniform(0.00005, 0.0003)
    if rng.random() < 0.05:
        extra += rng.uniform(0.0003, 0.002)
    return extra


def collected(rng: random.Random) -> float:
    """A machine that does nothing else, but whose client collects garbage: 0.3 % of sends
    are held 2-20 ms after admission (measured in a whole sync: 13 collections over 1 ms in
    69 s at 57 requests/s, the longest 20 ms; with the collector off, 3 429s instead of 18)."""
    extra = rng.uniform(0.0001, 0.0002)
    if rng.random() < 0.003:
        extra += rng.uniform(0.002, 0.020)
    return extra


def loaded(rng: random.Random) -> float:
    """Admission to arrival on a 2-core machine shared with other work (load 3-5), as
    measured between bulkprov and its simulator: p50 ≈ 0.6 ms, p90 ≈ 1.5 ms, p99 ≈ 5 ms,
    now and then 10-35 ms (either process was not scheduled)."""
    extra = 0.0003 + rng.expovariate(1 / 0.0004)
    roll = rng.random()
    if roll < 0.004:
        extra += rng.uniform(0.008, 0.035)
    elif roll < 0.03:
        extra += rng.uniform(0.002, 0.008)
    return extra


def run(
    limiter: Limiter,
    pacer: RatePacer,
    *,
    workers: int = 16,
    latency: float = 0.04,
    seconds: float = 90.0,
    retry_after: bool = False,
    seed: int = 1,
    stalls: bool = True,
    transit: Any = quiet,
) -> Run:
    """Run ``workers`` sending as fast as ``pacer`` lets them, for ``seconds``."""
    rng = random.Random(seed)
    timers = _Timers(rng, stalls, seconds)
    out = Run(limiter.rate, seconds, pacer=pacer)
    gate = [0.0]  # resume time of the shared pause gate
    # events: (time, order, worker, step, payload)
    events: list[tuple[float, int, int, str, Any]] = []
    order = 0

    def push(t: float, w: int, step: str, payload: Any = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, w, step, payload))

    for w in range(workers):
        push(rng.uniform(0, 0.002), w, "gate")
    while events:
        t, _, w, step, payload = heapq.heappop(events)
        if t > seconds:
            break
        if step == "gate":
            if gate[0] > t:
                push(timers.sleep(t, gate[0] - t), w, "gate")
                continue
            delay = pacer.reserve(t)
            push(timers.sleep(t, delay) if delay > 0 else t, w, "slot")
        elif step == "slot":
            if gate[0] > t:  # a Retry-After came while this worker waited for its slot
                push(t, w, "gate")
                continue
            wait = pacer.admit(t)
            if wait > 0:
                push(timers.sleep(t, wait), w, "slot")
                continue
            sent = t
            arrival = sent + transit(rng)
            push(
                arrival + latency + rng.uniform(0, 0.0005),
                w,
                "answer",
                (sent, limiter.take(arrival)),
            )
        elif step == "answer":
            sent, wait = payload
            if wait is None:
                pacer.on_success()
                out.ok_times.append(t)
            else:
                out.throttle_times.append(t)
                pause = float(max(1, math.ceil(wait))) if retry_after else None
                pacer.on_throttle(sent, t, pause)
                if pause is not None and t + pause > gate[0]:
                    gate[0] = t + pause
                    out.pauses += 1
            push(t, w, "gate")
    return out
