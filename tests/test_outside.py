"""What is done to a guarded position outside posguard, one PositionCore on the simulated venue
(manual clock): closed, reduced, increased, flipped, liquidated, deleveraged by hand or by the
venue, its stop cancelled or moved by hand -- from the stream at once, or from a REST read. Both
kinds of venue: stops on the position (Bybit's), and stops as orders that outlive it (Binance's).

Every case checks the state, the journaled event with its cause, what is left working on the
venue (its truth), and that nothing was cancelled while the position lived."""

from __future__ import annotations

import dataclasses

import pytest

from actors.messages import (
    CommandAccepted,
    JournalPosition,
    JournalTransition,
    PositionObserved,
    PositionStreamed,
    SetStop,
)
from actors.position.states import State, Trigger
from adapters.base import OrderRequest, PositionReport, Side
from tests.support.harness import SYMBOL, Harness, fast_settings, venue

KINDS = pytest.mark.parametrize("stop_orders", [False, True], ids=["stop-on-position", "stop-orders"])


def guarded(stop_orders: bool = False, streams: bool = True, **kw) -> Harness:
    h = Harness(venue(stop_orders=stop_orders), streams=streams, **kw)
    h.open(qty=1.0, stop=95.0)
    h.run()
    assert h.core.state is State.PROTECTED
    return h


def events(h: Harness, kind: str) -> list[dict]:
    """What the journal holds (the event stream operators follow), oldest first."""
    held, _, _ = h.loop.run_until_complete(h.store.read_events(0, 100_000))
    return [e.data for e in held if e.kind == kind]


def triggers(h: Harness) -> list[str]:
    return [str(m.trigger) for m in h.journal if isinstance(m, JournalTransition)]


def venue_position(h: Harness):
    return h.truth().open_positions().get(SYMBOL)


def no_stop_cancelled_while_open(h: Harness) -> None:
    """Every stop order of ours that was cancelled, was cancelled with no position on the venue
    -- or with another of ours still working in its place (a replacement)."""
    book = h.adapter.engine.stop_book
    if book is None:
        return
    cancelled = [o for o in book.orders if o.status == "cancelled" and o.client_id.startswith("pg")]
    if cancelled:
        assert venue_position(h) is None or h.working_stops(), (cancelled, venue_position(h))


@KINDS
def test_closed_by_hand_goes_idle_with_its_cause_and_leaves_no_stop_of_ours_working(stop_orders):
    h = guarded(stop_orders)
    h.outside("order", side="sell", qty=1.0, reduce_only=True)
    h.run()
    assert h.core.state is State.IDLE and venue_position(h) is None
    (closed,) = events(h, "closed")
    assert closed["reason"] == "closed_outside" and closed["source"] == "stream"
    assert [o for o in h.truth().orders if o.reduce_only and o.client_order_id.startswith("pg")] == []   # none of ours
    assert h.working_stops() == []                          # the close-all stop did not outlive it
    if stop_orders:
        assert events(h, "stops_cancelled") and events(h, "cancel_stops")
    assert triggers(h)[-2:] == ["outside_seen", "closed_outside"]
    no_stop_cancelled_while_open(h)
    assert h.position_reads() == 0


def test_a_stop_order_left_working_closes_the_next_position_at_its_old_trigger():
    # Why the cancel matters: without it the venue keeps the close-all stop (as Binance does).
    h = Harness(venue(stop_orders=True))
    h.adapter.engine.create_order(OrderRequest(SYMBOL, Side.BUY, 1.0, "hand-1"), True)
    h.adapter.engine.place_stop_order(SYMBOL, Side.SELL, 95.0, "pgsl-old")
    h.outside("order", side="sell", qty=1.0, reduce_only=True)
    assert [o.client_order_id for o in h.working_stops()] == ["pgsl-old"]
    h.outside("order", side="buy", qty=2.0)                # the next position on that symbol
    assert venue_position(h).stop_price == 95.0             # ... is "protected" by the old stop


@KINDS
@pytest.mark.parametrize(("action", "reason"), [("liquidate", "liquidated"), ("deleverage", "adl"),
                                                ("trigger_stop", "stop_triggered")])
def test_the_venue_closing_it_names_why(stop_orders, action, reason):
    h = guarded(stop_orders)
    h.outside(action)
    h.run()
    assert h.core.state is State.IDLE and venue_position(h) is None
    assert events(h, "closed")[-1]["reason"] == reason
    assert h.working_stops() == []
    no_stop_cancelled_while_open(h)


@KINDS
@pytest.mark.parametrize("action", ["partial_close", "partial_liquidation", "partial_adl"])
def test_reduced_outside_keeps_the_stop_covering_what_is_left(stop_orders, action):
    h = guarded(stop_orders)
    {"partial_close": lambda: h.outside("order", side="sell", qty=0.4, reduce_only=True),
     "partial_liquidation": lambda: h.outside("liquidate", qty=0.4),
     "partial_adl": lambda: h.outside("deleverage", qty=0.4)}[action]()
    h.run()
    assert h.core.state is State.PROTECTED
    assert h.core.snapshot().filled_qty == pytest.approx(0.6)
    pos = venue_position(h)
    assert pos.qty == pytest.approx(0.6) and pos.stop_price == 95.0           # a whole-position stop: covers it
    (change,) = [e for e in events(h, "outside") if e["change"] == "reduced"]
    assert change["before"] == 1.0 and change["after"] == pytest.approx(0.6)
    assert any(isinstance(m, JournalPosition) and m.qty == pytest.approx(0.6) for m in h.journal)
    no_stop_cancelled_while_open(h)


@KINDS
def test_increased_outside_is_adopted_into_the_episode_and_covered_whole(stop_orders):
    h = guarded(stop_orders)
    h.outside("order", side="buy", qty=2.0)
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().filled_qty == 3.0
    assert venue_position(h).qty == 3.0 and venue_position(h).stop_price == 95.0
    assert [e["after"] for e in events(h, "outside") if e["change"] == "increased"] == [3.0]
    h.close_position()                                      # a close takes all of it now
    h.run()
    assert h.core.state is State.IDLE and venue_position(h) is None and h.working_stops() == []


@KINDS
def test_flipped_outside_ends_the_episode_and_leaves_the_new_position_to_the_adoption_policy(stop_orders):
    h = guarded(stop_orders)
    h.outside("order", side="sell", qty=2.5)                # long 1 -> short 1.5
    h.run()
    assert h.core.state is State.IDLE
    assert events(h, "closed")[-1]["reason"] == "closed_outside"
    assert events(h, "outside")[0]["change"] == "flipped"
    pos = venue_position(h)
    assert pos.qty == -1.5                                  # not ours to close: the scan adopts it
    assert [o for o in h.working_stops() if o.side is Side.SELL] == []   # the long's stop is gone
    assert [o for o in h.truth().orders if o.reduce_only and o.client_order_id.startswith("pg")
            and o.filled_qty > 0] == []                     # and nothing of the new short was closed


def test_a_flip_while_the_journal_cannot_write_is_protected_before_the_old_stop_is_cancelled():
    # Long 1 flipped to short 1.5 by hand while the journal fails: the long's stop order must be
    # cancelled (journaled first, so it waits for the journal), and the short must not wait for
    # that -- its stop is on the other side, which the cleanup never touches.
    h = guarded(True)
    h.fail_journal = True
    h.outside("order", side="sell", qty=2.5)
    h.run()
    assert h.core.state is State.IDLE and h.core.cleanup is not None and h.core.cleanup.side is Side.SELL
    assert isinstance(h.adopt(qty=1.5, stop=110.0, side=Side.SELL), CommandAccepted)
    h.run()
    assert h.core.state is State.PROTECTED and venue_position(h).stop_price == 110.0
    h.fail_journal = False                                   # the journal writes again: the cleanup goes on
    h.advance(30.0)
    assert [(o.side, o.stop_price) for o in h.working_stops()] == [(Side.BUY, 110.0)]
    assert h.core.cleanup is None and h.core.state is State.PROTECTED


@KINDS
def test_our_stop_cancelled_by_hand_is_set_again_and_the_event_says_so(stop_orders):
    h = guarded(stop_orders)
    h.outside("clear_stop")
    h.run()
    assert h.core.state is State.PROTECTED and venue_position(h).stop_price == 95.0
    assert [e["action"] for e in events(h, "outside") if e["change"] == "stop_removed"] == ["restore"]
    assert Trigger.REPROTECT in triggers(h)


@KINDS
@pytest.mark.parametrize("follow", [False, True], ids=["restore", "follow"])
def test_our_stop_moved_by_hand_is_set_back_unless_the_config_follows_it(stop_orders, follow):
    h = Harness(venue(stop_orders=stop_orders), settings=fast_settings(follow_stop_moves=follow), streams=True)
    h.open(qty=1.0, stop=95.0)
    h.run()
    h.outside("move_stop", price=97.0)
    h.run()
    assert h.core.state is State.PROTECTED
    if not stop_orders:                                     # a moved position stop is seen on the push
        assert venue_position(h).stop_price == (97.0 if follow else 95.0)
        assert h.core.snapshot().stop_price == (97.0 if follow else 95.0)
        change = [e for e in events(h, "outside") if e["change"] == "stop_moved"]
        assert change and change[-1]["action"] == ("follow" if follow else "restore")
    else:                                                   # the stream says our order was cancelled:
        assert venue_position(h).stop_price is not None     # ours is back; the operator's stays theirs
        assert any(abs(o.stop_price - 95.0) < 1e-9 for o in h.working_stops())


def test_a_followed_stop_survives_a_restart():
    h = Harness(venue(), settings=fast_settings(follow_stop_moves=True), streams=True)
    h.open(qty=1.0, stop=95.0)
    h.run()
    h.outside("move_stop", price=97.0)
    h.run()
    h.crash()
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().stop_price == 97.0
    assert venue_position(h).stop_price == 97.0


def test_a_resize_survives_a_restart_and_the_close_takes_all_of_it():
    h = guarded()
    h.outside("order", side="buy", qty=1.0)
    h.run()
    h.crash()
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().filled_qty == 2.0
    h.close_position()
    h.run()
    assert h.core.state is State.IDLE and venue_position(h) is None


@KINDS
def test_an_omitting_list_read_cancels_nothing_and_is_refuted_by_the_venue(stop_orders):
    h = guarded(stop_orders, streams=False)
    before = h.working_stops()
    h.observe(missing=True)                                 # the list read left our position out
    h.run()
    assert h.core.state is State.PROTECTED and venue_position(h).stop_price == 95.0
    assert triggers(h)[-2:] == ["outside_seen", "outside_unconfirmed"]
    assert h.working_stops() == before and events(h, "cancel_stops") == []
    assert [o for o in h.truth().orders if o.reduce_only] == []


@KINDS
def test_a_stop_triggered_while_the_stream_was_down_is_found_through_rest_with_its_cause(stop_orders):
    h = guarded(stop_orders, streams=False)
    h.outside("trigger_stop")
    h.advance(30.0)                                         # past the REST lag: the list shows it flat
    assert h.adapter.engine.position_view() == []
    h.observe()
    h.run()
    assert h.core.state is State.IDLE
    assert events(h, "closed")[-1]["reason"] == "stop_triggered"
    assert h.working_stops() == []


@KINDS
def test_a_stop_gone_from_a_fresh_stop_list_beside_a_lagging_position_read_is_a_close_not_a_rollback(stop_orders):
    # The REST position view lags; the stop list does not. Read together just after our stop
    # triggered, they show the position still open without its stop: it is set again, the engine
    # answers "no position", and that -- two sources -- ends the episode with the venue's cause,
    # no close order sent.
    h = guarded(stop_orders, streams=False)
    held = next(p for p in h.adapter.engine.position_view() if p.symbol == SYMBOL)
    h.outside("trigger_stop")
    stale = dataclasses.replace(held, stop_price=None, stop_prices=())
    h._guarded(lambda: h.core.observe(PositionObserved(SYMBOL, stale, "drift")))
    h.run()
    assert h.core.state is State.IDLE and venue_position(h) is None
    closed = events(h, "closed")[-1]
    assert closed["reason"] == "stop_triggered" and closed["source"] == "rest", closed
    assert Trigger.STOP_FAILED not in triggers(h)
    assert [o for o in h.truth().orders if o.reduce_only and o.client_order_id.startswith("pg")] == []
    assert h.working_stops() == []


@pytest.mark.parametrize("push_first", [True, False], ids=["push-then-order", "order-then-push"])
def test_a_reduction_whose_order_and_push_arrive_in_either_order_is_a_reduction_only(push_first):
    # A stream may deliver the position push before the order that made it: the order must then
    # not read as a close of all that is left (a needless VERIFYING, found on Binance).
    from actors.messages import OrderStreamed
    from adapters.base import OrderReport, OrderStatus

    h = guarded(streams=False)
    push = PositionStreamed(SYMBOL, PositionReport(SYMBOL, Side.BUY, 0.5, 100.0, 95.0), stop_known=True,
                            received_ns=10**18)
    order = OrderStreamed(OrderReport(SYMBOL, "hand-1", "v-1", Side.SELL, 0.5, OrderStatus.FILLED, 0.5, 100.0,
                                      reduce_only=True), received_ns=10**18)
    for msg in (push, order) if push_first else (order, push):
        if isinstance(msg, PositionStreamed):
            h.core.on_position_streamed(msg)
        else:
            h.core.on_order_streamed(msg)
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().filled_qty == 0.5
    assert "outside_seen" not in triggers(h)
    assert h.core.episode.resized is None and h.core.episode.reduced_by is None    # matched, nothing left over


def test_a_push_older_than_the_venues_latest_answer_is_dropped():
    h = guarded()
    stale = PositionStreamed(SYMBOL, None, True, received_ns=h.core.episode.known_ns - 1)
    h.deliver(stale)
    h.run()
    assert h.core.state is State.PROTECTED and "outside_seen" not in triggers(h)


def test_a_lying_flat_push_changes_nothing_the_engine_denies():
    h = guarded()
    h.deliver(PositionStreamed(SYMBOL, None, True, received_ns=h.core.episode.known_ns + 1))
    h.run()
    assert h.core.state is State.PROTECTED and venue_position(h).stop_price == 95.0
    assert triggers(h)[-1] == "outside_unconfirmed" and h.sent(SetStop)[-1].stop_price == 95.0


def test_a_push_while_the_stop_is_being_set_is_judged_once_protected():
    h = Harness(venue(attached=False), streams=True)
    h.open(qty=1.0, stop=95.0)
    h.run()
    bigger = PositionReport(SYMBOL, Side.BUY, 2.0, 100.0, 95.0)
    h.core.episode.held_push = None
    h.deliver(PositionStreamed(SYMBOL, bigger, True, received_ns=h.core.episode.known_ns + 1))
    h.run()
    assert h.core.snapshot().filled_qty == 2.0               # PROTECTED: judged at once
    ep = h.core.episode
    ep.known_ns += 10
    h.deliver(PositionStreamed(SYMBOL, dataclasses.replace(bigger, qty=3.0), True, received_ns=ep.known_ns - 5))
    h.run()
    assert h.core.snapshot().filled_qty == 2.0               # older than what the venue said since


def test_leftover_stop_orders_on_a_flat_symbol_are_cancelled_on_request_and_new_entries_wait_for_it():
    h = Harness(venue(stop_orders=True))
    h.run()
    h.adapter.engine.create_order(OrderRequest(SYMBOL, Side.BUY, 1.0, "hand-1"), True)
    h.adapter.engine.place_stop_order(SYMBOL, Side.SELL, 95.0, "pgsl-from-a-crashed-run")
    h.outside("order", side="sell", qty=1.0, reduce_only=True)
    assert isinstance(h.cancel_leftovers("pgsl-from-a-crashed-run"), CommandAccepted)
    assert "cancelling" in h.open().reason                   # no new episode while its stops are going
    h.run()
    assert h.working_stops() == [] and h.core.cleanup is None
    assert events(h, "stops_cancelled")[-1]["orders"] == ["pgsl-from-a-crashed-run"]


def test_our_own_close_on_a_stop_order_venue_cancels_the_stop_it_leaves():
    h = guarded(stop_orders=True)
    assert len(h.working_stops()) == 1
    h.close_position()
    h.run()
    assert h.core.state is State.IDLE and h.working_stops() == []


def test_a_flip_then_a_close_while_the_journal_fails_leaves_no_stop_of_ours_on_either_side():
    h = guarded(True)
    h.fail_journal = True
    h.outside("order", side="sell", qty=2.5)                # long 1 -> short 1.5: the long's SELL stop is a leftover
    h.run()
    h.adopt(qty=1.5, stop=110.0, side=Side.SELL)
    h.run()
    h.close_position()                                      # the short closed too: its BUY stop a leftover as well
    h.run()
    h.fail_journal = False
    h.advance(60.0)
    assert h.core.state is State.IDLE and venue_position(h) is None
    assert h.working_stops() == [] and h.core.cleanup is None


def test_the_scans_cancel_of_leftovers_takes_them_whatever_their_side():
    h = Harness(venue(stop_orders=True), streams=True)
    h.open(qty=1.0, stop=105.0, side=Side.SELL)
    h.run()
    h.close_position()
    h.run()
    assert h.core.state is State.IDLE and h.working_stops() == []
    engine = h.adapter.engine                                # a long's stop of ours left working on the flat symbol
    engine.create_order(OrderRequest(SYMBOL, Side.BUY, 1.0, "hand-long"), True)
    engine.place_stop_order(SYMBOL, Side.SELL, 95.0, "pgsl-old-long")
    h.outside("order", side="sell", qty=1.0, reduce_only=True)
    assert [o.client_order_id for o in h.working_stops()] == ["pgsl-old-long"]
    assert isinstance(h.cancel_leftovers("pgsl-old-long"), CommandAccepted)
    h.run()
    assert h.working_stops() == []
