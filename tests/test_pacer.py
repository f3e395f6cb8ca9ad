"""The client-side pacer, on a manual clock: never over the venue's rate, never much under it,
urgent calls first."""

from __future__ import annotations

import asyncio

import pytest

from actors.exchange.core import Pacer
from adapters.base import VenueError
from tests.support.kit import ManualClock


def test_entries_leave_a_reserve_that_a_stop_may_use_at_once():
    clock = ManualClock()
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


def test_never_more_than_the_rate_over_a_window_nor_less():
    clock = ManualClock()
    pacer = Pacer(5.0, clock, reserve=0.0)
    taken = 0
    for step in range(100):                       # 10 s in 0.1 s steps, always asking
        clock.t = step * 0.1
        while pacer._take(urgent=False) == 0.0:
            taken += 1
    assert taken <= 5 + 5 * 10                    # the initial bucket plus the refill
    assert taken >= 5 * 9.9                       # and at least the rate over the 9.9 s asked


def test_queued_entries_are_granted_at_least_the_rate_less_the_reserve(monkeypatch):
    # The lower bound, through wait() and its releaser: a pacer that granted too little (a slow
    # refill, a releaser that stops waking up) would starve the entries queued on it.
    # Virtual time: every sleep of the releaser moves the manual clock instead of waiting (by a
    # microsecond at least, as a real sleep does: a delay under the clock's resolution moves nothing).
    rate, reserve, window = 5.0, 2.0, 10.0
    clock = ManualClock()
    pacer = Pacer(rate, clock, reserve=reserve)
    real_sleep = asyncio.sleep

    async def virtual_sleep(seconds: float, result: object = None) -> object:
        clock.advance(max(seconds, 1e-6))
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", virtual_sleep)

    async def scenario() -> list[float]:
        granted: list[float] = []

        async def entry() -> None:
            await pacer.wait(urgent=False)
            granted.append(clock())

        entries = [asyncio.ensure_future(entry()) for _ in range(200)]      # more than the window can take
        for _ in range(100_000):                  # bounded: a releaser that stopped would not move time
            if clock() > window:
                break
            await real_sleep(0)                   # one turn of the loop: the releaser runs once
        for task in entries:
            task.cancel()
        await asyncio.gather(*entries, return_exceptions=True)
        return granted

    granted = [t for t in asyncio.run(scenario()) if t <= window]
    assert len(granted) >= rate * window - reserve                # never much under the rate ...
    assert len(granted) <= rate + rate * window                   # ... nor over it


def test_a_query_for_an_order_still_queued_behind_the_rate_limit_waits_until_it_has_gone():
    # A burst of entries waits its turn here; the venue would answer "not found" for the last
    # one, and its caller -- past its window -- would give up on an order still going to be sent.
    from actors.exchange.core import ExchangeCore
    from actors.messages import OrderPlaced, OrderQueried, PlaceOrder, QueryOrder
    from adapters.base import OrderRequest, OrderStatus, Side
    from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
    from adapters.sim.engine import EngineConfig

    adapter = SimulatedAdapter(SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0}, volatility=0.0),
                                              orders_per_second=5.0))
    service = ExchangeCore(adapter)

    async def scenario() -> tuple[list[object], object]:
        orders = [asyncio.ensure_future(service.handle(PlaceOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, f"pg-q{i}"))))
                  for i in range(8)]
        await asyncio.sleep(0)
        query = await service.handle(QueryOrder("BTCUSDT", "pg-q7"))     # the last of the burst, still queued
        return await asyncio.gather(*orders), query

    placed, query = asyncio.run(scenario())
    assert all(isinstance(p, OrderPlaced) and p.report is not None for p in placed)
    assert isinstance(query, OrderQueried) and query.report is not None, query
    assert query.report.status is OrderStatus.FILLED


def test_past_the_writers_lease_deadline_an_order_that_could_open_is_not_sent_a_close_still_goes():
    # The journal stamps each order with its lease's deadline (boot-time clock); the check is
    # made after the rate limit's queue, the last moment before the order leaves.
    from actors.exchange.core import ExchangeCore
    from actors.journal.lease import boottime
    from actors.messages import PlaceOrder
    from adapters.base import OrderRequest, OrderStatus, Side
    from adapters.errors import Outcome
    from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
    from adapters.sim.engine import EngineConfig

    adapter = SimulatedAdapter(SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0}, volatility=0.0)))
    service = ExchangeCore(adapter)
    past, ahead = boottime() - 0.001, boottime() + 60.0

    async def scenario() -> list[object]:
        return [await service.handle(PlaceOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pg-live"), not_after=ahead)),
                await service.handle(PlaceOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pg-late"), not_after=past)),
                await service.handle(PlaceOrder(OrderRequest("BTCUSDT", Side.SELL, 1.0, "pg-close", reduce_only=True),
                                                not_after=past))]

    live, late, close = asyncio.run(scenario())
    assert live.report is not None and live.report.status is OrderStatus.FILLED
    assert late.report is None and late.failure.outcome is Outcome.REJECTED and late.failure.code == "fenced"
    assert close.report is not None and close.report.status is OrderStatus.FILLED
    assert adapter.engine._positions["BTCUSDT"].qty == 0            # opened by one, flattened by the close
    with pytest.raises(VenueError):
        adapter.engine.fetch_order("pg-late")                       # never reached the venue
