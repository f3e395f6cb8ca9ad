"""A venue's private stream, behind one interface: what it pushes, normalised, and how it fails.

A stream is evidence, never a writer and never the only evidence: it says what happened to an
order or a position as it happens, and it can lie by omission (a drop, a stall, a gap, an
expired key). Everything here is the venue side; what posguard does with it (health, gaps,
reconciliation through REST, fan-out by symbol) lives in actors/exchange/stream_runner.py and
actors/stream.py.

A `VenueStream` is used by one task at a time:

    await stream.open()          # connect, authenticate, subscribe (raises StreamDown / StreamAuthFailed)
    while True:
        items = await stream.next()   # one or more updates; raises StreamDown when the stream is gone
    await stream.close()         # always, after any failure too; a new open() reconnects
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from adapters.base import OrderReport, PositionReport, StopOrderReport


@dataclass(frozen=True, slots=True)
class StreamOrder:
    """An order's new state. `closed_by` marks the venue's own closing orders: "stop" (a stop
    loss triggered), "liquidation" or "adl" (auto-deleveraging); "" for orders placed by a client
    (ours or not)."""

    report: OrderReport
    closed_by: str = ""


@dataclass(frozen=True, slots=True)
class StreamFill:
    """One execution of an order (a fill or part of one)."""

    symbol: str
    client_order_id: str
    venue_order_id: str
    qty: float
    price: float


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A symbol's position as the matching engine holds it now; `position` None: flat.
    `stop_known`: the push says the position's stop (Bybit); Binance's carry none."""

    symbol: str
    position: PositionReport | None
    stop_known: bool = True


@dataclass(frozen=True, slots=True)
class StreamStopOrder:
    """A conditional order that can act as a stop changed (Binance algo orders): `open` False
    once it is cancelled, triggered or expired; `ended` says which ("cancelled" | "triggered" |
    "expired"; "" while open, or when the venue did not say)."""

    order: StopOrderReport
    open: bool
    ended: str = ""


StreamItem = StreamOrder | StreamFill | StreamPosition | StreamStopOrder


class StreamDown(Exception):
    """The stream is gone (dropped, stalled, or could not connect): nothing more will arrive
    on it. Events that happen until a new open() are never replayed."""


class StreamAuthFailed(StreamDown):
    """The venue refused the stream's credentials (or its listen key expired); the client was
    thrown away, so the next open() authenticates afresh."""


class VenueStream(ABC):
    """One private stream connection of one venue account."""

    name: str = "private"

    @abstractmethod
    async def open(self) -> None:
        """Connect, authenticate and subscribe to orders, executions and positions (and
        conditional orders where the venue keeps stops as orders). Bounded in time."""

    @abstractmethod
    async def next(self) -> list[StreamItem]:
        """The next updates, oldest first. Raises StreamDown (or StreamAuthFailed) when the
        stream is gone, including when nothing (no event, no pong) arrived within the venue's
        heartbeat bound: a stall is a drop."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection; safe to call in any state, and more than once."""
