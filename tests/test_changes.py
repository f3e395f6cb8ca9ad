"""Managing a guarded position beside its stop: a take-profit, a venue-held trailing stop, a
partial close, an add -- the whole open quantity covered by a working stop at every instant as
the venue sees it, every order journaled before it is sent, and each change surviving a crash.
One PositionCore on the simulated venue, both kinds of venue (stops on the position, Bybit's
way; stops as orders that outlive their position, Binance's)."""

from __future__ import annotations

import dataclasses

import pytest

from actors.messages import CommandAccepted, CommandDenied, JournalOrder, OpenPosition, SetExit
from actors.position.states import State, Trigger
from actors.settings import RiskLimits
from adapters.base import Side
from adapters.sim.faults import Fault, FaultKind
from tests.support.harness import PRICE, SYMBOL, Harness, venue
from tests.test_amend import Coverage, events

KINDS = pytest.mark.parametrize("stop_orders", [False, True], ids=["stop-on-position", "stop-orders"])


def guarded(stop_orders: bool, qty: float = 1.0, **exits) -> tuple[Harness, Coverage]:
    h = Harness(venue(stop_orders=stop_orders), streams=True)
    h.core.note_price(PRICE)                             # the take-profit is judged against a price
    assert isinstance(h.open(qty=qty, stop=95.0, **exits), CommandAccepted)
    h.run()
    assert h.core.state is State.PROTECTED
    return h, Coverage(h)                                # from the stop on (a separate stop follows the fill)


def position(h: Harness):
    return h.adapter.engine._positions[SYMBOL]


def exits_of(h: Harness, kind: str) -> list:
    return [o for o in h.working_stops() if o.kind == kind]


@KINDS
def test_a_take_profit_with_the_entry_stands_beside_the_stop(stop_orders):
    h, seen = guarded(stop_orders, tp=105.0)
    snap = h.core.snapshot()
    assert snap.take_profit == 105.0 and snap.stop_price == 95.0
    if stop_orders:                                      # an order beside the stop order, set after it
        assert [o.stop_price for o in exits_of(h, "take_profit")] == [105.0]
        assert events(h, "tp_set") == [{"before": None, "after": 105.0, "stop": 95.0}]
    else:                                                # it travelled with the entry: no request of its own
        assert position(h).take_profit == 105.0 and not h.sent(SetExit)
    assert seen.uncovered == [] and h.position_reads() == 0


@KINDS
def test_the_take_profit_that_fills_closes_with_its_reason_and_the_stop_goes(stop_orders):
    h, seen = guarded(stop_orders, tp=105.0)
    h.adapter.engine.move_price(SYMBOL, 106.0)
    h.run()
    assert h.core.state is State.IDLE
    (closed,) = events(h, "closed")
    assert closed["reason"] == "take_profit" and closed["exit"] == "take_profit"
    assert h.working_stops() == []                       # the stop it outlived: cancelled, confirmed
    assert h.truth().open_positions().get(SYMBOL) is None and seen.uncovered == []


@KINDS
def test_the_stop_that_fills_takes_the_take_profit_with_it(stop_orders):
    h, _ = guarded(stop_orders, tp=105.0)
    h.adapter.engine.move_price(SYMBOL, 94.0)
    h.run()
    assert h.core.state is State.IDLE
    assert events(h, "closed")[-1]["exit"] == "stop"
    assert h.working_stops() == [] and position(h).take_profit is None


@KINDS
def test_a_take_profit_is_moved_with_the_stop_standing(stop_orders):
    h, seen = guarded(stop_orders, tp=105.0)
    h.core.note_price(PRICE)                             # (the actor fetches one when none is recent)
    assert isinstance(h.amend(tp=108.0), CommandAccepted)
    assert h.core.state is State.SETTING_EXIT
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().take_profit == 108.0
    if stop_orders:
        assert [o.stop_price for o in exits_of(h, "take_profit")] == [108.0]   # the old one cancelled after
    else:
        assert position(h).take_profit == 108.0
    assert events(h, "tp_set")[-1] == {"before": 105.0, "after": 108.0, "stop": 95.0}
    assert seen.uncovered == []


@pytest.mark.parametrize("tp, words", [(99.0, "must be above the price"), (94.0, "above its stop")])
def test_a_take_profit_on_the_wrong_side_is_refused_and_nothing_is_sent(tp, words):
    h, _ = guarded(False)
    before = list(h.to_venue)
    h.core.note_price(PRICE)
    reply = h.amend(tp=tp)
    assert isinstance(reply, CommandDenied) and words in reply.reason
    assert h.to_venue == before and h.core.state is State.PROTECTED


@KINDS
def test_a_venue_held_trail_with_the_hard_stop_under_it(stop_orders):
    h, seen = guarded(stop_orders, trail=1.0)
    assert h.core.snapshot().trail_pct == 1.0 and h.core.snapshot().stop_price == 95.0
    if stop_orders:
        (trail,) = exits_of(h, "trailing")
        assert trail.qty == 1.0
    else:
        assert position(h).trail is not None and position(h).trail.distance == pytest.approx(1.0)
    assert events(h, "trail_set") == [{"before": None, "after": 1.0, "stop": 95.0}]
    engine = h.adapter.engine
    engine.move_price(SYMBOL, 110.0)
    h.advance(0.1)
    engine.move_price(SYMBOL, 108.0)                     # more than 1 % off the best price: it triggers
    h.run()
    assert h.core.state is State.IDLE and h.working_stops() == [] and seen.uncovered == []


def test_a_trail_is_refused_where_the_venue_holds_none_and_outside_its_bounds():
    h, _ = guarded(False)
    before = list(h.to_venue)
    h.core.caps = dataclasses.replace(h.core.caps, trail_bounds_pct=None)
    reply = h.amend(trail=1.0)
    assert isinstance(reply, CommandDenied) and "holds no trailing stop of its own" in reply.reason
    h.core.caps = dataclasses.replace(h.core.caps, trail_bounds_pct=(0.1, 10.0))
    reply = h.amend(trail=12.0)
    assert isinstance(reply, CommandDenied) and "outside" in reply.reason and "[0.1, 10]" in reply.reason
    assert h.to_venue == before


@KINDS
def test_a_partial_close_leaves_the_rest_covered(stop_orders):
    h, seen = guarded(stop_orders, qty=2.0)
    assert isinstance(h.close_position(qty=0.8), CommandAccepted)
    assert h.core.state is State.REDUCING
    (order,) = [m for m in h.journal if isinstance(m, JournalOrder) and m.purpose == "reduce"]
    assert order.request.reduce_only and order.request.qty == 0.8      # journaled before it was sent
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().filled_qty == pytest.approx(1.2)
    assert abs(position(h).qty) == pytest.approx(1.2) and position(h).stop_price == 95.0
    (reduced,) = events(h, "reduced")
    assert reduced["before"] == 2.0 and reduced["after"] == pytest.approx(1.2)
    assert seen.uncovered == [] and h.position_reads() == 0


def test_a_partial_close_larger_than_the_position_is_refused_and_all_of_it_is_a_close():
    h, _ = guarded(False, qty=2.0)
    before = list(h.to_venue)
    reply = h.close_position(qty=3.0)
    assert isinstance(reply, CommandDenied) and "more than the open 2" in reply.reason and h.to_venue == before
    assert isinstance(h.close_position(qty=2.0), CommandAccepted) and h.core.state is State.FLATTENING


@KINDS
def test_an_add_is_covered_by_the_whole_position_stop_the_moment_it_fills(stop_orders):
    h, seen = guarded(stop_orders, qty=1.0)
    assert isinstance(h.open(qty=0.5), CommandAccepted)
    assert h.core.state is State.ADDING
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().filled_qty == pytest.approx(1.5)
    assert abs(position(h).qty) == pytest.approx(1.5)
    (added,) = events(h, "added")
    assert added["before"] == 1.0 and added["after"] == pytest.approx(1.5)
    assert seen.uncovered == [] and h.entries_on_venue() == 1


def test_an_open_that_must_not_add_is_refused_on_a_protected_symbol_and_nothing_is_sent():
    # `posguard run` sends its config's opens at every start, a crash's restart included: one
    # that found its earlier position PROTECTED would double it if it were taken as an add.
    h, _ = guarded(False, qty=1.0)
    before = list(h.to_venue)
    reply = h._guarded(lambda: h.core.open(OpenPosition(SYMBOL, Side.BUY, 1.0, 95.0, add=False)))
    assert isinstance(reply, CommandDenied) and "only an IDLE symbol accepts an entry" in reply.reason
    assert h.to_venue == before and h.core.state is State.PROTECTED


def test_an_add_beyond_the_risk_limits_is_refused_and_nothing_is_sent():
    h, _ = guarded(False, qty=1.0)
    h.core.risk = RiskLimits(max_notional=120.0, max_stop_distance_pct=10.0)
    before = list(h.to_venue)
    h.core.note_price(PRICE)
    reply = h.open(qty=0.5)
    assert isinstance(reply, CommandDenied) and "add refused" in reply.reason and "max_notional" in reply.reason
    assert h.to_venue == before


def test_a_trail_that_is_an_order_of_a_size_follows_an_add_placed_before_the_old_goes():
    h, seen = guarded(True, qty=1.0, trail=1.0)
    (old,) = exits_of(h, "trailing")
    h.open(qty=0.5)
    h.run()
    (new,) = exits_of(h, "trailing")
    assert new.qty == pytest.approx(1.5) and new.client_order_id != old.client_order_id
    assert h.core.snapshot().trail_pct == 1.0 and seen.uncovered == []


@KINDS
def test_an_exit_being_set_when_the_actor_dies_is_asked_again_once(stop_orders):
    h, _ = guarded(stop_orders)
    h.crash_after = [(State.PROTECTED, Trigger.SET_EXIT)]
    h.core.note_price(PRICE)
    h.amend(tp=105.0)                                    # dies once SETTING_EXIT is journaled
    h.run()
    assert h.crashes == 1
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().take_profit == 105.0
    if stop_orders:
        assert len(exits_of(h, "take_profit")) == 1      # the same id again: never two
    else:
        assert position(h).take_profit == 105.0


def test_a_partial_close_the_venue_executed_before_the_crash_is_counted_once():
    h, seen = guarded(False, qty=2.0)
    h.crash_on = lambda msg: type(msg).__name__ == "OrderPlaced"   # the answer dies with the actor
    h.close_position(qty=0.8)
    h.run()
    assert h.crashes == 1
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().filled_qty == pytest.approx(1.2)
    assert abs(position(h).qty) == pytest.approx(1.2)
    assert sum(1 for o in h.truth().orders if o.client_order_id.startswith("pgr")) == 1
    assert seen.uncovered == []


def test_a_refused_take_profit_leaves_the_stop_and_is_not_asked_again_after_a_restart():
    h, _ = guarded(True)
    h.adapter.faults.add(Fault("set_exit", FaultKind.ERROR, code=10001, message="params error"))
    h.core.note_price(PRICE)
    h.amend(tp=105.0)
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().take_profit is None
    assert events(h, "exit_refused")[-1]["exit"] == "take_profit"
    h.crash()
    h.run()
    assert h.core.state is State.PROTECTED and exits_of(h, "take_profit") == []
    assert h.core.snapshot().stop_price == 95.0 and Side.BUY is h.core.episode.side


@KINDS
def test_an_add_that_fills_after_the_close_went_out_is_closed_too(stop_orders):
    # The add reaches the engine after the close (which it clipped to the smaller size): that clip
    # proves nothing of the add; another reduce-only close takes it before "closed".
    h, _ = guarded(stop_orders, qty=1.0)
    h.adapter.faults.add(Fault("create_order", FaultKind.LATE, delay_s=0.3, reduce_only=False))
    h.core.note_price(PRICE)
    h.open(qty=0.5)
    h.close_position()
    h.run()
    assert h.core.state is State.IDLE and h.truth().open_positions().get(SYMBOL) is None


def test_a_close_waiting_for_an_add_that_never_arrived_still_ends():
    h, _ = guarded(False, qty=1.0)
    h.adapter.faults.add(Fault("create_order", FaultKind.TIMEOUT_BEFORE, reduce_only=False))
    h.core.note_price(PRICE)
    h.open(qty=0.5)
    h.close_position()
    h.run()
    assert h.core.state is State.IDLE and h.truth().open_positions().get(SYMBOL) is None
    assert events(h, "add_refused")
