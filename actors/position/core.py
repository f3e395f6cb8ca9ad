"""What a PositionActor decides: entry, stop and rollback for one symbol, as plain Python.

The actor shell (actors/position/actor.py) only moves messages in and out through `PositionPorts`,
so this logic is unit-tested with a recording fake, without processes.

Safety rules these modules keep (docs/design.md):
- no position read anywhere: protection travels with the entry or is set directly; the
  rollback closes the filled quantity (or, while the fill is unknown, the requested one)
  reduce-only;
- every order is journaled before it is sent: the journal forwards it once committed;
- an ambiguous outcome is resolved by querying the client order id, never by a new order;
- "closed" only when the venue confirmed both the entry's final state and the close.
"""

from __future__ import annotations

from collections.abc import Callable

from actors.messages import PositionTimer
from actors.position.changes import Changes
from actors.position.closing import Closing
from actors.position.commands import Commands
from actors.position.orders import Orders
from actors.position.recovery import Recovery
from actors.position.states import CLOSING, RESTING, SETTING_STOP, State, TimerKind
from actors.position.watch import Watch

CHANGE_ORDERS = (State.REDUCING, State.ADDING)


class PositionCore(Recovery, Commands, Changes, Orders, Watch, Closing):
    """One symbol's entry, stop and rollback (the parts: see actors/position/base.py)."""

    def on_timer(self, timer: PositionTimer) -> None:
        if self._tokens.get(timer.kind) != timer.token:
            return                                       # superseded or from an earlier episode
        applies, fire = TIMERS[timer.kind]
        if applies(self):
            fire(self)


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
    # Stop orders a position outlived: cancelled (again) while the symbol rests, or alongside an
    # adopted position of the other side.
    TimerKind.CANCEL_STOPS: (lambda c: c.cleanup is not None and (c.state is State.IDLE or c.cleanup_spares_episode()),
                             PositionCore._cancel_again),
    TimerKind.POLL_CLOSE: (lambda c: c.state in CLOSING and bool(c.episode.close.cid), PositionCore._poll_close),
    TimerKind.RETRY_CLOSE: (lambda c: c.state in CLOSING and c.episode.close.request is not None,
                            PositionCore._retry_close),
    TimerKind.NEW_CLOSE: (lambda c: c.state in CLOSING, PositionCore._new_close_order),
    # A partial close or an add: asked (again) until final, wherever it was left (a restart, a close).
    TimerKind.POLL_CHANGE: (lambda c: c.state is not State.IDLE and not c.episode.change.final,
                            PositionCore._poll_change),
    TimerKind.RETRY_CHANGE: (lambda c: c.state in CHANGE_ORDERS, PositionCore._retry_change),
    TimerKind.RETRY_EXIT: (lambda c: c.state is State.SETTING_EXIT, PositionCore._retry_exit),
    TimerKind.PROBE_CLOSE: (lambda c: c.state is not State.IDLE and c.episode.probe_cid is not None,
                            PositionCore._probe_close),
}


