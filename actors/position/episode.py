"""What one episode of a symbol knows, from an open (an adoption, a recovery) until the next.

PositionCore holds one `Episode` and replaces it whole when a new episode begins, so nothing of
the last one can leak into the next. The entry and the close are both an `OrderLeg`: an order
of ours whose outcome is learned from the venue, by client order id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.position.outside import Outside
from actors.position.states import TimerKind
from adapters.base import ExitKind, OrderRequest, PositionReport, Side


@dataclass(slots=True)
class OrderLeg:
    """The entry or the close, as far as the venue has told us."""

    cid: str | None = None               # client order id (a close's derives from the intent)
    request: OrderRequest | None = None  # what is sent, and sent again under the same id
    sent_at: float = 0.0                 # monotonic: "never arrived" windows run from here
    # Entry: its final state is known. Close: it filled, or the venue has nothing left to reduce.
    final: bool = False
    filled_qty: float = 0.0              # entry: filled; close: closed, over the episode's close orders
    avg_price: float | None = None       # the entry's average fill price
    attempts: int = 0                    # close: orders refused since the close began
    retries: int = 0                     # retry-later answers (not processed) to the current order


@dataclass(slots=True)
class StopLeg:
    """The stop loss: attached to the entry, or set directly once the fill is known."""

    price: float | None = None           # as asked; as the venue holds it once confirmed (its tick)
    request_id: str | None = None        # the SetStop whose answer counts
    attempts: int = 0                    # retry-later / unknown answers to SetStop
    confirmed: bool = False              # the venue holds it: only then does the snapshot show it
    latency: float | None = None         # from taking the command to the stop confirmed
    guarded_latency: float | None = None  # ... to no fill being possible without its stop


@dataclass(slots=True)
class NakedClock:
    """Time filled without a confirmed stop, summed over the episode."""

    total: float = 0.0
    since: float | None = None           # monotonic start of the current stretch, None between stretches

    def start(self, now: float) -> None:
        self.since = now

    def stop(self, now: float) -> None:
        if self.since is not None:
            self.total += now - self.since
            self.since = None


@dataclass(slots=True)
class Episode:
    """What was asked, and what the venue has confirmed of the entry, the stop and the close."""

    intent_id: str | None = None         # journaled before any order of the episode
    side: Side | None = None
    requested_qty: float = 0.0
    opened_at: float = 0.0               # monotonic: when the command was taken
    entry: OrderLeg = field(default_factory=OrderLeg)
    stop: StopLeg = field(default_factory=StopLeg)
    naked: NakedClock = field(default_factory=NakedClock)
    close: OrderLeg = field(default_factory=OrderLeg)
    closes_sent: int = 0                 # close orders of this episode (their ids derive from it)
    close_reason: str = ""
    # The entry was final when the current close was sent: its "nothing to reduce" then proves flat.
    close_after_entry_final: bool = False
    resume_close: bool = False           # recovering mid-close: finish the close, never protect again
    vanish_hint: str = ""                # why the venue's history says the position is gone
    # Our stop went missing (seen by REST or the stream) and is being set again: if the engine now
    # holds no position, the stop most likely went with it -- a REST view older than the stop list.
    stop_vanished: str = ""
    moving_to: float | None = None       # MOVING_STOP: the stop being set (the old one stands until it is)
    moved_by: str = ""                   # who asked: "operator" | "breakeven"
    # Beside the stop (actors/position/changes.py): the take-profit and the venue-held trail as the
    # venue holds them, the one being set, and those still to set once PROTECTED (with the open, a
    # restart, a resize of a trail that is an order of a size).
    take_profit: float | None = None
    trail_pct: float | None = None
    exit_asked: tuple[ExitKind, float] | None = None
    exit_request_id: str | None = None
    exit_attempts: int = 0
    exits_wanted: list[tuple[ExitKind, float]] = field(default_factory=list)
    # A partial close ("reduce") or an add: an order of ours like the entry, learnt by client id.
    change: OrderLeg = field(default_factory=OrderLeg)
    change_kind: str = ""
    added_while_closing: bool = False    # an add filled while a close was out: the close proves nothing of it
    probe_cid: str | None = None         # after a restart: the next derived close id, asked for
    probe_until: float = 0.0             # ... until then (monotonic), while the venue says "not found"
    armed_once: set[TimerKind] = field(default_factory=set)   # timers that run from their first cause
    # What the venue did outside posguard (actors/position/outside.py): the open quantity after a resize by
    # someone else (None: what the entry filled), evidence the position went away awaiting the
    # engine's word, the closing order the stream saw (it names why), and a push that arrived
    # while busy (judged once PROTECTED).
    position_qty: float | None = None
    # The last resize outside us (before, after): the order that made it may arrive after the push
    # that showed it, and must not then read as a close of all that is left.
    resized: tuple[float, float] | None = None
    reduced_by: float | None = None      # an order not ours reduced it; the push that shows it is awaited
    outside: Outside | None = None
    cause: Outside | None = None
    held_push: tuple[PositionReport | None, bool, int] | None = None   # (position, stop known, received_ns)
    known_ns: int = 0                    # host-monotonic: the venue's latest answer our picture rests on

    @property
    def open_qty(self) -> float:
        """What the venue holds of this episode, as far as we know."""
        return self.position_qty if self.position_qty is not None else self.entry.filled_qty


def same_qty(fill: float, resize: tuple[float, float]) -> bool:
    """Whether a fill of `fill` is the reduction from resize[0] to resize[1]."""
    before, after = resize
    return after > 0 and abs(fill - (before - after)) <= 1e-9 * max(1.0, before)
