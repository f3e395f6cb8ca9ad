"""Moving a guarded position's stop (a price, or break-even): the whole position is covered at
every instant as the venue sees it -- the new stop replaces the old in place (stops on the
position, Bybit's trading-stop) or is placed before the old one is cancelled (stops as orders,
Binance's) -- and a refused move leaves the old stop standing. One PositionCore on the
simulated venue, both kinds of venue."""

from __future__ import annotations

import pytest

from actors.messages import CommandAccepted, CommandDenied, JournalPosition, SetStop
from actors.position.states import State, Trigger
from actors.settings import RiskLimits
from adapters.base import Side
from tests.support.coverage import uncovered_qty
from tests.support.harness import PRICE, SYMBOL, Harness, venue

KINDS = pytest.mark.parametrize("stop_orders", [False, True], ids=["stop-on-position", "stop-orders"])


def guarded(stop_orders: bool, side: Side = Side.BUY, stop: float = 95.0) -> Harness:
    h = Harness(venue(stop_orders=stop_orders), streams=True)
    h.open(qty=1.0, stop=stop, side=side)
    h.run()
    assert h.core.state is State.PROTECTED
    return h


class Coverage:
    """At every change the venue makes, whether a stop protects the whole open position."""

    def __init__(self, h: Harness) -> None:
        self.h, self.uncovered = h, []
        h.adapter.engine.listeners.append(self.check)

    def check(self, _event: object) -> None:
        engine = self.h.adapter.engine
        if uncovered_qty(engine, SYMBOL) > 0:
            self.uncovered.append(engine.now())


def events(h: Harness, kind: str) -> list[dict]:
    held, _, _ = h.loop.run_until_complete(h.store.read_events(0, 100_000))
    return [e.data for e in held if e.kind == kind]


def venue_stop(h: Harness) -> float | None:
    held = h.truth().open_positions()[SYMBOL]
    return held.stop_price


@KINDS
def test_a_moved_stop_covers_the_whole_position_at_every_instant(stop_orders):
    h = guarded(stop_orders)
    seen = Coverage(h)
    assert isinstance(h.amend(stop=97.0), CommandAccepted)
    assert h.core.state is State.MOVING_STOP and h.core.snapshot().stop_price == 95.0   # the old one stands
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().stop_price == 97.0
    assert venue_stop(h) == 97.0 and seen.uncovered == []
    if stop_orders:
        assert [o.stop_price for o in h.working_stops()] == [97.0]           # the old one cancelled after
    assert events(h, "stop_moved") == [{"before": 95.0, "after": 97.0, "by": "operator"}]
    assert [m.stop_price for m in h.journal if isinstance(m, JournalPosition)][-1] == 97.0
    assert h.position_reads() == 0


@KINDS
def test_the_coverage_check_sees_the_peers_cancel_then_place(stop_orders):
    # What the check above would catch: the old stop cancelled before the new one is placed.
    h = guarded(stop_orders)
    seen = Coverage(h)
    engine = h.adapter.engine
    if stop_orders:
        (old,) = h.working_stops()
        engine.cancel_stop_order(old.client_order_id)
        engine.place_stop_order(SYMBOL, Side.SELL, 97.0, "peer-sl-2")
    else:
        engine.clear_stop(SYMBOL)
        engine.set_stop(SYMBOL, 97.0)
    assert seen.uncovered != []


@KINDS
def test_break_even_is_the_entry_plus_both_sides_fees(stop_orders):
    h = guarded(stop_orders)
    h.outside("price", price=PRICE * 1.05)                 # in profit: break-even is below the price
    h.run()
    assert isinstance(h.amend(breakeven=True), CommandAccepted)
    h.run()
    want = PRICE * (1 + 0.11 / 100)
    assert h.core.snapshot().stop_price == pytest.approx(want) and venue_stop(h) == pytest.approx(want)
    assert events(h, "stop_moved")[-1]["by"] == "breakeven"


@KINDS
def test_a_refused_move_leaves_the_old_stop_standing(stop_orders):
    h = guarded(stop_orders)
    h.amend(stop=PRICE + 1.0)                               # above the price: a buy's stop would close at once
    h.run()
    assert h.core.state is State.PROTECTED and h.core.snapshot().stop_price == 95.0 and venue_stop(h) == 95.0
    (refused,) = events(h, "stop_move_refused")
    assert refused["stop"] == 95.0 and refused["asked"] == PRICE + 1.0
    assert Trigger.MOVE_REFUSED in [m.trigger for m in h.journal if hasattr(m, "trigger")]
    assert [o for o in h.truth().orders if o.reduce_only] == []             # nothing closed for it


@pytest.mark.parametrize(("stop", "reason"), [
    (50.0, "is 50.0% from the price 100; at most 10% is accepted"),
    (101.0, "a buy's stop must be below the price 100"),
])
def test_a_move_outside_the_risk_limits_is_refused_before_anything_is_sent(stop, reason):
    h = guarded(False)
    h.core.risk = RiskLimits(max_qty=5.0, max_notional=1_000.0, max_stop_distance_pct=10.0)
    h.core.note_price(PRICE)
    sent = len(h.sent(SetStop))
    reply = h.amend(stop=stop)
    assert isinstance(reply, CommandDenied) and reason in reply.reason, reply
    assert len(h.sent(SetStop)) == sent and h.core.state is State.PROTECTED


def test_an_amend_needs_a_protected_position_and_a_new_place():
    h = Harness(venue(), streams=True)
    h.run()
    reply = h.amend(stop=95.0)
    assert isinstance(reply, CommandDenied) and "only a PROTECTED position's stop can be moved" in reply.reason
    h.open(qty=1.0, stop=95.0)
    h.run()
    assert "already at 95" in h.amend(stop=95.0).reason
    assert "a price, or breakeven" in h.amend().reason


@KINDS
def test_a_crash_while_moving_keeps_one_stop_of_ours_and_the_position_protected(stop_orders):
    h = guarded(stop_orders)
    h.amend(stop=97.0)
    h.crash()                                               # the reply (and the move) lost with the actor
    h.run()
    assert h.core.state is State.PROTECTED
    assert venue_stop(h) in (95.0, 97.0) and h.core.snapshot().stop_price == venue_stop(h)
    if stop_orders:
        assert len(h.working_stops()) == 1


@KINDS
def test_a_position_closed_by_hand_while_its_stop_moves_ends_closed_outside(stop_orders):
    # Closed by hand, the stream's news still on its way, when the move is asked: the venue answers
    # "no position" for the new stop while the push waits (held, judged once PROTECTED) -- one
    # verification, not two, and the episode ends with the venue's cause.
    h = guarded(stop_orders)
    h.outside("order", side="sell", qty=1.0, reduce_only=True)
    assert isinstance(h.amend(stop=97.0), CommandAccepted)
    h.run()
    assert h.core.state is State.IDLE and h.truth().open_positions() == {}
    assert events(h, "closed")[-1]["reason"] == "closed_outside"
    assert [o for o in h.truth().orders if o.reduce_only and o.client_order_id.startswith("pg")] == []
    assert h.working_stops() == []


def test_a_refused_move_sets_the_old_stop_again_if_it_went_meanwhile():
    # Stops as orders, no stream: our stop is cancelled by hand while a move is under way, and the
    # venue refuses the move. Going back to PROTECTED on "the old one stands" would leave the
    # position naked until the next scan: the old stop is set again first.
    h = Harness(venue(stop_orders=True), streams=False)
    h.open(qty=1.0, stop=95.0)
    h.run()
    h.amend(stop=PRICE + 1.0)                               # refused: above the price
    h.outside("clear_stop")
    h.run()
    assert h.core.state is State.PROTECTED and venue_stop(h) == 95.0
    assert [o.stop_price for o in h.working_stops()] == [95.0]


def test_a_read_asked_before_the_move_cannot_undo_it_even_following_the_operator():
    # With follow_stop_moves, a REST read asked before the move (still showing the old stop) and
    # judged after it would look like an operator's move back: it is older than the venue's last
    # word, and dropped.
    from actors.messages import PositionObserved
    from adapters.base import PositionReport
    from tests.support.harness import fast_settings

    h = Harness(venue(), settings=fast_settings(follow_stop_moves=True), streams=True)
    h.open(qty=1.0, stop=95.0)
    h.run()
    h.amend(stop=97.0)
    h.run()
    stale = PositionReport(SYMBOL, Side.BUY, 1.0, 100.0, 95.0)
    reply = h._guarded(lambda: h.core.observe(PositionObserved(SYMBOL, stale, "drift", read_ns=1)))
    assert isinstance(reply, CommandDenied) and "older than the venue's last word" in reply.reason
    h.run()
    assert h.core.snapshot().stop_price == 97.0 and venue_stop(h) == 97.0
