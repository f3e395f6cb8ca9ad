"""The PositionActor's states, the only edges between them, the named sets of states that
rules elsewhere (the core, protection, the supervisor, the API) are written against, and the
kinds of timer a position sets itself."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    RECOVERING = "RECOVERING"                # rebuilding from the journal and the venue; refuses entries
    IDLE = "IDLE"                            # flat as far as we know; accepts an entry
    ENTERING = "ENTERING"                    # entry journaled and sent, no reply yet
    CONFIRMING_ENTRY = "CONFIRMING_ENTRY"    # entry's final state being learned by client-id query
    PROTECTING = "PROTECTING"                # filled, stop being set directly
    PROTECTED = "PROTECTED"                  # filled and the venue confirmed the stop
    MOVING_STOP = "MOVING_STOP"              # an operator's stop move is being set; the old stop stands until then
    SETTING_EXIT = "SETTING_EXIT"            # a take-profit or venue-held trail is being set beside the stop
    REDUCING = "REDUCING"                    # a partial close (reduce-only) is out; the stop covers what stays
    ADDING = "ADDING"                        # an add to the position is out; the whole-position stop covers it
    VERIFYING = "VERIFYING"                  # the venue suggests it changed outside us: asking it, live
    FLATTENING = "FLATTENING"                # reduce-only close in progress
    STUCK = "STUCK"                          # close could not be confirmed: position may be open


class Trigger(StrEnum):
    RECOVERED_FLAT = "recovered_flat"        # journal and venue agree: nothing open
    RESUME_CLOSE = "resume_close"            # the journal was closing when we stopped: finish it
    OPEN = "open"
    ADOPT_PROTECT = "adopt_protect"          # a foreign position: protect it directly
    ADOPT_CLOSE = "adopt_close"              # a foreign position: close it reduce-only
    REPROTECT = "reprotect"                  # the venue view disagrees with our stop: set it again
    ENTRY_FILLED_WITH_STOP = "entry_filled_with_stop"  # venue confirms fill and attached stop
    ENTRY_FILLED = "entry_filled"            # venue confirms fill; stop still to set
    ENTRY_ACKED = "entry_acked"              # accepted, fill not reported
    ENTRY_AMBIGUOUS = "entry_ambiguous"      # timeout / 5xx / unknown: query, never resend
    ENTRY_REJECTED = "entry_rejected"        # final with nothing filled, or never reached the venue
    STOP_CONFIRMED = "stop_confirmed"
    STOP_FAILED = "stop_failed"
    NAKED_DEADLINE = "naked_deadline"
    CLOSE_REQUESTED = "close_requested"
    CLOSE_FOUND = "close_found"              # after a restart: a close sent while the journal could not say so
    CLOSE_CONFIRMED = "close_confirmed"      # venue confirmed entry's final state and the close
    CLOSE_UNCONFIRMED = "close_unconfirmed"  # gave up confirming: alert, keep trying slowly
    OUTSIDE_SEEN = "outside_seen"            # stream or REST: the position may be gone or flipped outside us
    OUTSIDE_UNCONFIRMED = "outside_unconfirmed"  # the venue took our stop again: the position lives
    CLOSED_OUTSIDE = "closed_outside"        # the engine holds no position to protect: it was closed outside us
    MOVE_STOP = "move_stop"                  # an operator (or strategy) moves the stop: a price, or break-even
    MOVE_REFUSED = "move_refused"            # the venue refused the new stop: the old one is set again
    STOP_MOVED = "stop_moved"                # the venue took the new stop
    SET_EXIT = "set_exit"                    # a take-profit or trail asked for (an operator, the open, a resize)
    EXIT_SET = "exit_set"                    # the venue holds it
    EXIT_REFUSED = "exit_refused"            # refused: the stop stands, the old exit too
    REDUCE = "reduce"                        # a partial close asked for
    REDUCED = "reduced"                      # the venue filled it (all or part): the position is smaller
    REDUCE_REFUSED = "reduce_refused"        # nothing of it filled
    ADD = "add"                              # an add on the same side asked for
    ADDED = "added"                          # the venue filled it: the position is larger, the stop covers it
    ADD_REFUSED = "add_refused"              # nothing of it filled


class TimerKind(StrEnum):
    """A PositionCore's own wake-ups (values as they always were: a timer in flight stays valid)."""

    NAKED = "naked_deadline"         # filled and still not protected by now: flatten
    POLL_ENTRY = "poll_entry"        # ask the entry's state again
    RETRY_ENTRY = "retry_entry"      # resend the same entry (retry-later: it was not processed)
    RETRY_STOP = "retry_stop"        # set the same stop again (idempotent)
    POLL_CLOSE = "poll_close"        # ask the close's state again
    RETRY_CLOSE = "retry_close"      # resend the same close (retry-later: it was not processed)
    NEW_CLOSE = "new_close"          # a fresh close order (the last one definitely did not execute)
    STALLED = "stalled"              # no request sent for a while in a state that awaits a reply
    JOURNAL_WAIT = "journal_wait"    # a close waits this long for its journal row, then goes anyway
    PROBE_CLOSE = "probe_close"      # after a restart: ask for the next derived close id until surely absent
    CANCEL_STOPS = "cancel_stops"    # stop orders of ours outlived their position: cancel them (again)
    POLL_CHANGE = "poll_change"      # ask a partial close's or an add's state again
    RETRY_CHANGE = "retry_change"    # resend the same partial close or add (retry-later: not processed)
    RETRY_EXIT = "retry_exit"        # set the same take-profit or trail again (idempotent)


S, T = State, Trigger

TRANSITIONS: dict[tuple[State, Trigger], State] = {
    # after a start or restart: the journal says what we had, client-id queries say what it became
    (S.RECOVERING, T.RECOVERED_FLAT): S.IDLE,
    (S.RECOVERING, T.ENTRY_FILLED): S.PROTECTING,        # filled: set the stop directly (idempotent)
    (S.RECOVERING, T.ENTRY_AMBIGUOUS): S.CONFIRMING_ENTRY,
    (S.RECOVERING, T.RESUME_CLOSE): S.FLATTENING,

    (S.IDLE, T.OPEN): S.ENTERING,
    (S.IDLE, T.ADOPT_PROTECT): S.PROTECTING,
    (S.IDLE, T.ADOPT_CLOSE): S.FLATTENING,

    (S.ENTERING, T.ENTRY_FILLED_WITH_STOP): S.PROTECTED,
    (S.ENTERING, T.ENTRY_FILLED): S.PROTECTING,
    (S.ENTERING, T.ENTRY_ACKED): S.CONFIRMING_ENTRY,
    (S.ENTERING, T.ENTRY_AMBIGUOUS): S.CONFIRMING_ENTRY,
    (S.ENTERING, T.ENTRY_REJECTED): S.IDLE,

    (S.CONFIRMING_ENTRY, T.ENTRY_FILLED_WITH_STOP): S.PROTECTED,
    (S.CONFIRMING_ENTRY, T.ENTRY_FILLED): S.PROTECTING,
    (S.CONFIRMING_ENTRY, T.ENTRY_REJECTED): S.IDLE,
    # separate-stop venue: a fill we cannot confirm in time may be naked; reduce-only is safe
    (S.CONFIRMING_ENTRY, T.NAKED_DEADLINE): S.FLATTENING,

    (S.PROTECTING, T.STOP_CONFIRMED): S.PROTECTED,
    (S.PROTECTING, T.STOP_FAILED): S.FLATTENING,
    (S.PROTECTING, T.NAKED_DEADLINE): S.FLATTENING,
    (S.PROTECTING, T.CLOSE_REQUESTED): S.FLATTENING,

    (S.PROTECTED, T.CLOSE_REQUESTED): S.FLATTENING,
    (S.PROTECTED, T.CLOSE_FOUND): S.FLATTENING,
    (S.PROTECTING, T.CLOSE_FOUND): S.FLATTENING,
    # real world: a stop vanished or moved on the venue (or the position did): verify by setting it
    (S.PROTECTED, T.REPROTECT): S.PROTECTING,
    # real world: closed, liquidated or flipped outside us (by hand, another program, the venue's
    # engines). Nothing is cancelled on that evidence alone: our stop is set again, and only the
    # matching engine's "no position" confirms it (a refusal for any other reason closes reduce-only).
    (S.PROTECTED, T.OUTSIDE_SEEN): S.VERIFYING,
    (S.VERIFYING, T.OUTSIDE_UNCONFIRMED): S.PROTECTED,
    (S.VERIFYING, T.CLOSED_OUTSIDE): S.IDLE,
    (S.VERIFYING, T.STOP_FAILED): S.FLATTENING,
    (S.VERIFYING, T.CLOSE_REQUESTED): S.FLATTENING,
    # a stop set right after a fill (or after a restart) finds no position, and the stream said why
    (S.PROTECTING, T.CLOSED_OUTSIDE): S.IDLE,
    # a stop move: the new stop replaces the old on the venue (in place, or placed before the old
    # one is cancelled), so the whole position is covered at every instant; refused, the old stands
    (S.PROTECTED, T.MOVE_STOP): S.MOVING_STOP,
    (S.MOVING_STOP, T.STOP_MOVED): S.PROTECTED,
    (S.MOVING_STOP, T.MOVE_REFUSED): S.PROTECTED,
    (S.MOVING_STOP, T.CLOSE_REQUESTED): S.FLATTENING,
    # a take-profit or a venue-held trail beside the stop (which stands, untouched, meanwhile)
    (S.PROTECTED, T.SET_EXIT): S.SETTING_EXIT,
    (S.SETTING_EXIT, T.EXIT_SET): S.PROTECTED,
    (S.SETTING_EXIT, T.EXIT_REFUSED): S.PROTECTED,
    (S.SETTING_EXIT, T.CLOSE_REQUESTED): S.FLATTENING,
    # a partial close and an add: the stop is a whole-position one on every venue we drive (Bybit's
    # Full mode, Binance's closePosition, the simulated venue), so it covers the new quantity at
    # every instant; only a trail that is an order of a size (Binance) is replaced afterwards
    (S.PROTECTED, T.REDUCE): S.REDUCING,
    (S.REDUCING, T.REDUCED): S.PROTECTED,
    (S.REDUCING, T.REDUCE_REFUSED): S.PROTECTED,
    (S.REDUCING, T.CLOSE_REQUESTED): S.FLATTENING,
    (S.PROTECTED, T.ADD): S.ADDING,
    (S.ADDING, T.ADDED): S.PROTECTED,
    (S.ADDING, T.ADD_REFUSED): S.PROTECTED,
    (S.ADDING, T.CLOSE_REQUESTED): S.FLATTENING,

    (S.FLATTENING, T.CLOSE_CONFIRMED): S.IDLE,
    (S.FLATTENING, T.CLOSE_UNCONFIRMED): S.STUCK,
    # real world: a slow retry finally gets the venue's confirmation
    (S.STUCK, T.CLOSE_CONFIRMED): S.IDLE,
}


# Named sets: each rule says which states it means once, here. Members are StrEnum values, so a
# snapshot's state read back from JSON (a plain string) tests the same way.
CLOSING = frozenset({S.FLATTENING, S.STUCK})                 # a reduce-only close is under way
RESTING = frozenset({S.IDLE, S.PROTECTED})                   # no command of ours in progress
# a command changes a PROTECTED position: its stop stands throughout
CHANGING = frozenset({S.MOVING_STOP, S.SETTING_EXIT, S.REDUCING, S.ADDING})
CLOSABLE = frozenset({S.PROTECTING, S.PROTECTED, S.VERIFYING}) | CHANGING   # filled: a close applies
SETTING_STOP = frozenset({S.PROTECTING, S.VERIFYING, S.MOVING_STOP})   # a SetStop of ours is awaited
# An episode that may hold a position: every state but IDLE and RECOVERING (what a panic closes).
HELD = frozenset({S.ENTERING, S.CONFIRMING_ENTRY, S.PROTECTING, S.PROTECTED, S.VERIFYING, S.FLATTENING,
                  S.STUCK}) | CHANGING
