"""PositionActor: a thin thespian shell around one PositionCore per symbol it guards.

A deployment of a few symbols runs one PositionActor per symbol (one process each: a crash
touches one symbol). A deployment of a whole venue groups them, K symbols per process
(`[supervision] symbols_per_process`): one OS process per symbol cannot start 1 000 of them
in seconds, nor keep their descriptors and memory small (README, "Sizing"). Either way each
symbol has its own core, journal rows, timers and client ids; this shell only routes: commands
and venue news by symbol, replies by the client order id the core sent.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import WakeupMessage

from actors.async_bridge import BridgedActor
from actors.failpoints import armed, kill_self
from actors.messages import (
    AdoptPosition,
    AmendPosition,
    CancelLeftovers,
    ClosePosition,
    ClosuresFetched,
    Collaborators,
    CommandAccepted,
    CommandDenied,
    ConfigurePosition,
    ExitSet,
    FetchPrice,
    FillStreamed,
    GetPositionState,
    JournalCancel,
    JournalExit,
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
    OrdersJournaled,
    OrderStreamed,
    PlaceOrder,
    PositionJournals,
    PositionObserved,
    PositionReady,
    PositionSnapshot,
    PositionSnapshots,
    PositionStreamed,
    PositionTimer,
    PriceFetched,
    QueryOrder,
    Reprotect,
    SafeModeChanged,
    StopOrderStreamed,
    StopsCancelled,
    StopSet,
    StreamGap,
)
from actors.position.core import PositionCore
from actors.position.states import State

RETRY_LOAD = "retry-journal-load"
REFERENCE = "reference-price"
FAILPOINT = "failpoint"
ORDERS_KEPT = 20_000                    # client id -> symbol, for replies (oldest forgotten first)

Command = OpenPosition | ClosePosition | AdoptPosition | Reprotect | PositionObserved | CancelLeftovers


@dataclasses.dataclass(frozen=True, slots=True)
class _Wake:
    """A core's timer, with the symbol whose core set it."""

    symbol: str
    timer: PositionTimer


class _Ports:
    """PositionPorts over thespian for one symbol's core: sends, wake-ups and clocks."""

    def __init__(self, actor: PositionActor, symbol: str, config: ConfigurePosition) -> None:
        self._actor = actor
        self.symbol = symbol
        self._observer = config.observer
        self._failpoints = config.settings.failpoints

    def to_exchange(self, msg: object) -> None:
        if isinstance(msg, PlaceOrder | QueryOrder):
            cid = msg.request.client_order_id if isinstance(msg, PlaceOrder) else msg.client_order_id
            self._actor.remember(cid, self.symbol)
        self._actor.send(self._actor.exchange, msg)

    def to_journal(self, msg: object) -> None:
        actor = self._actor
        if isinstance(msg, JournalOrder):
            # The journal sends the order on once it is committed; answers come straight to us.
            actor.remember(msg.request.client_order_id, self.symbol)
            msg = dataclasses.replace(msg, forward_to=actor.exchange, reply_to=actor.myAddress)
        elif isinstance(msg, JournalCancel | JournalExit):   # the same for a cancel of stop orders, an exit
            if isinstance(msg, JournalExit):
                actor.remember(msg.request.request_id, self.symbol)   # a journal failure finds its symbol
            msg = dataclasses.replace(msg, forward_to=actor.exchange,
                                      request=dataclasses.replace(msg.request, reply_to=actor.myAddress))
        actor.send(actor.journal, msg)
        if isinstance(msg, JournalTransition) and armed(f"{msg.from_state}:{msg.trigger}", self._failpoints):
            # Crash test: die once this edge is durable (the journal answers the sync after it).
            actor.send(actor.journal, JournalSync(reply_to=actor.myAddress, tag=FAILPOINT))

    def publish(self, snapshot: PositionSnapshot) -> None:
        self._actor.on_published(snapshot, self._observer)

    def wake_after(self, seconds: float, timer: PositionTimer) -> None:
        self._actor.wakeupAfter(timedelta(seconds=seconds), _Wake(self.symbol, timer))

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class PositionActor(BridgedActor):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.cores: dict[str, PositionCore] = {}
        self.exchange: Any = None
        self.journal: Any = None
        self.loaded: set[str] = set()                # symbols rebuilt from the journal
        self.ready_sent: set[str] = set()
        self.orders: OrderedDict[str, str] = OrderedDict()     # client order id -> symbol
        self.awaiting_price: dict[str, list[tuple[OpenPosition, Any]]] = {}   # opens waiting for a price
        # Sent once the handler is done: one message for what several cores said in it.
        self.published: list[tuple[Any, PositionSnapshot]] = []
        self.reconciled: list[str] = []
        self.answers: list[tuple[Any, CommandAccepted | CommandDenied]] = []

    def receiveMessage(self, message: Any, sender: Any) -> Any:  # noqa: N802 - thespian's name
        result = super().receiveMessage(message, sender)
        try:
            self._flush()
        except Exception:  # noqa: BLE001 - rule 5: thespian would re-run the message
            logger.exception("position: telling what changed failed")
        return result

    def _flush(self) -> None:
        """Taken out first: whatever happens while sending, nothing is sent twice."""
        published, reconciled, answers = self.published, self.reconciled, self.answers
        self.published, self.reconciled, self.answers = [], [], []
        if published:
            observer = published[0][0]
            snaps = tuple(s for _, s in published)
            if observer is not None:
                self.send(observer, snaps[0] if len(snaps) == 1 else PositionSnapshots(snaps))
        if reconciled and self.supervisor is not None:
            self.send(self.supervisor, PositionReady(tuple(reconciled)))
        # Answers last: whoever is told "accepted" (through the Supervisor, which also gets our
        # snapshots) and then asks for the state finds the command's effect, never the state before.
        for asker, answer in answers:
            self.send(asker, answer)

    def _answer(self, asker: Any, answer: CommandAccepted | CommandDenied) -> None:
        self.answers.append((asker, answer))

    # -- configuration -----------------------------------------------------------------------

    def receiveMsg_ConfigurePosition(self, msg: ConfigurePosition, sender: Any) -> None:  # noqa: N802
        self.supervisor = sender
        if self.cores:
            done = tuple(s for s, core in self.cores.items() if core.state is not State.RECOVERING)
            if done:
                self.send(sender, PositionReady(done))
            return
        self.exchange, self.journal = msg.exchange, msg.journal
        limits = dict(msg.risk)
        for symbol in msg.symbols:
            core = PositionCore(symbol, msg.capabilities, msg.settings, _Ports(self, symbol, msg), epoch=msg.epoch)
            core.safe_mode, core.risk = msg.safe_mode, limits.get(symbol)
            self.cores[symbol] = core
            core.ports.publish(core.snapshot())
            self.send(msg.exchange, FetchPrice(symbol))
        # Rebuild from the journal first, every symbol in one read (entries are refused until
        # then); this also opens the connection to the journal now, not on the first order's clock.
        self.send(msg.journal, LoadPositionJournal(msg.symbols))

    def on_published(self, snapshot: PositionSnapshot, observer: Any) -> None:
        """Ready means reconciled: a symbol's first snapshot past RECOVERING says so."""
        self.published.append((observer, snapshot))
        if snapshot.symbol not in self.ready_sent and snapshot.state != State.RECOVERING:
            self.ready_sent.add(snapshot.symbol)
            self.reconciled.append(snapshot.symbol)

    def remember(self, client_order_id: str, symbol: str) -> None:
        self.orders[client_order_id] = symbol
        self.orders.move_to_end(client_order_id)
        while len(self.orders) > ORDERS_KEPT:
            self.orders.popitem(last=False)

    def receiveMsg_SafeModeChanged(self, msg: SafeModeChanged, sender: Any) -> None:  # noqa: N802
        for core in self.cores.values():
            core.safe_mode = msg.reason or "on" if msg.on else None

    def receiveMsg_Collaborators(self, msg: Collaborators, sender: Any) -> None:  # noqa: N802
        if not self.cores:
            return
        self.exchange, self.journal = msg.exchange, msg.journal
        missing = tuple(s for s in self.cores if s not in self.loaded)
        if missing:                                      # our journal read may have died with it
            self.send(msg.journal, LoadPositionJournal(missing))
        for symbol, core in self.cores.items():
            if symbol in self.loaded:
                core.resync("exchange or journal was replaced")

    # -- commands, by symbol ---------------------------------------------------------------------

    def receiveMsg_OpenPosition(self, msg: OpenPosition, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        if core is not None and core.needs_reference(msg):
            # The limits need a price we have not seen lately: one read first (the common paths --
            # a stop given in percent, a fresh fill or warm-up -- never wait here).
            self._await_price(msg, sender)
            return
        self._answer(sender, core.open(msg) if core else self._not_here(msg))

    def _await_price(self, msg: OpenPosition | AmendPosition, sender: Any) -> None:
        waiting = self.awaiting_price.setdefault(msg.symbol, [])
        waiting.append((msg, sender))
        if len(waiting) == 1:
            self.send(self.exchange, FetchPrice(msg.symbol, request_id=REFERENCE))

    def receiveMsg_AmendPosition(self, msg: AmendPosition, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        if core is not None and core.needs_reference(msg):
            self._await_price(msg, sender)               # the limits judge the new stop from a price too
            return
        self._answer(sender, core.amend(msg) if core else self._not_here(msg))

    def receiveMsg_AdoptPosition(self, msg: AdoptPosition, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        self._answer(sender, core.adopt(msg) if core else self._not_here(msg))

    def receiveMsg_Reprotect(self, msg: Reprotect, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        self._answer(sender, core.reprotect(msg) if core else self._not_here(msg))

    def receiveMsg_ClosePosition(self, msg: ClosePosition, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        self._answer(sender, core.close(msg) if core else self._not_here(msg))

    def receiveMsg_PositionObserved(self, msg: PositionObserved, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        self._answer(sender, core.observe(msg) if core else self._not_here(msg))

    def receiveMsg_CancelLeftovers(self, msg: CancelLeftovers, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        self._answer(sender, core.cancel_leftovers(msg) if core else self._not_here(msg))

    def receiveMsg_GetPositionState(self, msg: GetPositionState, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol) if msg.symbol else next(iter(self.cores.values()), None)
        if core is not None:
            self.send(sender, core.snapshot())

    def _not_here(self, msg: Command) -> CommandDenied:
        return CommandDenied(msg.command_id, msg.symbol, f"this position actor does not guard {msg.symbol}")

    # -- journal and venue replies ---------------------------------------------------------------

    def receiveMsg_PositionJournals(self, msg: PositionJournals, sender: Any) -> None:  # noqa: N802
        for journal in msg.journals:
            core = self.cores.get(journal.symbol)
            if core is not None and journal.symbol not in self.loaded:
                self.loaded.add(journal.symbol)
                core.recover(journal)

    def receiveMsg_JournalFailed(self, msg: JournalFailed, sender: Any) -> None:  # noqa: N802
        if msg.client_order_id is None:                  # a journal read failed: read again what is missing
            logger.error("journal unreadable ({}); retrying", msg.error)
            self.wakeupAfter(timedelta(seconds=1), RETRY_LOAD)
            return
        core = self._by_order(msg.client_order_id)
        if core is not None:
            core.on_journal_failed(msg)

    def receiveMsg_OrderJournaled(self, msg: OrderJournaled, sender: Any) -> None:  # noqa: N802
        core = self._by_order(msg.client_order_id)
        if core is not None:
            core.on_journaled(msg)

    def receiveMsg_OrdersJournaled(self, msg: OrdersJournaled, sender: Any) -> None:  # noqa: N802
        for cid in msg.client_order_ids:
            self.receiveMsg_OrderJournaled(OrderJournaled(cid), sender)

    def receiveMsg_OrderPlaced(self, msg: OrderPlaced, sender: Any) -> None:  # noqa: N802
        core = self._by_order(msg.client_order_id)
        if core is not None:
            core.on_order_placed(msg)

    def receiveMsg_OrderQueried(self, msg: OrderQueried, sender: Any) -> None:  # noqa: N802
        core = self._by_order(msg.client_order_id)
        if core is not None:
            core.on_order_queried(msg)

    def receiveMsg_ExitSet(self, msg: ExitSet, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        if core is not None:
            core.on_exit_set(msg)

    def receiveMsg_StopSet(self, msg: StopSet, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        if core is not None:
            core.on_stop_set(msg)

    def receiveMsg_ClosuresFetched(self, msg: ClosuresFetched, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        if core is not None:
            core.on_closures(msg)

    def receiveMsg_StopsCancelled(self, msg: StopsCancelled, sender: Any) -> None:  # noqa: N802
        core = self.cores.get(msg.symbol)
        if core is not None:
            core.on_stops_cancelled(msg)

    def receiveMsg_PriceFetched(self, msg: PriceFetched, sender: Any) -> None:  # noqa: N802
        """The warm-up's answer, or the reference price opens were waiting for."""
        core = self.cores.get(msg.symbol)
        if core is None:
            return
        core.note_price(msg.price)
        if msg.request_id == REFERENCE:
            for cmd, asker in self.awaiting_price.pop(msg.symbol, []):
                # without a price, each says so itself
                self._answer(asker, core.open(cmd) if isinstance(cmd, OpenPosition) else core.amend(cmd))

    def _by_order(self, client_order_id: str) -> PositionCore | None:
        symbol = self.orders.get(client_order_id)
        return self.cores.get(symbol) if symbol is not None else None

    # -- streams ---------------------------------------------------------------------------------

    def receiveMsg_OrderStreamed(self, msg: OrderStreamed, sender: Any) -> None:  # noqa: N802
        if msg.report.symbol in self.loaded:
            self.cores[msg.report.symbol].on_order_streamed(msg)

    def receiveMsg_FillStreamed(self, msg: FillStreamed, sender: Any) -> None:  # noqa: N802
        if msg.symbol in self.loaded:
            self.cores[msg.symbol].on_fill_streamed(msg)

    def receiveMsg_PositionStreamed(self, msg: PositionStreamed, sender: Any) -> None:  # noqa: N802
        if msg.symbol in self.loaded:
            self.cores[msg.symbol].on_position_streamed(msg)

    def receiveMsg_StopOrderStreamed(self, msg: StopOrderStreamed, sender: Any) -> None:  # noqa: N802
        if msg.order.symbol in self.loaded:
            self.cores[msg.order.symbol].on_stop_order_streamed(msg)

    def receiveMsg_StreamGap(self, msg: StreamGap, sender: Any) -> None:  # noqa: N802
        for symbol in self.loaded:
            self.cores[symbol].on_stream_gap()

    # -- timers and syncs ------------------------------------------------------------------------

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:  # noqa: N802
        if isinstance(msg.payload, _Wake):
            core = self.cores.get(msg.payload.symbol)
            if core is not None:
                core.on_timer(msg.payload.timer)
        elif msg.payload == RETRY_LOAD:
            missing = tuple(s for s in self.cores if s not in self.loaded)
            if missing:
                self.send(self.journal, LoadPositionJournal(missing))

    def receiveMsg_JournalSync(self, msg: JournalSync, sender: Any) -> None:  # noqa: N802
        # Same sender as our journal writes, so it is delivered after them.
        self.send(self.journal, JournalSync(reply_to=msg.reply_to or sender))

    def receiveMsg_JournalSynced(self, msg: JournalSynced, sender: Any) -> None:  # noqa: N802
        if msg.tag == FAILPOINT:
            kill_self()

    def on_handler_error(self, message: Any, sender: Any, exc: Exception) -> None:
        # A core's state may be half-changed: answer, and ask to be replaced (a new actor rebuilds
        # every core it guards from the journal and the venue).
        if isinstance(message, Command):
            self.answers = []                            # what the handler queued is not to be trusted
            self.send(sender, CommandDenied(message.command_id, message.symbol, f"internal error: {exc}"))
        super().on_handler_error(message, sender, exc)
