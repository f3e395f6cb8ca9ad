"""What the simulated venue's engine holds and says, as data: its configuration, a position and
an episode of it (the truth the tests read), the events of its private stream, and which of its
own orders closed a position."""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.base import OrderReport, PositionReport, Side, StopOrderReport, VenueError
from adapters.bounds import Count, Number, Price, Seconds

# The engine's own closing orders, by the prefix of the client id it gives them: what closed a position.
CLOSED_BY = {"stop-": "stop", "liq-": "liquidation", "adl-": "adl"}


def closed_by_engine(client_order_id: str) -> str:
    """"stop" | "liquidation" | "adl" for the engine's own closing orders, "" for a client's."""
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
class Position:
    qty: float = 0.0                 # signed
    entry_price: float = 0.0
    stop_price: float | None = None
    episode: int | None = None       # index into SimEngine._episodes while open


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
