"""The operator's commands to one symbol: open, adopt, re-protect, close -- each checked
(actors/position/risk.py) before anything is journaled or sent."""

from __future__ import annotations

from actors.messages import (
    AdoptPosition,
    AmendPosition,
    ClosePosition,
    CommandAccepted,
    CommandDenied,
    JournalIntent,
    OpenPosition,
    Reprotect,
    new_id,
)
from actors.position import risk
from actors.position.base import ADOPTION_REFUSED, CoreBase, client_order_id, px
from actors.position.episode import Episode, OrderLeg, StopLeg
from actors.position.states import State, TimerKind, Trigger
from adapters.base import ExitKind, Side


class Commands(CoreBase):
    """open, adopt, reprotect, close."""

    def open(self, cmd: OpenPosition) -> CommandAccepted | CommandDenied:
        if cmd.add and cmd.symbol == self.symbol and self.state is State.PROTECTED and self.cleanup is None:
            return self.add(cmd)  # type: ignore[attr-defined]   # open on an open symbol: an add
        denial = self._deny_open(cmd)
        if denial:
            return CommandDenied(cmd.command_id, self.symbol, denial)
        intent_id = new_id()
        self.episode = ep = Episode(intent_id=intent_id, side=cmd.side, requested_qty=cmd.qty,
                                    opened_at=self.ports.monotonic(),
                                    entry=OrderLeg(cid=client_order_id("e", self.epoch)),
                                    stop=StopLeg(price=cmd.stop_price))
        ep.entry.request = self._entry_request(cmd.take_profit)
        # What stands beside the stop, set once it is confirmed (a take-profit that travels with the
        # entry is taken off this list when the fill shows it).
        if cmd.take_profit is not None:
            ep.exits_wanted.append((ExitKind.TAKE_PROFIT, cmd.take_profit))
        if cmd.trail_pct is not None:
            ep.exits_wanted.append((ExitKind.TRAILING, cmd.trail_pct))
        # The intent (with the stop a restart would need) shares the entry's journal transaction.
        self._send_new_order(ep.entry.request, "entry",
                             JournalIntent(intent_id, self.symbol, cmd.side, cmd.qty, cmd.stop_price,
                                           take_profit=cmd.take_profit, trail_pct=cmd.trail_pct))
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
        return (risk.deny_order_values(cmd.qty, cmd.stop_price)
                or self._deny_risk(cmd.side, cmd.qty, cmd.stop_price, cmd.reference_price)
                or self._deny_open_exits(cmd))

    def _deny_open_exits(self, cmd: OpenPosition) -> str | None:
        if cmd.take_profit is not None:
            if not self.caps.take_profit:
                return f"{self.caps.venue} holds no take-profit beside the stop"
            denial = risk.deny_take_profit(cmd.side, cmd.take_profit, self._reference(cmd.reference_price),
                                           cmd.stop_price)
            if denial:
                return denial
        if cmd.trail_pct is not None:
            return risk.deny_trail(cmd.trail_pct, self.caps.trail_bounds_pct, self.caps.venue)
        return None

    def note_price(self, price: float | None) -> None:
        """A price of this symbol just seen (a fetch, a fill): the reference risk checks use."""
        if price is not None and risk.usable_price(price):
            self.reference = (price, self.ports.monotonic())

    def needs_reference(self, cmd: OpenPosition | AmendPosition) -> bool:
        """True when the limits (or a take-profit, judged against the price whatever the limits)
        need a price that we have not seen recently enough."""
        judged = self.risk is not None or getattr(cmd, "take_profit", None) is not None
        return (judged and cmd.reference_price is None
                and risk.reference_price(None, self.reference, self.ports.monotonic(),
                                         self.settings.reference_max_age_s) is None)

    def _reference(self, given: float | None) -> float | None:
        return risk.reference_price(given, self.reference, self.ports.monotonic(), self.settings.reference_max_age_s)

    def _deny_risk(self, side: Side, qty: float, stop: float, given: float | None, entry: bool = True) -> str | None:
        return risk.deny_risk(self.risk, self.symbol, side, qty, stop, self._reference(given), entry)

    def adopt(self, cmd: AdoptPosition) -> CommandAccepted | CommandDenied:
        """Take over a position nothing of ours opened: protect it, or close it reduce-only."""
        if cmd.symbol != self.symbol or self.state is not State.IDLE:
            return CommandDenied(cmd.command_id, cmd.symbol, f"{self.symbol} is {self.state}; only IDLE adopts")
        if self.cleanup is not None and (self.cleanup.side is None or self.cleanup.side is cmd.side.opposite):
            # Its stop would be one the cleanup cancels: the next read judges it again. A position of
            # the other side (a flip) is protected now -- never left naked behind a cleanup.
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
                                            f" {px(cmd.stop_price)} directly")
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
        self._go(Trigger.REPROTECT, f"{cmd.reason}: setting stop {px(ep.stop.price)} again directly")
        ep.armed_once.discard(TimerKind.NAKED)
        self._arm_once(TimerKind.NAKED, self.settings.naked_deadline_s)
        self._send_stop()
        return CommandAccepted(cmd.command_id, self.symbol, ep.intent_id)

    def close(self, cmd: ClosePosition) -> CommandAccepted | CommandDenied:
        ep = self.episode
        if cmd.qty is not None and not abs(cmd.qty - ep.open_qty) <= 1e-9:
            return self.reduce(cmd)  # type: ignore[attr-defined]   # a partial close (all of it: a close)
        if not self.fsm.can(Trigger.CLOSE_REQUESTED):
            return CommandDenied(cmd.command_id, self.symbol,
                                 f"{self.symbol} is {self.state}; close applies to a filled position")
        self._go(Trigger.CLOSE_REQUESTED, "operator asked to close")
        self._start_close("operator close")
        return CommandAccepted(cmd.command_id, self.symbol, self.episode.intent_id)

    def amend(self, cmd: AmendPosition) -> CommandAccepted | CommandDenied:
        """Move the stop of a PROTECTED position (the old one stands until the venue takes the new),
        or set what stands beside it (actors/position/changes.py)."""
        if cmd.symbol != self.symbol:
            return CommandDenied(cmd.command_id, cmd.symbol, f"this actor handles {self.symbol}, not {cmd.symbol}")
        if cmd.take_profit is not None or cmd.trail_pct is not None:
            return self.amend_exit(cmd)  # type: ignore[attr-defined]
        ep = self.episode
        if self.state is not State.PROTECTED or ep.side is None:
            return CommandDenied(cmd.command_id, self.symbol,
                                 f"{self.symbol} is {self.state}; only a PROTECTED position's stop can be moved")
        if cmd.breakeven:
            if ep.entry.avg_price is None:
                return CommandDenied(cmd.command_id, self.symbol, f"{self.symbol}: the entry price is not known")
            target = risk.breakeven(ep.side, ep.entry.avg_price, self.settings.breakeven_fees_pct)
        elif cmd.stop_price is not None:
            target = cmd.stop_price
        else:
            return CommandDenied(cmd.command_id, self.symbol, "say where the stop goes: a price, or breakeven")
        denial = (risk.deny_order_values(ep.open_qty, target)
                  or self._deny_risk(ep.side, ep.open_qty, target, cmd.reference_price, entry=False))
        if denial:
            return CommandDenied(cmd.command_id, self.symbol, denial)
        if ep.stop.price is not None and abs(target - ep.stop.price) <= 1e-9 * max(1.0, ep.stop.price):
            return CommandDenied(cmd.command_id, self.symbol, f"the stop is already at {px(target)}")
        ep.moving_to, ep.moved_by = target, "breakeven" if cmd.breakeven else "operator"
        ep.stop.attempts = 0
        self._go(Trigger.MOVE_STOP, f"moving the stop from {px(ep.stop.price)} to {px(target)} ({ep.moved_by})")
        self._send_stop()
        return CommandAccepted(cmd.command_id, self.symbol, ep.intent_id)
