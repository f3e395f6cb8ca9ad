"""Safe mode, as the Supervisor keeps it: on past the restart intensity, when the journal cannot
write, when a venue's preflight fails after a restart, or for a stop with --flatten; off only
by an operator. While on, no new entry is taken anywhere (every PositionActor hears of it);
stops and closes keep working. It outlives the program: the journal holds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loguru import logger

from actors.messages import JournalSafeMode, SafeModeChanged
from supervisor.children import Children
from supervisor.metrics import Metrics
from supervisor.specs import ChildKind


class SafeMode:
    def __init__(self, children: Children, send: Callable[[Any, Any], None], tell_api: Callable[[], None],
                 metrics: Callable[[], Metrics | None]) -> None:
        self.children, self.send, self.tell_api, self.metrics = children, send, tell_api, metrics
        self.on = False
        self.reason = ""

    @property
    def why(self) -> str | None:
        """Why new entries are refused (None: they are taken)."""
        return self.reason if self.on else None

    def enter(self, reason: str, carried: bool = False) -> None:
        """`carried`: still on from an earlier run (the journal said so): not written again."""
        self.on, self.reason = True, reason
        self.tell()
        if carried:
            logger.critical("ALERT SAFE MODE still on from an earlier run: {}. `posguard resume` leaves it.", reason)
        else:
            self.persist(True, reason)
        if (metrics := self.metrics()) is not None:
            metrics.safe_mode.set(1)
        logger.critical("ALERT SAFE MODE: {}. New entries are refused; stops and closes keep working."
                        " An operator leaves safe mode explicitly.", reason)

    def enter_once(self, reason: str) -> None:
        if not self.on:
            self.enter(reason)

    def leave(self, by: str) -> None:
        if not self.on:
            return
        logger.warning("safe mode left by {} (was: {})", by, self.reason)
        self.on, self.reason = False, ""
        self.persist(False, by)
        self.tell()
        if (metrics := self.metrics()) is not None:
            metrics.safe_mode.set(0)

    def tell(self) -> None:
        """Entries are refused where they are made: every PositionActor hears of it."""
        self.tell_api()
        for child in self.children.positions():
            if child.address is not None:
                self.send(child.address, SafeModeChanged(self.on, self.reason))

    def persist(self, on: bool, reason: str) -> None:
        journal = self.children.address(ChildKind.JOURNAL)
        if journal is None:
            return                        # written when the journal is (back) up: see JournalReady
        self.send(journal, JournalSafeMode(on, reason))

    def rewrite(self) -> None:
        """A restarted journal may have missed a change while it was down: write the state again."""
        self.persist(self.on, self.reason or "resumed")
