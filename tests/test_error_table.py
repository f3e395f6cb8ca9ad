"""Every outcome kind of the error table, proven by a case."""

from __future__ import annotations

import pytest

from adapters.base import VenueError, VenueTimeout
from adapters.errors import BYBIT_RULES, Outcome, classify_error
from adapters.sim.engine import ZERO_POSITION


@pytest.mark.parametrize(("error", "outcome"), [
    (VenueError(10001, "StopLoss:110 set for Buy position should lower than base_price:100"), Outcome.REJECTED),
    (VenueError(10001, ZERO_POSITION), Outcome.NO_POSITION),
    (VenueError(110007, "ab not enough for new order"), Outcome.REJECTED),
    (VenueError(10006, "Too many visits"), Outcome.RETRY_LATER),
    (VenueError(10016, "Server Timeout"), Outcome.UNKNOWN),
    (VenueError(10000, "Server error"), Outcome.UNKNOWN),
    (VenueError(503, "Service Unavailable"), Outcome.UNKNOWN),
    (VenueTimeout("no reply"), Outcome.UNKNOWN),
    (TimeoutError(), Outcome.UNKNOWN),
    (VenueError(110017, "current position is zero"), Outcome.NO_POSITION),
    (VenueError(10002, "invalid request, please check your server timestamp"), Outcome.AUTH),
    (VenueError(10004, "error sign!"), Outcome.AUTH),
    (VenueError(400, "bad request"), Outcome.BUG),
    (KeyError("oops"), Outcome.BUG),
    (VenueError(110001, "order not exists"), Outcome.ORDER_NOT_FOUND),
    (VenueError(110072, "OrderLinkedID is duplicate"), Outcome.ALREADY_PLACED),
    (VenueError(34040, "not modified"), Outcome.NOT_MODIFIED),
    (VenueError(110043, "Set leverage not modified"), Outcome.NOT_MODIFIED),
    (VenueError(99999, "something new"), Outcome.UNKNOWN),   # unlisted: might have executed
])
def test_classification(error, outcome):
    assert classify_error(error) is outcome


def test_every_outcome_kind_is_reachable_from_the_table_or_the_exception_types():
    reachable = {r.outcome for r in BYBIT_RULES} | {Outcome.UNKNOWN, Outcome.BUG}
    assert reachable == set(Outcome)


def test_text_refinements_precede_their_bare_code():
    seen_bare: set = set()
    for rule in BYBIT_RULES:
        if rule.text is None:
            seen_bare.add(rule.code)
        else:
            assert rule.code not in seen_bare, f"rule for {rule.code} '{rule.text}' is shadowed"


@pytest.mark.parametrize(("error", "outcome"), [
    (VenueError(-1007, "Timeout waiting for response from backend server. Send status unknown"), Outcome.UNKNOWN),
    (VenueError(503, "Unknown error, please check your request or try again later."), Outcome.UNKNOWN),
    (VenueError(-2021, "Order would immediately trigger."), Outcome.REJECTED),      # -> flatten now
    (VenueError(-2022, "ReduceOnly Order is rejected."), Outcome.NO_POSITION),
    (VenueError(-4116, "ClientOrderId is duplicated."), Outcome.ALREADY_PLACED),
    (VenueError(-4131, "The counterparty's best price does not meet the PERCENT_PRICE filter limit."),
     Outcome.REJECTED),
    (VenueError(-4164, "Order's notional must be no smaller than 5"), Outcome.REJECTED),
    (VenueError(-1003, "Too many requests"), Outcome.RETRY_LATER),
    (VenueError(-1021, "Timestamp for this request is outside of the recvWindow."), Outcome.AUTH),
    (VenueError(-1022, "Signature for this request is not valid."), Outcome.AUTH),
    (VenueError(-2015, "Invalid API-key, IP, or permissions for action."), Outcome.AUTH),
    (VenueError(-2013, "Order does not exist."), Outcome.ORDER_NOT_FOUND),
    (VenueError(-1102, "Mandatory parameter 'side' was not sent"), Outcome.BUG),
    (VenueTimeout("no reply"), Outcome.UNKNOWN),
    (VenueError(-9999, "something new"), Outcome.UNKNOWN),
])
def test_binance_classification(error, outcome):
    assert classify_error(error, "binance") is outcome


@pytest.mark.parametrize("dialect", ["bybit", "binance"])
@pytest.mark.parametrize(("code", "outcome"), [("min_qty", Outcome.REJECTED), ("min_notional", Outcome.REJECTED),
                                               ("unknown_symbol", Outcome.REJECTED), ("auth", Outcome.AUTH)])
def test_local_denials_classify_the_same_for_every_venue(dialect, code, outcome):
    assert classify_error(VenueError(code, "denied before sending"), dialect) is outcome


def test_a_stop_that_would_trigger_now_takes_the_flatten_edge():
    # -2021 must not be retried as a stop (it can never stand): REJECTED is the "stop refused,
    # roll back" edge of the PositionActor, i.e. flatten now.
    from actors.position.base import AMBIGUOUS
    outcome = classify_error(VenueError(-2021, "Order would immediately trigger."), "binance")
    assert outcome not in AMBIGUOUS and outcome not in (Outcome.RETRY_LATER, Outcome.UNKNOWN, Outcome.NOT_MODIFIED)
