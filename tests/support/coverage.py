"""How much of a position no working stop covers, as the simulated venue's engine sees it -- for
the tests and the benchmark of stop moves (the whole position must be covered at every instant)."""

from __future__ import annotations

from typing import Any

from adapters.base import Side


def uncovered_qty(engine: Any, symbol: str) -> float:
    """The open quantity of `symbol` without a stop: where stops are orders, none of ours or
    anyone's on its closing side works; where they live on the position, it has none."""
    held = engine.true_state().open_positions().get(symbol)
    if held is None or held.qty == 0:
        return 0.0
    side = Side.BUY if held.qty > 0 else Side.SELL
    book = engine.stop_book
    covered = book.effective(symbol, side) is not None if book is not None else held.stop_price is not None
    return 0.0 if covered else abs(held.qty)
