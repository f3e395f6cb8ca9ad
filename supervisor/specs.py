"""Supervision as data (Erlang/OTP style): child specs, restart types, restart intensity.

A spec says what a child is (its kind picks its configure message), what must be ready before
it first starts (`after`), whether it is restarted, and, for a PositionActor, which symbols it
guards. The Supervisor starts "the next spec whose dependencies are ready"; nothing in it knows
a start order."""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from actors.backoff import doubling_delay
from actors.settings import SupervisionSettings

AUTO_PROCESSES = 40                  # symbols_per_process = 0: about this many PositionActor processes


class Restart(StrEnum):
    PERMANENT = "permanent"          # always restarted (every child of a deployment today)
    TEMPORARY = "temporary"          # never restarted


class ChildKind(StrEnum):
    JOURNAL = "journal"
    EXCHANGE = "exchange"
    API = "api"
    POSITIONS = "position"
    PROTECTION = "protection"
    STREAM = "stream"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    id: str                          # "journal", "exchange", "position:BTCUSDT", "positions:3", ...
    kind: ChildKind
    actor: type
    after: tuple[ChildKind, ...] = ()    # every child of these kinds ready before the first start
    restart: Restart = Restart.PERMANENT
    symbols: tuple[str, ...] = ()        # POSITIONS: what this process guards


def symbols_per_process(setting: int, symbols: int) -> int:
    """K: the setting, or (0) one per process up to AUTO_PROCESSES symbols, then groups."""
    return setting if setting > 0 else max(1, math.ceil(symbols / AUTO_PROCESSES))


def position_specs(symbols: tuple[str, ...], per_process: int, actor: type,
                   after: tuple[ChildKind, ...]) -> list[ChildSpec]:
    """One spec per PositionActor process: `position:SYMBOL` alone, `positions:N` for a group."""
    if per_process <= 1:
        return [ChildSpec(f"position:{s}", ChildKind.POSITIONS, actor, after, symbols=(s,)) for s in symbols]
    groups = [symbols[i:i + per_process] for i in range(0, len(symbols), per_process)]
    return [ChildSpec(f"positions:{n}", ChildKind.POSITIONS, actor, after, symbols=g) for n, g in enumerate(groups)]


class RestartIntensity:
    """Restart times in a sliding window (a deque, like OTP's supervisor)."""

    def __init__(self, max_restarts: int, within_s: float) -> None:
        self.max_restarts = max_restarts
        self.within_s = within_s
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Count one restart at `now`; False when the limit is exceeded."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.within_s:
            self._times.popleft()
        return len(self._times) <= self.max_restarts

    @property
    def recent(self) -> int:
        return len(self._times)


def backoff(policy: SupervisionSettings, consecutive: int, rng: random.Random) -> float:
    """Delay before the `consecutive`-th restart (0-based) of one child."""
    return doubling_delay(policy.backoff_s, policy.backoff_cap_s, consecutive, policy.jitter, rng)
