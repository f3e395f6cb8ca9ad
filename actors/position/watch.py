"""What was done outside posguard (judged by actors/position/outside.py), and the stop
orders of ours that outlived their position."""

from __future__ import annotations

import dataclasses

from actors.messages import (
    CancelLeftovers,
    CancelStops,
    ClosuresFetched,
    CommandAccepted,
    CommandDenied,
    FetchClosures,
    JournalCancel,
    PositionObserved,
    PositionStreamed,
    Reprotect,
    StopOrderStreamed,
    StopsCancelled,
    new_id,
)
from actors.position.base import HELD_OUTSIDE, CoreBase, describe_failure
from actors.position.episode import same_qty
from actors.position.outside import CLOSED_OUTSIDE, GONE, REASON_OF_KIND, Change, Outside, changes, describe, moved_to
from actors.position.states import SETTING_STOP, State, TimerKind, Trigger
from adapters.base import PositionReport
from adapters.stops import is_ours


class Watch(CoreBase):
    """Changes made outside posguard, and leftover stop orders."""

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
        if cmd.read_ns and cmd.read_ns < self.episode.known_ns:
            # Asked before the venue's latest answer (a stop just set or moved): it can only show
            # the older picture, however late it was judged.
            return CommandDenied(cmd.command_id, cmd.symbol, f"{self.symbol}: a read older than the venue's last word")
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
        if (self.state is not State.PROTECTED or msg.open or not is_ours(order) or order.kind != "stop"
                or ep.side is None
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
        if self.state not in SETTING_STOP or ep.outside is None or msg.request_id != f"label:{ep.intent_id}":
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
        if self.state is State.PROTECTING:               # the engine has spoken already (see on_stop_set)
            self._closed_outside(ep.outside)
        else:
            self._send_stop()                            # now the engine's word

    def _resized(self, change: Change, qty: float, detail: str) -> None:
        """Reduced or increased by someone else: ours now (the stop covers the whole position on
        every venue posguard runs on: Bybit's Full mode, Binance's closePosition, the simulator's)."""
        ep = self.episode
        before, ep.position_qty = ep.open_qty, qty
        if change is Change.REDUCED:
            # The order that reduced it and this push may come in either order; whichever is
            # second is matched to the first (and an order never reads as a close of all that is left).
            if ep.reduced_by is not None and same_qty(ep.reduced_by, (before, qty)):
                ep.reduced_by = ep.resized = None
            else:
                ep.resized = (before, qty)
        self._event("outside", {"change": change, "source": detail.split(":")[0], "detail": detail,
                                "before": before, "after": qty})
        self._journal_position()
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
            self._journal_position(seen_stop)
            self.reprotect(Reprotect(self.symbol, f"{detail}; following the operator's stop"))
        else:
            self.reprotect(Reprotect(self.symbol, f"{detail}; setting ours again"))
        if change is Change.STOP_REMOVED:
            ep.stop_vanished = detail

    def _stop_acceptable(self, stop: float) -> bool:
        ep = self.episode
        assert ep.side is not None
        if self._reference(None) is None:
            return True                                  # the venue took it: on the right side of the price
        return self._deny_risk(ep.side, ep.open_qty, stop, None, entry=False) is None

    def cancel_leftovers(self, cmd: CancelLeftovers) -> CommandAccepted | CommandDenied:
        """The ProtectionActor found stop orders of ours on this symbol, which two REST reads the
        lag apart show flat: cancel them -- while no episode of ours holds it."""
        if self.state is not State.IDLE:
            return CommandDenied(cmd.command_id, cmd.symbol, f"{self.symbol} is {self.state}; its stops are its own")
        if self.cleanup is None:
            self._cancel_leftovers("stop orders of ours on a flat symbol (two REST reads the lag apart)",
                                   cmd.client_order_ids, any_side=True)
        return CommandAccepted(cmd.command_id, self.symbol, self.episode.intent_id)

    def _cancel_leftovers(self, reason: str, ids: tuple[str, ...] = (), proven_flat: bool = True,
                          any_side: bool = False) -> None:
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
        # The ended position's closing side only (a flip's new position may be adopted meanwhile);
        # every side when the scan saw the symbol flat twice, or when a cleanup of the other side
        # is still pending (it is merged into this one, not dropped).
        side = ep.side.opposite if ep.side is not None and not any_side else None
        pending = self.cleanup
        if pending is not None and pending.side is not side:
            side = None
        self.cleanup = CancelStops(self.symbol, ids if pending is None else (),
                                   probe_stop=ep.stop.price if probe else None,
                                   probe_side=ep.side if probe else None, side=side)
        self.ports.to_journal(JournalCancel(self.cleanup, reason))
        self._arm(TimerKind.CANCEL_STOPS, self.settings.reply_timeout_s)

    def on_stops_cancelled(self, msg: StopsCancelled) -> None:
        cleanup = self.cleanup
        if cleanup is None or msg.request_id != cleanup.request_id:
            return
        if msg.failure is not None or (msg.remaining and not msg.position_lives):
            self.cleanup_attempts += 1
            why = (describe_failure(msg.failure) if msg.failure is not None
                   else f"still working: {', '.join(msg.remaining)}")
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

    def cleanup_spares_episode(self) -> bool:
        """The pending cleanup cancels only another side's stops than the current episode's."""
        cleanup, side = self.cleanup, self.episode.side
        return (cleanup is not None and cleanup.side is not None and side is not None
                and cleanup.side is not side.opposite)

    def _cancel_again(self) -> None:
        assert self.cleanup is not None
        # The same cleanup under a new request id (a late answer to the old one is then ignored).
        self.cleanup = dataclasses.replace(self.cleanup, request_id=new_id())
        self.ports.to_journal(JournalCancel(self.cleanup, "stop orders of ours outlived their position (again)"))
        self._arm(TimerKind.CANCEL_STOPS, self.settings.reply_timeout_s)

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
