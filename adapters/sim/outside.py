"""What is done to the account outside posguard (a close in the app, a liquidation, an ADL, a
stop removed or moved by hand, a stop triggered between ticks), played on the engine: the
simulated venue's `outside` request and the emulators' `/emulator/outside` both land here."""

from __future__ import annotations

import uuid
from typing import Any

from adapters.base import (
    OrderRequest,
    Side,
    VenueError,
)
from adapters.sim.records import ZERO_POSITION, Position, check_stop_side
from adapters.sim.stops import StopOrderStatus

# What someone does to the account outside posguard (tests and benchmarks), by name.
OUTSIDE_ACTIONS = ("order", "liquidate", "deleverage", "clear_stop", "move_stop", "trigger_stop", "price")


def outside(engine: Any, action: str, symbol: str, side: str | None = None, qty: float | None = None,
            reduce_only: bool = False, price: float | None = None, client_order_id: str | None = None) -> None:
    """Play one outside action on the engine: an order by hand (a close, a partial close, an
    increase, a flip), a liquidation or an ADL (all of it or `qty`), a stop cancelled or moved by
    hand, a stop triggered now, the market moved to `price`."""
    match action:
        case "order":
            if side is None or qty is None:
                raise ValueError("an order by hand needs a side and a qty")
            cid = client_order_id or f"hand-{uuid.uuid4().hex[:12]}"
            engine.create_order(OrderRequest(symbol, Side(side), float(qty), cid, reduce_only=reduce_only), True)
        case "liquidate":
            engine.liquidate(symbol, qty)
        case "deleverage":
            engine.deleverage(symbol, qty)
        case "clear_stop":
            engine.clear_stop(symbol)
        case "move_stop":
            if price is None:
                raise ValueError("a stop moved by hand needs a price")
            engine.move_stop(symbol, float(price))
        case "trigger_stop":
            engine.trigger_stop_now(symbol)
        case "price":
            if price is None:
                raise ValueError("a market move needs a price")
            engine.move_price(symbol, float(price))
        case _:
            raise ValueError(f"unknown outside action {action!r}; one of {', '.join(OUTSIDE_ACTIONS)}")


class EngineOutside:
    """SimEngine's methods for what is done outside posguard (a part of SimEngine; the engine
    provides what they call)."""

    _positions: dict[str, Position]
    stop_book: Any
    _order_seq: int


    def clear_stop(self, symbol: str) -> None:
        """Someone removed the position's stop by hand (every stop order of the symbol, where
        stops are orders)."""
        self.advance()
        if self.stop_book is not None:
            for order in self.stop_book.working(symbol):
                if order.kind == "stop":                 # a take-profit or a trail is not the stop
                    self._end_stop_order(order, StopOrderStatus.CANCELLED)
        pos = self._positions[symbol]
        pos.stop_price = None
        self._touch(symbol, pos)

    def move_stop(self, symbol: str, stop_price: float) -> None:
        """Someone moved the position's stop by hand (where stops are orders: cancelled every
        working one and placed their own at the new price)."""
        self.advance()
        pos = self._positions[symbol]
        if pos.qty == 0:
            raise VenueError(10001, ZERO_POSITION)
        held = Side.BUY if pos.qty > 0 else Side.SELL
        check_stop_side(held, stop_price, self.price(symbol))
        if self.stop_book is None:
            pos.stop_price = stop_price
            self._touch(symbol, pos)
            return
        for order in self.stop_book.working(symbol):
            if order.kind == "stop":
                self._end_stop_order(order, StopOrderStatus.CANCELLED)
        self.place_stop_order(symbol, held.opposite, stop_price, f"hand-sl-{self._order_seq + 1}")

    def trigger_stop_now(self, symbol: str) -> None:
        """The price touched the stop between two ticks (tests): the stop executes now."""
        self.advance()
        pos = self._positions[symbol]
        if pos.qty != 0 and pos.stop_price is not None:
            self._trigger_stop(symbol, pos, self.price(symbol), self.now())

    def liquidate(self, symbol: str, qty: float | None = None) -> None:
        """The venue's liquidation engine takes the position over, all of it or `qty` of it."""
        self.advance()
        self._venue_close(symbol, qty, "liq", "liquidation")

    def deleverage(self, symbol: str, qty: float | None = None) -> None:
        """Auto-deleveraging: the venue closes (part of) the position against a bankrupt one."""
        self.advance()
        self._venue_close(symbol, qty, "adl", "adl")

    def _venue_close(self, symbol: str, qty: float | None, prefix: str, closed_by: str) -> None:
        pos = self._positions[symbol]
        if pos.qty == 0:
            return
        size = abs(pos.qty) if qty is None else min(qty, abs(pos.qty))
        self._close_by_venue(symbol, pos, size, self.price(symbol), self.now(), prefix, closed_by)

