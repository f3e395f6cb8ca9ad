"""The risk limits as pure functions: what an entry, an adoption or a stop move must satisfy
before anything is journaled or sent. Each refusal says what was wrong and what would be
accepted."""

from __future__ import annotations

import math

from actors.settings import RiskLimits
from adapters.base import Side


def usable_price(price: float | None) -> bool:
    return price is not None and math.isfinite(price) and price > 0


def reference_price(given: float | None, seen: tuple[float, float] | None, now: float,
                    max_age_s: float) -> float | None:
    """The price the limits are judged against: the caller's, else one seen at most `max_age_s`
    ago (`seen`: the price and the monotonic time it was seen), else none."""
    if given is not None and usable_price(given):
        return given
    if seen is not None and now - seen[1] <= max_age_s:
        return seen[0]
    return None


def deny_order_values(qty: float, stop: float) -> str | None:
    if not (math.isfinite(qty) and qty > 0):
        return f"qty must be a positive number, got {qty}"
    if not (math.isfinite(stop) and stop > 0):
        return f"stop price must be a positive number, got {stop}"
    return None


def deny_risk(limits: RiskLimits | None, symbol: str, side: Side, qty: float, stop: float, price: float | None,
              entry: bool = True) -> str | None:
    """The limits for `qty` on `side` with `stop`, at the reference `price` (None: none recent).
    `entry`: the size limits apply too (a stop judged on its own checks only where it stands)."""
    if limits is None:
        return None
    if entry and limits.max_qty is not None and qty > limits.max_qty:
        return f"qty {qty:g} is above max_qty {limits.max_qty:g} for {symbol} (risk limits)"
    if price is None:
        return f"no recent price for {symbol}: the stop and the notional cannot be checked; try again"
    if entry and qty * price > limits.max_notional:
        return (f"notional {qty * price:,.2f} USDT ({qty:g} at {price:g}) is above max_notional"
                f" {limits.max_notional:,.2f} USDT for {symbol} (risk limits)")
    if side is Side.BUY and stop >= price:
        return f"a buy's stop must be below the price {price:g}; {stop:g} is not (it would close at once)"
    if side is Side.SELL and stop <= price:
        return f"a sell's stop must be above the price {price:g}; {stop:g} is not (it would close at once)"
    distance = abs(price - stop) / price * 100
    if distance > limits.max_stop_distance_pct:
        return (f"stop {stop:g} is {distance:.1f}% from the price {price:g}; at most"
                f" {limits.max_stop_distance_pct:g}% is accepted (risk limits)")
    return None


def breakeven(side: Side, entry_price: float, fees_pct: float) -> float:
    """Where a stop pays back the entry and both sides' fees: beyond the entry, on the profit side."""
    return entry_price * (1 + fees_pct / 100) if side is Side.BUY else entry_price * (1 - fees_pct / 100)


def deny_take_profit(side: Side, tp: float, price: float | None, stop: float | None) -> str | None:
    """A take-profit closes with a profit: beyond the price on the position's winning side (a
    wrong-side one would fill at once), and never on the stop's side of it."""
    if not (math.isfinite(tp) and tp > 0):
        return f"take-profit must be a positive number, got {tp}"
    if stop is not None and (tp <= stop if side is Side.BUY else tp >= stop):
        where = "above" if side is Side.BUY else "below"
        return f"a {side}'s take-profit must be {where} its stop {stop:g}; {tp:g} is not"
    if price is None:
        return "no recent price: the take-profit cannot be checked; try again"
    if side is Side.BUY and tp <= price:
        return f"a buy's take-profit must be above the price {price:g}; {tp:g} is not (it would close at once)"
    if side is Side.SELL and tp >= price:
        return f"a sell's take-profit must be below the price {price:g}; {tp:g} is not (it would close at once)"
    return None


def deny_trail(pct: float, bounds: tuple[float, float] | None, venue: str) -> str | None:
    """A trailing stop the venue holds, within the venue's own callback bounds; none is ever
    trailed by the bot and presented as the venue's."""
    if bounds is None:
        return f"{venue} holds no trailing stop of its own (posguard never trails one itself); use a stop move"
    if not math.isfinite(pct):
        return f"trail must be a number (% of the price), got {pct}"
    low, high = bounds
    if not low <= pct <= high:
        return f"trail {pct:g}% is outside {venue}'s bounds [{low:g}, {high:g}]%"
    return None
