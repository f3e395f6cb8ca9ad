"""Take-profits and trailing stops of the simulated venue, beside its stops (a part of SimEngine).

Both of the venues' ways are played: on the position (Bybit's trading-stop `takeProfit` and
`trailingStop`, a price distance: gone with the position, like its stop) and, with stop orders,
as conditional orders (Binance's TAKE_PROFIT_MARKET closePosition, and TRAILING_STOP_MARKET,
which reduces a quantity and takes a callback of 0.1-10 %). Orders outlive their position like
the stop orders do; what fires is the venue's own closing order, named by its client id's prefix
(records.CLOSED_BY), so a stream and the order history say why the position went.
"""

from __future__ import annotations

from typing import Any

from adapters.base import ExitKind, Side, StopOrderReport, VenueError
from adapters.sim.records import EngineEvent, Position, Trail, check_tp_side
from adapters.sim.stops import StopOrder

TRAIL_BOUNDS_PCT = (0.1, 10.0)           # Binance's callbackRate bounds (and the simulated venue's)


class EngineExits:
    """SimEngine's take-profit and trailing-stop requests, and their triggering."""

    _positions: dict[str, Position]
    stop_book: Any
    _order_seq: int

    # -- on the position (Bybit) ---------------------------------------------------------------

    def set_take_profit(self, symbol: str, price: float) -> None:
        """trading-stop takeProfit (0: cancel it)."""
        pos = self._open(symbol)
        if price == 0:
            pos.take_profit = None
        else:
            if pos.take_profit is not None and abs(pos.take_profit - price) < 1e-12:
                raise VenueError(34040, "not modified")
            check_tp_side(self._side(pos), price, self.price(symbol))  # type: ignore[attr-defined]
            pos.take_profit = price
        self._touch(symbol, pos)                                        # type: ignore[attr-defined]

    def set_trailing(self, symbol: str, distance: float, activation: float | None = None) -> None:
        """trading-stop trailingStop, a price distance (0: cancel it), armed at `activation`."""
        pos = self._open(symbol)
        if distance < 0:
            raise VenueError(10001, "trailingStop must not be negative")
        if distance == 0:
            pos.trail = None
        else:
            if pos.trail is not None and pos.trail.distance == distance and pos.trail.activation == activation:
                raise VenueError(34040, "not modified")
            pos.trail = Trail(distance=distance, activation=activation)
        self._touch(symbol, pos)                                        # type: ignore[attr-defined]

    # -- as orders (Binance) -------------------------------------------------------------------

    def place_exit_order(self, symbol: str, side: Side, kind: ExitKind, client_id: str, trigger: float | None = None,
                         qty: float | None = None, callback_pct: float | None = None,
                         activation: float | None = None) -> StopOrderReport:
        """A TAKE_PROFIT_MARKET closePosition order (`trigger`), or a reduce-only
        TRAILING_STOP_MARKET of `qty` (`callback_pct`, armed at `activation`)."""
        pos = self._open(symbol)
        book = self._book()                                             # type: ignore[attr-defined]
        held = self._side(pos)
        if side is not held.opposite:
            raise VenueError(110017, "current position is zero, cannot fix reduce-only order qty")
        if book.find(client_id) is not None:
            raise VenueError(110072, "OrderLinkedID is duplicate")
        px = self.price(symbol)                                         # type: ignore[attr-defined]
        trail = None
        if kind is ExitKind.TAKE_PROFIT:
            if trigger is None:
                raise VenueError(10001, "a take-profit needs its trigger price")
            check_tp_side(held, trigger, px)
        else:
            low, high = TRAIL_BOUNDS_PCT
            if callback_pct is None or not low <= callback_pct <= high or qty is None or qty <= 0:
                raise VenueError(10001, f"callbackRate must be within [{low}, {high}] with a quantity")
            trail = Trail(pct=callback_pct, activation=activation)
            trigger = activation if activation is not None else px
        self._order_seq += 1
        order = StopOrder(self._order_seq, client_id, symbol, side, trigger, kind=str(kind), qty=qty, trail=trail)
        if trail is not None:
            self._follow(order, held, px)
        book.add(order)
        self._emit(EngineEvent(self.now(), symbol, stop_order=order.report(),  # type: ignore[attr-defined]
                               stop_status=order.status))
        return order.report()

    # -- triggering ----------------------------------------------------------------------------

    def _guarded(self, symbol: str, pos: Position) -> bool:
        """Whether anything may trigger on this position's price path."""
        if pos.stop_price is not None or pos.take_profit is not None or pos.trail is not None:
            return True
        return self.stop_book is not None and bool(self.stop_book.working(symbol))

    def _exit_fires(self, symbol: str, pos: Position, px: float, t: float) -> bool:
        """The price is `px` at `t`: a take-profit reached, or a trail crossed, closes (all, or a
        trail's quantity) by the venue's own order. True when one fired."""
        long = pos.qty > 0
        if pos.take_profit is not None and (px >= pos.take_profit if long else px <= pos.take_profit):
            self._close_by_venue(symbol, pos, abs(pos.qty), px, t, "tp", "take_profit")   # type: ignore[attr-defined]
            return True
        if pos.trail is not None and pos.trail.fires(long, px):
            self._close_by_venue(symbol, pos, abs(pos.qty), px, t, "trail", "stop")   # type: ignore[attr-defined]
            return True
        if self.stop_book is None:
            return False
        held = Side.BUY if long else Side.SELL
        for order in self.stop_book.working(symbol):
            if order.kind == "stop" or not order.closes(held):
                continue
            if order.kind == "take_profit" and (px >= order.trigger if long else px <= order.trigger):
                self._close_by_venue(symbol, pos, abs(pos.qty), px, t, "tp", "take_profit", order)  # type: ignore[attr-defined]
                return True
            if order.kind == "trailing" and self._follow(order, held, px):
                qty = min(order.qty or abs(pos.qty), abs(pos.qty))
                self._close_by_venue(symbol, pos, qty, px, t, "trail", "stop", order)   # type: ignore[attr-defined]
                return True
        return False

    @staticmethod
    def _follow(order: StopOrder, held: Side, px: float) -> bool:
        assert order.trail is not None
        fired = order.trail.fires(held is Side.BUY, px)
        order.trigger = order.trail.trigger(held is Side.BUY) or order.trigger
        return fired

    # -- helpers -------------------------------------------------------------------------------

    def _open(self, symbol: str) -> Position:
        self.advance()                                                  # type: ignore[attr-defined]
        self._check_symbol(symbol)                                      # type: ignore[attr-defined]
        pos = self._positions[symbol]
        if pos.qty == 0:
            raise VenueError(10001, "can not set tp/sl/ts for zero position")
        return pos

    @staticmethod
    def _side(pos: Position) -> Side:
        return Side.BUY if pos.qty > 0 else Side.SELL


def end_exits(pos: Position) -> None:
    """The position is gone: its take-profit and trail go with it (Bybit's way; orders stay)."""
    pos.take_profit = pos.trail = None
