"""A tiny generic state machine driven by an explicit transition table."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)
T = TypeVar("T", bound=Hashable)


class InvalidTransition(Exception):
    """The table has no edge for this (state, trigger)."""


class FSM(Generic[S, T]):
    """Holds one state; `apply` is the only way to change it."""

    def __init__(self, table: Mapping[tuple[S, T], S], initial: S) -> None:
        self._table = table
        self._state = initial

    @property
    def state(self) -> S:
        return self._state

    def can(self, trigger: T) -> bool:
        return (self._state, trigger) in self._table

    def apply(self, trigger: T) -> S:
        """Move along the edge; raises InvalidTransition if there is none."""
        try:
            self._state = self._table[(self._state, trigger)]
        except KeyError:
            raise InvalidTransition(f"{self._state} --{trigger}--> ?") from None
        return self._state
