"""The simulated venue's matching engine: the truth that the REST position view lags behind.

Deterministic from a seed: prices follow a seeded random walk sampled on a fixed tick, market
orders fill at the current price, positions are one-way. Errors carry Bybit v5 retCodes so the
same classification table serves the simulated and the real venue.

Position reads (`position_view`) show the engine's state as it was `position_lag_s` ago — the
lag behind the incident. Everything else (orders, stops, reduce-only) acts on the live state.
Stops are evaluated lazily: every call first advances the engine to `now`.

A stop is a field of the position (Bybit: set with trading-stop, gone with the position) or,
with `stop_orders`, a book of close-all stop orders that outlive their position (Binance's algo
orders; adapters/sim/stops.py). What someone does to the account outside posguard -- an order
by hand, a liquidation, an auto-deleveraging, a stop cancelled or moved by hand -- has a method
here, so tests and benchmarks can play it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import random
import time
import zlib
from collections.abc import Callable

from adapters.base import (
    ClosureReport,
    OrderReport,
    OrderRequest,
    OrderStatus,
    PositionReport,
    Side,
    StopOrderReport,
    VenueError,
    closure_kind,
)
from adapters.sim.exits import EngineExits, end_exits
from adapters.sim.outside import EngineOutside
from adapters.sim.records import (
    ZERO_POSITION,
    EngineConfig,
    EngineEvent,
    Episode,
    Position,
    check_stop_side,
    check_tp_side,
    closed_by_engine,
)
from adapters.sim.stops import StopBook, StopOrder, StopOrderStatus
from adapters.sim.truth import TruePosition, TrueState

NOTHING_TO_REDUCE = "current position is zero, cannot fix reduce-only order qty"
EPS = 1e-12


class SimEngine(EngineExits, EngineOutside):
    """Matching engine, position book and true-state recorder (take-profits and trailing stops:
    adapters/sim/exits.py; what is done outside posguard: adapters/sim/outside.py). Not thread-safe by design:
    it lives inside one event loop."""

    def __init__(self, config: EngineConfig, clock: Callable[[], float] = time.monotonic,
                 stop_orders: bool = False) -> None:
        self.config = config
        self.stop_book: StopBook | None = StopBook() if stop_orders else None
        self._clock = clock
        self._t0 = clock()
        self._walks: dict[str, list[float]] = {}
        self._rngs: dict[str, random.Random] = {}
        self._positions: dict[str, Position] = {s: Position() for s in config.prices}
        # (time, view) snapshots per symbol; reads pick the newest one older than the lag.
        self._history: dict[str, list[tuple[float, PositionReport | None]]] = {
            s: [(0.0, None)] for s in config.prices}
        self._orders: dict[str, OrderReport] = {}
        self._order_seq = 0
        self._episodes: list[Episode] = []
        self._advanced_to = 0.0
        self._scheduled: list[tuple[float, int, Callable[[], object]]] = []
        self._frozen_at: float | None = None
        self._reducing: set[str] = set()                              # client ids of fills that reduced a position
        # Stop orders whose cancel left a live position without any stop (the truth the tests and
        # benchmarks hold posguard to: it must never cause one).
        self.cancelled_live: list[str] = []
        self.listeners: list[Callable[[EngineEvent], None]] = []     # private streams, told of every change

    def _emit(self, event: EngineEvent) -> None:
        for listener in list(self.listeners):
            listener(event)

    # -- time and prices -------------------------------------------------------------

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return self._clock() - self._t0

    def price_at(self, symbol: str, t: float) -> float:
        walk = self._walks.setdefault(symbol, [self.config.prices[symbol]])
        rng = self._rngs.setdefault(
            symbol, random.Random(zlib.crc32(symbol.encode()) ^ self.config.seed))
        index = int(t / self.config.tick_s)
        while len(walk) <= index:
            walk.append(walk[-1] * (1.0 + rng.gauss(0.0, self.config.volatility)))
        return walk[index]

    def move_price(self, symbol: str, price: float) -> None:
        """The market moved to `price` (tests, benchmarks): the walk goes on from there, and any stop
        it crossed triggers."""
        self._check_symbol(symbol)
        now = self.now()
        self.price_at(symbol, now)
        walk = self._walks[symbol]
        del walk[int(now / self.config.tick_s):]
        walk.append(price)
        self.advance()

    def price(self, symbol: str) -> float:
        self._check_symbol(symbol)
        return self.price_at(symbol, self.now())

    def schedule(self, delay_s: float, request: Callable[[], object]) -> None:
        """Run `request` when the engine reaches now + delay_s (a request still in flight)."""
        heapq.heappush(self._scheduled, (self.now() + delay_s, len(self._scheduled), request))

    def advance(self) -> None:
        """Run in-flight requests that have arrived, and trigger every stop the price path
        crossed since the last call."""
        while self._scheduled and self._scheduled[0][0] <= self.now():
            at, _, request = heapq.heappop(self._scheduled)
            self._frozen_at = at                           # it happened when it arrived, not now
            try:
                with contextlib.suppress(VenueError):      # its reply went nowhere
                    request()
            finally:
                self._frozen_at = None
        now = self.now()
        tick = self.config.tick_s
        for symbol, pos in self._positions.items():
            if pos.qty == 0 or not self._guarded(symbol, pos):
                continue
            # Every tick the price path took since the last call, by index (the tick `now` falls in
            # included: a sum of float steps may stop just short of it).
            for index in range(int(self._advanced_to / tick), int(now / tick) + 1):
                t = max(self._advanced_to, index * tick)
                px = self.price_at(symbol, t)
                stop = pos.stop_price
                if stop is not None and ((pos.qty > 0 and px <= stop) or (pos.qty < 0 and px >= stop)):
                    self._trigger_stop(symbol, pos, px, t)
                    break
                if self._exit_fires(symbol, pos, px, t):
                    break
        self._advanced_to = now

    # -- orders ----------------------------------------------------------------------

    def create_order(self, req: OrderRequest, attached_stops: bool) -> OrderReport:
        """Execute a market order at once. Raises VenueError with Bybit retCodes."""
        self.advance()
        self._check_symbol(req.symbol)
        if req.qty <= 0:
            raise VenueError(10001, "qty must be positive")
        if req.client_order_id in self._orders:
            raise VenueError(110072, "OrderLinkedID is duplicate")
        if req.stop_price is not None or req.take_profit is not None:
            if not attached_stops or self.stop_book is not None:
                raise VenueError(10001, "stopLoss/takeProfit is not supported on order create here")
            if req.reduce_only:
                raise VenueError(10001, "reduce-only orders cannot carry tp/sl")
        pos = self._positions[req.symbol]
        px = self.price(req.symbol)
        signed = req.qty if req.side is Side.BUY else -req.qty
        qty = req.qty
        if req.reduce_only:
            if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
                raise VenueError(110017, NOTHING_TO_REDUCE)
            qty = min(qty, abs(pos.qty))
            signed = qty if signed > 0 else -qty
        if req.stop_price is not None:
            check_stop_side(req.side, req.stop_price, px)
        if req.take_profit is not None:
            check_tp_side(req.side, req.take_profit, px)
        if pos.qty != 0 and (pos.qty > 0) != (signed > 0):
            self._reducing.add(req.client_order_id)        # it closed (some of) a position
        self._fill(req.symbol, pos, signed, px, req.stop_price, req.take_profit)
        report = self._record_order(req, OrderStatus.FILLED, qty, px)
        return report

    def set_stop(self, symbol: str, stop_price: float) -> None:
        """Bybit /v5/position/trading-stop: acts on the engine's position, visible or not."""
        self.advance()
        self._check_symbol(symbol)
        pos = self._positions[symbol]
        if pos.qty == 0:
            raise VenueError(10001, ZERO_POSITION)
        if pos.stop_price is not None and abs(pos.stop_price - stop_price) < EPS:
            raise VenueError(34040, "not modified")
        side = Side.BUY if pos.qty > 0 else Side.SELL
        check_stop_side(side, stop_price, self.price(symbol))
        pos.stop_price = stop_price
        self._touch(symbol, pos)

    # -- stop orders (with `stop_orders`: Binance's algo STOP_MARKET closePosition) ----------------

    def place_stop_order(self, symbol: str, side: Side, trigger: float, client_id: str) -> StopOrderReport:
        """A close-all stop order. Refused when there is no position it would close (assumed of
        the venue, see adapters/emulators/binance.py), on the wrong side of the price, or under a
        client id already working."""
        self.advance()
        self._check_symbol(symbol)
        book = self._book()
        pos = self._positions[symbol]
        if pos.qty == 0:
            raise VenueError(10001, ZERO_POSITION)
        held = Side.BUY if pos.qty > 0 else Side.SELL
        if side is not held.opposite:
            raise VenueError(110017, NOTHING_TO_REDUCE)    # it would close nothing that is there
        if book.find(client_id) is not None:
            raise VenueError(110072, "OrderLinkedID is duplicate")
        check_stop_side(held, trigger, self.price(symbol))
        self._order_seq += 1
        order = StopOrder(self._order_seq, client_id, symbol, side, trigger)
        book.add(order)
        self._emit(EngineEvent(self.now(), symbol, stop_order=order.report(), stop_status=order.status))
        self._refresh_stop(symbol)
        return order.report()

    def cancel_stop_order(self, client_id: str) -> StopOrderReport:
        self.advance()
        order = self._book().find(client_id)
        if order is None:
            raise VenueError(110001, "order not exists or too late to cancel")
        self._end_stop_order(order, StopOrderStatus.CANCELLED)
        self._refresh_stop(order.symbol)
        pos = self._positions[order.symbol]
        if (order.kind == "stop" and pos.qty != 0 and pos.stop_price is None
                and order.side is (Side.SELL if pos.qty > 0 else Side.BUY)):
            self.cancelled_live.append(client_id)            # it was what protected that position
        return order.report()

    def stop_orders(self, symbol: str | None = None) -> list[StopOrderReport]:
        """Working stop orders (the venue's open conditional orders)."""
        self.advance()
        return [o.report() for o in self._book().working(symbol)] if self.stop_book is not None else []

    def _book(self) -> StopBook:
        if self.stop_book is None:
            raise VenueError(10001, "this venue keeps stops on the position, not as orders")
        return self.stop_book

    def _end_stop_order(self, order: StopOrder, status: StopOrderStatus) -> None:
        order.status = status
        self._emit(EngineEvent(self.now(), order.symbol, stop_order=order.report(), stop_status=status))

    def _refresh_stop(self, symbol: str) -> None:
        """With stop orders, a position's stop is the working order that would trigger first --
        whichever position that order was placed for."""
        pos = self._positions[symbol]
        if self.stop_book is None or pos.qty == 0:
            return
        effective = self.stop_book.effective(symbol, Side.BUY if pos.qty > 0 else Side.SELL)
        stop = effective.trigger if effective is not None else None
        if stop != pos.stop_price:
            pos.stop_price = stop
            self._touch(symbol, pos)

    def closures(self, symbol: str) -> list[ClosureReport]:
        """Orders that reduced or closed the symbol's position, newest first (order history)."""
        self.advance()
        out = []
        for o in reversed(self._orders.values()):
            if o.symbol != symbol or o.filled_qty <= 0 or not (o.reduce_only or o.client_order_id in self._reducing):
                continue
            kind = closure_kind(o.client_order_id, closed_by_engine(o.client_order_id))
            out.append(ClosureReport(symbol, kind, o.side, o.filled_qty, o.avg_price, o.venue_order_id,
                                     o.client_order_id))
        return out

    def fetch_order(self, client_order_id: str) -> OrderReport:
        self.advance()
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise VenueError(110001, "order not exists or too late to cancel") from None

    def position_view(self) -> list[PositionReport]:
        """The REST position read: the state as it was `position_lag_s` ago."""
        self.advance()
        horizon = self.now() - self.config.position_lag_s
        out: list[PositionReport] = []
        for history in self._history.values():
            seen = None
            for t, view in history:
                if t <= horizon + EPS:
                    seen = view
                else:
                    break
            # Drop snapshots no read can reach any more (all but the newest visible one).
            while len(history) > 1 and history[1][0] <= horizon + EPS:
                history.pop(0)
            if seen is not None:
                out.append(dataclasses.replace(seen, mark_price=self.price(seen.symbol)))   # the price is live
        return out

    # -- truth -------------------------------------------------------------------------

    def true_state(self) -> TrueState:
        self.advance()
        now = self.now()
        episodes = tuple(
            TruePosition(
                symbol=e.symbol, qty=e.qty, entry_price=e.entry_price, stop_price=e.stop_price,
                opened_at=e.opened_at, closed_at=e.closed_at,
                naked_seconds=e.naked_total + (now - e.naked_since if e.naked_since is not None else 0.0))
            for e in self._episodes)
        return TrueState(now=now, prices={s: self.price(s) for s in self._positions},
                         positions=episodes, orders=tuple(self._orders.values()))

    # -- internals ---------------------------------------------------------------------

    def _check_symbol(self, symbol: str) -> None:
        if symbol not in self._positions:
            raise VenueError(10001, f"symbol invalid: {symbol}")

    def _record_order(self, req: OrderRequest, status: OrderStatus, filled: float, px: float) -> OrderReport:
        self._order_seq += 1
        report = OrderReport(
            symbol=req.symbol, client_order_id=req.client_order_id, venue_order_id=f"sim-{self._order_seq}",
            side=req.side, qty=req.qty, status=status, filled_qty=filled, avg_price=px,
            reduce_only=req.reduce_only, stop_price=req.stop_price, take_profit=req.take_profit)
        self._orders[req.client_order_id] = report
        self._emit(EngineEvent(self.now(), req.symbol, order=report))
        return report

    def _fill(self, symbol: str, pos: Position, signed: float, px: float, stop: float | None,
              tp: float | None = None) -> None:
        old = pos.qty
        new = old + signed
        if abs(new) < EPS:
            new = 0.0
        if old == 0 or (old > 0) == (signed > 0):          # open or add
            pos.entry_price = px if old == 0 else (pos.entry_price * abs(old) + px * abs(signed)) / abs(new)
            if stop is not None:
                pos.stop_price = stop
            if tp is not None:
                pos.take_profit = tp
        elif new != 0 and (new > 0) != (old > 0):            # flip: a fresh position
            self._close_episode(pos)
            end_exits(pos)
            pos.entry_price, pos.stop_price, pos.take_profit = px, stop, tp
        pos.qty = new
        if new == 0:
            pos.stop_price = None                            # Bybit clears tp/sl with the position
        elif self.stop_book is not None:                     # a working stop order covers it, whoever placed it
            effective = self.stop_book.effective(symbol, Side.BUY if new > 0 else Side.SELL)
            pos.stop_price = effective.trigger if effective is not None else None
        self._touch(symbol, pos)

    def _trigger_stop(self, symbol: str, pos: Position, px: float, t: float) -> None:
        fired = None
        if self.stop_book is not None:
            fired = self.stop_book.effective(symbol, Side.BUY if pos.qty > 0 else Side.SELL)
        self._close_by_venue(symbol, pos, abs(pos.qty), px, t, "stop", "stop", fired)

    def _close_by_venue(self, symbol: str, pos: Position, qty: float, px: float, t: float, prefix: str,
                        closed_by: str, fired: StopOrder | None = None) -> None:
        """An order the venue itself places: a stop that triggered (`fired`: the stop order it
        was, which ends with it; other stop orders keep working), a liquidation, an ADL."""
        self._order_seq += 1
        side = Side.SELL if pos.qty > 0 else Side.BUY
        cid = f"{prefix}-{symbol}-{self._order_seq}"
        self._orders[cid] = OrderReport(
            symbol=symbol, client_order_id=cid, venue_order_id=f"sim-{self._order_seq}", side=side,
            qty=qty, status=OrderStatus.FILLED, filled_qty=qty, avg_price=px, reduce_only=True)
        left = abs(pos.qty) - qty
        pos.qty = 0.0 if left < EPS else (left if pos.qty > 0 else -left)
        if pos.qty == 0:
            pos.stop_price = None
        self._emit(EngineEvent(t, symbol, order=self._orders[cid], closed_by=closed_by))
        if fired is not None:                            # it placed that order, and is spent
            fired.status = StopOrderStatus.FINISHED
            self._emit(EngineEvent(t, symbol, stop_order=fired.report(), stop_status=fired.status))
        self._touch(symbol, pos, at=t)

    def _touch(self, symbol: str, pos: Position, at: float | None = None) -> None:
        """Record the new state: history for lagged reads, episode and naked-time accounting."""
        now = self.now() if at is None else at
        if pos.qty == 0:
            end_exits(pos)
        view = None if pos.qty == 0 else PositionReport(
            symbol=symbol, side=Side.BUY if pos.qty > 0 else Side.SELL, qty=abs(pos.qty),
            entry_price=pos.entry_price, stop_price=pos.stop_price, take_profit=pos.take_profit,
            trail=pos.trail.distance if pos.trail is not None else None)
        self._history[symbol].append((now, view))
        self._emit(EngineEvent(now, symbol, position=view))
        if pos.qty != 0 and pos.episode is None:
            pos.episode = len(self._episodes)
            self._episodes.append(Episode(symbol, pos.qty, pos.entry_price, pos.stop_price, opened_at=now))
        if pos.episode is None:
            return
        ep = self._episodes[pos.episode]
        ep.qty, ep.entry_price, ep.stop_price = pos.qty or ep.qty, pos.entry_price, pos.stop_price
        naked = pos.qty != 0 and pos.stop_price is None
        if naked and ep.naked_since is None:
            ep.naked_since = now
        elif not naked and ep.naked_since is not None:
            ep.naked_total += now - ep.naked_since
            ep.naked_since = None
        if pos.qty == 0:
            self._close_episode(pos, at=now)

    def _close_episode(self, pos: Position, at: float | None = None) -> None:
        if pos.episode is None:
            return
        ep = self._episodes[pos.episode]
        now = self.now() if at is None else at
        if ep.naked_since is not None:
            ep.naked_total += now - ep.naked_since
            ep.naked_since = None
        ep.closed_at = now
        pos.episode = None
