"""Risk limits, checked before anything is journaled or sent: max_qty, max_notional, a stop on the
right side of the reference price and no farther than max_stop_distance_pct; for entries and for
adoption. A reduce-only close is never refused by a limit."""

from __future__ import annotations

import pytest

from actors.messages import AdoptPosition, ClosePosition, CommandAccepted, CommandDenied, OpenPosition
from actors.position.base import ADOPTION_REFUSED
from actors.position.states import State
from actors.settings import RiskLimits
from adapters.base import Side
from tests.support.harness import PRICE, SYMBOL, Harness, venue

LIMITS = RiskLimits(max_qty=5.0, max_notional=1_000.0, max_stop_distance_pct=10.0)


def harness(limits: RiskLimits | None = LIMITS) -> Harness:
    h = Harness(venue(attached=True, lag=24.0))
    h.core.risk = limits
    return h


@pytest.mark.parametrize(("side", "qty", "stop", "reference", "reason"), [
    (Side.BUY, 6.0, 95.0, PRICE, "qty 6 is above max_qty 5"),
    (Side.BUY, 5.0, 95.0, 250.0, "notional 1,250.00 USDT (5 at 250) is above max_notional 1,000.00"),
    (Side.BUY, 1.0, 101.0, PRICE, "a buy's stop must be below the price 100"),
    (Side.BUY, 1.0, 100.0, PRICE, "a buy's stop must be below the price 100"),
    (Side.SELL, 1.0, 99.0, PRICE, "a sell's stop must be above the price 100"),
    (Side.BUY, 1.0, 80.0, PRICE, "stop 80 is 20.0% from the price 100; at most 10% is accepted"),
    (Side.SELL, 1.0, 125.0, PRICE, "stop 125 is 25.0% from the price 100; at most 10% is accepted"),
    (Side.BUY, 1.0, 95.0, None, "no recent price for BTCUSDT"),
])
def test_an_entry_outside_the_limits_is_refused_with_the_reason_and_nothing_sent(side, qty, stop, reference, reason):
    h = harness()
    recovered = len(h.journal)                           # the start-up transition, nothing else
    reply = h.core.open(OpenPosition(SYMBOL, side, qty, stop, reference_price=reference))
    assert isinstance(reply, CommandDenied) and reason in reply.reason, reply
    h.run(until=5)
    assert len(h.journal) == recovered and h.to_venue == [] and h.truth().orders == ()
    assert h.core.state is State.IDLE


@pytest.mark.parametrize(("side", "qty", "stop"), [(Side.BUY, 5.0, 90.0), (Side.SELL, 10.0, 110.0)])
def test_an_entry_within_the_limits_goes_out(side, qty, stop):
    h = harness(RiskLimits(max_qty=None, max_notional=1_000.0, max_stop_distance_pct=10.0))
    assert isinstance(h.core.open(OpenPosition(SYMBOL, side, qty, stop, reference_price=PRICE)), CommandAccepted)
    h.run(until=60)
    assert h.core.state is State.PROTECTED


def test_a_price_seen_recently_is_the_reference_when_the_caller_gave_none():
    h = harness()
    h.core.note_price(PRICE)
    assert isinstance(h.core.open(OpenPosition(SYMBOL, Side.BUY, 1.0, 95.0)), CommandAccepted)
    h.clock.t += h.settings.reference_max_age_s + 1                    # ... but never a stale one
    h.run(until=60)
    h.core.close(ClosePosition(SYMBOL))
    h.run(until=60)
    refused = h.core.open(OpenPosition(SYMBOL, Side.BUY, 1.0, 95.0))
    assert isinstance(refused, CommandDenied) and "no recent price" in refused.reason


def test_a_close_is_never_refused_by_a_limit():
    h = harness(None)
    assert isinstance(h.core.open(OpenPosition(SYMBOL, Side.BUY, 50.0, 95.0)), CommandAccepted)
    h.run(until=60)
    assert h.core.state is State.PROTECTED
    h.core.risk = RiskLimits(max_qty=0.001, max_notional=0.01, max_stop_distance_pct=0.01)   # tightened since
    assert isinstance(h.core.close(ClosePosition(SYMBOL)), CommandAccepted)
    h.run(until=60)
    assert h.core.state is State.IDLE and h.truth().open_positions() == {}


def test_a_foreign_position_above_the_limits_is_still_taken_over_and_closed_by_the_close_policy():
    h = harness(RiskLimits(max_qty=0.001, max_notional=0.01))
    h.foreign_position(qty=50.0)
    reply = h.core.adopt(AdoptPosition(SYMBOL, Side.BUY, 50.0, None, reference_price=PRICE))
    assert isinstance(reply, CommandAccepted)
    h.run(until=60)
    assert h.truth().open_positions() == {}


def test_adoption_with_a_stop_outside_the_limits_is_refused_as_an_alert():
    h = harness()
    h.foreign_position(qty=1.0)
    reply = h.core.adopt(AdoptPosition(SYMBOL, Side.BUY, 1.0, 50.0, reference_price=PRICE))   # 50 % away
    assert isinstance(reply, CommandDenied) and reply.reason.startswith(ADOPTION_REFUSED), reply
    assert "at most 10% is accepted" in reply.reason
    within = h.core.adopt(AdoptPosition(SYMBOL, Side.BUY, 1.0, 98.0, reference_price=PRICE))
    assert isinstance(within, CommandAccepted)          # an adoption is no entry: qty and notional are not its
    h.run(until=60)
    assert h.core.state is State.PROTECTED and h.truth().open_positions()[SYMBOL].stop_price == 98.0


def test_the_limits_are_pure_functions_of_what_they_judge():
    # No core, no venue: the same refusals from the values alone (actors/position/risk.py).
    from actors.position import risk

    assert risk.deny_risk(None, SYMBOL, Side.BUY, 1e9, 1.0, None) is None          # no limits: nothing refused
    assert "max_qty" in risk.deny_risk(LIMITS, SYMBOL, Side.BUY, 6.0, 95.0, PRICE)
    assert risk.deny_risk(LIMITS, SYMBOL, Side.BUY, 6.0, 95.0, PRICE, entry=False) is None   # a stop alone
    assert "below the price" in risk.deny_risk(LIMITS, SYMBOL, Side.BUY, 1.0, 101.0, PRICE, entry=False)
    assert risk.reference_price(None, (100.0, 10.0), now=14.0, max_age_s=5.0) == 100.0
    assert risk.reference_price(None, (100.0, 10.0), now=16.0, max_age_s=5.0) is None    # too old
    assert risk.reference_price(-1.0, None, now=0.0, max_age_s=5.0) is None               # unusable: not taken
    assert "qty must be a positive number" in risk.deny_order_values(float("nan"), 95.0)
