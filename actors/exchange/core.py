"""The ExchangeActor's work, as asyncio code: one request message in, one reply out.

Paces calls to the venue's limits, bounds every call with a timeout (a hung venue call is an
unknown outcome, never a hung actor), and classifies every failure through the error table.
Never retries an order placement: what to do after a failure is the caller's decision.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from loguru import logger

from actors.journal.lease import boottime
from actors.messages import (
    CancelStops,
    ClosuresFetched,
    ExitSet,
    FetchClosures,
    FetchPositions,
    FetchPrice,
    FetchStopOrders,
    GetTrueState,
    OrderPlaced,
    OrderQueried,
    PlaceOrder,
    PositionsFetched,
    PriceFetched,
    QueryOrder,
    SetExit,
    SetStop,
    StopOrdersFetched,
    StopsCancelled,
    StopSet,
    TrueStateReport,
    VenueFailure,
)
from adapters.base import OrderReport, StopOrderReport, VenueAdapter, VenueError
from adapters.errors import Outcome, classify_error
from adapters.sim.truth import TruthSource
from adapters.stops import is_ours, with_stop_orders

T = TypeVar("T")


class Pacer:
    """A token bucket in front of the venue's own: at most `rate` calls a second, with a
    reserve that only urgent calls may spend, and urgent waiters released first.

    A protective call (a stop, a reduce-only close) therefore never waits behind queued new
    entries, nor for a slot they just used; entries alone can never exhaust the bucket.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, reserve: float = 2.0) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._reserve = min(reserve, self._capacity - 1.0)
        self._tokens = self._capacity
        self._at = clock()
        self._clock = clock
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._releaser: asyncio.Task[None] | None = None
        self.waits = 0                               # calls that had to wait for a token, since start
        self.waited_s = 0.0                          # ... and how long they waited in all

    def _take(self, urgent: bool) -> float:
        """Take a token if allowed; else return how long until one could be."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        need = 1.0 if urgent else 1.0 + self._reserve
        if self._tokens >= need:
            self._tokens -= 1.0
            return 0.0
        return (need - self._tokens) / self._rate

    async def wait(self, urgent: bool = False) -> None:
        if self._rate <= 0:
            return
        # Urgent calls queue only behind other urgent calls; entries behind everything.
        ahead = any(p == 0 for p, _, f in self._waiters if not f.done()) if urgent else bool(self._waiters)
        if not ahead and self._take(urgent) == 0.0:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (0 if urgent else 1, next(self._seq), future))
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.create_task(self._release())
        began = self._clock()
        self.waits += 1
        try:
            await future
        finally:
            self.waited_s += self._clock() - began

    async def _release(self) -> None:
        while self._waiters:
            priority, _, future = self._waiters[0]
            if future.done():                              # cancelled while waiting
                heapq.heappop(self._waiters)
                continue
            delay = self._take(priority == 0)
            if delay > 0:
                # Re-check at least every token: an urgent waiter may have come in meanwhile.
                await asyncio.sleep(min(delay, 1.0 / self._rate))
                continue
            heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)


class ExchangeCore:
    def __init__(self, adapter: VenueAdapter, call_timeout_s: float = 10.0) -> None:
        self.adapter = adapter
        self.capabilities = adapter.capabilities
        self.dialect = adapter.capabilities.dialect    # whose error codes the adapter hands us
        self.call_timeout_s = call_timeout_s
        self._orders = Pacer(self.capabilities.orders_per_second)
        self._reads = Pacer(self.capabilities.reads_per_second)
        # Orders we hold (queued behind the rate limit, or on their way): client id -> done.
        self._in_flight: dict[str, asyncio.Event] = {}

    def figures(self) -> tuple[tuple[str, float], ...]:
        """The rate limit's waits since start, for the metrics (read from the actor's thread:
        plain numbers the loop only ever adds to)."""
        return (("orders_waits", self._orders.waits), ("orders_waited_s", self._orders.waited_s),
                ("reads_waits", self._reads.waits), ("reads_waited_s", self._reads.waited_s))

    async def handle(self, msg: object) -> object:
        """Run one request; never raises (every failure becomes a classified reply)."""
        route = ROUTES.get(type(msg))
        if route is None:
            raise TypeError(f"ExchangeCore cannot handle {type(msg).__name__}")
        return await route.run(self, msg)

    async def _place(self, msg: PlaceOrder) -> OrderPlaced:
        req, sent = msg.request, []
        done = self._in_flight.setdefault(req.client_order_id, asyncio.Event())
        async def create() -> OrderReport:
            # Checked after the rate limit's queue, the last moment before it leaves: a writer
            # past its lease's deadline sends nothing that could open (a reduce-only close can
            # never open or flip a position: it still goes). A freeze after this check is the
            # venue's to refuse: the request is signed now, and arrives past its recv window.
            if msg.not_after is not None and not req.reduce_only and boottime() > msg.not_after:
                raise VenueError("fenced", "this writer's lease on the account ran out: not sent")
            return await self.adapter.create_order(req)

        try:
            report, failure = await self._call(self._orders, create, urgent=req.reduce_only, sent=sent)
        finally:
            done.set()
            if self._in_flight.get(req.client_order_id) is done:
                del self._in_flight[req.client_order_id]
        # When it really left (after any queueing): the caller's "never arrived" window runs
        # from here, so a long queue can never make it give up on an order still in flight.
        return OrderPlaced(msg.request_id, req.client_order_id, report, failure, sent_at=sent[0] if sent else None,
                           received_ns=time.monotonic_ns())

    async def _query(self, msg: QueryOrder) -> OrderQueried:
        held = self._in_flight.get(msg.client_order_id)
        if held is not None:
            # Still queued here (a burst of entries waits its turn at the rate limit): the venue
            # would say "not found" and the caller, past its window, would give up on an order
            # that is still going to be sent. Answer once it has gone.
            await held.wait()
        report, failure = await self._call(self._reads,
                                           lambda: self.adapter.fetch_order(msg.symbol, msg.client_order_id))
        return OrderQueried(msg.request_id, msg.client_order_id, report, failure, received_ns=time.monotonic_ns())

    async def _set_stop(self, msg: SetStop) -> StopSet:
        held, failure = await self._call(
            self._orders, lambda: self.adapter.set_stop(msg.symbol, msg.stop_price, msg.position_side), urgent=True)
        return StopSet(msg.request_id, msg.symbol, held if held is not None else msg.stop_price, failure,
                       received_ns=time.monotonic_ns())

    async def _set_exit(self, msg: SetExit) -> ExitSet:
        held, failure = await self._call(self._orders, lambda: self.adapter.set_exit(
            msg.symbol, msg.kind, msg.value, msg.position_side, msg.qty, msg.reference_price))
        return ExitSet(msg.request_id, msg.symbol, msg.kind, held if held is not None else msg.value, failure,
                       received_ns=time.monotonic_ns())

    async def _positions(self, msg: FetchPositions) -> PositionsFetched:
        positions, failure = await self._call(self._reads, self.adapter.fetch_positions)
        orders: list[StopOrderReport] | None = []
        if failure is None and self.capabilities.stop_orders:
            # A stop can be an open conditional order (Binance: always): count it -- and, on a
            # flat symbol, see it (a close-all stop outlives its position).
            orders, failure = await self._call(self._reads, self.adapter.fetch_stop_orders)
            positions = with_stop_orders(positions or [], orders or [])
        return PositionsFetched(msg.request_id, tuple(positions or ()), failure, tuple(orders or ()))

    async def _cancel_stops(self, msg: CancelStops) -> StopsCancelled:
        """Cancel stop orders of ours on a symbol (the named ones, else every one), then read again:
        the reply says what still works, so the caller knows when none of ours is left."""
        def wanted(orders: list[StopOrderReport]) -> list[StopOrderReport]:
            return [o for o in orders if is_ours(o) and (msg.side is None or o.side is msg.side)
                    and (not msg.client_order_ids or o.client_order_id in msg.client_order_ids)]

        orders, failure = await self._call(self._reads, lambda: self.adapter.fetch_stop_orders(msg.symbol))
        if failure is not None:
            return StopsCancelled(msg.request_id, msg.symbol, failure=failure)
        targets = wanted(orders or [])
        if not targets:
            return StopsCancelled(msg.request_id, msg.symbol)
        if msg.probe_stop is not None:
            # Is the position really gone? Our stop set again: harmless if it lives, and the
            # engine's "no position" is the only answer that lets a cancel go.
            _, failure = await self._call(self._orders, lambda: self.adapter.set_stop(msg.symbol, msg.probe_stop,
                                                                                       msg.probe_side), urgent=True)
            if failure is None or failure.outcome in (Outcome.NOT_MODIFIED, Outcome.REJECTED):
                return StopsCancelled(msg.request_id, msg.symbol, remaining=tuple(o.client_order_id for o in targets),
                                      position_lives=True)
            if failure.outcome is not Outcome.NO_POSITION:
                return StopsCancelled(msg.request_id, msg.symbol, failure=failure)
        cancelled: list[str] = []
        for order in targets:
            _, failure = await self._call(self._orders, lambda o=order: self.adapter.cancel_stop_order(msg.symbol, o),
                                          urgent=True)
            if failure is None or failure.outcome is Outcome.ORDER_NOT_FOUND:   # not found: gone already
                cancelled.append(order.client_order_id)
        left, failure = await self._call(self._reads, lambda: self.adapter.fetch_stop_orders(msg.symbol))
        if failure is not None:
            return StopsCancelled(msg.request_id, msg.symbol, tuple(cancelled), failure=failure)
        return StopsCancelled(msg.request_id, msg.symbol, tuple(cancelled),
                              tuple(o.client_order_id for o in wanted(left or [])))

    async def _closures(self, msg: FetchClosures) -> ClosuresFetched:
        closures, failure = await self._call(self._reads, lambda: self.adapter.fetch_closures(msg.symbol))
        return ClosuresFetched(msg.request_id, msg.symbol, tuple(closures or ()), failure)

    async def _truth(self, msg: GetTrueState) -> TrueStateReport:
        # Only the simulated venue knows its truth (adapters/sim/truth.py); a real one answers None.
        state = await self.adapter.true_state() if isinstance(self.adapter, TruthSource) else None
        return TrueStateReport(state, msg.request_id)

    async def _price(self, msg: FetchPrice) -> PriceFetched:
        price, failure = await self._call(self._reads, lambda: self.adapter.fetch_price(msg.symbol))
        return PriceFetched(msg.request_id, msg.symbol, price, failure)

    async def _stop_orders(self, msg: FetchStopOrders) -> StopOrdersFetched:
        orders, failure = await self._call(self._reads, lambda: self.adapter.fetch_stop_orders(msg.symbol))
        return StopOrdersFetched(msg.request_id, msg.symbol, tuple(orders or ()), failure)

    async def _call(self, pacer: Pacer, call: Callable[[], Awaitable[T]], urgent: bool = False,
                    sent: list[float] | None = None) -> tuple[T | None, VenueFailure | None]:
        await pacer.wait(urgent)
        if sent is not None:
            sent.append(time.time())
        try:
            return await asyncio.wait_for(call(), self.call_timeout_s), None
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes
            outcome = classify_error(exc, self.dialect)
            code = str(exc.code) if isinstance(exc, VenueError) else type(exc).__name__
            message = exc.message if isinstance(exc, VenueError) else str(exc)
            if outcome is Outcome.BUG:
                logger.exception("venue call failed with a local error (treated as unknown outcome)")
            return None, VenueFailure(outcome, code, message)


@dataclass(frozen=True, slots=True)
class Route:
    """One request type: how the service runs it, and the reply it gets had it failed outside
    the venue call (our own bug, an exchange not ready)."""

    run: Callable[[ExchangeCore, Any], Awaitable[object]]
    failed: Callable[[Any, VenueFailure], object]


# Every request the ExchangeActor takes, in one place: a type missing here is never handled.
ROUTES: dict[type, Route] = {
    PlaceOrder: Route(ExchangeCore._place,
                      lambda m, f: OrderPlaced(m.request_id, m.request.client_order_id, None, f)),
    QueryOrder: Route(ExchangeCore._query, lambda m, f: OrderQueried(m.request_id, m.client_order_id, None, f)),
    SetStop: Route(ExchangeCore._set_stop, lambda m, f: StopSet(m.request_id, m.symbol, m.stop_price, f)),
    SetExit: Route(ExchangeCore._set_exit, lambda m, f: ExitSet(m.request_id, m.symbol, m.kind, m.value, f)),
    FetchPositions: Route(ExchangeCore._positions, lambda m, f: PositionsFetched(m.request_id, (), f)),
    FetchClosures: Route(ExchangeCore._closures, lambda m, f: ClosuresFetched(m.request_id, m.symbol, (), f)),
    GetTrueState: Route(ExchangeCore._truth, lambda m, f: TrueStateReport(None, m.request_id)),
    FetchPrice: Route(ExchangeCore._price, lambda m, f: PriceFetched(m.request_id, m.symbol, None, f)),
    FetchStopOrders: Route(ExchangeCore._stop_orders,
                           lambda m, f: StopOrdersFetched(m.request_id, m.symbol, (), f)),
    CancelStops: Route(ExchangeCore._cancel_stops, lambda m, f: StopsCancelled(m.request_id, m.symbol, failure=f)),
}


def failure_reply(msg: object, failure: VenueFailure) -> object | None:
    """The reply a request would get had it failed this way (for errors outside the venue call)."""
    route = ROUTES.get(type(msg))
    return route.failed(msg, failure) if route is not None else None
