"""Supervision as data (Erlang/OTP style): child specs, restart types, restart intensity."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from actors.messages import SupervisionSettings


class Restart(StrEnum):
    PERMANENT = "permanent"          # always restarted
    TRANSIENT = "transient"          # restarted only after an abnormal exit
    TEMPORARY = "temporary"          # never restarted


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child: `id` names it ("journal", "exchange", "position:BTCUSDT"); `actor` is its class."""

    id: str
    actor: type
    restart: Restart = Restart.PERMANENT


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
    base = min(policy.backoff_cap_s, policy.backoff_s * (2 ** consecutive))
    return max(0.0, base * (1.0 + rng.uniform(-policy.jitter, policy.jitter)))
