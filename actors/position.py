"""PositionActor: one per symbol; a thin thespian shell around PositionCore."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import WakeupMessage

from actors.async_bridge import BridgedActor
from actors.failpoints import armed, kill_self
from actors.messages import (
    AdoptPosition,
    ClosePosition,
    Collaborators,
    CommandDenied,
    ConfigurePosition,
    FetchPrice,
    FillStreamed,
    GetPositionState,
    JournalFailed,
    JournalOrder,
    JournalSync,
    JournalSynced,
    JournalTransition,
    LoadPositionJournal,
    OpenPosition,
    OrderJournaled,
    OrderPlaced,
    OrderQueried,
    OrderStreamed,
    PositionJournal,
    PositionReady,
    PositionSnapshot,
    PositionTimer,
    PriceFetched,
    Reprotect,
    SafeModeChanged,
    StopSet,
    StreamGap,
)
from actors.position_core import PositionCore
from actors.position_states import State

RETRY_LOAD = "retry-journal-load"
REFERENCE = "reference-price"
FAILPOINT = "failpoint"


class _ActorPorts:
    """PositionPorts over thespian: sends, wake-ups and clocks."""

    def __init__(self, actor: PositionActor, config: ConfigurePosition) -> None:
        self._actor = actor
        self.exchange = config.exchange
        self.journal = config.journal
        self._observer = config.observer
        self._failpoints = config.settings.failpoints

    def to_exchange(self, msg: object) -> None:
        self._actor.send(self.exchange, msg)

    def to_journal(self, msg: object) -> None:
        if isinstance(msg, JournalOrder):
            # The journal sends the order on once it is committed; answers come straight to us.
            msg = dataclasses.replace(msg, forward_to=self.exchange, reply_to=self._actor.myAddress)
        self._actor.send(self.journal, msg)
        if isinstance(msg, JournalTransition) and armed(f"{msg.from_state}:{msg.trigger}", self._failpoints):
            # Crash test: die once this edge is durable (the journal answers the sync after it).
            self._actor.send(self.journal, JournalSync(reply_to=self._actor.myAddress, tag=FAILPOINT))

    def publish(self, snapshot: PositionSnapshot) -> None:
        if self._observer is not None:
            self._actor.send(self._observer, snapshot)
        self._actor.on_published(snapshot)

    def wake_after(self, seconds: float, timer: PositionTimer) -> None:
        self._actor.wakeupAfter(timedelta(seconds=seconds), timer)

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class PositionActor(BridgedActor):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.core: PositionCore | None = None
        self.ports: _ActorPorts | None = None
        self._ready_sent = False
        self._loaded = False
        self.awaiting_price: list[tuple[OpenPosition, Any]] = []   # opens waiting for a reference price

    def receiveMsg_ConfigurePosition(self, msg: ConfigurePosition, sender: Any) -> None:  # noqa: N802
        self.supervisor = sender
        if self.core is None:
            self.ports = ports = _ActorPorts(self, msg)
            self.core = PositionCore(msg.symbol, msg.capabilities, msg.settings, ports)
            self.core.safe_mode, self.core.risk = msg.safe_mode, msg.risk
            ports.publish(self.core.snapshot())
            # Rebuild from the journal first (entries are refused until then); this also opens the
            # connection to the journal now rather than on the first order's clock.
            self.send(msg.journal, LoadPositionJournal(msg.symbol))
            self.send(msg.exchange, FetchPrice(msg.symbol))
        elif self.core.state is not State.RECOVERING:
            self.send(sender, PositionReady(msg.symbol))

    def on_published(self, snapshot: PositionSnapshot) -> None:
        """Ready means reconciled: the first snapshot past RECOVERING tells whoever configured us."""
        if not self._ready_sent and snapshot.state != State.RECOVERING and self.supervisor is not None:
            self._ready_sent = True
            self.send(self.supervisor, PositionReady(snapshot.symbol))

    def receiveMsg_SafeModeChanged(self, msg: SafeModeChanged, sender: Any) -> None:  # noqa: N802
        if self.core is not None:
            self.core.safe_mode = msg.reason or "on" if msg.on else None

    def receiveMsg_OpenPosition(self, msg: OpenPosition, sender: Any) -> None:  # noqa: N802
        if self.core is not None and self.core.needs_reference(msg):
            # The limits need a price we have not seen lately: one read first (the common paths --
            # a stop given in percent, a fresh fill or warm-up -- never wait here).
            self.awaiting_price.append((msg, sender))
            if len(self.awaiting_price) == 1:
                self.send(self._ports().exchange, FetchPrice(msg.symbol, request_id=REFERENCE))
            return
        self.send(sender, self.core.open(msg) if self.core else self._not_ready(msg.command_id, msg.symbol))

    def receiveMsg_AdoptPosition(self, msg: AdoptPosition, sender: Any) -> None:  # noqa: N802
        self.send(sender, self.core.adopt(msg) if self.core else self._not_ready(msg.command_id, msg.symbol))

    def receiveMsg_Reprotect(self, msg: Reprotect, sender: Any) -> None:  # noqa: N802
        self.send(sender, self.core.reprotect(msg) if self.core else self._not_ready(msg.command_id, msg.symbol))

    def receiveMsg_ClosePosition(self, msg: ClosePosition, sender: Any) -> None:  # noqa: N802
        self.send(sender, self.core.close(msg) if self.core else self._not_ready(msg.command_id, msg.symbol))

    def receiveMsg_GetPositionState(self, msg: GetPositionState, sender: Any) -> None:  # noqa: N802
        if self.core is not None:
            self.send(sender, self.core.snapshot())

    def receiveMsg_OrderJournaled(self, msg: OrderJournaled, sender: Any) -> None:  # noqa: N802
        self._core().on_journaled(msg)

    def receiveMsg_JournalFailed(self, msg: JournalFailed, sender: Any) -> None:  # noqa: N802
        if msg.client_order_id is None and self._core().state is State.RECOVERING:
            logger.error("{}: journal unreadable ({}); retrying", self._core().symbol, msg.error)
            self.wakeupAfter(timedelta(seconds=1), RETRY_LOAD)
            return
        self._core().on_journal_failed(msg)

    def receiveMsg_PositionJournal(self, msg: PositionJournal, sender: Any) -> None:  # noqa: N802
        self._loaded = True
        self._core().recover(msg)

    def receiveMsg_OrderPlaced(self, msg: OrderPlaced, sender: Any) -> None:  # noqa: N802
        self._core().on_order_placed(msg)

    def receiveMsg_OrderQueried(self, msg: OrderQueried, sender: Any) -> None:  # noqa: N802
        self._core().on_order_queried(msg)

    def receiveMsg_StopSet(self, msg: StopSet, sender: Any) -> None:  # noqa: N802
        self._core().on_stop_set(msg)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:  # noqa: N802
        if isinstance(msg.payload, PositionTimer):
            self._core().on_timer(msg.payload)
        elif msg.payload == RETRY_LOAD and self._core().state is State.RECOVERING:
            self.send(self._ports().journal, LoadPositionJournal(self._core().symbol))

    def receiveMsg_JournalSync(self, msg: JournalSync, sender: Any) -> None:  # noqa: N802
        # Same sender as our journal writes, so it is delivered after them.
        self.send(self._ports().journal, JournalSync(reply_to=msg.reply_to or sender))

    def receiveMsg_JournalSynced(self, msg: JournalSynced, sender: Any) -> None:  # noqa: N802
        if msg.tag == FAILPOINT:
            kill_self()

    def receiveMsg_PriceFetched(self, msg: PriceFetched, sender: Any) -> None:  # noqa: N802
        """The warm-up's answer, or the reference price opens were waiting for."""
        if self.core is None:
            return
        self.core.note_price(msg.price)
        if msg.request_id == REFERENCE:
            waiting, self.awaiting_price = self.awaiting_price, []
            for cmd, asker in waiting:
                self.send(asker, self.core.open(cmd))    # without a price, it says so itself

    def _core(self) -> PositionCore:
        if self.core is None:
            raise RuntimeError("PositionActor got a venue reply before it was configured")
        return self.core

    def _ports(self) -> _ActorPorts:
        if self.ports is None:
            raise RuntimeError("PositionActor is not configured")
        return self.ports

    @staticmethod
    def _not_ready(command_id: str, symbol: str) -> CommandDenied:
        return CommandDenied(command_id, symbol, "position actor is not configured yet")

    def receiveMsg_OrderStreamed(self, msg: OrderStreamed, sender: Any) -> None:  # noqa: N802
        if self.core is not None and self._loaded:
            self.core.on_order_streamed(msg)

    def receiveMsg_FillStreamed(self, msg: FillStreamed, sender: Any) -> None:  # noqa: N802
        if self.core is not None and self._loaded:
            self.core.on_fill_streamed(msg)

    def receiveMsg_StreamGap(self, msg: StreamGap, sender: Any) -> None:  # noqa: N802
        if self.core is not None and self._loaded:
            self.core.on_stream_gap()

    def receiveMsg_Collaborators(self, msg: Collaborators, sender: Any) -> None:  # noqa: N802
        if self.ports is None:
            return
        self.ports.exchange, self.ports.journal = msg.exchange, msg.journal
        if not self._loaded:                             # our journal read may have died with it
            self.send(msg.journal, LoadPositionJournal(self._core().symbol))
            return
        self._core().resync("exchange or journal was replaced")

    def on_handler_error(self, message: Any, sender: Any, exc: Exception) -> None:
        # Our state may be half-changed: answer, and ask to be replaced (a new actor rebuilds
        # from the journal and the venue).
        if isinstance(message, OpenPosition | ClosePosition | AdoptPosition | Reprotect):
            self.send(sender, CommandDenied(message.command_id, message.symbol, f"internal error: {exc}"))
        super().on_handler_error(message, sender, exc)
