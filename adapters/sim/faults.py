"""Fault injection for the simulated venue, as data a test or config can carry across processes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from adapters.bounds import Count, Seconds, Text


class FaultKind(StrEnum):
    ERROR = "error"                  # the venue replies with an error; nothing executed
    TIMEOUT_AFTER = "timeout_after"  # the venue executed the request, the reply is lost
    TIMEOUT_BEFORE = "timeout_before"  # the request never reached the engine, no reply
    DELAY = "delay"                  # the reply comes `delay_s` later than usual
    LATE = "late"                    # no reply, and the request reaches the engine `delay_s` later
    MALFORMED = "malformed"          # the venue executed the request; its reply lacks a field we rely on
    OMIT = "omit"                    # fetch_positions: the list leaves out `symbol` (every symbol: None)


@dataclass(frozen=True, slots=True)
class Fault:
    """Affects `times` calls of `op` (after letting `skip` matching calls through)."""

    op: Literal["create_order", "set_stop", "set_exit", "fetch_order", "fetch_positions", "fetch_stop_orders",
                "cancel_order", "*"]
    kind: FaultKind
    times: Count[1, 1_000_000] = 1
    skip: Count[0, 1_000_000] = 0
    symbol: Text | None = None
    reduce_only: bool | None = None  # create_order only: match entries (False) or closes (True)
    code: Count[-1_000_000_000, 1_000_000_000] = 10016
    message: Text = "Server Timeout"
    delay_s: Seconds[0.0, 600.0] = 0.0

    def matches(self, op: str, symbol: str | None, reduce_only: bool | None) -> bool:
        return ((self.op in ("*", op))
                # an omission's symbol names what the list leaves out, not which call it hits
                and (self.symbol is None or self.symbol == symbol or self.kind is FaultKind.OMIT)
                and (self.reduce_only is None or self.reduce_only == reduce_only))


class FaultPlan:
    """Hands out faults in order; each fault is spent after `times` uses."""

    def __init__(self, faults: tuple[Fault, ...] | list[Fault] = ()) -> None:
        self._faults: list[list] = [[f, f.skip, f.times] for f in faults]

    def add(self, fault: Fault) -> None:
        self._faults.append([fault, fault.skip, fault.times])

    def take(self, op: str, symbol: str | None = None, reduce_only: bool | None = None) -> Fault | None:
        for entry in self._faults:
            fault, skip, left = entry
            if left <= 0 or not fault.matches(op, symbol, reduce_only):
                continue
            if skip > 0:
                entry[1] -= 1
                continue
            entry[2] -= 1
            return fault
        return None

    @property
    def pending(self) -> int:
        return sum(left for _, _, left in self._faults)
