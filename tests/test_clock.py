"""The clock of bulkprov.retry (system and fake), and the gate and budget that read it."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from bulkprov.retry import SYSTEM_CLOCK, PauseGate, RetryPolicy

from .clock import FakeClock


def test_the_system_clock_is_monotonic_and_anyio_sleep_themselves() -> None:
    # no wrapper between the hot path and the real clock
    assert SYSTEM_CLOCK.now is time.monotonic
    assert SYSTEM_CLOCK.sleep is anyio.sleep


async def test_fake_sleeps_overlap_like_real_ones_and_cost_no_real_time() -> None:
    clock = FakeClock(100.0)
    woke: dict[str, float] = {}

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke[name] = clock.now()

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(nap, "long", 2.0)
        tg.start_soon(nap, "short", 1.0)
        tg.start_soon(nap, "now", 0.0)
    assert woke == {"now": 100.0, "short": 101.0, "long": 102.0}
    assert sorted(clock.sleeps) == [(100.0, 0.0), (100.0, 1.0), (100.0, 2.0)]
    assert time.monotonic() - started < 0.5


async def test_fake_time_stands_still_while_a_task_can_run() -> None:
    clock = FakeClock()
    seen: list[float] = []

    async def busy() -> None:
        for _ in range(50):
            await anyio.lowlevel.checkpoint()  # runnable all along: the sleeper must wait
            seen.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 5.0)
        tg.start_soon(busy)
    assert seen == [0.0] * 50 and clock.now() == 5.0


async def test_the_pause_gate_holds_every_waiter_until_the_pause_ends() -> None:
    clock = FakeClock()
    gate = PauseGate(clock)
    gate.pause(3.0)
    gate.pause(1.0)  # shorter than the pause already running: no change
    assert gate.paused and gate.pauses == 1
    passed: list[float] = []

    async def through(after: float) -> None:
        await clock.sleep(after)
        await gate.wait()
        passed.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(through, 0.0)
        tg.start_soon(through, 2.0)
        tg.start_soon(through, 4.0)
    assert passed == [3.0, 3.0, 4.0] and not gate.paused


def test_the_retry_budget_is_measured_on_the_clock_given() -> None:
    clock = FakeClock(50.0)
    policy = RetryPolicy(max_attempts=10, max_seconds=10.0)
    assert not policy.gives_up(1, 45.0, 4.0, clock)  # 5 s spent + 4 s wait: within 10 s
    assert policy.gives_up(1, 45.0, 6.0, clock)  # 5 + 6 > 10
    assert policy.gives_up(10, 50.0, 0.0, clock)  # the attempt cap
    # the default clock is the real one: a start an hour ago is long past the budget
    assert policy.gives_up(1, time.monotonic() - 3600, 0.0)
    assert not policy.gives_up(1, time.monotonic(), 0.0)


@pytest.mark.parametrize("seconds", [0.0, -1.0])
async def test_a_fake_sleep_of_nothing_passes_no_time(seconds: float) -> None:
    clock = FakeClock(7.0)
    await clock.sleep(seconds)
    assert clock.now() == 7.0 and clock.sleeps == [(7.0, seconds)]
