"""To and from the JournalActor: what is journaled before it is sent, the events, and what
recovery reads back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.messages.base import id_field, ts_field
from actors.messages.commands import PositionSnapshot
from actors.messages.exchange import CancelStops, SetExit
from actors.position.states import State, Trigger
from adapters.base import OrderRequest, Side


@dataclass(frozen=True, slots=True)
class JournalIntent:
    """An operator's or the program's decision to open a position."""

    intent_id: str
    symbol: str
    side: Side
    qty: float
    stop_price: float                    # 0.0: no stop (an adopted position being closed)
    at: float = ts_field()
    kind: str = "entry"                  # entry: we open it | adopt: it was there, we took it over
    take_profit: float | None = None     # asked with the entry (attached where the venue takes it)
    trail_pct: float | None = None       # a venue-held trailing stop, set once protected


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
    at: float = ts_field()
    forward_to: Any = None               # the ExchangeActor: sent PlaceOrder only once committed
    reply_to: Any = None                 # who gets the venue's answer (the PositionActor)
    intent: JournalIntent | None = None  # an entry's intent (its stop!), in the same transaction


@dataclass(frozen=True, slots=True)
class JournalCancel:
    """Record why stop orders are being cancelled, then forward the cancel to the exchange (like
    an order: nothing is cancelled that the journal does not know of)."""

    request: CancelStops
    reason: str
    at: float = ts_field()
    forward_to: Any = None               # the ExchangeActor: sent `request` only once committed


@dataclass(frozen=True, slots=True)
class JournalExit:
    """Record the take-profit or trail being asked for (a restart asks for it again: the same
    value, so the same order id -- "already placed"), then forward it to the exchange."""

    intent_id: str
    request: SetExit
    at: float = ts_field()
    forward_to: Any = None


@dataclass(frozen=True, slots=True)
class JournalPosition:
    """What an episode holds now, when it changed without an order of ours (an outside resize, a
    followed stop, a stop moved by a command): a restart rebuilds it from here, not from the
    intent's first values."""

    intent_id: str
    symbol: str
    qty: float
    stop_price: float | None
    at: float = ts_field()
    take_profit: float | None = None     # the exits the venue holds beside the stop (always all of them)
    trail_pct: float | None = None
    applied_change: str | None = None    # the last partial close or add this size includes (its client id)


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
    at: float = ts_field()


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
    at: float = ts_field()
    events: tuple[EventRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """Record an event that is not a position's transition (a restart, an orphan found)."""

    event: EventRecord
    at: float = ts_field()


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
    request_id: str = id_field()


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
    take_profit: float | None = None     # ... and the exits beside it
    trail_pct: float | None = None
    pending_exit: tuple[str, float] | None = None   # (kind, value) asked and not yet confirmed
    applied_change: str | None = None    # the last partial close or add `position_qty` includes


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


@dataclass(frozen=True, slots=True)
class JournalHealth:
    """Journal to supervisor: its writes fail (ok False, with the error) or work again."""

    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class LeaseDeadline:
    """Journal to supervisor, at every renewal of the account's lease: past `not_after` (boot-time
    clock) this deployment is fenced -- nothing but closes goes to the venue (0.0: lost)."""

    not_after: float


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
