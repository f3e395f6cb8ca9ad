"""What a PositionActor decides: entry, stop and rollback for one symbol, as plain Python.

The actor shell (actors/position.py) only moves messages in and out through `PositionPorts`,
so this logic is unit-tested with a recording fake, without processes.

Safety rules this module keeps (DEVELOPERS.md):
- no position read anywhere: protection travels with the entry or is set directly; the
  rollback closes the filled quantity (or, while the fill is unknown, the requested one)
  reduce-only;
- every order is journaled before it is sent: the journal forwards it once committed;
- an ambiguous outcome is resolved by querying the client order id, never by a new order;
- "closed" only when the venue confirmed both the entry's final state and the close.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import uuid
from collections.abc import Callable
from typing import Protocol

from loguru import logger

from actors.backoff import doubling_delay
from actors.episode import Episode, OrderLeg, StopLeg
from actors.fsm import FSM
from actors.messages import (
    AdoptPosition,
    CancelLeftovers,
    CancelStops,
    ClosePosition,
    ClosuresFetched,
    CommandAccepted,
    CommandDenied,
    EventRecord,
    FetchClosures,
    FillStreamed,
    JournalCancel,
    JournalEvent,
    JournalFailed,
    JournalIntent,
    JournalOrder,
    JournalOrderUpdate,
    JournalPosition,
    JournalTransition,
    OpenPosition,
    OrderJournaled,
    OrderPlaced,
    OrderQueried,
    OrderStreamed,
    PlaceOrder,
    PositionJournal,
    PositionObserved,
    PositionSettings,
    PositionSnapshot,
    PositionStreamed,
    PositionTimer,
    QueryOrder,
    Reprotect,
    RiskLimits,
    SetStop,
    StopOrderStreamed,
    StopsCancelled,
    StopSet,
    VenueFailure,
    new_id,
)
from actors.outside import (
    CLOSED_OUTSIDE,
    GONE,
    REASON_OF_CLOSED_BY,
    REASON_OF_KIND,
    Change,
    Outside,
    changes,
    describe,
    moved_to,
)
from actors.position_states import CLOSING, RESTING, SETTING_STOP, TRANSITIONS, State, TimerKind, Trigger
from adapters.base import OUR_ORDER_PREFIX, Capabilities, OrderReport, OrderRequest, PositionReport, Side
from adapters.errors import Outcome
from adapters.stops import is_ours

# Outcomes after which an order may or may not exist on the venue: ask by client id.
AMBIGUOUS = frozenset({Outcome.UNKNOWN, Outcome.BUG, Outcome.ORDER_NOT_FOUND, Outcome.NOT_MODIFIED})
ADOPTION_REFUSED = "adoption refused"        # a limit refused to take over a foreign position: an alert
# Where outside evidence is taken (judged once PROTECTED): filled or about to be, and not closing.
HELD_OUTSIDE = frozenset({State.ENTERING, State.CONFIRMING_ENTRY, State.PROTECTING, State.PROTECTED, State.VERIFYING})


class PositionPorts(Protocol):
    """Everything the core does to the outside world."""

    def to_exchange(self, msg: object) -> None: ...
    def to_journal(self, msg: object) -> None: ...
    def publish(self, snapshot: PositionSnapshot) -> None: ...
    def wake_after(self, seconds: float, timer: PositionTimer) -> None: ...
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...


def client_order_id(kind: str) -> str:
    """Unique, venue-safe (<= 36 chars, [a-z0-9]) client order id."""
    return f"{OUR_ORDER_PREFIX}{kind}{uuid.uuid4().hex[:24]}"


def close_order_id(intent_id: str, n: int) -> str:
    """The n-th close of an episode: derived from its journaled intent, so that it can be sent
    before (or without) its own row when the journal cannot write, and still be known."""
    return f"{OUR_ORDER_PREFIX}c{hashlib.sha256(f'{intent_id}:{n}'.encode()).hexdigest()[:24]}"


class PositionCore:
    def __init__(self, symbol: str, capabilities: Capabilities, settings: PositionSettings,
                 ports: PositionPorts) -> None:
        self.symbol = symbol
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

    # -- recovery ------------------------------------------------------------------------

    def recover(self, journal: PositionJournal) -> None:
        """Rebuild from the journal, then learn from the venue (client-id queries, no position
        read) what became of it. Entries are refused until this ends."""
        if self.state is not State.RECOVERING:
            return
        intent, last = journal.intent, journal.last_state
        entry = next((o for o in journal.orders if o.purpose == "entry"), None)
        adopted = intent is not None and intent.kind == "adopt"
        if intent is None or (entry is None and not adopted) or last == State.IDLE:
            self._go(Trigger.RECOVERED_FLAT, "journal: nothing open")
            return
        self.episode = ep = Episode(intent_id=intent.intent_id, side=intent.side, requested_qty=intent.qty,
                                    stop=StopLeg(price=journal.stop_price or intent.stop_price or None),
                                    position_qty=journal.position_qty)
        if last is State.VERIFYING:
            # It was asking the venue whether the position went away outside us: ask again.
            ep.outside = Outside(CLOSED_OUTSIDE, "recovering while asking the venue about an outside change",
                                 "journal")
        if entry is not None:
            ep.entry = OrderLeg(cid=entry.request.client_order_id, request=entry.request,
                                sent_at=self._monotonic_of(entry.created_at), filled_qty=entry.filled_qty,
                                avg_price=entry.avg_price)
        closes = [o for o in journal.orders if o.purpose == "close"]
        if closes:
            ep.close = OrderLeg(cid=closes[-1].request.client_order_id, request=closes[-1].request,
                                sent_at=self._monotonic_of(closes[-1].created_at))
        ep.closes_sent = len(closes)
        ep.resume_close = last in CLOSING
        if not ep.resume_close:
            self._probe_next_close()
        ep.close_reason = "resumed after restart"
        if adopted:
            # No entry of ours: the position was there. Protect it again, or finish closing it.
            ep.entry.filled_qty, ep.entry.final = intent.qty, True
            ep.resume_close = ep.resume_close or ep.stop.price is None
            self.last_event = f"recovering an adopted position: journal says {last or 'adopted'}"
            self.log.info("{} {}", self.symbol, self.last_event)
            self._recovered()
            return
        self.last_event = f"recovering: journal says {last or 'entry sent'}; querying the venue"
        self.log.info("{} {}", self.symbol, self.last_event)
        self.ports.publish(self.snapshot())
        self._query_entry()

    def _probe_next_close(self) -> None:
        """A close goes out even when the journal cannot record it (its id derives from the
        intent): after a restart, ask for the next such id -- in parallel with everything else,
        never delaying protection -- until the venue has it or surely never will."""
        ep = self.episode
        assert ep.intent_id is not None
        ep.probe_cid = close_order_id(ep.intent_id, ep.closes_sent + 1)
        ep.probe_until = self.ports.monotonic() + self.settings.entry_unknown_window_s
        self._request(QueryOrder(self.symbol, ep.probe_cid))

    def _on_probe(self, msg: OrderQueried) -> None:
        ep, report = self.episode, msg.report
        if report is None:
            not_found = msg.failure is not None and msg.failure.outcome is Outcome.ORDER_NOT_FOUND
            if not_found and self.ports.monotonic() >= ep.probe_until:
                ep.probe_cid = None                      # never sent, or expired unexecuted
            else:
                self._arm(TimerKind.PROBE_CLOSE, self.settings.poll_s)
            return
        if self.state in CLOSING:
            ep.probe_cid = None                          # closing already: "nothing to reduce" settles it
            return
        if self.state not in (State.RECOVERING, State.PROTECTING, State.PROTECTED):
            # The entry first (CONFIRMING_ENTRY): ask again later.
            self._arm(TimerKind.PROBE_CLOSE, self.settings.poll_s)
            return
        assert ep.side is not None
        ep.closes_sent += 1
        ep.close.cid, ep.close.sent_at = report.client_order_id, self.ports.monotonic()
        ep.close.request = OrderRequest(self.symbol, ep.side.opposite, report.qty, ep.close.cid, reduce_only=True)
        ep.close_after_entry_final, ep.close.final = True, False
        detail = (f"found close {ep.close.cid} ({report.status}, filled {report.filled_qty:g}), sent while the"
                  " journal could not record it")
        ep.close_reason = "a close sent while the journal could not write"
        if self.state is State.RECOVERING:
            ep.resume_close = True                       # _recovered() confirms it
            self.last_event = detail
        else:
            self._go(Trigger.CLOSE_FOUND, detail)
            if not ep.entry.final:
                self._arm(TimerKind.POLL_ENTRY, 0.0)
            self._on_close_report(report)
        self._probe_next_close()                         # the journal may have missed more than one

    def _recovered(self) -> None:
        """The entry's venue state is known well enough to resume the right path."""
        ep = self.episode
        if ep.resume_close:
            self._go(Trigger.RESUME_CLOSE, "recovered mid-close: confirming the last close before any new one")
            if ep.close.cid is not None:
                self._arm(TimerKind.POLL_CLOSE, 0.0)     # it may have executed: ask, never resend
            else:
                self._new_close_order()
        elif ep.entry.filled_qty > 0:
            ep.naked.start(self.ports.monotonic())
            self._go(Trigger.ENTRY_FILLED, f"recovered: entry filled {ep.entry.filled_qty:g}; setting stop"
                                           f" {_px(ep.stop.price)} directly (idempotent)")
            self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
            self._send_stop()
        elif ep.entry.final:
            self._go(Trigger.RECOVERED_FLAT, "recovered: the entry ended with nothing filled")
        else:
            self._go(Trigger.ENTRY_AMBIGUOUS, "recovered: entry not final yet; confirming by client id")
            if not self.caps.attached_stop:
                self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)

    def _monotonic_of(self, wall_ts: float) -> float:
        return self.ports.monotonic() - max(0.0, self.ports.wall() - wall_ts)

    # -- commands ------------------------------------------------------------------------

    def open(self, cmd: OpenPosition) -> CommandAccepted | CommandDenied:
        denial = self._deny_open(cmd)
        if denial:
            return CommandDenied(cmd.command_id, self.symbol, denial)
        intent_id = new_id()
        self.episode = ep = Episode(intent_id=intent_id, side=cmd.side, requested_qty=cmd.qty,
                                    opened_at=self.ports.monotonic(), entry=OrderLeg(cid=client_order_id("e")),
                                    stop=StopLeg(price=cmd.stop_price))
        ep.entry.request = self._entry_request()
        # The intent (with the stop a restart would need) shares the entry's journal transaction.
        self._send_new_order(ep.entry.request, "entry",
                             JournalIntent(intent_id, self.symbol, cmd.side, cmd.qty, cmd.stop_price))
        how = "attached to the entry" if self.caps.attached_stop else "set directly after the fill"
        self._go(Trigger.OPEN, f"{cmd.side} {cmd.qty} {self.symbol}, stop {cmd.stop_price} {how}")
        return CommandAccepted(cmd.command_id, self.symbol, intent_id)

    def _deny_open(self, cmd: OpenPosition) -> str | None:
        if cmd.symbol != self.symbol:
            return f"this actor handles {self.symbol}, not {cmd.symbol}"
        if self.safe_mode is not None:
            return f"safe mode ({self.safe_mode}): new entries are refused"
        if self.cleanup is not None:
            return f"{self.symbol}: cancelling the stop orders its last position left; try again in a moment"
        if self.state is not State.IDLE:
            return f"{self.symbol} is {self.state}; only an IDLE symbol accepts an entry"
        if not (math.isfinite(cmd.qty) and cmd.qty > 0):
            return f"qty must be a positive number, got {cmd.qty}"
        if not (math.isfinite(cmd.stop_price) and cmd.stop_price > 0):
            return f"stop price must be a positive number, got {cmd.stop_price}"
        return self._deny_risk(cmd.side, cmd.qty, cmd.stop_price, cmd.reference_price)

    # -- risk limits ---------------------------------------------------------------------

    def note_price(self, price: float | None) -> None:
        """A price of this symbol just seen (a fetch, a fill): the reference risk checks use."""
        if price is not None and math.isfinite(price) and price > 0:
            self.reference = (price, self.ports.monotonic())

    def needs_reference(self, cmd: OpenPosition) -> bool:
        """True when the limits need a price that we have not seen recently enough."""
        return (self.risk is not None and cmd.reference_price is None
                and (self.reference is None
                     or self.ports.monotonic() - self.reference[1] > self.settings.reference_max_age_s))

    def _reference(self, given: float | None) -> float | None:
        if given is not None and math.isfinite(given) and given > 0:
            return given
        fresh = self.reference is not None and \
            self.ports.monotonic() - self.reference[1] <= self.settings.reference_max_age_s
        return self.reference[0] if fresh and self.reference is not None else None

    def _deny_risk(self, side: Side, qty: float, stop: float, given: float | None, entry: bool = True) -> str | None:
        """The limits, before anything is journaled or sent. Each refusal says what was wrong
        and what would be accepted."""
        limits = self.risk
        if limits is None:
            return None
        if entry and limits.max_qty is not None and qty > limits.max_qty:
            return f"qty {qty:g} is above max_qty {limits.max_qty:g} for {self.symbol} (risk limits)"
        price = self._reference(given)
        if price is None:
            return f"no recent price for {self.symbol}: the stop and the notional cannot be checked; try again"
        if entry and qty * price > limits.max_notional:
            return (f"notional {qty * price:,.2f} USDT ({qty:g} at {price:g}) is above max_notional"
                    f" {limits.max_notional:,.2f} USDT for {self.symbol} (risk limits)")
        if side is Side.BUY and stop >= price:
            return f"a buy's stop must be below the price {price:g}; {stop:g} is not (it would close at once)"
        if side is Side.SELL and stop <= price:
            return f"a sell's stop must be above the price {price:g}; {stop:g} is not (it would close at once)"
        distance = abs(price - stop) / price * 100
        if distance > limits.max_stop_distance_pct:
            return (f"stop {stop:g} is {distance:.1f}% from the price {price:g}; at most"
                    f" {limits.max_stop_distance_pct:g}% is accepted (risk limits)")
        return None

    def adopt(self, cmd: AdoptPosition) -> CommandAccepted | CommandDenied:
        """Take over a position nothing of ours opened: protect it, or close it reduce-only."""
        if cmd.symbol != self.symbol or self.state is not State.IDLE:
            return CommandDenied(cmd.command_id, cmd.symbol, f"{self.symbol} is {self.state}; only IDLE adopts")
        if self.cleanup is not None:                     # the next read judges it again
            return CommandDenied(cmd.command_id, cmd.symbol, f"{self.symbol}: cancelling its last position's stops")
        if not cmd.qty > 0 or (cmd.stop_price is not None and not cmd.stop_price > 0):
            return CommandDenied(cmd.command_id, cmd.symbol, "qty and stop must be positive")
        if cmd.stop_price is not None:
            denial = self._deny_risk(cmd.side, cmd.qty, cmd.stop_price, cmd.reference_price, entry=False)
            if denial:
                return CommandDenied(cmd.command_id, cmd.symbol, f"{ADOPTION_REFUSED}: {denial}")
        # There is no entry of ours to wait for: the position is all there is, and final.
        intent_id = new_id()
        self.episode = ep = Episode(intent_id=intent_id, side=cmd.side, requested_qty=cmd.qty,
                                    opened_at=self.ports.monotonic(), entry=OrderLeg(final=True, filled_qty=cmd.qty),
                                    stop=StopLeg(price=cmd.stop_price))
        self.ports.to_journal(JournalIntent(intent_id, self.symbol, cmd.side, cmd.qty, cmd.stop_price or 0.0,
                                            kind="adopt"))
        if cmd.stop_price is not None:
            ep.naked.start(self.ports.monotonic())
            self._go(Trigger.ADOPT_PROTECT, f"adopted {cmd.reason}: {cmd.side} {cmd.qty:g}; setting stop"
                                            f" {_px(cmd.stop_price)} directly")
            self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
            self._send_stop()
        else:
            self._go(Trigger.ADOPT_CLOSE, f"adopted {cmd.reason}: {cmd.side} {cmd.qty:g}; closing reduce-only")
            self._start_close(f"adopted {cmd.reason}")
        return CommandAccepted(cmd.command_id, self.symbol, intent_id)

    def reprotect(self, cmd: Reprotect) -> CommandAccepted | CommandDenied:
        if not self.fsm.can(Trigger.REPROTECT):
            return CommandDenied(cmd.command_id, cmd.symbol, f"{self.symbol} is {self.state}; nothing to re-protect")
        ep = self.episode
        ep.stop.confirmed = False
        ep.naked.start(self.ports.monotonic())
        ep.vanish_hint = cmd.venue_history
        self._go(Trigger.REPROTECT, f"{cmd.reason}: setting stop {_px(ep.stop.price)} again directly")
        ep.armed_once.discard(TimerKind.NAKED)
        self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
        self._send_stop()
        return CommandAccepted(cmd.command_id, self.symbol, ep.intent_id)

    def close(self, cmd: ClosePosition) -> CommandAccepted | CommandDenied:
        if not self.fsm.can(Trigger.CLOSE_REQUESTED):
            return CommandDenied(cmd.command_id, self.symbol,
                                 f"{self.symbol} is {self.state}; close applies to a filled position")
        self._go(Trigger.CLOSE_REQUESTED, "operator asked to close")
        self._start_close("operator close")
        return CommandAccepted(cmd.command_id, self.symbol, self.episode.intent_id)

    # -- journal -------------------------------------------------------------------------

    def _send_new_order(self, request: OrderRequest, purpose: str, intent: JournalIntent | None = None) -> None:
        """Journal, and the journal sends it on once committed: never a venue call before the row.
        A close waits for the journal at most `journal_wait_s` (see _close_unjournaled)."""
        self._awaiting_journal[request.client_order_id] = request
        self._mark_sent(request.client_order_id)
        self.ports.to_journal(JournalOrder(request, self.episode.intent_id or "", purpose, intent=intent))
        self._arm(TimerKind.STALLED, self.settings.reply_timeout_s)
        if purpose == "close":
            self._arm(TimerKind.JOURNAL_WAIT, self.settings.journal_wait_s)

    def _mark_sent(self, cid: str) -> None:
        leg = self._leg(cid)
        if leg is not None:
            leg.sent_at = self.ports.monotonic()

    def _leg(self, cid: str) -> OrderLeg | None:
        """The entry or the close of this episode by client order id (None: not ours, or over)."""
        ep = self.episode
        return ep.entry if cid == ep.entry.cid else ep.close if cid == ep.close.cid else None

    def on_journaled(self, msg: OrderJournaled) -> None:
        # It has gone to the venue now; "not found" windows run from here (later is safer).
        if self._awaiting_journal.pop(msg.client_order_id, None) is not None:
            self._mark_sent(msg.client_order_id)

    def on_journal_failed(self, msg: JournalFailed) -> None:
        if self.cleanup is not None and msg.client_order_id == self.cleanup.request_id:
            self.cleanup_attempts += 1                   # a cancel waits for its journal row: again, later
            self._arm(TimerKind.CANCEL_STOPS, self._backoff(self.cleanup_attempts - 1))
            return
        request = self._awaiting_journal.pop(msg.client_order_id or "", None)
        if request is None:
            return
        self.log.error("journal failed, order not sent: {}", msg.error)
        leg = self._leg(request.client_order_id)
        if leg is self.episode.entry and self.state is State.ENTERING:
            leg.final = True
            self._go(Trigger.ENTRY_REJECTED, f"journal failed, entry not sent: {msg.error}")
        elif leg is self.episode.close:
            self._close_unjournaled(request, msg.error)

    def _close_unjournaled(self, request: OrderRequest, why: str) -> None:
        """Closing never waits for a journal that cannot write: the close goes out reduce-only
        under its id, which is derived from the journaled intent (so a restart, or the journal
        forwarding it late, finds it as "already placed", never a second close)."""
        self.log.critical("ALERT {}: journal cannot record the close ({}); sending it reduce-only anyway as {}",
                          self.symbol, why, request.client_order_id)
        self.episode.close.sent_at = self.ports.monotonic()
        self._request(PlaceOrder(request))

    # -- venue replies -------------------------------------------------------------------

    def on_order_placed(self, msg: OrderPlaced) -> None:
        self._journal_outcome(msg.client_order_id, msg.report, msg.failure)
        leg = self._leg(msg.client_order_id)
        if leg is not None and msg.report is not None:
            self._known(msg.received_ns)
        if msg.sent_at is not None and leg is not None:  # the window runs from when it really left
            leg.sent_at = self._monotonic_of(msg.sent_at)
        if leg is self.episode.entry and self.state is State.ENTERING:
            self._on_entry_placed(msg)
        elif leg is self.episode.close and self.state in CLOSING:
            self._on_close_placed(msg)

    def on_order_queried(self, msg: OrderQueried) -> None:
        if msg.report is not None:
            self._journal_outcome(msg.client_order_id, msg.report, None)
            if self._leg(msg.client_order_id) is not None:
                self._known(msg.received_ns)
        ep, cid = self.episode, msg.client_order_id
        if cid == ep.probe_cid and ep.probe_cid != ep.close.cid:
            self._on_probe(msg)
        elif cid == ep.entry.cid and self.state is not State.IDLE:   # the episode is not over
            self._on_entry_queried(msg)
        elif cid == ep.close.cid and self.state in CLOSING:
            self._on_close_queried(msg)

    def on_order_streamed(self, msg: OrderStreamed) -> None:
        """The stream is evidence like a query's answer for our own client ids. An order that is
        not ours -- the venue's own close (a stop that triggered, a liquidation, an ADL), an order
        by hand -- closing this symbol's position is evidence of an outside change: it names why,
        and when it closed all we hold, the venue is asked whether the position is gone."""
        report = msg.report
        if report.client_order_id and self._leg(report.client_order_id) is not None:
            self.on_order_queried(OrderQueried("stream", report.client_order_id, report, received_ns=msg.received_ns))
            return
        ep = self.episode
        if (report.symbol != self.symbol or report.filled_qty <= 0 or ep.side is None
                or report.side is not ep.side.opposite or self.state not in HELD_OUTSIDE):
            return                                       # never moves a position (an episode that is over...)
        what = {"stop": "stop loss triggered", "liquidation": "liquidated", "adl": "auto-deleveraged"}.get(
            msg.closed_by, "closed by an order not ours")
        label = (f"stream: {what} ({report.side} {report.filled_qty:g} @ {_px(report.avg_price)},"
                 f" venue order {report.venue_order_id or '?'})")
        ep.cause = Outside(REASON_OF_CLOSED_BY.get(msg.closed_by, CLOSED_OUTSIDE), label, "stream", labelled=True)
        if self.state is State.PROTECTED and report.filled_qty >= ep.open_qty - 1e-12:
            self._outside_gone(ep.cause)
        elif self.state is State.VERIFYING and ep.outside is not None and not ep.outside.labelled:
            # The push came first (a stream may reorder its topics): this order says why.
            ep.outside = dataclasses.replace(ep.outside, reason=ep.cause.reason, labelled=True,
                                             detail=f"{ep.outside.detail}; {label}")

    # -- what was done outside posguard (actors/outside.py) ---------------------------------

    def on_position_streamed(self, msg: PositionStreamed) -> None:
        """A push of this symbol's position. One received before the venue's latest answer we
        acted on says less than that answer did, and is dropped; one arriving while we are busy
        is kept and judged once PROTECTED."""
        ep = self.episode
        if self.state not in HELD_OUTSIDE or msg.received_ns < ep.known_ns:
            return
        if self.state is not State.PROTECTED:
            ep.held_push = (msg.position, msg.stop_known, msg.received_ns)
            return
        self._judge(msg.position, "stream", msg.stop_known)

    def observe(self, cmd: PositionObserved) -> CommandAccepted | CommandDenied:
        """A REST read of the venue, settled past the REST lag (the ProtectionActor's)."""
        if self.state is not State.PROTECTED:
            return CommandDenied(cmd.command_id, cmd.symbol, f"{self.symbol} is {self.state}; judged when it rests")
        self._judge(cmd.position, f"rest ({cmd.finding})", True)
        return CommandAccepted(cmd.command_id, self.symbol, self.episode.intent_id)

    def _judge(self, seen: PositionReport | None, source: str, stop_known: bool) -> None:
        ep = self.episode
        assert ep.side is not None
        found = changes(ep.side, ep.open_qty, ep.stop.price, seen, stop_known)
        gone = next((c for c in found if c in GONE), None)
        if gone is not None:
            detail = describe(gone, seen, ep.open_qty, source)
            cause = ep.cause if ep.cause is not None else Outside(CLOSED_OUTSIDE, detail, source.split()[0])
            self._outside_gone(Outside(cause.reason, f"{detail}; {cause.detail}" if cause.detail != detail else detail,
                                       cause.source, gone, cause.labelled))
            return
        if seen is None:
            return
        for change in found:
            if change in (Change.REDUCED, Change.INCREASED):
                self._resized(change, seen.qty, describe(change, seen, ep.open_qty, source))
        if Change.STOP_REMOVED in found or Change.STOP_MOVED in found:
            change = Change.STOP_REMOVED if Change.STOP_REMOVED in found else Change.STOP_MOVED
            self._stop_changed(change, moved_to(ep.side, seen), describe(change, seen, ep.open_qty, source))

    def on_stop_order_streamed(self, msg: StopOrderStreamed) -> None:
        """Where stops are orders: ours ending while its position lives was cancelled by hand (set
        it again) or triggered (the position is going: ask the venue)."""
        ep, order = self.episode, msg.order
        if (self.state is not State.PROTECTED or msg.open or not is_ours(order) or ep.side is None
                or ep.stop.price is None or order.side is not ep.side.opposite
                or abs(order.stop_price - ep.stop.price) > 1e-9 * max(1.0, ep.stop.price)):
            return                                       # not our standing stop (a replaced one, an operator's)
        if msg.ended == "triggered":
            ep.cause = Outside("stop_triggered", f"stream: our stop order {order.client_order_id} triggered", "stream",
                               labelled=True)
            self._outside_gone(ep.cause)
        else:
            ended = msg.ended or "ended"
            self._stop_changed(Change.STOP_REMOVED, None,
                               f"stream: our stop order {order.client_order_id} {ended} outside posguard")

    def _outside_gone(self, evidence: Outside) -> None:
        """Closed or flipped outside us, the evidence says: nothing is cancelled on it. Our stop is
        set again, which changes nothing if the position lives; the matching engine's "no position"
        is what confirms it (a refusal for any other reason -- a flip -- closes reduce-only)."""
        ep = self.episode
        ep.outside = evidence
        self._event("outside", {"change": evidence.change, "source": evidence.source, "detail": evidence.detail,
                                "reason": evidence.reason, "qty": ep.open_qty})
        self._go(Trigger.OUTSIDE_SEEN, f"{evidence.detail}: asking the venue (our stop set again) before anything"
                                       " is cancelled")
        if evidence.labelled:
            self._send_stop()
        else:                                            # the order history names why first (a label only)
            self._request(FetchClosures(self.symbol, request_id=f"label:{ep.intent_id}"))

    def on_closures(self, msg: ClosuresFetched) -> None:
        ep = self.episode
        if self.state is not State.VERIFYING or ep.outside is None or msg.request_id != f"label:{ep.intent_id}":
            return
        was = ep.outside
        if was.labelled:
            pass                                         # the stream's closing order named it meanwhile
        elif msg.closures:
            latest = msg.closures[0]
            ep.outside = Outside(REASON_OF_KIND[latest.kind], f"{was.detail}; venue history: {latest.describe()}",
                                 was.source, was.change, labelled=True)
        else:
            why = "unreadable" if msg.failure is not None else "shows no closing order"
            ep.outside = dataclasses.replace(was, detail=f"{was.detail}; venue history {why}", labelled=True)
        self._send_stop()                                # now the engine's word

    def _resized(self, change: Change, qty: float, detail: str) -> None:
        """Reduced or increased by someone else: ours now (the stop covers the whole position on
        every venue posguard runs on: Bybit's Full mode, Binance's closePosition, the simulator's)."""
        ep = self.episode
        before, ep.position_qty = ep.open_qty, qty
        self._event("outside", {"change": change, "source": detail.split(":")[0], "detail": detail,
                                "before": before, "after": qty})
        self.ports.to_journal(JournalPosition(ep.intent_id or "", self.symbol, qty, ep.stop.price))
        self.last_event = detail
        self.log.warning("{} {}", self.symbol, detail)
        self.ports.publish(self.snapshot())

    def _stop_changed(self, change: Change, seen_stop: float | None, detail: str) -> None:
        """Our stop removed or moved by hand while the position lives: set again at our price --
        or, moved and `follow_stop_moves`, kept at the operator's (within the risk limits)."""
        ep = self.episode
        assert ep.side is not None
        follow = (change is Change.STOP_MOVED and seen_stop is not None and self.settings.follow_stop_moves
                  and self._stop_acceptable(seen_stop))
        self._event("outside", {"change": change, "source": detail.split(":")[0], "detail": detail,
                                "ours": ep.stop.price, "seen": seen_stop, "action": "follow" if follow else "restore"})
        if follow:
            assert seen_stop is not None
            ep.stop.price = seen_stop
            self.ports.to_journal(JournalPosition(ep.intent_id or "", self.symbol, ep.open_qty, seen_stop))
            self.reprotect(Reprotect(self.symbol, f"{detail}; following the operator's stop"))
        else:
            self.reprotect(Reprotect(self.symbol, f"{detail}; setting ours again"))

    def _stop_acceptable(self, stop: float) -> bool:
        ep = self.episode
        assert ep.side is not None
        if self._reference(None) is None:
            return True                                  # the venue took it: on the right side of the price
        return self._deny_risk(ep.side, ep.open_qty, stop, None, entry=False) is None

    def _known(self, received_ns: int) -> None:
        self.episode.known_ns = max(self.episode.known_ns, received_ns)

    def _event(self, kind: str, data: dict[str, object]) -> None:
        self.ports.to_journal(JournalEvent(EventRecord(kind, self.symbol, dict(data))))

    # -- stop orders that outlived their position -----------------------------------------

    def cancel_leftovers(self, cmd: CancelLeftovers) -> CommandAccepted | CommandDenied:
        """The ProtectionActor found stop orders of ours on this symbol, which two REST reads the
        lag apart show flat: cancel them -- while no episode of ours holds it."""
        if self.state is not State.IDLE:
            return CommandDenied(cmd.command_id, cmd.symbol, f"{self.symbol} is {self.state}; its stops are its own")
        if self.cleanup is None:
            self._cancel_leftovers("stop orders of ours on a flat symbol (two REST reads the lag apart)",
                                   cmd.client_order_ids)
        return CommandAccepted(cmd.command_id, self.symbol, self.episode.intent_id)

    def _cancel_leftovers(self, reason: str, ids: tuple[str, ...] = (), proven_flat: bool = True) -> None:
        """Where stops are orders they outlive their position (a close-all stop left working closes
        the next position at the old trigger): once the venue confirmed the position gone, every
        stop order of ours on the symbol is cancelled -- journaled first, then sent by the journal.
        Not proven flat (our close filled all it asked for: someone may have added meanwhile),
        the exchange asks the matching engine first, by setting our stop again: only "no position"
        lets the cancel go."""
        if not self.caps.stop_orders:
            return                                       # a position's own stop goes with it
        ep = self.episode
        probe = not proven_flat and ep.side is not None and ep.stop.price is not None
        self.cleanup = CancelStops(self.symbol, ids, probe_stop=ep.stop.price if probe else None,
                                   probe_side=ep.side if probe else None)
        self.ports.to_journal(JournalCancel(self.cleanup, reason))
        self._arm(TimerKind.CANCEL_STOPS, self.settings.reply_timeout_s)

    def on_stops_cancelled(self, msg: StopsCancelled) -> None:
        cleanup = self.cleanup
        if cleanup is None or msg.request_id != cleanup.request_id:
            return
        if msg.failure is not None or (msg.remaining and not msg.position_lives):
            self.cleanup_attempts += 1
            why = _describe(msg.failure) if msg.failure is not None else f"still working: {', '.join(msg.remaining)}"
            self.log.warning("{}: stop orders of ours not all cancelled yet ({}); again", self.symbol, why)
            self._arm(TimerKind.CANCEL_STOPS, self._backoff(self.cleanup_attempts - 1))
            return
        self.cleanup, self.cleanup_attempts = None, 0
        if msg.position_lives:
            # A position remains (added outside while we closed): not ours any more -- the scan's
            # adoption policy takes it, with the stop of ours still working on it.
            self.last_event = "a position remains after our close (changed outside meanwhile): left to the scan"
            self._event("outside", {"change": "left_after_close", "source": "engine", "detail": self.last_event})
            self.log.warning("{} {}", self.symbol, self.last_event)
            self.ports.publish(self.snapshot())
        elif msg.cancelled:
            self.last_event = f"cancelled {len(msg.cancelled)} stop order(s) of ours its position outlived"
            self._event("stops_cancelled", {"orders": list(msg.cancelled)})
            self.log.info("{} {}", self.symbol, self.last_event)
            self.ports.publish(self.snapshot())

    def _cancel_again(self) -> None:
        cleanup = self.cleanup
        assert cleanup is not None
        self.cleanup = None
        self._cancel_leftovers("stop orders of ours outlived their position (again)", cleanup.client_order_ids,
                               proven_flat=cleanup.probe_stop is None)

    def on_stream_gap(self) -> None:
        """The stream was down: anything it may have missed about our unfinished orders is asked
        for by client id now. No state changes here (an entry still awaiting its REST reply
        keeps waiting for it); the answers move the position as any query's do."""
        if self.state is State.ENTERING or self.state is State.IDLE:
            return
        ep = self.episode
        if not ep.entry.final and ep.entry.cid is not None:
            self._query_entry()
        if self.state in CLOSING and ep.close.cid is not None:
            self._arm(TimerKind.POLL_CLOSE, 0.0)

    def on_fill_streamed(self, msg: FillStreamed) -> None:
        """An execution of our entry: learn its final state now rather than at the next poll."""
        entry = self.episode.entry
        if msg.client_order_id == entry.cid and not entry.final and self.state is State.CONFIRMING_ENTRY:
            self._query_entry()

    def on_stop_set(self, msg: StopSet) -> None:
        ep = self.episode
        stop = ep.stop
        if msg.request_id != stop.request_id or self.state not in SETTING_STOP:
            return
        failure = msg.failure
        if failure is None or failure.outcome is Outcome.NOT_MODIFIED:
            stop.price = msg.stop_price                  # as the venue holds it (rounded to its tick)
            self._known(msg.received_ns)
            if self.state is State.VERIFYING:
                assert ep.outside is not None
                self.log.warning("{}: {} -- but the venue took our stop again: the position lives", self.symbol,
                                 ep.outside.detail)
                ep.outside = ep.cause = None
                self._go(Trigger.OUTSIDE_UNCONFIRMED, f"the venue still holds the position (our stop {msg.stop_price}"
                                                      " taken again): nothing was changed")
                return
            self._mark_protected()
            self._go(Trigger.STOP_CONFIRMED, f"stop {msg.stop_price} confirmed by the venue")
        elif failure.outcome in (Outcome.RETRY_LATER, Outcome.UNKNOWN):
            # Setting the same stop again is idempotent (34040 = already so), so retry it.
            stop.attempts += 1
            self._arm(TimerKind.RETRY_STOP, self._backoff(stop.attempts - 1))
        elif failure.outcome is Outcome.NO_POSITION and ep.entry.final and self._gone_evidence() is not None:
            self._closed_outside(self._gone_evidence())  # type: ignore[arg-type]
        else:
            evidence = ep.outside
            self._go(Trigger.STOP_FAILED, f"stop refused ({_describe(failure)}): rolling back")
            self._start_close(evidence.reason if evidence is not None else "stop could not be set")
            if evidence is not None:
                ep.vanish_hint = evidence.detail

    def _gone_evidence(self) -> Outside | None:
        """What says the position went away outside us, beside the engine's "no position": what
        made us ask (VERIFYING), or -- a stop being set after a fill -- a push or an order the
        stream brought meanwhile."""
        ep = self.episode
        if ep.outside is not None:
            return ep.outside
        if ep.held_push is not None and ep.held_push[0] is None:
            cause = ep.cause or Outside(CLOSED_OUTSIDE, "stream: the venue showed no position", "stream")
            return cause
        if ep.cause is not None:
            return ep.cause
        return None

    def _closed_outside(self, evidence: Outside) -> None:
        """Two sources agree: the evidence, and the matching engine holding no position to protect."""
        ep = self.episode
        ep.outside, ep.held_push = evidence, None
        ep.naked.stop(self.ports.monotonic())
        ep.close_reason = evidence.reason
        self._go(Trigger.CLOSED_OUTSIDE, f"closed outside posguard ({evidence.reason}): {evidence.detail}; the venue"
                                         " confirms it holds no position")
        for kind in list(self._tokens):
            self._tokens[kind] += 1                      # every pending timer is now stale
        self._cancel_leftovers(f"{evidence.reason}: the position is gone")

    # -- timers (TIMERS below: when each still applies, and what it does) --------------------

    def on_timer(self, timer: PositionTimer) -> None:
        if self._tokens.get(timer.kind) != timer.token:
            return                                       # superseded or from an earlier episode
        applies, fire = TIMERS[timer.kind]
        if applies(self):
            fire(self)

    def _stalled(self) -> None:
        self.resync(f"no reply within {self.settings.reply_timeout_s}s")

    def _journal_waited(self) -> None:
        request = self._awaiting_journal.pop(self.episode.close.cid or "", None)
        if request is not None:
            self._close_unjournaled(request, f"no answer within {self.settings.journal_wait_s}s")

    def _naked_deadline(self) -> None:
        self._go(Trigger.NAKED_DEADLINE,
                 f"protection not confirmed within {self.settings.naked_deadline_s}s: flattening")
        self._start_close("naked deadline")

    def _retry_entry(self) -> None:
        self._resend(self.episode.entry)

    def _poll_close(self) -> None:
        assert self.episode.close.cid is not None
        self._request(QueryOrder(self.symbol, self.episode.close.cid))

    def _retry_close(self) -> None:
        self._resend(self.episode.close)

    def _resend(self, leg: OrderLeg) -> None:
        """The same order under the same client id: only after retry-later (it was not processed)."""
        assert leg.request is not None
        leg.sent_at = self.ports.monotonic()
        self._request(PlaceOrder(leg.request))

    def _probe_close(self) -> None:
        assert self.episode.probe_cid is not None
        self._request(QueryOrder(self.symbol, self.episode.probe_cid))

    # -- entry ---------------------------------------------------------------------------

    def _entry_request(self) -> OrderRequest:
        ep = self.episode
        assert ep.side is not None and ep.entry.cid is not None and ep.stop.price is not None
        attached = ep.stop.price if self.caps.attached_stop else None
        return OrderRequest(self.symbol, ep.side, ep.requested_qty, ep.entry.cid, stop_price=attached)

    def _on_entry_placed(self, msg: OrderPlaced) -> None:
        ep = self.episode
        if msg.report is not None:
            if msg.report.stop_price is not None and ep.stop.guarded_latency is None:
                # The venue took the entry with its stop attached: whatever fills carries the stop.
                ep.stop.guarded_latency = self.ports.monotonic() - ep.opened_at
            self._on_entry_report(msg.report)
            return
        failure = msg.failure
        assert failure is not None
        if failure.outcome is Outcome.RETRY_LATER and ep.entry.retries < self.settings.max_entry_retries:
            ep.entry.retries += 1                        # not processed: the same client id again is safe
            self._arm(TimerKind.RETRY_ENTRY, self._backoff(ep.entry.retries - 1))
        elif failure.outcome in (Outcome.REJECTED, Outcome.AUTH, Outcome.NO_POSITION, Outcome.RETRY_LATER):
            ep.entry.final = True
            self._go(Trigger.ENTRY_REJECTED, f"entry refused: {_describe(failure)}")
        elif failure.outcome is Outcome.ALREADY_PLACED:
            self._go(Trigger.ENTRY_ACKED, "duplicate client id: the entry is on the venue; querying it")
            self._after_entry_unknown()
        else:                                            # AMBIGUOUS: query, never resend
            self._go(Trigger.ENTRY_AMBIGUOUS, f"entry outcome unknown ({_describe(failure)}): querying by client id")
            self._after_entry_unknown()

    def _after_entry_unknown(self) -> None:
        if not self.caps.attached_stop:
            self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
        self._query_entry()

    def _request(self, msg: object) -> None:
        """Every venue request goes out here; if nothing follows for reply_timeout_s, resync."""
        self.ports.to_exchange(msg)
        self._arm(TimerKind.STALLED, self.settings.reply_timeout_s)

    def resync(self, why: str) -> None:
        """A reply may be lost (collaborator restarted, call hung): ask again, by client id,
        from where we are — never a blind resend of an order."""
        state, ep = self.state, self.episode
        if ep.probe_cid is not None and state is not State.IDLE:
            self._arm(TimerKind.PROBE_CLOSE, 0.0)        # its answer may be the one lost
        if state in RESTING and (ep.entry.final or ep.entry.cid is None):
            return                                       # nothing in flight: nothing to ask
        self.log.warning("{} {}: resyncing from {}", self.symbol, why, state)
        # Whatever was sent, was sent before now: counting "never arrived" from now is safe even
        # if it sat in a queue that died with the exchange.
        now = self.ports.monotonic()
        if not ep.entry.final:
            ep.entry.sent_at = max(ep.entry.sent_at, now)
        ep.close.sent_at = max(ep.close.sent_at, now)
        if state is State.ENTERING:
            self._go(Trigger.ENTRY_AMBIGUOUS, f"{why}: entry outcome unknown; querying by client id")
            self._after_entry_unknown()
            return
        if not ep.entry.final and ep.entry.cid is not None:
            self._query_entry()                          # in every state: "closed" waits for it
        if state in SETTING_STOP:
            self._send_stop()                            # idempotent: 34040 = already so
        elif state in CLOSING:
            if ep.close.cid is not None:
                self._awaiting_journal.pop(ep.close.cid, None)
                self._arm(TimerKind.POLL_CLOSE, 0.0)     # it may have been sent: ask first
            else:
                self._new_close_order()

    def _query_entry(self) -> None:
        assert self.episode.entry.cid is not None
        self._request(QueryOrder(self.symbol, self.episode.entry.cid))

    def _on_entry_queried(self, msg: OrderQueried) -> None:
        ep = self.episode
        if msg.report is not None:
            self._on_entry_report(msg.report)
            return
        if self._never_arrived(msg, ep.entry.sent_at):
            ep.entry.final, ep.entry.filled_qty = True, 0.0
            if self.state is State.RECOVERING and not ep.resume_close:  # noqa: SIM114 - distinct reasons
                self._go(Trigger.RECOVERED_FLAT, "recovered: the entry never reached the venue")
            elif self.state is State.RECOVERING:
                self._recovered()
            elif self.state is State.CONFIRMING_ENTRY:
                self._go(Trigger.ENTRY_REJECTED, "entry never reached the venue (not found past the receive window)")
            else:
                self._check_flat()
        elif self.state is State.RECOVERING and not ep.resume_close:
            # Not visible (yet): it may still arrive. Confirming it is CONFIRMING_ENTRY's job.
            self._arm(TimerKind.POLL_ENTRY, self.settings.poll_s)
            self._go(Trigger.ENTRY_AMBIGUOUS, "recovered: entry not visible yet; confirming by client id")
            if not self.caps.attached_stop:
                self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
        else:
            self._arm(TimerKind.POLL_ENTRY, self.settings.poll_s)

    def _never_arrived(self, msg: OrderQueried, sent_at: float) -> bool:
        """Not found past the venue's receive window: an order still unknown can no longer arrive."""
        return (msg.failure is not None and msg.failure.outcome is Outcome.ORDER_NOT_FOUND
                and self.ports.monotonic() - sent_at >= self.settings.entry_unknown_window_s)

    def _on_entry_report(self, report: OrderReport) -> None:
        self.note_price(report.avg_price)
        entry = self.episode.entry
        if report.fill_known:
            entry.filled_qty = max(entry.filled_qty, report.filled_qty)
            entry.avg_price = report.avg_price or entry.avg_price
            entry.final = report.status.is_final
        if not entry.final:
            # An ack without a fill, or a partial fill: keep asking until the entry is final.
            self._arm(TimerKind.POLL_ENTRY, 0.0 if self.state is State.ENTERING else self.settings.poll_s)
        state = self.state
        if state is State.RECOVERING:
            self._recovered()
        elif state in (State.ENTERING, State.CONFIRMING_ENTRY):
            if entry.filled_qty > 0:
                self._on_filled(report)
            elif entry.final:
                self._go(Trigger.ENTRY_REJECTED, f"entry {report.status} with nothing filled")
            elif state is State.ENTERING:
                self._go(Trigger.ENTRY_ACKED, "entry accepted; learning its fill by client id")
                if not self.caps.attached_stop:
                    self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
        elif state in CLOSING:
            self._check_flat()

    def _on_filled(self, report: OrderReport) -> None:
        ep = self.episode
        ep.naked.start(self.ports.monotonic())
        filled = f"entry filled {ep.entry.filled_qty:g} {self.symbol} @ {_px(ep.entry.avg_price)}"
        if report.stop_price is not None:
            ep.stop.price = report.stop_price            # as the venue holds it (rounded to its tick)
            self._mark_protected()
            self._go(Trigger.ENTRY_FILLED_WITH_STOP, f"{filled}, stop {_px(report.stop_price)} attached")
        else:
            self._go(Trigger.ENTRY_FILLED, f"{filled}; setting stop {_px(ep.stop.price)} directly")
            self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
            self._send_stop()

    def _send_stop(self) -> None:
        ep = self.episode
        assert ep.stop.price is not None
        ep.stop.request_id = new_id()
        self._request(SetStop(self.symbol, ep.stop.price, request_id=ep.stop.request_id, position_side=ep.side))

    def _mark_protected(self) -> None:
        ep = self.episode
        ep.stop.confirmed = True
        ep.stop.latency = self.ports.monotonic() - ep.opened_at
        if ep.stop.guarded_latency is None:
            ep.stop.guarded_latency = ep.stop.latency
        ep.naked.stop(self.ports.monotonic())

    # -- rollback / close ------------------------------------------------------------------

    def _start_close(self, reason: str) -> None:
        ep = self.episode
        ep.close_reason = reason
        ep.close.attempts = 0
        if not ep.entry.final:
            self._arm(TimerKind.POLL_ENTRY, 0.0)         # the close is only confirmed once the entry is final
        self._new_close_order()

    def _new_close_order(self) -> None:
        """Reduce-only close of what we know was filled; while that is unknown, of what we asked
        for (reduce-only can never open or flip a position)."""
        ep = self.episode
        assert ep.side is not None
        # reduce-only: more than is there is clipped, never reversed -- so the larger of what was
        # filled and what the venue showed since (an outside increase) is always safe
        held = max(ep.open_qty, ep.entry.filled_qty)
        qty = held if ep.entry.final else max(held, ep.requested_qty)
        if qty <= 0:
            self._check_flat()
            return
        ep.closes_sent += 1
        # The same leg: closed qty and refused attempts count over the episode's close orders.
        ep.close.cid = close_order_id(ep.intent_id or self.symbol, ep.closes_sent)
        ep.close.request = OrderRequest(self.symbol, ep.side.opposite, qty, ep.close.cid, reduce_only=True)
        ep.close_after_entry_final = ep.entry.final
        ep.close.final = False
        ep.close.retries = 0
        self._send_new_order(ep.close.request, "close")

    def _on_close_placed(self, msg: OrderPlaced) -> None:
        if msg.report is not None:
            if msg.report.fill_known:
                self._on_close_report(msg.report)
            else:
                self._arm(TimerKind.POLL_CLOSE, 0.0)
            return
        failure = msg.failure
        assert failure is not None
        close = self.episode.close
        if failure.outcome is Outcome.NO_POSITION:
            # The matching engine itself says there is nothing to reduce.
            close.final = True
            self._check_flat()
        elif failure.outcome is Outcome.RETRY_LATER:
            close.retries += 1
            self._arm(TimerKind.RETRY_CLOSE, self._backoff(close.retries - 1))
        elif failure.outcome in AMBIGUOUS or failure.outcome is Outcome.ALREADY_PLACED:
            self.log.warning("close outcome unknown ({}): querying by client id", _describe(failure))
            self.ports.to_journal(JournalEvent(EventRecord("ambiguous", self.symbol, {
                "client_order_id": close.cid, "detail": f"close outcome unknown ({_describe(failure)})"})))
            self._arm(TimerKind.POLL_CLOSE, 0.0)
        else:
            self._close_refused(_describe(failure))

    def _on_close_queried(self, msg: OrderQueried) -> None:
        if msg.report is not None:
            self._on_close_report(msg.report)
            return
        if self._never_arrived(msg, self.episode.close.sent_at):
            self._new_close_order()                      # a fresh close is safe
        else:
            self._arm(TimerKind.POLL_CLOSE, self.settings.poll_s)

    def _on_close_report(self, report: OrderReport) -> None:
        if not report.status.is_final:
            self._arm(TimerKind.POLL_CLOSE, self.settings.poll_s)
        elif report.filled_qty > 0:
            close = self.episode.close
            close.filled_qty += report.filled_qty
            close.final = True
            self._check_flat()
        else:
            self._close_refused(f"close order {report.status} with nothing filled")

    def _close_refused(self, why: str) -> None:
        close = self.episode.close
        close.attempts += 1
        if close.attempts >= self.settings.max_close_attempts and self.state is State.FLATTENING:
            self._go(Trigger.CLOSE_UNCONFIRMED,
                     f"rollback could not confirm close after {close.attempts} tries ({why}):"
                     " position may still be open")
            self.log.critical("ALERT {}: rollback could not confirm close: position may still be open", self.symbol)
        self._arm(TimerKind.NEW_CLOSE, self._backoff(close.attempts - 1))

    def _check_flat(self) -> None:
        """CLOSE_CONFIRMED only on evidence: the entry's final state and the close's result."""
        ep = self.episode
        entry, close = ep.entry, ep.close
        if self.state not in CLOSING or not entry.final:
            return
        if entry.filled_qty <= 0:
            self._closed("the entry never filled")
        elif close.final and close.filled_qty > 0:
            # Flat for sure only when the venue clipped it (reduce-only: there was less than asked);
            # a close that filled all it asked for may leave what someone added meanwhile.
            clipped = close.request is not None and close.filled_qty < close.request.qty - 1e-12
            self._closed(f"close filled {close.filled_qty} (entry filled {entry.filled_qty})", proven_flat=clipped)
        elif close.final and ep.close_after_entry_final:
            self._closed(f"venue holds no position to reduce (entry filled {entry.filled_qty}; closed elsewhere"
                         f"{': ' + ep.vanish_hint if ep.vanish_hint else ''})")
        elif close.final:
            # "Nothing to reduce" came before we knew the entry's fill: the fill may be newer.
            self._new_close_order()

    def _closed(self, detail: str, proven_flat: bool = True) -> None:
        self.episode.naked.stop(self.ports.monotonic())
        self._go(Trigger.CLOSE_CONFIRMED, f"closed ({self.episode.close_reason}): {detail}")
        for kind in list(self._tokens):
            self._tokens[kind] += 1                      # every pending timer is now stale
        if self.episode.entry.filled_qty > 0:
            self._cancel_leftovers(f"closed ({self.episode.close_reason})", proven_flat=proven_flat)

    # -- plumbing ------------------------------------------------------------------------

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

    def _events_of(self, trigger: Trigger, detail: str) -> tuple[EventRecord, ...]:
        """What the event stream says beside the transition itself."""
        ep = self.episode
        if trigger in (Trigger.ENTRY_FILLED_WITH_STOP, Trigger.STOP_CONFIRMED):
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
                                                        "outside": True}),)
        if trigger is Trigger.ENTRY_AMBIGUOUS:
            return (EventRecord("ambiguous", self.symbol, {"client_order_id": ep.entry.cid, "detail": detail}),)
        return ()

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
            naked_seconds=ep.naked.total, last_event=self.last_event, protect_latency_s=ep.stop.latency,
            guarded_latency_s=ep.stop.guarded_latency,
            naked_since=None if ep.naked.since is None
            else self.ports.wall() - (self.ports.monotonic() - ep.naked.since),
            updated_at=self.ports.wall())


# Timer kind -> (whether it still applies when it fires, what it then does). A timer that no
# longer applies is dropped: the state it was armed for has moved on.
TIMERS: dict[TimerKind, tuple[Callable[[PositionCore], bool], Callable[[PositionCore], None]]] = {
    # Something is awaited: a reply in a busy state, or the entry's final state.
    TimerKind.STALLED: (lambda c: c.state not in RESTING or not c.episode.entry.final, PositionCore._stalled),
    # In any state: a close never waits longer than this for its journal row.
    TimerKind.JOURNAL_WAIT: (lambda c: True, PositionCore._journal_waited),
    TimerKind.NAKED: (lambda c: c.state in (State.PROTECTING, State.CONFIRMING_ENTRY) and not c.episode.stop.confirmed,
                      PositionCore._naked_deadline),
    TimerKind.POLL_ENTRY: (lambda c: c.state is not State.IDLE and not c.episode.entry.final,
                           PositionCore._query_entry),
    TimerKind.RETRY_ENTRY: (lambda c: c.state is State.ENTERING, PositionCore._retry_entry),
    TimerKind.RETRY_STOP: (lambda c: c.state in SETTING_STOP, PositionCore._send_stop),
    TimerKind.CANCEL_STOPS: (lambda c: c.cleanup is not None and c.state is State.IDLE, PositionCore._cancel_again),
    TimerKind.POLL_CLOSE: (lambda c: c.state in CLOSING and bool(c.episode.close.cid), PositionCore._poll_close),
    TimerKind.RETRY_CLOSE: (lambda c: c.state in CLOSING and c.episode.close.request is not None,
                            PositionCore._retry_close),
    TimerKind.NEW_CLOSE: (lambda c: c.state in CLOSING, PositionCore._new_close_order),
    TimerKind.PROBE_CLOSE: (lambda c: c.state is not State.IDLE and c.episode.probe_cid is not None,
                            PositionCore._probe_close),
}


def _px(value: float | None) -> str:
    return "?" if value is None else f"{value:.8g}"


def _describe(failure: VenueFailure) -> str:
    return f"{failure.outcome} {failure.code} {failure.message}".strip()
