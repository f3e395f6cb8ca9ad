"""A stop moved on each venue as posguard reaches it: the simulated venue, and the Bybit and
Binance emulators through ccxt (Bybit: trading-stop in place; Binance: a new closePosition stop
placed before the old one is cancelled). The whole position is covered at every change the
venue makes; a refused move leaves the old stop."""

from __future__ import annotations

from typing import Any

import pytest

from actors.messages import AmendPosition, CommandAccepted
from tests.support.coverage import uncovered_qty
from tests.test_outside_venues import STOP, SYMBOL, VENUES, events, guarded  # noqa: F401 -- guarded: the fixture


def watch_coverage(v: Any) -> list[float]:
    """Appended to, on the venue's own thread, whenever a change leaves the position without a stop."""
    uncovered: list[float] = []
    engine = v.engine

    def check(_event: object) -> None:
        if uncovered_qty(engine, SYMBOL) > 0:
            uncovered.append(engine.now())

    v.thread.on_loop(lambda: engine.listeners.append(check))
    return uncovered


@pytest.mark.parametrize("kind", VENUES)
def test_a_moved_stop_stands_on_the_venue_and_the_position_was_covered_throughout(guarded, kind):  # noqa: F811
    d, v = guarded(kind)
    uncovered = watch_coverage(v)
    assert isinstance(d.ask(AmendPosition(SYMBOL, 59_000.0)), CommandAccepted)
    d.until(lambda: d.snapshot(SYMBOL).state == "PROTECTED" and d.snapshot(SYMBOL).stop_price == 59_000.0,
            10, "the stop moved")
    assert v.position().stop_price == 59_000.0 and uncovered == []
    # Where stops are orders, only the new one is left (the simulated venue and Bybit hold none).
    assert [o.stop_price for o in v.our_stops()] == ([59_000.0] if kind == "binance" else [])
    assert events(d, "stop_moved")[-1] == {"before": STOP, "after": 59_000.0, "by": "operator"}


@pytest.mark.parametrize("kind", VENUES)
def test_a_move_the_venue_refuses_leaves_the_old_stop(guarded, kind):  # noqa: F811
    d, v = guarded(kind)
    d.ask(AmendPosition(SYMBOL, 61_000.0))                # above the price: a long's stop would close at once
    d.until(lambda: events(d, "stop_move_refused"), 10, "the refusal journaled")
    assert d.wait(SYMBOL, "PROTECTED").stop_price == STOP and v.position().stop_price == STOP
