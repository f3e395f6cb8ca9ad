"""PositionCore against the simulated venue on a manual clock: the incident and its cousins.

Every scenario also checks the standing rules: no position read, at most one entry order on
the venue, and the actor's belief matching the venue's truth at the end."""

from __future__ import annotations

import dataclasses

import pytest

from actors.messages import (
    CommandAccepted,
    CommandDenied,
    JournalOrder,
    JournalTransition,
    OrderPlaced,
    OrderQueried,
    OrderStreamed,
    PlaceOrder,
    QueryOrder,
    StopSet,
)
from actors.position.states import State
from adapters.base import OrderStatus, Side
from adapters.sim.faults import Fault, FaultKind
from tests.support.harness import PRICE, SYMBOL, Harness, fast_settings, venue


def assert_converged(h: Harness) -> None:
    """Belief equals truth: PROTECTED ⇔ an open position with a stop; IDLE ⇔ flat."""
    truth = h.truth().open_positions()
    assert h.position_reads() == 0, "a position read happened on the entry/stop/rollback path"
    assert h.entries_on_venue() <= 1
    if h.core.state is State.PROTECTED:
        assert SYMBOL in truth and truth[SYMBOL].stop_price is not None
        assert abs(truth[SYMBOL].qty) == pytest.approx(h.core.episode.entry.filled_qty)
    else:
        assert h.core.state is State.IDLE, h.core.state
        assert SYMBOL not in truth


def journaled_before_sent(h: Harness) -> None:
    journaled = [m.request.client_order_id for m in h.journal if isinstance(m, JournalOrder)]
    for msg in h.sent(PlaceOrder):
        assert msg.request.client_order_id in journaled


# -- the incident, replayed with a 24 s REST lag ----------------------------------------------

def test_a_attached_stop_venue_leaves_no_naked_second():
    h = Harness(venue(attached=True, lag=24.0))
    assert isinstance(h.open(), CommandAccepted)
    h.run(until=60)
    assert h.core.state is State.PROTECTED
    assert h.truth().max_naked_seconds() == 0.0
    assert h.venue_ops() == ["create_order"]            # the stop travelled with the entry
    assert_converged(h)
    journaled_before_sent(h)


def test_b_separate_stop_venue_confirms_the_stop_one_call_after_the_fill_without_a_read():
    h = Harness(venue(attached=False, lag=24.0))
    h.open()
    h.run(until=60)
    assert h.core.state is State.PROTECTED
    assert h.venue_ops() == ["create_order", "set_stop"]
    assert h.truth().open_positions()[SYMBOL].stop_price == 95.0
    assert_converged(h)


def test_c_stop_rejected_rollback_closes_the_filled_qty_while_the_position_is_invisible():
    h = Harness(venue(Fault("set_stop", FaultKind.ERROR, code=10001, message="risk limit exceeded"),
                      attached=False, lag=24.0))
    h.open(qty=2.0)
    h.run(until=1.0)                                     # well inside the 24 s lag
    assert h.adapter.engine.position_view() == []        # reads still show nothing ...
    assert h.core.state is State.IDLE                    # ... yet the position is closed
    (episode,) = h.truth().positions
    assert episode.closed_at is not None and episode.closed_at < 24.0
    closes = [m.request for m in h.sent(PlaceOrder) if m.request.reduce_only]
    assert [(c.qty, c.side) for c in closes] == [(2.0, Side.SELL)]
    last = [m for m in h.journal if isinstance(m, JournalTransition)][-1]
    assert last.snapshot.state == "IDLE" and "close filled 2.0" in last.detail
    assert_converged(h)
    journaled_before_sent(h)


def test_d_entry_reply_lost_is_resolved_by_client_id_with_exactly_one_entry():
    h = Harness(venue(Fault("create_order", FaultKind.TIMEOUT_AFTER), attached=True, lag=24.0))
    h.open()
    h.run(until=60)
    assert h.core.state is State.PROTECTED
    assert len(h.sent(PlaceOrder)) == 1                  # never re-sent
    assert len(h.sent(QueryOrder)) >= 1
    assert h.entries_on_venue() == 1
    assert_converged(h)


# -- entry outcomes -----------------------------------------------------------------------------

def test_entry_lost_before_the_venue_is_given_up_only_after_the_unknown_window():
    h = Harness(venue(Fault("create_order", FaultKind.TIMEOUT_BEFORE)))
    h.open()
    h.run(until=4.0)
    assert h.core.state is State.CONFIRMING_ENTRY        # still within the window: keep asking
    h.run(until=60)
    assert h.core.state is State.IDLE
    assert len(h.sent(PlaceOrder)) == 1 and h.entries_on_venue() == 0
    assert "never reached the venue" in h.core.last_event
    assert_converged(h)


def test_rejected_entry_returns_to_idle_with_nothing_on_the_venue():
    h = Harness(venue(Fault("create_order", FaultKind.ERROR, code=110007, message="not enough balance")))
    h.open()
    h.run()
    assert h.core.state is State.IDLE and h.entries_on_venue() == 0
    assert "entry refused" in h.core.last_event
    assert_converged(h)


def test_rate_limited_entry_is_resent_with_the_same_client_id():
    h = Harness(venue(Fault("create_order", FaultKind.ERROR, code=10006, message="Too many visits")))
    h.open()
    h.run()
    sends = h.sent(PlaceOrder)
    assert len(sends) == 2 and sends[0].request.client_order_id == sends[1].request.client_order_id
    assert h.core.state is State.PROTECTED
    assert_converged(h)


def test_duplicate_client_id_reply_means_already_placed_so_query_not_resend():
    h = Harness(venue(Fault("create_order", FaultKind.ERROR, code=110072, message="OrderLinkedID is duplicate")))
    h.open()
    h.run(until=1.0)
    assert h.core.state is State.CONFIRMING_ENTRY
    assert len(h.sent(PlaceOrder)) == 1 and len(h.sent(QueryOrder)) >= 1


def test_ack_only_venue_learns_the_fill_by_client_id():
    for attached in (True, False):
        h = Harness(venue(attached=attached, ack_only=True))
        h.open()
        h.run()
        assert h.core.state is State.PROTECTED
        assert h.venue_ops()[:2] == ["create_order", "fetch_order"]
        assert_converged(h)


def test_journal_failure_means_the_entry_is_never_sent():
    h = Harness(venue(), fail_journal=True)
    h.open()
    h.run()
    assert h.core.state is State.IDLE and h.venue_ops() == []


# -- protection and deadline --------------------------------------------------------------------

def test_stop_retried_while_unknown_then_naked_deadline_flattens():
    h = Harness(venue(Fault("set_stop", FaultKind.ERROR, code=10016, times=1000), attached=False),
                settings=fast_settings(naked_deadline_s=10.0))
    h.open()
    h.run(until=9.9)
    assert h.core.state is State.PROTECTING
    h.run(until=60)
    assert h.core.state is State.IDLE
    assert h.truth().max_naked_seconds() == pytest.approx(10.0, abs=0.01)
    assert "naked deadline" in h.core.last_event
    assert_converged(h)


def test_stop_succeeds_after_a_transient_unknown():
    h = Harness(venue(Fault("set_stop", FaultKind.TIMEOUT_AFTER), attached=False))
    h.open()
    h.run()
    assert h.core.state is State.PROTECTED                # second set answered "not modified"
    assert h.venue_ops().count("set_stop") == 2
    assert_converged(h)


def test_unknown_fill_past_the_deadline_closes_the_requested_qty_reduce_only():
    h = Harness(venue(Fault("create_order", FaultKind.TIMEOUT_AFTER),
                      Fault("fetch_order", FaultKind.ERROR, code=10016, times=60), attached=False))
    h.open(qty=3.0)
    h.run(until=120)
    closes = [m.request for m in h.sent(PlaceOrder) if m.request.reduce_only]
    assert closes and closes[0].qty == 3.0 and closes[0].reduce_only
    assert h.core.state is State.IDLE
    assert_converged(h)


def test_rollback_before_the_entry_is_known_waits_for_the_entry_final_state():
    # The entry never arrived; the reduce-only close finds nothing; "closed" only once the
    # entry is known never to have filled.
    h = Harness(venue(Fault("create_order", FaultKind.TIMEOUT_BEFORE),
                      Fault("fetch_order", FaultKind.ERROR, code=10016, times=55), attached=False))
    h.open()
    h.run(until=10.5)
    assert h.core.state is State.FLATTENING
    h.run(until=120)
    assert h.core.state is State.IDLE and "never filled" in h.core.last_event
    assert_converged(h)


# -- closing ------------------------------------------------------------------------------------

def test_operator_close_flattens_the_filled_qty():
    h = Harness(venue())
    h.open(qty=1.5)
    h.run()
    assert isinstance(h.close_position(), CommandAccepted)
    h.run()
    assert h.core.state is State.IDLE
    closes = [m.request for m in h.sent(PlaceOrder) if m.request.reduce_only]
    assert [c.qty for c in closes] == [1.5]
    assert_converged(h)


def test_close_after_the_stop_triggered_is_confirmed_by_the_engine_having_nothing_to_reduce():
    h = Harness(venue(volatility=0.01))
    h.open(stop=99.5)
    h.run(until=0.0)
    for _ in range(200):
        h.advance(1.0)
        if not h.truth().open_positions():
            break
    assert not h.truth().open_positions()               # the stop fired on the venue
    h.close_position()
    h.run()
    assert h.core.state is State.IDLE and "no position to reduce" in h.core.last_event
    assert_converged(h)


def test_ambiguous_close_is_queried_not_resent():
    h = Harness(venue(Fault("create_order", FaultKind.TIMEOUT_AFTER, reduce_only=True)))
    h.open()
    h.run()
    h.close_position()
    h.run()
    assert h.core.state is State.IDLE
    closes = [m for m in h.sent(PlaceOrder) if m.request.reduce_only]
    assert len(closes) == 1
    assert_converged(h)


def test_close_refused_repeatedly_goes_stuck_with_an_alert_then_recovers():
    h = Harness(venue(Fault("create_order", FaultKind.ERROR, code=10001, message="params error",
                            reduce_only=True, times=4)),
                settings=fast_settings(max_close_attempts=3))
    h.open()
    h.run()
    h.close_position()
    h.run(until=2.0)
    assert h.core.state is State.STUCK
    assert "position may still be open" in h.core.last_event
    h.run(until=60)
    assert h.core.state is State.IDLE
    assert_converged(h)


# -- denials --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("qty", "stop"), [(0.0, 95.0), (-1.0, 95.0), (1.0, 0.0), (float("nan"), 95.0)])
def test_bad_open_is_denied_before_anything_is_journaled(qty, stop):
    h = Harness(venue())
    before = list(h.journal)
    reply = h.open(qty=qty, stop=stop)
    assert isinstance(reply, CommandDenied)
    assert h.journal == before and h.venue_ops() == []


def test_a_second_open_of_the_other_side_is_denied_while_a_position_is_held():
    # (one of the same side is an add: tests/test_changes.py)
    h = Harness(venue())
    h.open()
    h.run()
    reply = h.open(side=Side.SELL)
    assert isinstance(reply, CommandDenied) and "same side" in reply.reason
    assert h.entries_on_venue() == 1 and h.core.state is State.PROTECTED


def test_close_when_idle_is_denied():
    h = Harness(venue())
    assert isinstance(h.close_position(), CommandDenied)


def test_short_positions_work_the_same_way():
    h = Harness(venue(attached=False))
    h.open(side=Side.SELL, stop=PRICE * 1.05)
    h.run()
    assert h.core.state is State.PROTECTED
    assert h.truth().open_positions()[SYMBOL].qty == -1.0
    h.close_position()
    h.run()
    assert_converged(h)


def test_entry_order_report_status_is_journaled():
    h = Harness(venue())
    h.open()
    h.run()
    updates = [m for m in h.journal if type(m).__name__ == "JournalOrderUpdate"]
    assert updates and updates[0].status == str(OrderStatus.FILLED)


def test_rollback_that_races_an_in_flight_entry_closes_again_once_the_entry_lands():
    # The entry is still in flight when the naked deadline fires; the reduce-only close finds
    # nothing; the entry then executes. "Closed" must wait for the entry's final state, and
    # the fill that landed after the close must be closed too.
    h = Harness(venue(Fault("create_order", FaultKind.LATE, delay_s=2.0, reduce_only=False), attached=False),
                settings=fast_settings(naked_deadline_s=1.0))
    h.open()
    h.run(until=1.5)
    assert h.core.state is State.FLATTENING              # not "closed": the entry is not final yet
    h.run(until=60)
    assert h.core.state is State.IDLE
    closes = [m.request for m in h.sent(PlaceOrder) if m.request.reduce_only]
    assert len(closes) == 2                              # the first found nothing, the second closed the fill
    assert h.entries_on_venue() == 1
    assert_converged(h)


def test_restart_between_a_close_executing_and_its_reply_asks_before_closing_again():
    def close_reply(msg: object) -> bool:
        return isinstance(msg, OrderPlaced) and msg.report is not None and msg.report.reduce_only

    h = Harness(venue(), crash_on=close_reply)
    h.open()
    h.run()
    h.close_position()
    h.run()
    assert h.crashes == 1 and h.core.state is State.IDLE
    assert len([m for m in h.sent(PlaceOrder) if m.request.reduce_only]) == 1     # asked, did not resend
    assert "recovered mid-close" in " ".join(m.detail for m in h.journal if isinstance(m, JournalTransition))
    assert_converged(h)


def test_restart_between_an_entry_executing_and_its_reply_protects_without_a_second_entry():
    def entry_reply(msg: object) -> bool:
        return isinstance(msg, OrderPlaced) and msg.report is not None and not msg.report.reduce_only

    h = Harness(venue(attached=False), crash_on=entry_reply)
    h.open()
    h.run()
    assert h.crashes == 1 and h.core.state is State.PROTECTED
    assert h.entries_on_venue() == 1
    assert_converged(h)


@pytest.mark.parametrize("lost", [OrderPlaced, OrderQueried, StopSet])
def test_a_lost_reply_is_asked_again_after_the_reply_timeout(lost):
    # A restarted ExchangeActor, a dropped connection: the answer never comes.
    dropped = []

    def drop_first(msg: object) -> bool:
        if isinstance(msg, lost) and not dropped:
            dropped.append(msg)
            return True
        return False

    faults = (Fault("create_order", FaultKind.TIMEOUT_AFTER),) if lost is OrderQueried else ()
    h = Harness(venue(*faults, attached=lost is not StopSet), drop=drop_first,
                settings=fast_settings(reply_timeout_s=3.0))             # below the 10 s naked deadline
    h.open()
    h.run(until=120)
    assert dropped, "the scenario never produced the reply to lose"
    assert h.core.state is State.PROTECTED
    assert len([m for m in h.sent(PlaceOrder) if not m.request.reduce_only]) == 1
    assert_converged(h)


# -- the stream as evidence -----------------------------------------------------------------------


def test_an_ack_only_venue_confirms_protected_from_the_stream_without_a_query():
    h = Harness(venue(ack_only=True), streams=True)
    h.run()
    assert isinstance(h.open(), CommandAccepted)
    h.run()
    assert h.core.state is State.PROTECTED and not h.sent(QueryOrder)   # the stream said filled, stop attached
    assert_converged(h)


def test_an_order_that_is_not_ours_or_of_an_episode_that_is_over_moves_nothing():
    h = Harness(venue(lag=0.0), streams=True)
    h.run()
    h.open()
    h.run()
    entry = h.truth().orders[-1]
    h.close_position()
    h.run()
    assert h.core.state is State.IDLE
    before = list(h.venue_ops())
    h.foreign_position()                                              # someone else's order: its events come
    h.deliver(OrderStreamed(entry))                                   # and a stale fill of our old entry
    h.deliver(OrderStreamed(dataclasses.replace(entry, client_order_id="pgeNOTJOURNALED")))
    h.run()
    assert h.core.state is State.IDLE and h.venue_ops()[len(before):] == []


def test_a_stop_trigger_on_the_stream_is_confirmed_through_rest_before_closed():
    h = Harness(venue(), streams=True)
    h.run()
    h.open()
    h.run()
    assert h.core.state is State.PROTECTED
    h.adapter.engine.trigger_stop_now(SYMBOL)
    h.run()
    assert h.core.state is State.IDLE and "stop loss triggered" in h.core.last_event
    ops = h.venue_ops()
    assert ops[-1] == "set_stop" and ops.count("create_order") == 1   # "zero position" confirms it: no close sent
    closed = [e for m in h.journal for e in getattr(m, "events", ()) if e.kind == "closed"]
    assert closed[-1].data["reason"] == "stop_triggered"
    assert h.position_reads() == 0


def test_a_false_stop_trigger_claim_never_closes_an_open_position():
    h = Harness(venue(), streams=True)
    h.run()
    h.open()
    h.run()
    entry = h.truth().orders[-1]
    lie = dataclasses.replace(entry, client_order_id="stop-lie", side=Side.SELL, reduce_only=True)
    h.deliver(OrderStreamed(lie, closed_by="stop"))                   # the stream claims the stop fired
    h.run()
    assert h.core.state is State.PROTECTED                            # the engine said "not modified": still open
    assert_converged(h)


@pytest.mark.parametrize("fate", ["drop", "twice", "late"])
def test_a_stream_that_loses_repeats_or_delays_events_changes_nothing_that_rest_confirms(fate):
    h = Harness(venue(ack_only=True, attached=False), streams=True, stream_fate=lambda msg: fate)
    h.run()
    h.open()
    h.run()
    assert h.core.state is State.PROTECTED and h.entries_on_venue() == 1
    h.close_position()
    h.run()
    assert_converged(h)
    assert len([m for m in h.journal if getattr(m, "trigger", "") == "close_confirmed"]) == 1
