"""After a restart: the episode rebuilt from the journal, then what became of it learnt
from the venue by client id (no position read), before anything new is allowed."""

from __future__ import annotations

from actors.messages import OrderQueried, PositionJournal, QueryOrder
from actors.position.base import CoreBase, close_order_id, px
from actors.position.episode import Episode, OrderLeg, StopLeg
from actors.position.outside import CLOSED_OUTSIDE, Outside
from actors.position.states import CLOSING, State, TimerKind, Trigger
from adapters.base import ExitKind, OrderRequest
from adapters.errors import Outcome


class Recovery(CoreBase):
    """Rebuilding an episode after a restart."""

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
        ep.take_profit, ep.trail_pct = journal.take_profit, journal.trail_pct
        # What stood (or was being set) beside the stop is asked for again once protected: the same
        # value is the same order id ("already placed") or "not modified" -- resolved, never doubled.
        wanted = [(ExitKind.TAKE_PROFIT, journal.take_profit), (ExitKind.TRAILING, journal.trail_pct)]
        if journal.pending_exit is not None:
            kind, value = ExitKind(journal.pending_exit[0]), journal.pending_exit[1]
            wanted = [w for w in wanted if w[0] is not kind] + [(kind, value)]
        # What the journal holds stays held (a size journaled meanwhile keeps it for the next restart).
        ep.exits_wanted = [(k, v) for k, v in wanted if v is not None]
        changes = [o for o in journal.orders if o.purpose in ("add", "reduce")]
        if changes and changes[-1].request.client_order_id != journal.applied_change:
            # A partial close or add was out when we stopped: what it did is asked by its id, in
            # parallel; its fill changes the size wherever the episode is by then.
            c = changes[-1]
            ep.change = OrderLeg(cid=c.request.client_order_id, request=c.request,
                                 sent_at=self._monotonic_of(c.created_at))
            ep.change_kind = c.purpose
            self._request(QueryOrder(self.symbol, c.request.client_order_id))
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
                                           f" {px(ep.stop.price)} directly (idempotent)")
            self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
            self._send_stop()
        elif ep.entry.final:
            self._go(Trigger.RECOVERED_FLAT, "recovered: the entry ended with nothing filled")
        else:
            self._go(Trigger.ENTRY_AMBIGUOUS, "recovered: entry not final yet; confirming by client id")
            if not self.caps.attached_stop:
                self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
