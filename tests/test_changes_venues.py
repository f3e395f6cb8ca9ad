"""A take-profit, a venue-held trailing stop, a partial close and an add on each venue as
posguard reaches it: the simulated venue, and the Bybit and Binance emulators through ccxt
(Bybit: trading-stop takeProfit / trailingStop on the position; Binance: TAKE_PROFIT_MARKET
closePosition and a reduce-only TRAILING_STOP_MARKET beside the closePosition stop). The whole
position is covered by a stop at every change the venue makes; the take-profit that fills closes
with its reason and leaves no order of ours behind."""

from __future__ import annotations

import pytest

from actors.messages import AmendPosition, ClosePosition, CommandAccepted, OpenPosition
from adapters.base import Side
from tests.test_amend_venues import watch_coverage
from tests.test_outside_venues import QTY, STOP, SYMBOL, VENUES, events, guarded  # noqa: F401 -- guarded: the fixture


def settled(d, **want) -> bool:
    snap = d.snapshot(SYMBOL)
    return snap.state == "PROTECTED" and all(getattr(snap, k) == pytest.approx(v) for k, v in want.items())


@pytest.mark.parametrize("kind", VENUES)
def test_tp_trail_partial_close_and_add_keep_the_position_covered(guarded, kind):  # noqa: F811
    d, v = guarded(kind)
    uncovered = watch_coverage(v)
    assert isinstance(d.ask(AmendPosition(SYMBOL, take_profit=61_200.0)), CommandAccepted)
    d.until(lambda: settled(d, take_profit=61_200.0), 10, "the take-profit held")
    assert isinstance(d.ask(AmendPosition(SYMBOL, trail_pct=1.0)), CommandAccepted)
    d.until(lambda: settled(d, trail_pct=1.0), 10, "the trail held")
    assert isinstance(d.ask(ClosePosition(SYMBOL, qty=QTY / 2)), CommandAccepted)
    d.until(lambda: settled(d, filled_qty=QTY / 2), 10, "half closed")
    assert abs(v.position().qty) == pytest.approx(QTY / 2) and v.position().stop_price == STOP
    assert isinstance(d.ask(OpenPosition(SYMBOL, Side.BUY, QTY, STOP)), CommandAccepted)
    d.until(lambda: settled(d, filled_qty=1.5 * QTY), 10, "added")
    assert abs(v.position().qty) == pytest.approx(1.5 * QTY) and v.position().stop_price == STOP
    if kind == "binance":                                # the trail follows the size: one, of the new size
        trails = [o for o in v.our_stops() if o.kind == "trailing"]
        assert [o.qty for o in trails] == [pytest.approx(1.5 * QTY)]
    assert [e["after"] for e in events(d, "reduced")] == [pytest.approx(QTY / 2)]
    assert [e["after"] for e in events(d, "added")] == [pytest.approx(1.5 * QTY)]
    v.act("price", price=61_300.0)                       # the take-profit fills
    d.wait(SYMBOL, "IDLE", within=15)
    assert events(d, "closed")[-1]["reason"] == "take_profit" and events(d, "closed")[-1]["exit"] == "take_profit"
    d.until(lambda: v.our_stops() == [], 10, "no order of ours left behind")
    assert v.position() is None and uncovered == []
