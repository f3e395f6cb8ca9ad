"""Stop orders of the simulated venue where stops are orders (Binance's algo STOP_MARKET with
closePosition), not a field of the position (Bybit's trading-stop).

What makes them dangerous, and what the engine therefore plays faithfully: a close-all stop
order is not tied to the position it was placed for. When that position goes away (closed by
hand, liquidated), the order stays working; it closes the *next* position of its side on that
symbol at the old trigger price. Only a cancel (or its own trigger) ends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from adapters.base import Side, StopOrderReport
from adapters.sim.records import Trail


class StopOrderStatus(StrEnum):
    NEW = "new"                      # working
    CANCELLED = "cancelled"          # cancelled by its owner (or by hand)
    FINISHED = "finished"            # triggered and executed


@dataclass(slots=True)
class StopOrder:
    """One conditional closing order: `side` is the order's side (SELL closes a long). A stop
    loss or a take-profit closes all (closePosition); a trailing stop reduces `qty` (Binance's
    TRAILING_STOP_MARKET cannot close all)."""

    seq: int                         # the venue's order number (its algo id derives from it)
    client_id: str
    symbol: str
    side: Side
    trigger: float                   # a trail's: where it would trigger now (its activation until armed)
    status: StopOrderStatus = StopOrderStatus.NEW
    kind: str = "stop"               # stop | take_profit | trailing
    qty: float | None = None         # None: closes the whole position
    trail: Trail | None = None

    @property
    def working(self) -> bool:
        return self.status is StopOrderStatus.NEW

    def protects(self, position_side: Side) -> bool:
        return self.kind == "stop" and self.working and self.side is position_side.opposite

    def closes(self, position_side: Side) -> bool:
        return self.working and self.side is position_side.opposite

    def report(self) -> StopOrderReport:
        return StopOrderReport(self.symbol, self.side, self.trigger, self.qty, True, self.client_id, f"sim-{self.seq}",
                               self.kind)


class StopBook:
    """Every stop order ever placed, oldest first."""

    def __init__(self) -> None:
        self.orders: list[StopOrder] = []

    def working(self, symbol: str | None = None) -> list[StopOrder]:
        return [o for o in self.orders if o.working and (symbol is None or o.symbol == symbol)]

    def find(self, client_id: str) -> StopOrder | None:
        """The working order with this client id (ids are unique among working orders only)."""
        return next((o for o in self.orders if o.working and o.client_id == client_id), None)

    def add(self, order: StopOrder) -> None:
        self.orders.append(order)

    def effective(self, symbol: str, position_side: Side) -> StopOrder | None:
        """The order that triggers first for a position of this side: the tightest (highest for a
        long, lowest for a short) of the working close-all orders on its closing side."""
        candidates = [o for o in self.working(symbol) if o.protects(position_side)]
        if not candidates:
            return None
        pick = max if position_side is Side.BUY else min
        return pick(candidates, key=lambda o: o.trigger)
