"""The client-side pacer, on a manual clock: never over the venue's rate, urgent calls first."""

from __future__ import annotations

import asyncio

from actors.exchange_service import Pacer


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_entries_leave_a_reserve_that_a_stop_may_use_at_once():
    clock = Clock()
    pacer = Pacer(10.0, clock, reserve=2.0)

    async def scenario() -> tuple[int, bool]:
        granted = 0
        for _ in range(20):                       # a burst of entries at one instant
            waiter = asyncio.ensure_future(pacer.wait(urgent=False))
            await asyncio.sleep(0)
            if waiter.done():
                granted += 1
            else:
                waiter.cancel()
                break
        stop = asyncio.ensure_future(pacer.wait(urgent=True))
        await asyncio.sleep(0)
        return granted, stop.done()

    granted, stop_went = asyncio.run(scenario())
    assert granted == 8                           # 10 tokens less the reserve of 2
    assert stop_went                              # the protective call did not wait


def test_never_more_than_the_rate_over_a_window():
    clock = Clock()
    pacer = Pacer(5.0, clock, reserve=0.0)
    taken = 0
    for step in range(100):                       # 10 s in 0.1 s steps, always asking
        clock.t = step * 0.1
        while pacer._take(urgent=False) == 0.0:
            taken += 1
    assert taken <= 5 + 5 * 10                    # the initial bucket plus the refill
