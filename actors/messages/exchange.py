"""Requests to the ExchangeActor, and its replies: each names the request it answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.messages.base import VenueFailure, id_field, ts_field
from adapters.base import ClosureReport, ExitKind, OrderReport, OrderRequest, PositionReport, Side, StopOrderReport
from adapters.sim.truth import TrueState


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Send one order; its client order id is already journaled."""

    request: OrderRequest
    request_id: str = id_field()
    ts: float = ts_field()
    reply_to: Any = None                 # an ActorAddress; None = the sender
    not_after: float | None = None       # boot-time clock: the writer's lease deadline (None: no lease)


@dataclass(frozen=True, slots=True)
class PlaceOrders:
    """Orders the journal committed together, forwarded in one message (each handled as a
    PlaceOrder, answered to its own reply_to)."""

    orders: tuple[PlaceOrder, ...]


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    """Reply to PlaceOrder: a report, or a classified failure."""

    request_id: str
    client_order_id: str
    report: OrderReport | None = None
    failure: VenueFailure | None = None
    sent_at: float | None = None         # wall time the request actually left for the venue
    received_ns: int = 0                 # host-monotonic: when the venue's answer came (stream news is older before it)


@dataclass(frozen=True, slots=True)
class QueryOrder:
    """Query one order by client order id."""

    symbol: str
    client_order_id: str
    request_id: str = id_field()
    ts: float = ts_field()


@dataclass(frozen=True, slots=True)
class OrderQueried:
    """Reply to QueryOrder."""

    request_id: str
    client_order_id: str
    report: OrderReport | None = None
    failure: VenueFailure | None = None
    received_ns: int = 0                 # host-monotonic: when the venue's answer came


@dataclass(frozen=True, slots=True)
class SetStop:
    """Set the stop loss on the symbol's position directly — no position lookup first."""

    symbol: str
    stop_price: float
    request_id: str = id_field()
    ts: float = ts_field()
    position_side: Side | None = None    # venues whose stop is a closing order need its side


@dataclass(frozen=True, slots=True)
class StopSet:
    """Reply to SetStop; failure None means the venue holds that stop."""

    request_id: str
    symbol: str
    stop_price: float
    failure: VenueFailure | None = None
    received_ns: int = 0                 # host-monotonic: when the venue's answer came


@dataclass(frozen=True, slots=True)
class SetExit:
    """Set or move the take-profit (`value`: a price) or the venue's trailing stop (`value`: its
    callback, % of the price) beside the stop -- no lookup first; sent by the journal once the
    exit is committed (JournalExit)."""

    symbol: str
    kind: ExitKind
    value: float
    position_side: Side
    qty: float                           # what is open: a trail that is a reduce-only order covers this
    request_id: str = id_field()
    reference_price: float | None = None  # turns a % trail into a distance where the venue wants one
    reply_to: Any = None                 # an ActorAddress; None = the sender


@dataclass(frozen=True, slots=True)
class ExitSet:
    """Reply to SetExit; failure None means the venue holds it (`value` as it holds it)."""

    request_id: str
    symbol: str
    kind: ExitKind
    value: float
    failure: VenueFailure | None = None
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class FetchPositions:
    """The venue's position view — for scans, never on the entry/stop/rollback path."""

    request_id: str = id_field()


@dataclass(frozen=True, slots=True)
class PositionsFetched:
    """Reply to FetchPositions."""

    request_id: str
    positions: tuple[PositionReport, ...] = ()
    failure: VenueFailure | None = None
    stop_orders: tuple[StopOrderReport, ...] = ()   # where stops are orders: every open one (flat symbols too)


@dataclass(frozen=True, slots=True)
class FetchClosures:
    """The venue's order history of closes for a symbol: why a position is gone (never whether)."""

    symbol: str
    request_id: str = id_field()


@dataclass(frozen=True, slots=True)
class ClosuresFetched:
    """Reply to FetchClosures, newest first."""

    request_id: str
    symbol: str
    closures: tuple[ClosureReport, ...] = ()
    failure: VenueFailure | None = None


@dataclass(frozen=True, slots=True)
class FetchPrice:
    """Last traded price (market data, not a position read): turns a stop distance into a price."""

    symbol: str
    request_id: str = id_field()


@dataclass(frozen=True, slots=True)
class PriceFetched:
    """Reply to FetchPrice."""

    request_id: str
    symbol: str
    price: float | None = None
    failure: VenueFailure | None = None


@dataclass(frozen=True, slots=True)
class GetTrueState:
    """Simulated venues only: the engine's truth (tests, benchmarks, demo status)."""

    reply_to: Any = None                 # an ActorAddress; None = the sender
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class TrueStateReport:
    """Reply to GetTrueState; state None where the venue cannot know it."""

    state: TrueState | None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class FetchStopOrders:
    """Open stop orders of a symbol (conditional orders that act as stops): for adoption."""

    symbol: str
    request_id: str = id_field()


@dataclass(frozen=True, slots=True)
class StopOrdersFetched:
    """Reply to FetchStopOrders."""

    request_id: str
    symbol: str
    orders: tuple[StopOrderReport, ...] = ()
    failure: VenueFailure | None = None


@dataclass(frozen=True, slots=True)
class CancelStops:
    """Cancel stop orders of ours on a symbol that has no position of ours any more: the ones
    named, or (none named) every working one with our client-id prefix. Sent by the journal once
    the reason is committed (JournalCancel)."""

    symbol: str
    client_order_ids: tuple[str, ...] = ()
    request_id: str = id_field()
    reply_to: Any = None                             # an ActorAddress; None = the sender
    # Not proven flat: before anything is cancelled, this stop is set again for a position of this
    # side, and only the engine's "no position" lets the cancel go on.
    probe_stop: float | None = None
    probe_side: Side | None = None
    # Only stop orders of this side (the ended position's closing side): a stop of ours on the
    # other side protects a position adopted meanwhile (a flip), and is not a leftover.
    side: Side | None = None


@dataclass(frozen=True, slots=True)
class StopsCancelled:
    """Reply to CancelStops: what was cancelled, and what of ours still works (read again after);
    `position_lives`: the engine took the probe -- a position is there, nothing was cancelled."""

    request_id: str
    symbol: str
    cancelled: tuple[str, ...] = ()
    remaining: tuple[str, ...] = ()
    failure: VenueFailure | None = None
    position_lives: bool = False
