"""The state a PositionCore holds and its plumbing: transitions journaled with their events,
timers, the snapshot. The parts of the core (recovery, commands, orders, watch, closing) are
mixins over this one base, joined in actors/position/core.py; they share one state and call
one another through `self`."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from typing import Protocol

from loguru import logger

from actors.backoff import doubling_delay
from actors.fsm import FSM
from actors.messages import (
    CancelStops,
    EventRecord,
    JournalEvent,
    JournalOrderUpdate,
    JournalPosition,
    JournalTransition,
    PositionSnapshot,
    PositionTimer,
    VenueFailure,
)
from actors.position.episode import Episode
from actors.position.outside import EXIT_OF_REASON
from actors.position.states import CHANGING, TRANSITIONS, State, TimerKind, Trigger
from actors.settings import PositionSettings, RiskLimits
from adapters.base import OUR_ORDER_PREFIX, Capabilities, OrderReport, OrderRequest
from adapters.errors import Outcome

# Outcomes after which an order may or may not exist on the venue: ask by client id.
AMBIGUOUS = frozenset({Outcome.UNKNOWN, Outcome.BUG, Outcome.ORDER_NOT_FOUND, Outcome.NOT_MODIFIED})
ADOPTION_REFUSED = "adoption refused"        # a limit refused to take over a foreign position: an alert
# Where outside evidence is taken (judged once PROTECTED): filled or about to be, and not closing.
HELD_OUTSIDE = frozenset({State.ENTERING, State.CONFIRMING_ENTRY, State.PROTECTING, State.PROTECTED,
                          State.VERIFYING}) | CHANGING


class PositionPorts(Protocol):
    """Everything the core does to the outside world."""

    def to_exchange(self, msg: object) -> None: ...
    def to_journal(self, msg: object) -> None: ...
    def publish(self, snapshot: PositionSnapshot) -> None: ...
    def wake_after(self, seconds: float, timer: PositionTimer) -> None: ...
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...


_EPOCH_ID = re.compile(rf"^{OUR_ORDER_PREFIX}[a-z]([0-9]+)z[0-9a-f]+$")


def client_order_id(kind: str, epoch: int = 0) -> str:
    """Unique, venue-safe (<= 36 chars, [a-z0-9]) client order id. With a shared journal it
    carries the lease's epoch of the writer that made it (`pg e 12 z <hex>`): the venue's own order
    log then says which holder sent what, and a new holder knows its predecessor's orders."""
    if epoch:
        return f"{OUR_ORDER_PREFIX}{kind}{epoch}z{uuid.uuid4().hex[:20]}"
    return f"{OUR_ORDER_PREFIX}{kind}{uuid.uuid4().hex[:24]}"


def epoch_of(client_order_id: str) -> int | None:
    """The lease epoch an id of ours was made under (None: made without a lease)."""
    found = _EPOCH_ID.match(client_order_id)
    return int(found.group(1)) if found else None


def close_order_id(intent_id: str, n: int) -> str:
    """The n-th close of an episode: derived from its journaled intent, so that it can be sent
    before (or without) its own row when the journal cannot write, and still be known."""
    return f"{OUR_ORDER_PREFIX}c{hashlib.sha256(f'{intent_id}:{n}'.encode()).hexdigest()[:24]}"


class CoreBase:
    def __init__(self, symbol: str, capabilities: Capabilities, settings: PositionSettings,
                 ports: PositionPorts, epoch: int = 0) -> None:
        self.symbol = symbol
        self.epoch = epoch                               # the account's lease epoch (0: no lease)
        self.caps = capabilities
        self.settings = settings
        self.ports = ports
        self.fsm: FSM[State, Trigger] = FSM(TRANSITIONS, State.RECOVERING)   # until recover() has run
        self._tokens: dict[TimerKind, int] = {}
        self._awaiting_journal: dict[str, OrderRequest] = {}
        self.last_event = "started"
        self.venue_stop: float | None = None             # the last stop the venue confirmed (events only)
        self.safe_mode: str | None = None                # why new entries are refused (None: accepted)
        self.risk: RiskLimits | None = None              # None: no limits (tests driving the core)
        self.reference: tuple[float, float] | None = None   # (price, monotonic time seen)
        self.log = logger.bind(symbol=symbol)
        self.episode = Episode()                         # none yet: recover() or a command begins one
        # Stop orders of ours outlived their position (venues whose stops are orders): cancelling
        # them. No new episode begins before they are gone -- its stop could be one of them.
        self.cleanup: CancelStops | None = None
        self.cleanup_attempts = 0

    @property
    def state(self) -> State:
        return self.fsm.state

    def _monotonic_of(self, wall_ts: float) -> float:
        return self.ports.monotonic() - max(0.0, self.ports.wall() - wall_ts)

    def _known(self, received_ns: int) -> None:
        self.episode.known_ns = max(self.episode.known_ns, received_ns)

    def _event(self, kind: str, data: dict[str, object]) -> None:
        self.ports.to_journal(JournalEvent(EventRecord(kind, self.symbol, dict(data))))

    def _request(self, msg: object) -> None:
        """Every venue request goes out here; if nothing follows for reply_timeout_s, resync."""
        self.ports.to_exchange(msg)
        self._arm(TimerKind.STALLED, self.settings.reply_timeout_s)

    def _go(self, trigger: Trigger, detail: str) -> None:
        before = self.state
        self.fsm.apply(trigger)
        self.last_event = detail
        self.log.info("{} {} -> {}: {}", self.symbol, before, self.state, detail)
        snap = dataclasses.replace(self.snapshot(), trigger=trigger)
        self.ports.to_journal(JournalTransition(snap, before, trigger, detail, events=self._events_of(trigger, detail)))
        self.ports.publish(snap)
        held = self.episode.held_push
        if self.state is State.PROTECTED and held is not None:
            self.episode.held_push = None                # pushed while we were busy: judged now
            if held[2] >= self.episode.known_ns:         # unless the venue has told us more since
                self._judge(held[0], "stream", held[1])
        if self.state is State.PROTECTED and self.episode.exits_wanted:
            self._next_exit()                            # the stop first, then what stands beside it

    def _events_of(self, trigger: Trigger, detail: str) -> tuple[EventRecord, ...]:
        """What the event stream says beside the transition itself."""
        ep = self.episode
        if trigger in (Trigger.ENTRY_FILLED_WITH_STOP, Trigger.STOP_CONFIRMED, Trigger.STOP_MOVED):
            previous, self.venue_stop = self.venue_stop, ep.stop.price
            moved = previous is not None and ep.stop.price is not None and abs(previous - ep.stop.price) > 1e-12
            return (EventRecord("stop", self.symbol, {"stop_price": ep.stop.price, "previous": previous,
                                                      "change": "moved" if moved else "set"}),)
        if trigger is Trigger.CLOSE_CONFIRMED:
            self.venue_stop = None
            return (EventRecord("closed", self.symbol, {"reason": ep.close_reason, "detail": detail,
                                                        "closed_qty": ep.close.filled_qty}),)
        if trigger is Trigger.CLOSED_OUTSIDE:
            self.venue_stop = None
            assert ep.outside is not None
            return (EventRecord("closed", self.symbol, {"reason": ep.outside.reason, "detail": detail,
                                                        "closed_qty": ep.open_qty, "source": ep.outside.source,
                                                        "outside": True,
                                                        "exit": EXIT_OF_REASON.get(ep.outside.reason, "")}),)
        if trigger is Trigger.ENTRY_AMBIGUOUS:
            return (EventRecord("ambiguous", self.symbol, {"client_order_id": ep.entry.cid, "detail": detail}),)
        return ()

    def _journal_position(self, stop: float | None = None) -> None:
        """What the episode holds now (its size, stop and exits), for a restart to start from."""
        ep = self.episode
        self.ports.to_journal(JournalPosition(ep.intent_id or "", self.symbol, ep.open_qty,
                                              stop if stop is not None else ep.stop.price,
                                              take_profit=ep.take_profit, trail_pct=ep.trail_pct,
                                              applied_change=ep.change.cid if ep.change.final else None))

    def _journal_outcome(self, cid: str, report: OrderReport | None, failure: VenueFailure | None) -> None:
        if report is not None:
            self.ports.to_journal(JournalOrderUpdate(cid, str(report.status), report.filled_qty, report.avg_price,
                                                     report.venue_order_id))
        elif failure is not None:
            self.ports.to_journal(JournalOrderUpdate(cid, f"failure:{failure.outcome}"))

    def _arm(self, kind: TimerKind, seconds: float) -> None:
        token = self._tokens.get(kind, 0) + 1
        self._tokens[kind] = token
        self.ports.wake_after(max(0.0, seconds), PositionTimer(kind, token))

    def _arm_once(self, kind: TimerKind, seconds: float) -> None:
        """Arm unless this episode already armed it (the naked deadline runs from the first cause)."""
        armed = self.episode.armed_once
        if kind not in armed:
            armed.add(kind)
            self._arm(kind, seconds)

    def _backoff(self, attempt: int) -> float:
        return doubling_delay(self.settings.retry_s, self.settings.retry_cap_s, attempt)

    def snapshot(self) -> PositionSnapshot:
        ep = self.episode
        return PositionSnapshot(
            symbol=self.symbol, state=self.state, side=ep.side, requested_qty=ep.requested_qty,
            filled_qty=ep.open_qty, entry_price=ep.entry.avg_price,
            stop_price=ep.stop.price if ep.stop.confirmed else None, intent_id=ep.intent_id,
            take_profit=ep.take_profit, trail_pct=ep.trail_pct,
            naked_seconds=ep.naked.total, last_event=self.last_event, protect_latency_s=ep.stop.latency,
            guarded_latency_s=ep.stop.guarded_latency,
            naked_since=None if ep.naked.since is None
            else self.ports.wall() - (self.ports.monotonic() - ep.naked.since),
            updated_at=self.ports.wall())


def px(value: float | None) -> str:
    return "?" if value is None else f"{value:.8g}"


def describe_failure(failure: VenueFailure) -> str:
    return f"{failure.outcome} {failure.code} {failure.message}".strip()
