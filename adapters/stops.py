"""Which open conditional orders count as a position's stop: the scan's view of protection
on venues whose stops are orders (Binance), not a field of the position (Bybit)."""

from __future__ import annotations

import dataclasses

from adapters.base import PositionReport, Side, StopOrderReport


def protects(order: StopOrderReport, position: PositionReport) -> bool:
    """A stop order protects a position when triggering it would close all of it and nothing
    more: the opposite side, reduce-only (or close-all), covering the whole quantity."""
    return (order.symbol == position.symbol and order.side is position.side.opposite and order.reduce_only
            and (order.qty is None or order.qty >= position.qty - 1e-12))


def with_stop_orders(positions: list[PositionReport], orders: list[StopOrderReport]) -> list[PositionReport]:
    """Positions as the scan should judge them: a position without a stop of its own takes the
    tightest stop order that protects it (highest for a long, lowest for a short)."""
    out = []
    for p in positions:
        if p.stop_price is None:
            prices = [o.stop_price for o in orders if protects(o, p)]
            if prices:
                p = dataclasses.replace(p, stop_price=max(prices) if p.side is Side.BUY else min(prices))
        out.append(p)
    return out
