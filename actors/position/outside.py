"""What was done to a position outside posguard, judged from what the venue shows (pure; the
PositionCore acts on it).

The venue is the truth: a close in the app, another program's order, a liquidation or an ADL,
a stop removed or moved by hand. Each observation -- a stream push, a REST read settled past the
REST lag, a closing order on the stream -- is compared with what the episode holds, and says
what changed. What it may lead to is decided in one place (PositionCore): a resize is journaled
and shown; a stop removed or moved is set again (or followed); a position gone or flipped is
never taken on the observation alone -- our stop is set again, and only the matching engine's
"no position to protect" confirms it (design rule 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from adapters.base import CloseKind, PositionReport, Side

EPS = 1e-9


class Change(StrEnum):
    CLOSED = "closed"                # the venue holds no position of this symbol
    FLIPPED = "flipped"              # it holds one of the other side
    REDUCED = "reduced"
    INCREASED = "increased"
    STOP_REMOVED = "stop_removed"    # no stop (or none of ours) on the position
    STOP_MOVED = "stop_moved"        # a stop at another price than ours


GONE = frozenset({Change.CLOSED, Change.FLIPPED})

# Why a position went away, as the closed event names it: the venue's own closing orders (a stream's
# `closed_by`, an order history's kind) or anything else done outside posguard.
REASON_OF_CLOSED_BY = {"stop": "stop_triggered", "take_profit": "take_profit", "liquidation": "liquidated",
                       "adl": "adl", "": "closed_outside"}
REASON_OF_KIND = {CloseKind.STOP: "stop_triggered", CloseKind.TAKE_PROFIT: "take_profit",
                  CloseKind.LIQUIDATION: "liquidated", CloseKind.ADL: "adl",
                  CloseKind.MANUAL: "closed_outside", CloseKind.OURS: "closed_outside"}
# Which of our exits closed it, as the closed event says (`exit`): the stop or the take-profit.
EXIT_OF_REASON = {"stop_triggered": "stop", "take_profit": "take_profit"}
CLOSED_OUTSIDE = "closed_outside"


@dataclass(frozen=True, slots=True)
class Outside:
    """Evidence that the position went away outside posguard, kept until the venue confirms it
    (or refutes it by taking our stop again)."""

    reason: str                      # closed_outside | liquidated | adl | stop_triggered
    detail: str
    source: str                      # stream | rest | journal
    change: Change = Change.CLOSED
    labelled: bool = False           # the reason comes from the order that closed it (not a guess)


def changes(side: Side, qty: float, stop: float | None, seen: PositionReport | None,
            stop_known: bool) -> tuple[Change, ...]:
    """What `seen` says changed against an episode holding `qty` on `side` with our `stop`.
    `stop_known`: the observation says the position's stop (a Bybit push, a REST read with stop
    orders counted), else the stop is not judged (a Binance push carries none)."""
    if seen is None:
        return (Change.CLOSED,)
    if seen.side is not side:
        return (Change.FLIPPED,)
    found: list[Change] = []
    if seen.qty < qty - EPS:
        found.append(Change.REDUCED)
    elif seen.qty > qty + EPS:
        found.append(Change.INCREASED)
    if stop_known and stop is not None:
        prices = seen.stop_prices or ((seen.stop_price,) if seen.stop_price is not None else ())
        if not prices:
            found.append(Change.STOP_REMOVED)
        elif not any(abs(p - stop) <= EPS * max(1.0, stop) for p in prices):
            found.append(Change.STOP_MOVED)
    return tuple(found)


def moved_to(side: Side, seen: PositionReport) -> float | None:
    """The operator's stop on a position whose stop was moved: the one that triggers first."""
    prices = seen.stop_prices or ((seen.stop_price,) if seen.stop_price is not None else ())
    if not prices:
        return None
    return max(prices) if side is Side.BUY else min(prices)


def describe(change: Change, seen: PositionReport | None, qty: float, source: str) -> str:
    if change is Change.CLOSED:
        return f"{source}: the venue shows no position (we hold {qty:g})"
    assert seen is not None
    if change is Change.FLIPPED:
        return f"{source}: the venue shows {seen.side} {seen.qty:g} (we held the other side, {qty:g})"
    if change in (Change.REDUCED, Change.INCREASED):
        return f"{source}: {change} outside posguard from {qty:g} to {seen.qty:g}"
    prices = seen.stop_prices or ((seen.stop_price,) if seen.stop_price is not None else ())
    held = ", ".join(f"{p:.8g}" for p in prices) or "none"
    return f"{source}: our stop {'removed' if change is Change.STOP_REMOVED else 'moved'} outside posguard" \
           f" (venue stop {held})"
