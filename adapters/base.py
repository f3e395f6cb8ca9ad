"""The one interface every venue sits behind, and the normalised reports it returns.

Raw venue data (ccxt dicts, HTTP bodies) stops inside an adapter: everything above this
module sees only the frozen reports below and `VenueError` / `VenueTimeout`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderStatus(StrEnum):
    NEW = "new"                      # accepted, not (fully) executed yet
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"          # final; may carry a partial fill
    REJECTED = "rejected"            # final, nothing filled

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a venue can do; generic code branches on these flags, never on a venue name."""

    venue: str
    attached_stop: bool              # a stop loss can travel with the entry order
    orders_per_second: float         # account order limit the client must pace itself to
    dialect: str                     # whose error codes VenueError carries (adapters.errors tables)
    reads_per_second: float = 50.0
    stop_orders: bool = False        # stops may live as open conditional orders: the scan reads them
    streams: bool = False            # a private stream pushes orders and positions (adapters/streams.py)
    take_profit: bool = False        # a take-profit can stand beside the stop (with the entry where attached_stop)
    # A trailing stop the venue itself holds (never one the bot trails): the callback bounds in % of
    # the price, or None where the venue has none (refused with that reason).
    trail_bounds_pct: tuple[float, float] | None = None
    trail_sized: bool = False        # the trail is a reduce-only order of a size (Binance): a resize replaces it


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A market order as we want it placed; `client_order_id` was journaled before this exists."""

    symbol: str
    side: Side
    qty: float
    client_order_id: str
    reduce_only: bool = False
    stop_price: float | None = None  # attached stop loss (only where Capabilities.attached_stop)
    take_profit: float | None = None  # attached take-profit, beside the stop (the same venues)


@dataclass(frozen=True, slots=True)
class OrderReport:
    """The venue's account of one order."""

    symbol: str
    client_order_id: str
    venue_order_id: str
    side: Side
    qty: float
    status: OrderStatus
    filled_qty: float = 0.0
    avg_price: float | None = None
    reduce_only: bool = False
    stop_price: float | None = None
    fill_known: bool = True          # False: an acknowledgement that says nothing about the fill
    take_profit: float | None = None  # the take-profit the venue took with the order


@dataclass(frozen=True, slots=True)
class PositionReport:
    """A position as the venue's (possibly lagging) position view shows it."""

    symbol: str
    side: Side
    qty: float
    entry_price: float | None           # None: the venue did not say (never taken as 0)
    stop_price: float | None
    mark_price: float | None = None     # the venue's mark (or last) price when it said this
    # Where stops are orders: the trigger of every stop order that protects it (`stop_price`: the
    # one that triggers first), so that ours is found among an operator's.
    stop_prices: tuple[float, ...] = ()
    take_profit: float | None = None    # where it lives on the position (Bybit)
    trail: float | None = None          # the position's trailing distance, a price (Bybit's trailingStop)


@dataclass(frozen=True, slots=True)
class StopOrderReport:
    """An open conditional order that can act as a stop (Binance algo orders, Bybit StopOrder)."""

    symbol: str
    side: Side                       # the order's side: SELL protects a long
    stop_price: float
    qty: float | None                # None: closes the whole position (closePosition)
    reduce_only: bool
    client_order_id: str = ""
    venue_order_id: str = ""
    kind: str = "stop"               # stop | take_profit | trailing: only a "stop" is counted as protection


class ExitKind(StrEnum):
    """What stands beside the stop loss on the venue: closes with a profit, or trails the price."""

    TAKE_PROFIT = "take_profit"
    TRAILING = "trailing"


class CloseKind(StrEnum):
    """Why a position went away, as the venue's order history tells it."""

    STOP = "stop loss triggered"
    TAKE_PROFIT = "take-profit triggered"
    LIQUIDATION = "liquidated"
    ADL = "auto-deleveraged"
    MANUAL = "closed by an order that is not ours (by hand?)"
    OURS = "closed by our own order"


@dataclass(frozen=True, slots=True)
class ClosureReport:
    """One order in the venue's history that reduced or closed a position."""

    symbol: str
    kind: CloseKind
    side: Side
    qty: float
    price: float | None
    venue_order_id: str = ""
    client_order_id: str = ""

    def describe(self) -> str:
        px = f" @ {self.price:.8g}" if self.price else ""
        return f"{self.kind} ({self.side} {self.qty:g}{px}, venue order {self.venue_order_id or '?'})"


OUR_ORDER_PREFIX = "pg"              # every client order id posguard makes starts with this


# What closed a position, as the venues' streams and histories mark their own closing orders.
CLOSED_BY_KIND = {"stop": CloseKind.STOP, "take_profit": CloseKind.TAKE_PROFIT, "liquidation": CloseKind.LIQUIDATION,
                  "adl": CloseKind.ADL}


def closure_kind(client_order_id: str, closed_by: str = "") -> CloseKind:
    """`closed_by`: "stop" | "take_profit" | "liquidation" | "adl" for the venue's own closing
    orders, "" for a client's."""
    if closed_by:
        return CLOSED_BY_KIND[closed_by]
    return CloseKind.OURS if client_order_id.startswith(OUR_ORDER_PREFIX) else CloseKind.MANUAL


@dataclass(frozen=True, slots=True)
class Preflight:
    """What the venue's account says before any entry: problems (each names the setting to
    change) refuse the deployment; warnings are shown."""

    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


MALFORMED = "malformed"      # VenueError code: a reply lacks a field we rely on (an unknown outcome)


class VenueError(Exception):
    """A definite error reply from the venue, with the venue's own code (Bybit retCode style)."""

    def __init__(self, code: int | str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self):  # keep it picklable across actor processes
        return (type(self), (self.code, self.message))


class VenueTimeout(Exception):
    """No reply: the request may or may not have been executed."""


class VenueAdapter(ABC):
    """One venue. Methods raise VenueError / VenueTimeout, never venue-specific exceptions."""

    capabilities: Capabilities

    async def start(self) -> None:
        """Open connections, load markets. Called inside the process that will use it."""
        return None

    async def close(self) -> None:
        """Release connections."""
        return None

    def load_credentials(self) -> tuple[str, ...]:
        """Read the keys (before `start`); returns the values no log line may ever show."""
        return ()

    @abstractmethod
    async def create_order(self, request: OrderRequest) -> OrderReport: ...

    @abstractmethod
    async def set_stop(self, symbol: str, stop_price: float, position_side: Side | None = None) -> float | None:
        """Set the stop loss of the symbol's one-way position directly (no lookup first);
        returns the price the venue holds when it rounds it (None: exactly as asked).
        `position_side` is what the caller knows of the position; venues whose stop is a
        closing order (Binance) need it, venues with a position-level stop (Bybit) ignore it."""

    async def set_exit(self, symbol: str, kind: ExitKind, value: float, position_side: Side, qty: float,
                       reference_price: float | None = None) -> float:
        """Set (or move) the take-profit (`value`: its price) or the venue's trailing stop (`value`:
        its callback in % of the price) of the symbol's position, beside its stop, without a lookup
        first; `qty` is what is open, for venues whose trail is a reduce-only order of a size.
        Where a venue can only replace one, the new one is placed before the old is cancelled.
        Returns the value the venue holds (its tick). Venues without one refuse with the reason."""
        raise VenueError(10001, f"{self.capabilities.venue} has no venue-held {kind.replace('_', '-')}")

    @abstractmethod
    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderReport:
        """Query one order by its client order id."""

    @abstractmethod
    async def fetch_price(self, symbol: str) -> float:
        """Last traded price (market data)."""

    @abstractmethod
    async def fetch_positions(self) -> list[PositionReport]:
        """The venue's position view. Never used before protecting or rolling back."""

    async def fetch_stop_orders(self, symbol: str | None = None) -> list[StopOrderReport]:
        """Open conditional orders that can act as stops. Venues whose stops live on the
        position (the simulated venue) have none."""
        return []

    async def cancel_stop_order(self, symbol: str, order: StopOrderReport) -> None:
        """Cancel one open stop order (as `fetch_stop_orders` reported it). Venues whose stops
        live on the position have none to cancel."""
        raise VenueError(10001, f"{self.capabilities.venue} keeps stops on the position: no stop order to cancel")

    async def fetch_closures(self, symbol: str) -> list[ClosureReport]:
        """Orders that reduced or closed the symbol's position, newest first (order history).
        Used only to tell *why* a position is gone; never to decide that it is."""
        return []

    async def preflight(self, symbols: tuple[str, ...]) -> Preflight:
        """Is this account fit for posguard on these symbols (one-way position mode, symbols
        trading, a key that can trade)? Asked once the adapter started, before any entry."""
        return Preflight()

    def stream(self) -> Any:
        """A new, unopened private stream (adapters.streams.VenueStream) of this account, or None
        where the venue has none (or streams are off). Each call makes a fresh client."""
        return None
