"""Every message the actors exchange: frozen, picklable values (thespian pickles them
between processes). Commands carry an id and a creation time."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from actors.position_states import State, TimerKind, Trigger
from adapters.base import (
    Capabilities,
    ClosureReport,
    OrderReport,
    OrderRequest,
    PositionReport,
    Side,
    StopOrderReport,
    TrueState,
)
from adapters.bounds import Count, Fraction, Internal, Percent, Price, Quantity, Seconds
from adapters.errors import Outcome


def new_id() -> str:
    return uuid.uuid4().hex


def _ts() -> float:
    return time.time()


def _id_field():
    return field(default_factory=new_id)


def _ts_field():
    return field(default_factory=_ts)


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PositionSettings:
    """Timing of a PositionActor; tests scale these down, production uses the defaults."""

    naked_deadline_s: Seconds[0.01, 300.0] = 10.0       # protection not confirmed this long after the fill → flatten
    # An order not found this long after it left for the venue never arrived: it must exceed the
    # venue's recv window (Bybit: 5 s), with a margin for clocks and transport.
    entry_unknown_window_s: Seconds[0.01, 600.0] = 7.0
    poll_s: Seconds[0.001, 60.0] = 0.2                  # re-query interval for orders whose final state is unknown
    retry_s: Seconds[0.001, 60.0] = 0.25                # first back-off for retry-later outcomes (doubles, capped)
    retry_cap_s: Seconds[0.001, 600.0] = 4.0
    max_close_attempts: Count[1, 1000] = 5          # definite close rejections before the position is STUCK
    max_entry_retries: Count[0, 100] = 5           # retry-later replies to an entry before giving up
    reply_timeout_s: Seconds[0.1, 300.0] = 15.0        # a request unanswered this long was lost: ask again by id
    reference_max_age_s: Seconds[1.0, 3600.0] = 60.0   # a price older than this is fetched again for limits
    journal_wait_s: Seconds[0.01, 30.0] = 1.0          # a close waits no longer for its journal row: it goes anyway
    # Our stop moved by hand on the venue: keep the operator's price (within the risk limits) instead
    # of setting ours again. A stop removed by hand is always set again.
    follow_stop_moves: bool = False
    failpoints: Internal[tuple[tuple[str, str], ...]] = ()   # crash tests only: ("STATE:trigger", marker)


@dataclass(frozen=True, slots=True)
class SupervisionSettings:
    """At most `max_restarts` within `within_s` seconds, else safe mode; back-off between restarts
    of one child doubles from `backoff_s` to `backoff_cap_s`, with +-`jitter` spread."""

    max_restarts: Count[1, 1000] = 5
    within_s: Seconds[1.0, 86_400.0] = 60.0
    backoff_s: Seconds[0.001, 60.0] = 0.05
    backoff_cap_s: Seconds[0.001, 3600.0] = 5.0
    jitter: Fraction = 0.2
    heartbeat_s: Seconds[0.01, 60.0] = 1.0             # how often children are asked whether they are alive
    heartbeat_timeout_s: Seconds[0.05, 600.0] = 5.0     # unanswered this long: hung, killed and replaced
    # How many symbols one PositionActor process guards; 0: one each up to 40 symbols, beyond that
    # as many as keeps the deployment at about 40 such processes (README, "Sizing").
    symbols_per_process: Count[0, 1000] = 0


@dataclass(frozen=True, slots=True)
class ProtectionSettings:
    """The protection scan: how often, how long to leave a recently changed symbol alone (at least
    the venue's REST lag), and what to do with a position nothing of ours opened."""

    scan_s: Seconds[0.01, 3600.0] = 5.0
    grace_s: Seconds[0.0, 3600.0] = 30.0
    foreign_policy: Literal["protect", "close", "alert"] = "protect"      # protect | close | alert
    foreign_stop_pct: Percent[50.0] = 2.0        # protect: stop this far from the position's entry price


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """What one entry may be, checked before anything is journaled or sent (a reduce-only close
    is never refused by a limit). Notional and stop distance are measured at the reference price."""

    max_qty: Quantity | None = None                  # None: bounded by max_notional alone
    max_notional: Price = 1000.0                     # USDT
    max_stop_distance_pct: Percent[50.0] = 10.0      # how far from the price a stop may be


# -- commands to a PositionActor -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """Open a market position with a stop loss."""

    symbol: str
    side: Side
    qty: float
    stop_price: float
    command_id: str = _id_field()
    ts: float = _ts_field()
    reference_price: float | None = None  # the price the caller placed the stop from, if it fetched one


@dataclass(frozen=True, slots=True)
class ClosePosition:
    """Flatten the symbol's position reduce-only."""

    symbol: str
    command_id: str = _id_field()
    ts: float = _ts_field()


@dataclass(frozen=True, slots=True)
class AdoptPosition:
    """A position nothing of ours opened (found by the protection scan): protect it with a stop
    at `stop_price`, or, with no stop price, close it reduce-only."""

    symbol: str
    side: Side
    qty: float
    stop_price: float | None
    reason: str = "foreign position"
    command_id: str = _id_field()
    ts: float = _ts_field()
    reference_price: float | None = None  # the venue's mark price when it was found


@dataclass(frozen=True, slots=True)
class Reprotect:
    """The venue view disagrees with our stop (missing, moved, or no position at all): set the
    stop again directly; the venue's answer (done / not modified / zero position) is the truth."""

    symbol: str
    reason: str
    command_id: str = _id_field()
    ts: float = _ts_field()
    venue_history: str = ""              # what the venue's order history says happened (a label only)


@dataclass(frozen=True, slots=True)
class PositionObserved:
    """ProtectionActor (through the supervisor) to a symbol's PositionActor: what a REST read of
    the venue's positions shows of a symbol it holds, once settled past the REST lag (None: the
    list left it out). Judged like a stream push; nothing is cancelled on it alone."""

    symbol: str
    position: PositionReport | None
    finding: str                         # missing | resized | flipped | drift
    command_id: str = _id_field()
    ts: float = _ts_field()


@dataclass(frozen=True, slots=True)
class CancelLeftovers:
    """ProtectionActor (through the supervisor) to a symbol's PositionActor: stop orders of ours
    are working on a symbol that two REST reads, the REST lag apart, show flat; cancel them."""

    symbol: str
    client_order_ids: tuple[str, ...]
    command_id: str = _id_field()
    ts: float = _ts_field()


@dataclass(frozen=True, slots=True)
class CommandAccepted:
    """The command was taken; progress shows in the position's state."""

    command_id: str
    symbol: str
    intent_id: str | None = None


@dataclass(frozen=True, slots=True)
class CommandDenied:
    """The command was refused before anything was journaled or sent."""

    command_id: str
    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class GetPositionState:
    """Ask a PositionActor for a symbol's snapshot ("": its first symbol's)."""

    command_id: str = _id_field()
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
    naked_seconds: float = 0.0           # accumulated time filled without confirmed protection
    naked_since: float | None = None     # wall time the current naked stretch began
    protect_latency_s: float | None = None  # from taking the open command to protection confirmed
    guarded_latency_s: float | None = None  # ... to the venue guaranteeing no fill without a stop
    trigger: Trigger | Literal[""] = ""  # the transition that produced this snapshot ("": none)
    last_event: str = ""
    updated_at: float = _ts_field()
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


# -- exchange requests and replies ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VenueFailure:
    """A venue call that did not simply succeed, classified by what to do next."""

    outcome: Outcome
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Send one order; its client order id is already journaled."""

    request: OrderRequest
    request_id: str = _id_field()
    ts: float = _ts_field()
    reply_to: Any = None                 # an ActorAddress; None = the sender


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
    request_id: str = _id_field()
    ts: float = _ts_field()


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
    request_id: str = _id_field()
    ts: float = _ts_field()
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
class FetchPositions:
    """The venue's position view — for scans, never on the entry/stop/rollback path."""

    request_id: str = _id_field()


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
    request_id: str = _id_field()


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
    request_id: str = _id_field()


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


# -- journal -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalIntent:
    """An operator's or the program's decision to open a position."""

    intent_id: str
    symbol: str
    side: Side
    qty: float
    stop_price: float                    # 0.0: no stop (an adopted position being closed)
    at: float = _ts_field()
    kind: str = "entry"                  # entry: we open it | adopt: it was there, we took it over


@dataclass(frozen=True, slots=True)
class JournalSync:
    """Answered by JournalSynced once every write sent before it is committed. With a symbol it
    travels through that PositionActor, so it also follows every write that actor sent."""

    reply_to: Any = None                 # an ActorAddress; None = the sender
    symbol: str | None = None
    tag: str | None = None               # echoed in the answer


@dataclass(frozen=True, slots=True)
class JournalSynced:
    """Every earlier journal write is durable."""

    tag: str | None = None


@dataclass(frozen=True, slots=True)
class JournalOrder:
    """Record an order, then send it: the journal itself forwards PlaceOrder once the row is
    committed, so nothing reaches the venue unjournaled. Answered by OrderJournaled or JournalFailed."""

    request: OrderRequest
    intent_id: str
    purpose: str                         # entry | close
    at: float = _ts_field()
    forward_to: Any = None               # the ExchangeActor: sent PlaceOrder only once committed
    reply_to: Any = None                 # who gets the venue's answer (the PositionActor)
    intent: JournalIntent | None = None  # an entry's intent (its stop!), in the same transaction


@dataclass(frozen=True, slots=True)
class JournalCancel:
    """Record why stop orders are being cancelled, then forward the cancel to the exchange (like
    an order: nothing is cancelled that the journal does not know of)."""

    request: CancelStops
    reason: str
    at: float = _ts_field()
    forward_to: Any = None               # the ExchangeActor: sent `request` only once committed


@dataclass(frozen=True, slots=True)
class JournalPosition:
    """What an episode holds now, when it changed without an order of ours (an outside resize, a
    followed stop): a restart rebuilds it from here, not from the intent's first values."""

    intent_id: str
    symbol: str
    qty: float
    stop_price: float | None
    at: float = _ts_field()


@dataclass(frozen=True, slots=True)
class OrderJournaled:
    """The order is durable in the journal and has been forwarded to the venue."""

    client_order_id: str


@dataclass(frozen=True, slots=True)
class OrdersJournaled:
    """Several of one PositionActor's orders, durable and forwarded (each as OrderJournaled): the
    journal answers a burst in one message, not a thousand."""

    client_order_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JournalFailed:
    """The journal could not record something; whatever depended on it must not proceed."""

    client_order_id: str | None
    error: str


@dataclass(frozen=True, slots=True)
class JournalOrderUpdate:
    """What the venue said about an order (report or classified failure)."""

    client_order_id: str
    status: str
    filled_qty: float = 0.0
    avg_price: float | None = None
    venue_order_id: str | None = None
    at: float = _ts_field()


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something an operator or a strategy following the event stream should learn of: a
    stop set or moved, a close with its reason, an ambiguous outcome, an orphan, a restart.
    `data` holds plain JSON values."""

    kind: str
    symbol: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """An event as the journal holds it: `seq` increases by one per event, for good."""

    seq: int
    at: float
    kind: str
    symbol: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JournalTransition:
    """A PositionActor state change with the position as it stands after it; `events` are
    journaled with it, in the same transaction (the transition itself is always one)."""

    snapshot: PositionSnapshot
    from_state: State
    trigger: Trigger
    detail: str = ""
    at: float = _ts_field()
    events: tuple[EventRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """Record an event that is not a position's transition (a restart, an orphan found)."""

    event: EventRecord
    at: float = _ts_field()


@dataclass(frozen=True, slots=True)
class SubscribeEvents:
    """Ask the journal to send every event it commits from now on (EventsCommitted)."""

    subscriber: Any                      # an ActorAddress


@dataclass(frozen=True, slots=True)
class EventsCommitted:
    """Events just committed, oldest first."""

    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class ReadEvents:
    """Events with seq > `since`, oldest first, at most `limit` (answered by EventsRead)."""

    since: int
    limit: int = 1000
    request_id: str = _id_field()


@dataclass(frozen=True, slots=True)
class EventsRead:
    """Reply to ReadEvents; `oldest` is the first seq the journal still holds (0: none yet)."""

    request_id: str
    events: tuple[Event, ...] = ()
    oldest: int = 0
    latest: int = 0
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class JournaledOrder:
    """An order row as the journal holds it."""

    request: OrderRequest
    purpose: str
    status: str
    filled_qty: float = 0.0
    avg_price: float | None = None
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class LoadPositionJournal:
    """Ask the journal what it knows of these symbols' latest episodes: answered by one
    PositionJournal per symbol, together in one PositionJournals."""

    symbols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PositionJournals:
    journals: tuple[PositionJournal, ...]


@dataclass(frozen=True, slots=True)
class PositionJournal:
    """The journal's account of a symbol: its latest intent, that intent's orders, and the last
    state journaled for that intent (None if the crash came before its first transition)."""

    symbol: str
    intent: JournalIntent | None = None
    last_state: State | None = None
    orders: tuple[JournaledOrder, ...] = ()
    position_qty: float | None = None    # as last journaled without an order of ours (JournalPosition)
    stop_price: float | None = None      # ... and the stop then held


@dataclass(frozen=True, slots=True)
class RecentEvents:
    """Admin: a symbol's last journaled transitions (answered by EventsReport)."""

    symbol: str
    limit: int = 20
    reply_to: Any = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class EventsReport:
    """Transitions, oldest first: (at, from_state, to_state, trigger, detail)."""

    symbol: str
    events: tuple[tuple[float, str, str, str, str], ...] = ()
    request_id: str = ""


# -- lifecycle -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigureJournal:
    """Open (and migrate) the journal database."""

    path: str
    watch: bool = True                   # False on bases without ThespianWatch (tests): poll instead


@dataclass(frozen=True, slots=True)
class JournalReady:
    """The journal is open at this schema version."""

    schema_version: int
    pid: int = field(default_factory=os.getpid)
    safe_mode_reason: str | None = None  # safe mode the journal holds from an earlier run (None: off)


@dataclass(frozen=True, slots=True)
class JournalSafeMode:
    """Safe mode on or off, kept in the journal so that a restart of the whole program keeps it."""

    on: bool
    reason: str
    at: float = _ts_field()


@dataclass(frozen=True, slots=True)
class ConfigureExchange:
    """Build the venue adapter inside the ExchangeActor's process and start it."""

    adapter_factory: Callable[[], Any]   # picklable callable returning a VenueAdapter
    watch: bool = True                   # False on bases without ThespianWatch (tests): poll instead
    symbols: tuple[str, ...] = ()        # what the preflight checks the venue for
    persist: bool = False                # True (a restart, once deployed): retry the start for as long as it takes
    start_attempts: int = 3              # before giving up, at a deployment's first start


@dataclass(frozen=True, slots=True)
class ExchangeStarting:
    """The venue adapter could not start yet (markets, clock, keys, network): what, and when next."""

    reason: str
    kind: str                            # unreachable | keys | clock | venue
    attempt: int
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class ExchangeReady:
    """The adapter is started; these are its capabilities."""

    capabilities: Capabilities
    pid: int = field(default_factory=os.getpid)
    dumpable: bool = True                # False: no core file, no other process may read its memory
    problems: tuple[str, ...] = ()       # the venue's account is not fit to trade (hedge mode, read-only key...)
    warnings: tuple[str, ...] = ()       # fit, but an operator should know (a key that can withdraw...)


@dataclass(frozen=True, slots=True)
class ConfigurePosition:
    """Give a PositionActor its symbols (one PositionCore each, in this one process) and its
    collaborators."""

    symbols: tuple[str, ...]
    exchange: Any                        # ActorAddress
    journal: Any                         # ActorAddress
    capabilities: Capabilities
    settings: PositionSettings = field(default_factory=PositionSettings)
    observer: Any = None                 # ActorAddress told of every snapshot (the supervisor)
    safe_mode: str | None = None         # the reason, while new entries are refused
    risk: tuple[tuple[str, RiskLimits], ...] = ()   # per symbol; a symbol not listed: no limits (tests)


@dataclass(frozen=True, slots=True)
class PositionReady:
    """Symbols of a PositionActor are reconciled and accept commands."""

    symbols: tuple[str, ...]
    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class ActorFailed:
    """A child could not start or do its job; the reason is safe to show an operator."""

    who: str
    reason: str
    usage: bool = False                  # the operator's setting to change (exit 2), not a failure


@dataclass(frozen=True, slots=True)
class StartDeployment:
    """Start the journal, the exchange and one PositionActor per symbol."""

    symbols: tuple[str, ...]
    journal_path: str
    adapter_factory: Callable[[], Any]
    settings: PositionSettings = field(default_factory=PositionSettings)
    watch: bool = True
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    protection: ProtectionSettings | None = field(default_factory=ProtectionSettings)   # None: no scan
    metrics_port: int | None = None      # Prometheus endpoint on 127.0.0.1; None: off
    control: ControlPlane | None = None  # lock and operator API (None: tests that drive actors directly)
    risk: tuple[tuple[str, RiskLimits], ...] | None = None   # per symbol ("*": any other); None: none
    stream: StreamSettings = field(default_factory=lambda: StreamSettings())   # where the venue has streams


@dataclass(frozen=True, slots=True)
class ConfigureProtection:
    """Start the protection scan against this exchange, for these symbols."""

    exchange: Any
    symbols: tuple[str, ...]
    settings: ProtectionSettings = field(default_factory=ProtectionSettings)
    snapshots: tuple[PositionSnapshot, ...] = ()   # what the supervisor knows now (after a restart)
    stop_orders: bool = False            # the venue keeps stops as orders: ask for them before adopting
    stream_grace_s: float = 1.0          # stream evidence is live: a shorter hands-off period suffices


@dataclass(frozen=True, slots=True)
class ProtectionReady:
    """The protection scan is running."""

    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Supervisor to child: are you (and your event loop) alive?"""

    seq: int


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """Child to supervisor: alive, in this process."""

    seq: int
    pid: int


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """Child to supervisor: a handler failed; my state may be inconsistent, replace me."""

    reason: str


@dataclass(frozen=True, slots=True)
class Collaborators:
    """Supervisor to PositionActors: the exchange or journal was replaced; use these addresses."""

    exchange: Any
    journal: Any


@dataclass(frozen=True, slots=True)
class RestartChild:
    """The supervisor's own wake-up: start this child again (stale generations are ignored)."""

    child_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class SetSafeMode:
    """Operator: enter (on) or leave (off) safe mode; answered by StatusReport."""

    on: bool
    reason: str = "operator"
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class SafeModeChanged:
    """Supervisor to PositionActors: refuse (on) or accept (off) new entries, whoever sends them."""

    on: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentReady:
    """Every child is up."""

    symbols: tuple[str, ...]
    capabilities: Capabilities


@dataclass(frozen=True, slots=True)
class DeploymentFailed:
    """Start-up failed; everything started so far was stopped."""

    reason: str
    usage: bool = False                  # a setting the operator must change (exit 2)


@dataclass(frozen=True, slots=True)
class StopDeployment:
    """Stop the children in reverse start order."""


@dataclass(frozen=True, slots=True)
class DeploymentStopped:
    """Every child has exited."""


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Admin: every PositionActor's last snapshot."""

    request_id: str = ""


@dataclass(frozen=True, slots=True)
class WaitForState:
    """Admin/tests: answer with the symbol's snapshot once it is in one of `states` (and, if
    given, was published after `newer_than`, a wall-clock time)."""

    symbol: str
    states: tuple[State, ...]
    newer_than: float = 0.0

    def matches(self, snap: PositionSnapshot) -> bool:
        return snap.symbol == self.symbol and snap.state in self.states and snap.updated_at > self.newer_than


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Admin reply: snapshots by symbol, as last published by the PositionActors."""

    positions: tuple[PositionSnapshot, ...]
    venue: str = ""
    started_at: float = 0.0
    safe_mode: bool = False
    safe_reason: str = ""
    restarts: int = 0                    # restarts within the intensity window
    children: tuple[tuple[str, int | None, bool], ...] = ()   # (id, pid, up)
    reconciliation: str = ""             # what the start-up reconciliation found and did
    at: float = _ts_field()
    supervisor_pid: int = field(default_factory=os.getpid)   # made in the supervisor's process
    request_id: str = ""
    watcher_pid: int | None = None       # the `posguard run` watching this deployment, if any
    stopping: str = ""                   # why the deployment is stopping ("" while it runs)
    exchange_dumpable: bool | None = None  # False: the process holding the keys is closed to others
    journal_error: str = ""              # the journal cannot write (and why): closes go out regardless
    venue_status: str = ""               # "" when the venue adapter runs; else why it is not ready yet
    venue_warnings: tuple[str, ...] = ()
    streams: tuple[StreamStatus, ...] = ()   # the venue's private streams, as their owner sees them


# -- the operator API and the deployment's lifecycle -------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """What makes a deployment one: its lock, its operator API, its identity and its watcher."""

    socket_path: str                     # the operator API (Unix socket, JSON lines)
    lock_path: str                       # the deployment lock (held while any process of it lives)
    config_path: str = ""
    config_digest: str = ""              # sha256 of the config file: an adopter proves it is the same
    watcher_pid: int | None = None       # the `posguard run` that started it


@dataclass(frozen=True, slots=True)
class ConfigureApi:
    """Serve the operator API on this socket for this deployment."""

    socket_path: str
    supervisor: Any                      # ActorAddress
    journal: Any                         # ActorAddress
    symbols: tuple[str, ...]
    hello: dict[str, Any] = field(default_factory=dict)   # identity every client is shown first


@dataclass(frozen=True, slots=True)
class ApiReady:
    """The operator API is listening."""

    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class StopRequest:
    """Operator: end the deployment (positions keep their stops), closing every position
    reduce-only first with `flatten`. Answered by StopReply before the deployment goes."""

    flatten: bool = False
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class StopReply:
    """Reply to StopRequest: ok means the deployment is going now; else why it stays."""

    request_id: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class WatcherChanged:
    """A `posguard run` took over watching this deployment (after adopting it)."""

    pid: int
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """A request that needs no other answer was taken."""

    request_id: str


# -- private streams -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How the stream is kept: reconnect back-off (doubling, capped, with jitter), and how long
    a symbol must have been left alone before stream evidence alone may adopt it."""

    backoff_s: Seconds[0.001, 60.0] = 0.5
    backoff_cap_s: Seconds[0.001, 3600.0] = 30.0
    jitter: Fraction = 0.2
    grace_s: Seconds[0.0, 60.0] = 1.0


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
    at: float = _ts_field()
    received_ns: int = field(default_factory=time.monotonic_ns)   # host-monotonic, in the exchange process


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """The stream connected (up) or was lost (down, with why)."""

    stream: str
    up: bool
    reason: str = ""
    reconnects: int = 0
    gap_s: float = 0.0                               # how long it was down before this reconnect
    at: float = _ts_field()


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """StreamActor to Supervisor: what status, metrics and the event stream say of a stream."""

    stream: str
    state: str                                       # down | reconciling | up
    reason: str = ""
    reconnects: int = 0
    gap_s: float = 0.0
    since: float = _ts_field()


@dataclass(frozen=True, slots=True)
class OrderStreamed:
    """An order's new state, from the stream: treated like a query by client id, for our own ids only."""

    report: OrderReport
    closed_by: str = ""                              # the venue's own close: "stop" | "liquidation" | "adl"
    received_ns: int = 0                             # host-monotonic: when the exchange process got it


@dataclass(frozen=True, slots=True)
class PositionStreamed:
    """A symbol's position as the stream pushed it (None: flat), to the symbol's PositionActor:
    evidence of what was done outside posguard, judged against its episode (actors/outside.py)."""

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
    at: float = _ts_field()


@dataclass(frozen=True, slots=True)
class StreamTrust:
    """StreamActor to ProtectionActor: stream evidence may (not) be used; lost trust empties its view."""

    trusted: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ScanNow:
    """Scan the venue through REST now; answered by ScanDone once its findings are acted on."""

    request_id: str = _id_field()


@dataclass(frozen=True, slots=True)
class ScanDone:
    """Reply to ScanNow; failure says why the venue could not be read."""

    request_id: str
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class FetchStopOrders:
    """Open stop orders of a symbol (conditional orders that act as stops): for adoption."""

    symbol: str
    request_id: str = _id_field()


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
    request_id: str = _id_field()
    reply_to: Any = None                             # an ActorAddress; None = the sender
    # Not proven flat: before anything is cancelled, this stop is set again for a position of this
    # side, and only the engine's "no position" lets the cancel go on.
    probe_stop: float | None = None
    probe_side: Side | None = None


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


@dataclass(frozen=True, slots=True)
class JournalHealth:
    """Journal to supervisor: its writes fail (ok False, with the error) or work again."""

    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class JournalDiskFault:
    """Fault injection for tests of a full disk, for real: `truncate_wal` empties the WAL file
    (a checkpoint), so on a disk that is full the next write must grow it and fails; `cap`
    makes SQLite itself refuse to grow the database (max_page_count, where no tiny filesystem
    can be mounted; a write that fits a page's free space still passes); `refuse` makes every
    write fail at once (SQLite's query_only); `heal` undoes both. Answered by
    JournalSynced("disk-fault")."""

    truncate_wal: bool = True
    cap: bool = False
    refuse: bool = False
    heal: bool = False
