"""Which open conditional orders count as a position's stop: the scan's view of protection
on venues whose stops are orders (Binance), not a field of the position (Bybit)."""

from __future__ import annotations

import dataclasses
import hashlib

from adapters.base import OUR_ORDER_PREFIX, PositionReport, Side, StopOrderReport

STOP_ID_PREFIX = f"{OUR_ORDER_PREFIX}sl-"
EXIT_ID_PREFIX = {"take_profit": f"{OUR_ORDER_PREFIX}tp-", "trailing": f"{OUR_ORDER_PREFIX}ts-"}


def stop_client_id(symbol: str, side: Side, price: str) -> str:
    """The client id of our stop order for a `side` position at `price` (where stops are orders).
    The same stop always gets the same id, so a re-sent stop after an unknown outcome is refused
    as a duplicate (already placed) instead of stacking a second order. The id is a function of
    what the PositionActor journaled before asking for the stop (symbol, side and stop price of
    its intent), so it is known, and can be asked about, after any crash."""
    digest = hashlib.sha1(f"{symbol}|{side}|{price}".encode()).hexdigest()[:16]
    return f"{STOP_ID_PREFIX}{symbol.lower()[:12]}-{digest}"


def exit_client_id(symbol: str, side: Side, kind: str, value: str, qty: str = "") -> str:
    """Our take-profit or trailing order's id, as `stop_client_id`: the same exit always gets the
    same id (a re-send after an unknown outcome is "already placed"), a function of what was
    journaled before it was asked for."""
    digest = hashlib.sha1(f"{symbol}|{side}|{kind}|{value}|{qty}".encode()).hexdigest()[:16]
    return f"{EXIT_ID_PREFIX[kind]}{symbol.lower()[:12]}-{digest}"


def is_ours(order: StopOrderReport) -> bool:
    """A stop order posguard placed (every client id it makes starts with its prefix)."""
    return order.client_order_id.startswith(OUR_ORDER_PREFIX)


def protects(order: StopOrderReport, position: PositionReport) -> bool:
    """A stop order protects a position when triggering it would close all of it and nothing
    more: a stop loss (never a take-profit, nor a trail that may not be armed yet), the opposite
    side, reduce-only (or close-all), covering the whole quantity."""
    return (order.kind == "stop" and order.symbol == position.symbol and order.side is position.side.opposite
            and order.reduce_only and (order.qty is None or order.qty >= position.qty - 1e-12))


def with_stop_orders(positions: list[PositionReport], orders: list[StopOrderReport]) -> list[PositionReport]:
    """Positions as the scan should judge them: a position without a stop of its own takes the
    tightest stop order that protects it (highest for a long, lowest for a short)."""
    out = []
    for p in positions:
        if p.stop_price is None:
            prices = [o.stop_price for o in orders if protects(o, p)]
            if prices:
                p = dataclasses.replace(p, stop_price=max(prices) if p.side is Side.BUY else min(prices),
                                        stop_prices=tuple(sorted(prices)))
        out.append(p)
    return out
