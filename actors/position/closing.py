"""Rollback and close: reduce-only, the filled (or requested) quantity, never a position
read; "closed" only once the venue confirmed the entry's final state and the close. And the
timers' actions."""

from __future__ import annotations

from actors.messages import EventRecord, JournalEvent, OrderPlaced, OrderQueried, PlaceOrder, QueryOrder
from actors.position.base import AMBIGUOUS, CoreBase, close_order_id, describe_failure
from actors.position.episode import OrderLeg
from actors.position.states import CLOSING, State, TimerKind, Trigger
from adapters.base import OrderReport, OrderRequest
from adapters.errors import Outcome


class Closing(CoreBase):
    """Rollback and close, and the timers' actions."""

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
        # an add still in flight may yet fill: covered too (reduce-only clips what is not there)
        held = max(ep.open_qty, ep.entry.filled_qty) + self.change_pending_add()  # type: ignore[attr-defined]
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
            self.log.warning("close outcome unknown ({}): querying by client id", describe_failure(failure))
            self.ports.to_journal(JournalEvent(EventRecord("ambiguous", self.symbol, {
                "client_order_id": close.cid, "detail": f"close outcome unknown ({describe_failure(failure)})"})))
            self._arm(TimerKind.POLL_CLOSE, 0.0)
        else:
            self._close_refused(describe_failure(failure))

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
            if close.final:
                return                                   # counted already (a query again after a resync)
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
        if self.change_pending_add():  # type: ignore[attr-defined]
            self._arm(TimerKind.POLL_CHANGE, 0.0)        # "closed" waits for the add's final state too
            return
        if entry.filled_qty <= 0:
            self._closed("the entry never filled")
        elif close.final and close.filled_qty > 0:
            # Flat for sure only when the venue clipped it (reduce-only: there was less than asked);
            # a close that filled all it asked for may leave what someone added meanwhile.
            clipped = close.request is not None and close.filled_qty < close.request.qty - 1e-12
            if ep.added_while_closing:
                # An add of ours filled after this close went out: what the close clipped proves
                # nothing of it. Another reduce-only close of all that may be there settles it.
                ep.added_while_closing = False
                self._new_close_order()
                return
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
