"""The AIMD pacer, driven by a fake clock (no sleeping, no network)."""

from __future__ import annotations

import heapq

import pytest

from bulkprov.scim.rate import MIN_RATE, RatePacer


def test_fixed_rate_spaces_slots_evenly() -> None:
    pacer = RatePacer(10, adaptive=False)
    delays = [pacer.reserve(100.0) for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # a slot in the past is not owed: an idle pacer sends at once
    assert pacer.reserve(200.0) == 0.0
    pacer.on_throttle(200.0, 200.1)
    assert pacer.rate == 10  # not adaptive: the configured rate stays


def test_unbounded_until_the_first_429_then_the_achieved_rate_times_decrease() -> None:
    pacer = RatePacer(0, decrease=0.5)
    assert pacer.rate is None
    for i in range(100):  # 100 sends within the last second
        assert pacer.reserve(10.0 + i / 200) == 0.0
    assert pacer.on_throttle(10.4, 10.5)
    assert pacer.rate == pytest.approx(50.0)
    # 429s for requests sent before the cut say nothing new: no second cut
    assert not pacer.on_throttle(10.45, 10.6)
    assert pacer.rate == pytest.approx(50.0)
    assert pacer.on_throttle(10.7, 10.8)
    assert pacer.rate == pytest.approx(25.0)
    assert pacer.cuts == 2


def test_additive_increase_about_increase_per_second_up_to_the_ceiling() -> None:
    pacer = RatePacer(40, increase=2.0)
    pacer.on_throttle(0.0, 0.0)
    assert pacer.rate == pytest.approx(34.0)
    # one second of successes at ~34/s adds ~2 req/s
    for _ in range(34):
        pacer.on_success()
    assert pacer.rate == pytest.approx(36.0, abs=0.1)
    for _ in range(10_000):
        pacer.on_success()
    assert pacer.rate == 40  # never above the configured ceiling


def test_rate_never_falls_below_the_floor() -> None:
    pacer = RatePacer(1)
    for i in range(50):
        pacer.on_throttle(float(i), float(i))
    assert pacer.rate == MIN_RATE


def test_rejects_a_decrease_that_would_not_decrease() -> None:
    with pytest.raises(ValueError):
        RatePacer(decrease=1.0)


def simulate(
    limit: float,
    *,
    workers: int = 8,
    latency: float = 0.04,
    seconds: float = 120.0,
    ceiling: float = 0.0,
    burst: float | None = None,
) -> tuple[list[tuple[float, bool]], RatePacer]:
    """A discrete-event run of ``workers`` against a token bucket of ``limit``/s.

    Returns (send time, throttled) per request. The bucket is the simulator's: refills at
    ``limit`` per second up to ``burst`` (one second's worth) and answers 429 when empty.
    """
    pacer = RatePacer(ceiling)
    cap = burst if burst is not None else limit
    tokens, last = cap, 0.0
    events = [(0.0, w) for w in range(workers)]
    heapq.heapify(events)
    log: list[tuple[float, bool]] = []
    while events:
        t, w = heapq.heappop(events)
        if t > seconds:
            break
        sent = t + pacer.reserve(t)
        tokens = min(cap, tokens + (sent - last) * limit)
        last = max(last, sent)
        ok = tokens >= 1
        if ok:
            tokens -= 1
        answered = sent + latency
        if ok:
            pacer.on_success()
        else:
            pacer.on_throttle(sent, answered)
        log.append((sent, not ok))
        heapq.heappush(events, (answered, w))
    return log, pacer


@pytest.mark.parametrize(("limit", "workers"), [(60, 8), (60, 32), (20, 8), (200, 32)])
def test_settles_at_an_unannounced_limit(limit: float, workers: int) -> None:
    """The issue's goal, in model time: ≥ 0.9 × limit after 30 s, < 5 % of requests 429."""
    log, pacer = simulate(limit, workers=workers)
    late = [throttled for sent, throttled in log if sent >= 30]
    achieved = sum(1 for throttled in late if not throttled) / 90
    assert achieved >= 0.9 * limit
    assert sum(throttled for _, throttled in log) / len(log) < 0.05
    assert pacer.cuts >= 1  # it did have to find the limit


def test_an_announced_ceiling_is_used_at_once_with_no_429() -> None:
    log, pacer = simulate(60, ceiling=60, seconds=60)
    assert not any(throttled for _, throttled in log)
    assert pacer.cuts == 0
    assert len(log) / 60 >= 0.97 * 60
