"""Bounds written beside the fields they bound, once: `naked_deadline_s: Seconds[0.01, 300.0] = 10.0`.

Settings dataclasses annotate their fields with these; the config schema (supervisor/config/loader.py)
is built from those annotations, so a default and its bounds are never written twice, and a
number without an upper bound cannot be declared. At run time they are plain floats and ints.
"""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Gt, Le, MaxLen, MinLen


class Internal:
    """A field that is not configuration (crash tests' failpoints): the schema leaves it out."""

    def __class_getitem__(cls, kind: Any) -> Any:
        return Annotated[kind, cls]


class _Bounded:
    def __init__(self, kind: type) -> None:
        self.kind = kind

    def __getitem__(self, bounds: tuple[float, float]) -> Any:
        low, high = bounds
        return Annotated[self.kind, Ge(low), Le(high)]


class _Percent:
    def __getitem__(self, high: float) -> Any:
        return Annotated[float, Gt(0.0), Le(high)]


Seconds = _Bounded(float)            # Seconds[low, high], both inclusive
Number = _Bounded(float)
Count = _Bounded(int)
Percent = _Percent()                 # Percent[high]: above 0, at most high
Fraction = Annotated[float, Ge(0.0), Le(1.0)]
Price = Annotated[float, Gt(0.0), Le(1e12)]
Quantity = Annotated[float, Gt(0.0), Le(1e12)]
Text = Annotated[str, MinLen(1), MaxLen(4096)]
