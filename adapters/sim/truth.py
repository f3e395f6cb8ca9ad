"""What only the simulated venue knows: the matching engine's truth (every position episode,
naked seconds, every order, how often each operation was called) -- for tests, benchmarks and
`posguard status --truth` on the demo. No real venue has it, so it is not part of the venue
interface (adapters/base.py): whatever can tell it says so by having `true_state()`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from adapters.base import OrderReport


@dataclass(frozen=True, slots=True)
class TruePosition:
    """The matching engine's truth about one position episode (simulated venues only)."""

    symbol: str
    qty: float                       # signed: > 0 long, < 0 short, 0 closed
    entry_price: float
    stop_price: float | None
    opened_at: float
    closed_at: float | None
    naked_seconds: float             # time this position spent open with no stop


@dataclass(frozen=True, slots=True)
class TrueState:
    """Everything a test or benchmark may know that no client of a real venue could."""

    now: float
    prices: dict[str, float]
    positions: tuple[TruePosition, ...]          # every episode, open and closed, oldest first
    orders: tuple[OrderReport, ...] = field(default=())
    calls: tuple[tuple[str, int], ...] = field(default=())     # (operation, count) as the venue saw them

    def call_count(self, op: str) -> int:
        return dict(self.calls).get(op, 0)

    def open_positions(self) -> dict[str, TruePosition]:
        return {p.symbol: p for p in self.positions if p.closed_at is None}

    def max_naked_seconds(self, symbol: str | None = None) -> float:
        return max((p.naked_seconds for p in self.positions
                    if symbol is None or p.symbol == symbol), default=0.0)


@runtime_checkable
class TruthSource(Protocol):
    """The simulated venue, in this process (SimulatedAdapter) or another (RemoteSimAdapter)."""

    async def true_state(self) -> TrueState: ...
