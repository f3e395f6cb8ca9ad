"""Who asked what, until it is answered or forgotten: the Supervisor's relay of commands and
requests to their answers, and the askers waiting for a position to reach a state.

Both expire: an asker that gave up (its own timeout) or a child that died with the command
must not leave an entry behind for ever."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actors.messages import PositionSnapshot, WaitForState

TTL_S = 600.0                        # far beyond any ask's own timeout (the slowest: a flatten, 120 s)


class Relay:
    """key (a command or request id) -> who asked; popped by the answer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._askers: dict[str, tuple[Any, float]] = {}

    def put(self, key: str, asker: Any) -> None:
        self._askers[key] = (asker, self._clock() + TTL_S)

    def pop(self, key: str) -> Any:
        entry = self._askers.pop(key, None)
        return entry[0] if entry is not None else None

    def sweep(self) -> int:
        now = self._clock()
        stale = [k for k, (_, until) in self._askers.items() if until < now]
        for key in stale:
            del self._askers[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._askers)


class StateWaiters:
    """Askers waiting for a symbol's snapshot to match; answered by the first that does."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._waiting: dict[str, list[tuple[WaitForState, Any, float]]] = {}

    def add(self, wait: WaitForState, asker: Any) -> None:
        self._waiting.setdefault(wait.symbol, []).append((wait, asker, self._clock() + TTL_S))

    def matched(self, snapshot: PositionSnapshot) -> list[Any]:
        """The askers this snapshot answers (removed)."""
        waiting = self._waiting.get(snapshot.symbol)
        if not waiting:
            return []
        answered = [asker for wait, asker, _ in waiting if wait.matches(snapshot)]
        if answered:
            self._waiting[snapshot.symbol] = [w for w in waiting if not w[0].matches(snapshot)]
        return answered

    def sweep(self) -> int:
        now, dropped = self._clock(), 0
        for symbol, waiting in list(self._waiting.items()):
            kept = [w for w in waiting if w[2] >= now]
            dropped += len(waiting) - len(kept)
            if kept:
                self._waiting[symbol] = kept
            else:
                del self._waiting[symbol]
        return dropped

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiting.values())
