"""What a strategy changes on a guarded position, besides moving its stop: a take-profit and a
venue-held trailing stop beside the stop, a partial close, an add. The stop stands throughout.

Why the whole quantity stays covered at every instant: the stop posguard sets is a whole-position
one on every venue it drives (Bybit's trading-stop in Full mode, Binance's closePosition order,
the simulated venue's either way), so it covers an add the moment it fills and what a partial
close leaves. Only a trail that is an order of a size (Binance's TRAILING_STOP_MARKET) follows a
resize, and it is replaced -- the new one placed before the old is cancelled -- while the hard
stop stays under it. Every order here is journaled with its client id before it is sent; an
exit is journaled as asked, then forwarded (a restart asks for it again: the same order id).
"""

from __future__ import annotations

from actors.messages import (
    AmendPosition,
    ClosePosition,
    CommandAccepted,
    CommandDenied,
    ExitSet,
    JournalExit,
    OpenPosition,
    OrderPlaced,
    OrderQueried,
    PlaceOrder,
    QueryOrder,
    Reprotect,
    SetExit,
    new_id,
)
from actors.position import risk
from actors.position.base import AMBIGUOUS, CoreBase, client_order_id, describe_failure, px
from actors.position.episode import OrderLeg
from actors.position.outside import CLOSED_OUTSIDE, Outside
from actors.position.states import CLOSING, State, TimerKind, Trigger
from adapters.base import ExitKind, OrderReport, OrderRequest
from adapters.errors import Outcome

EXIT_TRIES = 5                       # answers that may have executed, asked again before giving up
LABEL = {ExitKind.TAKE_PROFIT: "take-profit", ExitKind.TRAILING: "trailing stop"}
EPS = 1e-9


class Changes(CoreBase):
    """Take-profit, trailing stop, partial close, add."""

    # -- take-profit and trail -------------------------------------------------------------------

    def amend_exit(self, cmd: AmendPosition) -> CommandAccepted | CommandDenied:
        ep = self.episode
        if self.state is not State.PROTECTED or ep.side is None:
            return CommandDenied(cmd.command_id, self.symbol, f"{self.symbol} is {self.state}; only a PROTECTED"
                                                              " position's take-profit or trail can be set")
        if cmd.take_profit is not None:
            kind, value, held = ExitKind.TAKE_PROFIT, cmd.take_profit, ep.take_profit
        else:
            assert cmd.trail_pct is not None
            kind, value, held = ExitKind.TRAILING, cmd.trail_pct, ep.trail_pct
        denial = self.deny_exit(kind, value, cmd.reference_price)
        if denial:
            return CommandDenied(cmd.command_id, self.symbol, denial)
        if held is not None and abs(held - value) <= EPS * max(1.0, value):
            return CommandDenied(cmd.command_id, self.symbol, f"the {LABEL[kind]} is already at {value:g}")
        self._set_exit(kind, value)
        return CommandAccepted(cmd.command_id, self.symbol, ep.intent_id)

    def deny_exit(self, kind: ExitKind, value: float, reference: float | None) -> str | None:
        """Whether this venue, the price and the stop admit the exit (nothing is sent otherwise)."""
        ep = self.episode
        assert ep.side is not None
        if kind is ExitKind.TRAILING:
            return risk.deny_trail(value, self.caps.trail_bounds_pct, self.caps.venue)
        if not self.caps.take_profit:
            return f"{self.caps.venue} holds no take-profit beside the stop"
        return risk.deny_take_profit(ep.side, value, self._reference(reference), ep.stop.price)

    def _next_exit(self) -> None:
        ep = self.episode
        kind, value = ep.exits_wanted.pop(0)
        self._set_exit(kind, value)

    def _set_exit(self, kind: ExitKind, value: float) -> None:
        ep = self.episode
        ep.exit_asked, ep.exit_attempts = (kind, value), 0
        self._send_exit()                        # journaled first: a restart after the edge asks for it again
        self._go(Trigger.SET_EXIT, f"setting the {LABEL[kind]} {value:g}{'%' if kind is ExitKind.TRAILING else ''}"
                                   f" beside the stop {px(ep.stop.price)}")

    def _send_exit(self) -> None:
        ep = self.episode
        assert ep.exit_asked is not None and ep.side is not None
        kind, value = ep.exit_asked
        ep.exit_request_id = new_id()
        reference = self.reference[0] if self.reference is not None else ep.entry.avg_price
        self.ports.to_journal(JournalExit(ep.intent_id or "", SetExit(
            self.symbol, kind, value, ep.side, ep.open_qty, request_id=ep.exit_request_id, reference_price=reference)))
        self._arm(TimerKind.STALLED, self.settings.reply_timeout_s)

    def on_exit_set(self, msg: ExitSet) -> None:
        ep, failure = self.episode, msg.failure
        if msg.request_id != ep.exit_request_id:
            return
        if self.state is State.IDLE and failure is None and self.caps.stop_orders:
            # Closed meanwhile, and the exit went in after the close's cleanup read the orders:
            # an order of ours outliving its position is cancelled as any leftover is.
            ep.exit_request_id = None
            self._cancel_leftovers(f"a {LABEL[msg.kind]} placed while the position was closing")  # type: ignore[attr-defined]
            return
        if self.state is not State.SETTING_EXIT or ep.exit_asked is None:
            return
        kind, asked = ep.exit_asked
        if failure is None or failure.outcome is Outcome.NOT_MODIFIED:
            before = ep.take_profit if kind is ExitKind.TAKE_PROFIT else ep.trail_pct
            if kind is ExitKind.TAKE_PROFIT:
                ep.take_profit = msg.value
            else:
                ep.trail_pct = msg.value
            ep.exit_asked = None
            self._journal_position()
            self._event("tp_set" if kind is ExitKind.TAKE_PROFIT else "trail_set",
                        {"before": before, "after": msg.value, "stop": ep.stop.price})
            self._go(Trigger.EXIT_SET, f"{LABEL[kind]} {msg.value:g} held by the venue beside the stop"
                                       f" {px(ep.stop.price)}")
        elif (failure.outcome in AMBIGUOUS or failure.outcome is Outcome.RETRY_LATER) and ep.exit_attempts < EXIT_TRIES:
            ep.exit_attempts += 1                        # the same exit again: the same order id, idempotent
            self._arm(TimerKind.RETRY_EXIT, self._backoff(ep.exit_attempts - 1))
        else:
            ep.exit_asked = None
            if (ep.take_profit if kind is ExitKind.TAKE_PROFIT else ep.trail_pct) == asked:
                # a journaled exit asked again after a restart, and refused: the venue does not hold it
                if kind is ExitKind.TAKE_PROFIT:
                    ep.take_profit = None
                else:
                    ep.trail_pct = None
            self._journal_position()                     # nothing to ask again after a restart
            why = describe_failure(failure)
            self._event("exit_refused", {"exit": str(kind), "asked": asked, "reason": why})
            self._go(Trigger.EXIT_REFUSED, f"{LABEL[kind]} {asked:g} refused ({why}); the stop {px(ep.stop.price)}"
                                           " stands")
            if self.state is State.PROTECTED and failure.outcome is Outcome.NO_POSITION and ep.entry.final:
                self._outside_gone(Outside(CLOSED_OUTSIDE, f"engine: no position to set the {LABEL[kind]} of"
                                                           f" ({why})", "engine"))

    def on_exit_unjournaled(self, error: str) -> None:
        """The journal cannot record the exit: it is not sent (it protects nothing; the stop does)."""
        ep = self.episode
        if self.state is State.SETTING_EXIT and ep.exit_asked is not None:
            kind, asked = ep.exit_asked
            ep.exit_asked = None
            self._go(Trigger.EXIT_REFUSED, f"{LABEL[kind]} {asked:g} not sent: the journal cannot record it ({error})")

    def _retry_exit(self) -> None:
        if self.state is State.SETTING_EXIT and self.episode.exit_asked is not None:
            self._send_exit()

    def _resize_trail(self) -> None:
        """A trail that is an order of a size follows the position's new size (placed first)."""
        ep = self.episode
        if ep.trail_pct is not None and self.caps.trail_sized and self.state is State.PROTECTED:
            ep.exits_wanted.append((ExitKind.TRAILING, ep.trail_pct))
            ep.trail_pct = None                          # the held one is of the old size until replaced
            self._next_exit()

    # -- partial close and add -------------------------------------------------------------------

    def reduce(self, cmd: ClosePosition) -> CommandAccepted | CommandDenied:
        ep = self.episode
        assert cmd.qty is not None
        if self.state is not State.PROTECTED or ep.side is None:
            return CommandDenied(cmd.command_id, self.symbol, f"{self.symbol} is {self.state}; a partial close"
                                                              " applies to a PROTECTED position")
        if not cmd.qty > 0:
            return CommandDenied(cmd.command_id, self.symbol, f"qty must be a positive number, got {cmd.qty}")
        if cmd.qty > ep.open_qty + EPS:
            return CommandDenied(cmd.command_id, self.symbol, f"qty {cmd.qty:g} is more than the open {ep.open_qty:g};"
                                                              " a close without --qty closes all of it")
        cid = client_order_id("r", self.epoch)
        self._start_change("reduce", OrderRequest(self.symbol, ep.side.opposite, cmd.qty, cid, reduce_only=True))
        self._go(Trigger.REDUCE, f"closing {cmd.qty:g} of {ep.open_qty:g} reduce-only; the stop"
                                 f" {px(ep.stop.price)} covers what stays")
        return CommandAccepted(cmd.command_id, self.symbol, ep.intent_id)

    def add(self, cmd: OpenPosition) -> CommandAccepted | CommandDenied:
        ep = self.episode
        assert ep.side is not None and ep.stop.price is not None
        if cmd.side is not ep.side:
            return CommandDenied(cmd.command_id, self.symbol, f"{self.symbol} is open {ep.side}; an add is of the"
                                                              " same side (close it first to turn)")
        if self.safe_mode is not None:
            return CommandDenied(cmd.command_id, self.symbol, f"safe mode ({self.safe_mode}): adds are refused")
        total = ep.open_qty + cmd.qty
        denial = (risk.deny_order_values(cmd.qty, ep.stop.price)
                  or self._deny_risk(ep.side, total, ep.stop.price, cmd.reference_price))
        if denial:
            return CommandDenied(cmd.command_id, self.symbol, f"add refused: {denial}")
        attached = self.caps.attached_stop
        self._start_change("add", OrderRequest(self.symbol, ep.side, cmd.qty, client_order_id("a", self.epoch),
                                               stop_price=ep.stop.price if attached else None))
        self._go(Trigger.ADD, f"adding {cmd.qty:g} to {ep.open_qty:g}; the stop {px(ep.stop.price)} covers"
                              f" the whole position{' (and travels with the order)' if attached else ''}")
        return CommandAccepted(cmd.command_id, self.symbol, ep.intent_id)

    def _start_change(self, kind: str, request: OrderRequest) -> None:
        ep = self.episode
        ep.change = OrderLeg(cid=request.client_order_id, request=request)
        ep.change_kind = kind
        self._send_new_order(request, kind)      # type: ignore[attr-defined]  # journaled, then sent

    def on_change_placed(self, msg: OrderPlaced) -> None:
        leg = self.episode.change
        if msg.report is not None:
            if msg.report.fill_known:
                self._on_change_report(msg.report)
            else:
                self._arm(TimerKind.POLL_CHANGE, 0.0)
            return
        failure = msg.failure
        assert failure is not None
        if failure.outcome is Outcome.RETRY_LATER and leg.retries < self.settings.max_entry_retries:
            leg.retries += 1                     # not processed: the same client id again is safe
            self._arm(TimerKind.RETRY_CHANGE, self._backoff(leg.retries - 1))
        elif failure.outcome in AMBIGUOUS or failure.outcome is Outcome.ALREADY_PLACED:
            self._arm(TimerKind.POLL_CHANGE, 0.0)   # it may have executed: ask by id, never resend
        else:
            self._change_refused(describe_failure(failure), failure.outcome is Outcome.NO_POSITION)

    def on_change_queried(self, msg: OrderQueried) -> None:
        if msg.report is not None:
            self._on_change_report(msg.report)
        elif self._never_arrived(msg, self.episode.change.sent_at):   # type: ignore[attr-defined]
            self._change_refused("never reached the venue (not found past the receive window)")
        else:
            self._arm(TimerKind.POLL_CHANGE, self.settings.poll_s)

    def _poll_change(self) -> None:
        if self.episode.change.cid is not None and not self.episode.change.final:
            self._request(QueryOrder(self.symbol, self.episode.change.cid))

    def _retry_change(self) -> None:
        leg = self.episode.change
        if leg.request is not None and not leg.final:
            leg.sent_at = self.ports.monotonic()
            self._request(PlaceOrder(leg.request))

    def _on_change_report(self, report: OrderReport) -> None:
        ep = self.episode
        leg = ep.change
        if leg.final:
            return                               # applied once
        if not report.status.is_final:
            self._arm(TimerKind.POLL_CHANGE, self.settings.poll_s)
            return
        leg.final, leg.filled_qty, leg.avg_price = True, report.filled_qty, report.avg_price
        if report.filled_qty <= 0:
            self._change_refused(f"{report.status} with nothing filled")
            return
        self.note_price(report.avg_price)
        before = ep.open_qty
        if ep.change_kind == "add":
            after = before + report.filled_qty
            if ep.entry.avg_price is not None and report.avg_price is not None:   # the position's average entry
                ep.entry.avg_price = (ep.entry.avg_price * before + report.avg_price * report.filled_qty) / after
        else:
            after = max(0.0, before - report.filled_qty)
        ep.position_qty = after
        self._journal_position()
        self._event("added" if ep.change_kind == "add" else "reduced",
                    {"before": before, "after": after, "qty": report.filled_qty, "avg_price": report.avg_price,
                     "stop": ep.stop.price})
        detail = (f"{'added' if ep.change_kind == 'add' else 'closed'} {report.filled_qty:g} @"
                  f" {px(report.avg_price)}: {before:g} -> {after:g}, the stop {px(ep.stop.price)} covers it")
        if self.state is (State.ADDING if ep.change_kind == "add" else State.REDUCING):
            self._go(Trigger.ADDED if ep.change_kind == "add" else Trigger.REDUCED, detail)
            if (ep.change_kind == "add" and not self.caps.attached_stop and not self.caps.stop_orders
                    and self.state is State.PROTECTED):
                # The add carried no stop, and the position it added to may have gone meanwhile (its
                # stop fired unseen): the stop is set again directly -- "not modified" where it stands.
                self.reprotect(Reprotect(self.symbol, "after an add: the stop set again directly"))
            self._resize_trail()
        else:                                    # recovered, or closing meanwhile: the size is what changed
            self.last_event = detail
            self.log.info("{} {}", self.symbol, detail)
            self.ports.publish(self.snapshot())
            if self.state in CLOSING:
                ep.added_while_closing = ep.change_kind == "add"
                self._check_flat()               # type: ignore[attr-defined]

    def _change_refused(self, why: str, no_position: bool = False) -> None:
        ep = self.episode
        ep.change.final = True
        kind = ep.change_kind
        self._event(f"{kind}_refused", {"qty": ep.change.request.qty if ep.change.request else None, "reason": why})
        if self.state in CLOSING:
            self._check_flat()  # type: ignore[attr-defined]   # it waited for this add's final state
            return
        if self.state is not (State.ADDING if kind == "add" else State.REDUCING):
            return
        self._go(Trigger.ADD_REFUSED if kind == "add" else Trigger.REDUCE_REFUSED,
                 f"{'add' if kind == 'add' else 'partial close'} refused ({why}); the position is as it was")
        if no_position and ep.entry.final and self.state is State.PROTECTED:
            self._outside_gone(Outside(CLOSED_OUTSIDE, f"engine: nothing to reduce ({why})", "engine"))

    def change_pending_add(self) -> float:
        """What an add still in flight may yet fill (a close covers it too: reduce-only clips)."""
        ep = self.episode
        if ep.change_kind == "add" and not ep.change.final and ep.change.request is not None:
            return ep.change.request.qty
        return 0.0
