"""What is done to the account outside posguard (a close in the app, a liquidation, an ADL, a
stop removed or moved by hand, a stop triggered between ticks), played on the engine: the
simulated venue's `outside` request and the emulators' `/emulator/outside` both land here."""

from __future__ import annotations

import uuid
from typing import Any

from adapters.base import (
    OrderRequest,
    Side,
)

# What someone does to the account outside posguard (tests and benchmarks), by name.
OUTSIDE_ACTIONS = ("order", "liquidate", "deleverage", "clear_stop", "move_stop", "trigger_stop", "price")


def outside(engine: Any, action: str, symbol: str, side: str | None = None, qty: float | None = None,
            reduce_only: bool = False, price: float | None = None, client_order_id: str | None = None) -> None:
    """Play one outside action on the engine: an order by hand (a close, a partial close, an
    increase, a flip), a liquidation or an ADL (all of it or `qty`), a stop cancelled or moved by
    hand, a stop triggered now, the market moved to `price`."""
    match action:
        case "order":
            if side is None or qty is None:
                raise ValueError("an order by hand needs a side and a qty")
            cid = client_order_id or f"hand-{uuid.uuid4().hex[:12]}"
            engine.create_order(OrderRequest(symbol, Side(side), float(qty), cid, reduce_only=reduce_only), True)
        case "liquidate":
            engine.liquidate(symbol, qty)
        case "deleverage":
            engine.deleverage(symbol, qty)
        case "clear_stop":
            engine.clear_stop(symbol)
        case "move_stop":
            if price is None:
                raise ValueError("a stop moved by hand needs a price")
            engine.move_stop(symbol, float(price))
        case "trigger_stop":
            engine.trigger_stop_now(symbol)
        case "price":
            if price is None:
                raise ValueError("a market move needs a price")
            engine.move_price(symbol, float(price))
        case _:
            raise ValueError(f"unknown outside action {action!r}; one of {', '.join(OUTSIDE_ACTIONS)}")
