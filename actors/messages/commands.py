"""Commands to a PositionActor, and what it answers about its state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from actors.messages.base import id_field, ts_field
from actors.position.states import State, TimerKind, Trigger
from adapters.base import PositionReport, Side


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """Open a market position with a stop loss."""

    symbol: str
    side: Side
    qty: float
    stop_price: float
    command_id: str = id_field()
    ts: float = ts_field()
    reference_price: float | None = None  # the price the caller placed the stop from, if it fetched one
    take_profit: float | None = None     # beside the stop: with the entry where the venue takes it, else after
    trail_pct: float | None = None       # a venue-held trailing stop (callback, % of the price), once protected
    add: bool = True                     # on a PROTECTED symbol of that side: an add (False: refused, not IDLE)


@dataclass(frozen=True, slots=True)
class ClosePosition:
    """Flatten the symbol's position reduce-only; with `qty`, close that much of it (a partial
    close: the stop keeps covering what stays)."""

    symbol: str
    command_id: str = id_field()
    ts: float = ts_field()
    qty: float | None = None


@dataclass(frozen=True, slots=True)
class AdoptPosition:
    """A position nothing of ours opened (found by the protection scan): protect it with a stop
    at `stop_price`, or, with no stop price, close it reduce-only."""

    symbol: str
    side: Side
    qty: float
    stop_price: float | None
    reason: str = "foreign position"
    command_id: str = id_field()
    ts: float = ts_field()
    reference_price: float | None = None  # the venue's mark price when it was found


@dataclass(frozen=True, slots=True)
class Reprotect:
    """The venue view disagrees with our stop (missing, moved, or no position at all): set the
    stop again directly; the venue's answer (done / not modified / zero position) is the truth."""

    symbol: str
    reason: str
    command_id: str = id_field()
    ts: float = ts_field()
    venue_history: str = ""              # what the venue's order history says happened (a label only)


@dataclass(frozen=True, slots=True)
class AmendPosition:
    """Change a PROTECTED position's exits, one at a time: move the stop to `stop_price`, or
    (`breakeven`) to the entry price plus both sides' fees (the risk limits apply as to an entry's
    stop); set or move the take-profit; set or change the venue-held trailing stop."""

    symbol: str
    stop_price: float | None = None
    breakeven: bool = False
    command_id: str = id_field()
    ts: float = ts_field()
    reference_price: float | None = None  # the price the caller judged the stop from, if it fetched one
    take_profit: float | None = None
    trail_pct: float | None = None


@dataclass(frozen=True, slots=True)
class PositionObserved:
    """ProtectionActor (through the supervisor) to a symbol's PositionActor: what a REST read of
    the venue's positions shows of a symbol it holds, once settled past the REST lag (None: the
    list left it out). Judged like a stream push; nothing is cancelled on it alone."""

    symbol: str
    position: PositionReport | None
    finding: str                         # missing | resized | flipped | drift
    command_id: str = id_field()
    ts: float = ts_field()
    read_ns: int = 0                     # host-monotonic: when the read was asked (0: unknown)


@dataclass(frozen=True, slots=True)
class CancelLeftovers:
    """ProtectionActor (through the supervisor) to a symbol's PositionActor: stop orders of ours
    are working on a symbol that two REST reads, the REST lag apart, show flat; cancel them."""

    symbol: str
    client_order_ids: tuple[str, ...]
    command_id: str = id_field()
    ts: float = ts_field()


@dataclass(frozen=True, slots=True)
class GetPositionState:
    """Ask a PositionActor for a symbol's snapshot ("": its first symbol's)."""

    command_id: str = id_field()
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """What a PositionActor knows about its symbol right now."""

    symbol: str
    state: State
    side: Side | None = None
    requested_qty: float = 0.0
    filled_qty: float = 0.0
    entry_price: float | None = None
    stop_price: float | None = None
    intent_id: str | None = None
    take_profit: float | None = None     # as the venue holds it, beside the stop
    trail_pct: float | None = None       # the venue-held trailing stop's callback, % of the price
    naked_seconds: float = 0.0           # accumulated time filled without confirmed protection
    naked_since: float | None = None     # wall time the current naked stretch began
    protect_latency_s: float | None = None  # from taking the open command to protection confirmed
    guarded_latency_s: float | None = None  # ... to the venue guaranteeing no fill without a stop
    trigger: Trigger | Literal[""] = ""  # the transition that produced this snapshot ("": none)
    last_event: str = ""
    updated_at: float = ts_field()
    # Made at: the host's monotonic clock (one for every process), so snapshots of a symbol order
    # across a restart too. thespian may deliver two sends out of order (a retried transmit is
    # overtaken by the next): a receiver keeps the latest made, not the latest arrived.
    made_ns: int = field(default_factory=time.monotonic_ns)

    def supersedes(self, held: PositionSnapshot | None) -> bool:
        """Whether this snapshot replaces `held` (the one a receiver keeps for the symbol)."""
        return held is None or self.made_ns >= held.made_ns

    def naked_now(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        return self.naked_seconds + (now - self.naked_since if self.naked_since is not None else 0.0)


@dataclass(frozen=True, slots=True)
class PositionSnapshots:
    """Several symbols' snapshots at once (a PositionActor guarding many sends one per handler)."""

    snapshots: tuple[PositionSnapshot, ...]


@dataclass(frozen=True, slots=True)
class PositionTimer:
    """A PositionActor's own wake-up; stale ones (older token) are ignored."""

    kind: TimerKind
    token: int
