"""The one back-off: a delay doubling from `base` to `cap`, spread by +-`jitter` (a fraction)
when a random source is given. Restarts of children, stream reconnects, venue start attempts and
a position's retries all use it."""

from __future__ import annotations

import random


def doubling_delay(base: float, cap: float, attempt: int, jitter: float = 0.0,
                   rng: random.Random | None = None) -> float:
    """Delay before retry `attempt` (0-based)."""
    delay = min(cap, base * 2 ** min(max(0, attempt), 62))     # the exponent bounded: no overflow
    if rng is not None and jitter:
        delay *= 1.0 + rng.uniform(-jitter, jitter)
    return max(0.0, delay)
