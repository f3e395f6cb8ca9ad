"""What the simulated venue's engine holds and says, as data: its configuration, a position and
an episode of it (the truth the tests read), the events of its private stream, and which of its
own orders closed a position."""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.base import OrderReport, PositionReport, Side, StopOrderReport, VenueError
from adapters.bounds import Count, Number, Price, Seconds

ZERO_POSITION = "can not set tp/sl/ts for zero position"

# The engine's own closing orders, by the prefix of the client id it gives them: what closed a position.
CLOSED_BY = {"stop-": "stop", "trail-": "stop", "tp-": "take_profit", "liq-": "liquidation", "adl-": "adl"}


def closed_by_engine(client_order_id: str) -> str:
    """"stop" | "take_profit" | "liquidation" | "adl" for the engine's own closing orders, "" for a client's."""
    return next((why for prefix, why in CLOSED_BY.items() if client_order_id.startswith(prefix)), "")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How the simulated market behaves."""

    seed: Count[0, 2**31 - 1] = 1
    prices: dict[str, Price] = field(default_factory=lambda: {"BTCUSDT": 60_000.0})
    position_lag_s: Seconds[0.0, 3600.0] = 0.0
    tick_s: Seconds[0.001, 60.0] = 0.05
    volatility: Number[0.0, 0.5] = 0.0002    # relative standard deviation of one tick's move


@dataclass(slots=True)
class Trail:
    """A trailing stop the venue holds: it follows the best price since it armed, `distance` (a
    price, Bybit's trailingStop) or `pct` (Binance's callbackRate) behind it, and triggers there."""

    distance: float | None = None
    pct: float | None = None
    activation: float | None = None      # armed once the price reaches it (None: at once)
    extreme: float | None = None         # the best price since it armed (None: not armed yet)

    def trigger(self, long: bool) -> float | None:
        if self.extreme is None:
            return None
        gap = self.distance if self.distance is not None else self.extreme * (self.pct or 0.0) / 100
        return self.extreme - gap if long else self.extreme + gap

    def fires(self, long: bool, price: float) -> bool:
        """The price moved to `price`: follow it; True when the trail is crossed."""
        if self.extreme is None:
            if self.activation is not None and (price < self.activation if long else price > self.activation):
                return False
            self.extreme = price
        self.extreme = max(self.extreme, price) if long else min(self.extreme, price)
        trigger = self.trigger(long)
        return trigger is not None and (price <= trigger if long else price >= trigger)


@dataclass(slots=True)
class Position:
    qty: float = 0.0                 # signed
    entry_price: float = 0.0
    stop_price: float | None = None
    episode: int | None = None       # index into SimEngine._episodes while open
    take_profit: float | None = None     # position-level (Bybit): gone with the position, like the stop
    trail: Trail | None = None


@dataclass(slots=True)
class Episode:
    symbol: str
    qty: float
    entry_price: float
    stop_price: float | None
    opened_at: float
    closed_at: float | None = None
    naked_total: float = 0.0
    naked_since: float | None = None


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """What the engine's private stream says, as it happens (no lag): an order's new state, or a
    symbol's position (None: flat). The stream emulators and the simulated venue's stream carry
    these; `closed_by` marks the venue's own closing orders (a stop that triggered, liquidation)."""

    at: float
    symbol: str
    order: OrderReport | None = None
    position: PositionReport | None = None
    closed_by: str = ""                  # "" | "stop" | "liquidation" | "adl"
    stop_order: StopOrderReport | None = None   # a stop order placed, cancelled or finished (`stop_status`)
    stop_status: str = ""


def check_stop_side(position_side: Side, stop: float, price: float) -> None:
    """A stop on the wrong side of the price would close at once: refused, as Bybit words it."""
    if stop <= 0:
        raise VenueError(10001, "stop loss price must be positive")
    if position_side is Side.BUY and stop >= price:
        raise VenueError(10001, f"StopLoss:{stop} set for Buy position should lower than base_price:{price}")
    if position_side is Side.SELL and stop <= price:
        raise VenueError(10001, f"StopLoss:{stop} set for Sell position should greater than base_price:{price}")


def check_tp_side(position_side: Side, tp: float, price: float) -> None:
    """A take-profit that would fill at once is refused, as Bybit words it."""
    if tp <= 0:
        raise VenueError(10001, "take profit price must be positive")
    if position_side is Side.BUY and tp <= price:
        raise VenueError(10001, f"TakeProfit:{tp} set for Buy position should greater than base_price:{price}")
    if position_side is Side.SELL and tp >= price:
        raise VenueError(10001, f"TakeProfit:{tp} set for Sell position should lower than base_price:{price}")
