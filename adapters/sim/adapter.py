"""The simulated venue behind the adapter interface: latency, rate limits and faults around
the matching engine. Used by the demo, the tests and the benchmarks; no network."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adapters.base import (
    MALFORMED,
    Capabilities,
    ClosureReport,
    ExitKind,
    OrderReport,
    OrderRequest,
    OrderStatus,
    PositionReport,
    Side,
    StopOrderReport,
    VenueAdapter,
    VenueError,
    VenueTimeout,
)
from adapters.bounds import Number, Seconds
from adapters.sim.engine import EngineConfig, SimEngine
from adapters.sim.exits import TRAIL_BOUNDS_PCT
from adapters.sim.faults import Fault, FaultKind, FaultPlan
from adapters.sim.stream import SimStream, StreamControl
from adapters.sim.truth import TrueState
from adapters.stops import EXIT_ID_PREFIX, STOP_ID_PREFIX, exit_client_id, stop_client_id

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SimVenueConfig:
    """A simulated venue: market, behaviour, and the faults it will inject."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    attached_stops: bool = True      # False plays a venue where the stop is a separate call
    latency_s: Seconds[0.0, 10.0] = 0.0          # one full round trip
    orders_per_second: Number[0.01, 1e6] = 10.0  # venue-side limit on order and stop calls; over it → 10006
    reads_per_second: Number[0.01, 1e6] = 50.0   # what clients should pace reads to (not enforced)
    ack_only: bool = False           # create replies carry ids only, like Bybit v5
    recv_window_s: Seconds[0.01, 600.0] = 5.0    # a request arriving later than this after it was sent is refused
    faults: tuple[Fault, ...] = ()
    streams: bool = False            # a private stream pushes the engine's changes (adapters/sim/stream.py)
    # Stops are close-all stop orders that outlive their position (Binance), not a field of it (Bybit).
    stop_orders: bool = False


class SimulatedAdapter(VenueAdapter):
    """Adapter over a SimEngine living in the same event loop."""

    def __init__(self, config: SimVenueConfig, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.config = config
        self._sleep = sleep or _sleep                    # a manual-clock harness passes its own
        self.engine = SimEngine(config.engine, clock, stop_orders=config.stop_orders)
        self.faults = FaultPlan(config.faults)
        self.capabilities = Capabilities(
            venue="simulated", attached_stop=config.attached_stops and not config.stop_orders,
            orders_per_second=config.orders_per_second, reads_per_second=config.reads_per_second,
            dialect="bybit", streams=config.streams, stop_orders=config.stop_orders,   # Bybit's retCodes
            take_profit=True, trail_bounds_pct=TRAIL_BOUNDS_PCT, trail_sized=config.stop_orders)
        self.stream_control = StreamControl()
        self._clock = clock
        self._bucket = float(config.orders_per_second)
        self._bucket_at = clock()
        self.calls: list[tuple[str, str | None]] = []   # (op, symbol): for tests asserting "no read"

    async def create_order(self, request: OrderRequest) -> OrderReport:
        report = await self._call(
            "create_order", request.symbol,
            lambda: self.engine.create_order(request, self.config.attached_stops),
            reduce_only=request.reduce_only, is_order=True)
        if self.config.ack_only:
            return OrderReport(
                symbol=report.symbol, client_order_id=report.client_order_id,
                venue_order_id=report.venue_order_id, side=report.side, qty=report.qty,
                status=OrderStatus.NEW, reduce_only=report.reduce_only, stop_price=report.stop_price,
                fill_known=False)
        return report

    async def set_stop(self, symbol: str, stop_price: float, position_side: Side | None = None) -> float | None:
        if self.engine.stop_book is None:
            await self._call("set_stop", symbol, lambda: self.engine.set_stop(symbol, stop_price), is_order=True)
            return None
        # Stops are orders (as on Binance): the new one first, then the ones of ours it replaces.
        if position_side is None:
            raise VenueError(10001, "the position's side is needed to place its closing stop")
        cid = stop_client_id(symbol, position_side, format(stop_price, ".10g"))
        try:
            await self.place_stop_order(symbol, position_side.opposite, stop_price, cid)
        except VenueError as exc:
            if exc.code != 110072:                       # that exact stop is working already: what we want
                raise
        for order in await self.fetch_stop_orders(symbol):
            if (order.client_order_id != cid and order.client_order_id.startswith(STOP_ID_PREFIX)
                    and order.side is position_side.opposite):
                await self.cancel_stop_order(symbol, order)
        return None

    async def set_exit(self, symbol: str, kind: ExitKind, value: float, position_side: Side, qty: float,
                       reference_price: float | None = None) -> float:
        low, high = TRAIL_BOUNDS_PCT
        if kind is ExitKind.TRAILING and not low <= value <= high:
            raise VenueError(10001, f"trailing callback {value:g}% outside [{low:g}, {high:g}]%")
        engine = self.engine
        if engine.stop_book is None:                     # on the position, in place (Bybit's trading-stop)
            if kind is ExitKind.TAKE_PROFIT:
                execute = lambda: engine.set_take_profit(symbol, value)   # noqa: E731
            else:
                distance = (reference_price or engine.price(symbol)) * value / 100
                execute = lambda: engine.set_trailing(symbol, distance)   # noqa: E731
            await self._call("set_exit", symbol, execute, is_order=True)
            return value
        # As orders (Binance): the new one first, then the ones of ours of its kind it replaces.
        trail = kind is ExitKind.TRAILING
        size = format(qty, ".10g") if trail else ""      # a trail of another size is another order
        cid = exit_client_id(symbol, position_side, str(kind), format(value, ".10g"), size)
        try:
            await self.place_exit_order(symbol, position_side.opposite, kind, cid, trigger=None if trail else value,
                                        qty=qty if trail else None, callback_pct=value if trail else None)
        except VenueError as exc:
            if exc.code != 110072:                       # that exact one is working already
                raise
        for order in await self.fetch_stop_orders(symbol):
            if order.client_order_id != cid and order.client_order_id.startswith(EXIT_ID_PREFIX[kind]):
                await self.cancel_stop_order(symbol, order)
        return value

    async def set_position_exits(self, symbol: str, take_profit: float | None = None, trail: float | None = None,
                                 activation: float | None = None) -> None:
        """Bybit's trading-stop takeProfit / trailingStop as its emulator receives them (a price;
        a price distance), with this venue's latency, limits and faults: one request."""
        def execute() -> None:
            if take_profit is not None:
                self.engine.set_take_profit(symbol, take_profit)
            if trail is not None:
                self.engine.set_trailing(symbol, trail, activation)
        await self._call("set_exit", symbol, execute, is_order=True)

    async def place_exit_order(self, symbol: str, side: Side, kind: ExitKind, client_id: str, **order: Any
                               ) -> StopOrderReport:
        """A take-profit or trailing order (where stops are orders): adapters/sim/exits.py."""
        return await self._call("set_exit", symbol,
                                lambda: self.engine.place_exit_order(symbol, side, kind, client_id, **order),
                                is_order=True)

    async def place_stop_order(self, symbol: str, side: Side, trigger: float, client_id: str) -> StopOrderReport:
        return await self._call("set_stop", symbol,
                                lambda: self.engine.place_stop_order(symbol, side, trigger, client_id), is_order=True)

    async def cancel_stop_order(self, symbol: str, order: StopOrderReport) -> None:
        await self._call("cancel_order", symbol, lambda: self.engine.cancel_stop_order(order.client_order_id),
                         is_order=True)

    async def fetch_stop_orders(self, symbol: str | None = None) -> list[StopOrderReport]:
        return await self._call("fetch_stop_orders", symbol, lambda: self.engine.stop_orders(symbol))

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderReport:
        return await self._call("fetch_order", symbol, lambda: self.engine.fetch_order(client_order_id))

    async def fetch_price(self, symbol: str) -> float:
        return await self._call("fetch_price", symbol, lambda: self.engine.price(symbol))

    async def fetch_closures(self, symbol: str) -> list[ClosureReport]:
        return await self._call("fetch_closures", symbol, lambda: self.engine.closures(symbol))

    async def fetch_positions(self) -> list[PositionReport]:
        return await self._call("fetch_positions", None, self.engine.position_view)

    def stream(self) -> SimStream | None:
        return SimStream(self.engine, self.stream_control, self.config.latency_s) if self.config.streams else None

    async def true_state(self) -> TrueState:
        counts: dict[str, int] = {}
        for op, _ in self.calls:
            counts[op] = counts.get(op, 0) + 1
        return dataclasses.replace(self.engine.true_state(), calls=tuple(sorted(counts.items())))

    async def _call(self, op: str, symbol: str | None, execute: Callable[[], T], *,
                    reduce_only: bool | None = None, is_order: bool = False) -> T:
        self.calls.append((op, symbol))
        sent_at = self._clock()
        fault = self.faults.take(op, symbol, reduce_only)
        half = self.config.latency_s / 2
        await self._sleep(half)
        if fault is not None and fault.kind is FaultKind.DELAY:
            await self._sleep(fault.delay_s)
        if is_order and self._clock() - sent_at > self.config.recv_window_s:
            # Like Bybit's recv_window: a request that arrives too late is refused, never executed.
            # This is what lets a client conclude "never arrived" once the window has passed.
            await self._sleep(half)
            raise VenueError(10002, "request expired: outside recv_window")
        if is_order:
            self._take_rate_token()
        if fault is not None and fault.kind is FaultKind.ERROR:
            await self._sleep(half)
            raise VenueError(fault.code, fault.message)
        if fault is not None and fault.kind is FaultKind.TIMEOUT_BEFORE:
            await self._sleep(half)
            raise VenueTimeout(f"{op}: no reply (request lost)")
        if fault is not None and fault.kind is FaultKind.LATE:
            # Delivered after we gave up on it (ccxt #2599): it executes later, on the engine's
            # clock -- unless it arrives outside the recv window, when the venue drops it.
            if fault.delay_s <= self.config.recv_window_s:
                self.engine.schedule(fault.delay_s, execute)
            await self._sleep(half)
            raise VenueTimeout(f"{op}: no reply (request still in flight)")
        result = execute()
        await self._sleep(half)
        if fault is not None and fault.kind is FaultKind.TIMEOUT_AFTER:
            raise VenueTimeout(f"{op}: no reply (request executed)")
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            # What a real adapter makes of a reply missing a field (adapters/ccxt/adapter.py).
            raise VenueError(MALFORMED, f"{op}: reply without a field we rely on (executed)")
        if fault is not None and fault.kind is FaultKind.OMIT and isinstance(result, list):
            # A list read that silently leaves a position out (seen of Bybit's position list).
            return [p for p in result if fault.symbol is not None and p.symbol != fault.symbol]  # type: ignore
        return result

    def _take_rate_token(self) -> None:
        now = self._clock()
        rate = self.config.orders_per_second
        self._bucket = min(rate, self._bucket + (now - self._bucket_at) * rate)
        self._bucket_at = now
        if self._bucket < 1.0:
            raise VenueError(10006, "Too many visits. Exceeded the API Rate Limit.")
        self._bucket -= 1.0


def _sleep(seconds: float) -> Awaitable[None]:
    return asyncio.sleep(seconds) if seconds > 0 else asyncio.sleep(0)
