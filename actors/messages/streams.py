"""The private streams: their configuration, what they carry, and their health."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from actors.messages.base import ts_field
from actors.settings import StreamSettings
from adapters.base import OrderReport, PositionReport, StopOrderReport


@dataclass(frozen=True, slots=True)
class ConfigureStream:
    """Own the venue's private stream: health, gaps, reconciliation, fan-out by symbol."""

    exchange: Any                                    # ActorAddress: the stream's socket lives there (the keys do)
    protection: Any                                  # ActorAddress or None
    positions: tuple[tuple[str, Any], ...]           # (symbol, PositionActor address)
    settings: StreamSettings = field(default_factory=StreamSettings)
    name: str = "private"                            # how status and metrics call it (e.g. "bybit private")


@dataclass(frozen=True, slots=True)
class StreamRoutes:
    """Supervisor to StreamActor: where each symbol's evidence goes now (after restarts)."""

    exchange: Any
    protection: Any
    positions: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class StreamReady:
    """The StreamActor is configured (the stream itself may still be connecting)."""

    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class OpenStream:
    """StreamActor to ExchangeActor: keep the venue's private stream open and send it to me."""

    subscriber: Any
    settings: StreamSettings = field(default_factory=StreamSettings)


@dataclass(frozen=True, slots=True)
class StreamUpdates:
    """What the stream pushed, oldest first (adapters.streams items)."""

    items: tuple[Any, ...]
    at: float = ts_field()
    received_ns: int = field(default_factory=time.monotonic_ns)   # host-monotonic, in the exchange process


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """The stream connected (up) or was lost (down, with why)."""

    stream: str
    up: bool
    reason: str = ""
    reconnects: int = 0
    gap_s: float = 0.0                               # how long it was down before this reconnect
    at: float = ts_field()


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """StreamActor to Supervisor: what status, metrics and the event stream say of a stream."""

    stream: str
    state: str                                       # down | reconciling | up
    reason: str = ""
    reconnects: int = 0
    gap_s: float = 0.0
    since: float = ts_field()


@dataclass(frozen=True, slots=True)
class OrderStreamed:
    """An order's new state, from the stream: treated like a query by client id, for our own ids only."""

    report: OrderReport
    closed_by: str = ""                              # the venue's own close: "stop" | "liquidation" | "adl"
    received_ns: int = 0                             # host-monotonic: when the exchange process got it


@dataclass(frozen=True, slots=True)
class PositionStreamed:
    """A symbol's position as the stream pushed it (None: flat), to the symbol's PositionActor:
    evidence of what was done outside posguard, judged against its episode (actors/position/outside.py)."""

    symbol: str
    position: PositionReport | None
    stop_known: bool                                 # the push says the position's stop (Bybit; not Binance)
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class StopOrderStreamed:
    """A stop order of the symbol changed, from the stream (Binance algo orders): ours ending
    while its position lives was cancelled by hand, or triggered."""

    order: StopOrderReport
    open: bool
    ended: str = ""                                  # cancelled | triggered | expired
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class FillStreamed:
    """An execution of one of our orders, from the stream: its final state is asked for at once."""

    symbol: str
    client_order_id: str


@dataclass(frozen=True, slots=True)
class StreamGap:
    """The stream was down: ask again by client id whatever is unfinished."""

    reason: str


@dataclass(frozen=True, slots=True)
class StreamView:
    """StreamActor to ProtectionActor: positions (None: flat) and stop orders as the stream saw them."""

    positions: tuple[tuple[str, PositionReport | None], ...] = ()
    stops: tuple[tuple[StopOrderReport, bool], ...] = ()     # (stop order, still open)
    at: float = ts_field()


@dataclass(frozen=True, slots=True)
class StreamTrust:
    """StreamActor to ProtectionActor: stream evidence may (not) be used; lost trust empties its view."""

    trusted: bool
    reason: str = ""
