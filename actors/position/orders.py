"""The entry and the stop: journaled before sent, the venue's replies, the streamed fills,
ambiguous outcomes resolved by client id."""

from __future__ import annotations

import dataclasses

from actors.messages import (
    FetchClosures,
    FillStreamed,
    JournalFailed,
    JournalIntent,
    JournalOrder,
    OrderJournaled,
    OrderPlaced,
    OrderQueried,
    OrderStreamed,
    PlaceOrder,
    QueryOrder,
    Reprotect,
    SetStop,
    StopSet,
    new_id,
)
from actors.position.base import AMBIGUOUS, HELD_OUTSIDE, CoreBase, describe_failure, px
from actors.position.episode import OrderLeg, same_qty
from actors.position.outside import CLOSED_OUTSIDE, REASON_OF_CLOSED_BY, Outside
from actors.position.states import CLOSING, RESTING, SETTING_STOP, State, TimerKind, Trigger
from adapters.base import ExitKind, OrderReport, OrderRequest
from adapters.errors import Outcome

MOVE_TRIES = 5                       # answers that may have executed, asked again before the old stop is set again


class Orders(CoreBase):
    """The entry and the stop, and what the venue answers about them."""

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
        """The entry, the close, or a partial close or add of this episode by client order id
        (None: not ours, or over)."""
        ep = self.episode
        if cid == ep.change.cid:
            return ep.change
        return ep.entry if cid == ep.entry.cid else ep.close if cid == ep.close.cid else None

    def on_journaled(self, msg: OrderJournaled) -> None:
        # It has gone to the venue now; "not found" windows run from here (later is safer).
        if self._awaiting_journal.pop(msg.client_order_id, None) is not None:
            self._mark_sent(msg.client_order_id)

    def on_journal_failed(self, msg: JournalFailed) -> None:
        if msg.client_order_id is not None and msg.client_order_id == self.episode.exit_request_id:
            self.on_exit_unjournaled(msg.error)  # type: ignore[attr-defined]
            return
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
        elif leg is self.episode.change:
            self._change_refused(f"not sent: the journal cannot record it ({msg.error})")  # type: ignore[attr-defined]

    def _close_unjournaled(self, request: OrderRequest, why: str) -> None:
        """Closing never waits for a journal that cannot write: the close goes out reduce-only
        under its id, which is derived from the journaled intent (so a restart, or the journal
        forwarding it late, finds it as "already placed", never a second close)."""
        self.log.critical("ALERT {}: journal cannot record the close ({}); sending it reduce-only anyway as {}",
                          self.symbol, why, request.client_order_id)
        self.episode.close.sent_at = self.ports.monotonic()
        self._request(PlaceOrder(request))

    def on_order_placed(self, msg: OrderPlaced) -> None:
        self._journal_outcome(msg.client_order_id, msg.report, msg.failure)
        leg = self._leg(msg.client_order_id)
        if msg.sent_at is not None and leg is not None:  # the window runs from when it really left
            leg.sent_at = self._monotonic_of(msg.sent_at)
        if leg is self.episode.entry and self.state is State.ENTERING:
            self._on_entry_placed(msg)
        elif leg is self.episode.close and self.state in CLOSING:
            self._on_close_placed(msg)
        elif leg is self.episode.change and not leg.final:
            self.on_change_placed(msg)  # type: ignore[attr-defined]

    def on_order_queried(self, msg: OrderQueried) -> None:
        if msg.report is not None:
            # An order's answer says nothing of the position's stop, and may come back (REST)
            # after stream news that is newer than what it says: it never makes a push "older".
            self._journal_outcome(msg.client_order_id, msg.report, None)
        ep, cid = self.episode, msg.client_order_id
        if cid == ep.probe_cid and ep.probe_cid != ep.close.cid:
            self._on_probe(msg)
        elif cid == ep.entry.cid and self.state is not State.IDLE:   # the episode is not over
            self._on_entry_queried(msg)
        elif cid == ep.close.cid and self.state in CLOSING:
            self._on_close_queried(msg)
        elif cid == ep.change.cid and not ep.change.final and self.state is not State.IDLE:
            self.on_change_queried(msg)  # type: ignore[attr-defined]

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
        if ep.resized is not None and same_qty(report.filled_qty, ep.resized):
            ep.resized = None                            # the push came first: this order is the reduction it showed
            return
        what = {"stop": "stop loss triggered", "take_profit": "take-profit triggered", "liquidation": "liquidated",
                "adl": "auto-deleveraged"}.get(
            msg.closed_by, "closed by an order not ours")
        label = (f"stream: {what} ({report.side} {report.filled_qty:g} @ {px(report.avg_price)},"
                 f" venue order {report.venue_order_id or '?'})")
        ep.cause = Outside(REASON_OF_CLOSED_BY.get(msg.closed_by, CLOSED_OUTSIDE), label, "stream", labelled=True)
        if self.state is State.PROTECTED and report.filled_qty >= ep.open_qty - 1e-12:
            self._outside_gone(ep.cause)
        elif report.filled_qty < ep.open_qty - 1e-12:
            ep.reduced_by = report.filled_qty            # the push that shows it is to come
        elif self.state is State.VERIFYING and ep.outside is not None and not ep.outside.labelled:
            # The push came first (a stream may reorder its topics): this order says why.
            ep.outside = dataclasses.replace(ep.outside, reason=ep.cause.reason, labelled=True,
                                             detail=f"{ep.outside.detail}; {label}")

    def on_stream_gap(self) -> None:
        """The stream was down: anything it may have missed about our unfinished orders is asked
        for by client id now. No state changes here (an entry still awaiting its REST reply
        keeps waiting for it); the answers move the position as any query's do."""
        if self.state is State.ENTERING or self.state is State.IDLE:
            return
        ep = self.episode
        ep.resized = ep.reduced_by = None                # what they waited to be matched with may be lost
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
        if self.state is State.MOVING_STOP:
            self._on_stop_moved(msg)
            return
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
        elif failure.outcome is Outcome.NO_POSITION and ep.entry.final and ep.stop_vanished:
            # Our stop went missing, and the matching engine holds no position to protect: two
            # sources agree it is gone (a stop of ours that triggered while the REST position view,
            # older than the stop list, still showed it). Nothing to roll back; the venue's order
            # history names the cause before the episode ends.
            source = ep.stop_vanished.split(":")[0]
            ep.outside = Outside(CLOSED_OUTSIDE, f"{ep.stop_vanished}; the venue holds no position to protect",
                                 source.split()[0], labelled=False)
            self._request(FetchClosures(self.symbol, request_id=f"label:{ep.intent_id}"))
        else:
            evidence = ep.outside
            self._go(Trigger.STOP_FAILED, f"stop refused ({describe_failure(failure)}): rolling back")
            self._start_close(evidence.reason if evidence is not None else "stop could not be set")
            if evidence is not None:
                ep.vanish_hint = evidence.detail

    def _entry_request(self, take_profit: float | None = None) -> OrderRequest:
        ep = self.episode
        assert ep.side is not None and ep.entry.cid is not None and ep.stop.price is not None
        attached = ep.stop.price if self.caps.attached_stop else None
        tp = take_profit if attached is not None and self.caps.take_profit else None
        return OrderRequest(self.symbol, ep.side, ep.requested_qty, ep.entry.cid, stop_price=attached, take_profit=tp)

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
            self._go(Trigger.ENTRY_REJECTED, f"entry refused: {describe_failure(failure)}")
        elif failure.outcome is Outcome.ALREADY_PLACED:
            self._go(Trigger.ENTRY_ACKED, "duplicate client id: the entry is on the venue; querying it")
            self._after_entry_unknown()
        else:                                            # AMBIGUOUS: query, never resend
            self._go(Trigger.ENTRY_AMBIGUOUS,
                     f"entry outcome unknown ({describe_failure(failure)}): querying by client id")
            self._after_entry_unknown()

    def _after_entry_unknown(self) -> None:
        if not self.caps.attached_stop:
            self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
        self._query_entry()

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
        if not ep.change.final and ep.change.cid is not None:
            self._arm(TimerKind.POLL_CHANGE, 0.0)        # a partial close or add: ask, never resend
        if state is State.SETTING_EXIT and ep.exit_asked is not None:
            self._send_exit()  # type: ignore[attr-defined]  # idempotent: the same order id / not modified
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
        filled = f"entry filled {ep.entry.filled_qty:g} {self.symbol} @ {px(ep.entry.avg_price)}"
        attached_tp = ep.entry.request.take_profit if ep.entry.request is not None else None
        if attached_tp is not None and report.take_profit is not None:
            ep.take_profit = report.take_profit          # it travelled with the entry
            ep.exits_wanted = [w for w in ep.exits_wanted if w[0] is not ExitKind.TAKE_PROFIT]
        if report.stop_price is not None:
            ep.stop.price = report.stop_price            # as the venue holds it (rounded to its tick)
            self._mark_protected()
            self._go(Trigger.ENTRY_FILLED_WITH_STOP, f"{filled}, stop {px(report.stop_price)} attached")
        else:
            self._go(Trigger.ENTRY_FILLED, f"{filled}; setting stop {px(ep.stop.price)} directly")
            self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
            self._send_stop()

    def _send_stop(self) -> None:
        ep = self.episode
        assert ep.stop.price is not None
        price = ep.moving_to if self.state is State.MOVING_STOP and ep.moving_to is not None else ep.stop.price
        ep.stop.request_id = new_id()
        self._request(SetStop(self.symbol, price, request_id=ep.stop.request_id, position_side=ep.side))

    def _mark_protected(self) -> None:
        ep = self.episode
        ep.stop.confirmed = True
        ep.stop.latency = self.ports.monotonic() - ep.opened_at
        if ep.stop.guarded_latency is None:
            ep.stop.guarded_latency = ep.stop.latency
        ep.naked.stop(self.ports.monotonic())
        ep.stop_vanished = ""

    # -- a stop move ----------------------------------------------------------------------

    def _on_stop_moved(self, msg: StopSet) -> None:
        """The venue's answer to the new stop. Taken: it replaced the old one (Bybit's trading-stop
        in place; where stops are orders, the new one was placed before the old was cancelled).
        Refused: the old stop is set again (it should still stand, but it may have been cancelled
        by hand meanwhile -- news a stop-order venue's stream gave while we were moving), and the
        position stays as it was. An outcome that may have executed is asked again: the same
        stop, idempotent -- a few times, then the old one is set again."""
        ep, failure = self.episode, msg.failure
        before, after = ep.stop.price, ep.moving_to
        if failure is None or failure.outcome is Outcome.NOT_MODIFIED:
            ep.stop.price, ep.moving_to = msg.stop_price, None
            self._known(msg.received_ns)
            self._journal_position()
            self._event("stop_moved", {"before": before, "after": msg.stop_price, "by": ep.moved_by})
            self._go(Trigger.STOP_MOVED, f"stop moved from {px(before)} to {px(msg.stop_price)} ({ep.moved_by})")
        elif (failure.outcome in AMBIGUOUS or failure.outcome is Outcome.RETRY_LATER) and ep.stop.attempts < MOVE_TRIES:
            ep.stop.attempts += 1                        # the same stop again: idempotent
            self._arm(TimerKind.RETRY_STOP, self._backoff(ep.stop.attempts - 1))
        else:
            ep.moving_to = None
            why = describe_failure(failure)
            self._event("stop_move_refused", {"stop": before, "asked": after, "reason": why})
            self._go(Trigger.MOVE_REFUSED, f"stop move to {px(after)} refused ({why}); stop {px(before)} stands")
            if self.state is not State.PROTECTED:
                return                                   # a push held while moving is being judged
            if failure.outcome is Outcome.NO_POSITION and ep.entry.final:
                # No position to move the stop of: the venue's word that it is gone, to be confirmed.
                self._outside_gone(Outside(CLOSED_OUTSIDE, f"engine: no position to move the stop of ({why})",
                                           "engine"))
            else:
                self.reprotect(Reprotect(self.symbol, f"stop move refused ({why}): the old stop set again"))
