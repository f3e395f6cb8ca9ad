"""Every outcome kind of the error table, proven by a case."""

from __future__ import annotations

import pytest

from adapters.base import VenueError, VenueTimeout
from adapters.errors import BYBIT_RULES, Outcome, classify_error
from adapters.sim_engine import ZERO_POSITION


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
