"""What the live page plots, kept from the snapshots the API hears: for each entry, when it was
protected, how long that took (from taking the open command to the venue confirming the stop)
and how many seconds it was naked. In memory, since this process started, the latest
MAX_ENTRIES; the Prometheus histogram is the long record."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from actors.messages import PositionSnapshot
from supervisor.metrics import PROTECTED_TRIGGERS

MAX_ENTRIES = 20_000


class EntrySeries:
    def __init__(self) -> None:
        self.since = time.time()
        self.entries: deque[tuple[float, str, float, float]] = deque(maxlen=MAX_ENTRIES)
        self._seen: deque[str] = deque(maxlen=MAX_ENTRIES)      # intents counted (a snapshot comes twice)
        self._seen_set: set[str] = set()

    def on_snapshot(self, snap: PositionSnapshot) -> None:
        """The first protection of each entry (a later stop move or re-protection is not an entry)."""
        if snap.trigger not in PROTECTED_TRIGGERS or snap.protect_latency_s is None or not snap.intent_id:
            return
        if snap.intent_id in self._seen_set:
            return
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(snap.intent_id)
        self._seen_set.add(snap.intent_id)
        self.entries.append((snap.updated_at, snap.symbol, round(snap.protect_latency_s, 6),
                             round(snap.naked_seconds, 6)))

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since, "fields": ["at", "symbol", "protect_latency_s", "naked_s"],
                "entries": [list(e) for e in self.entries]}
