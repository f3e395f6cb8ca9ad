"""A discrete-event harness: one PositionCore, the real ExchangeCore and a simulated
venue on one manual clock. Timers fire by advancing that clock, so a 24 s REST lag costs
no wall time and every run is deterministic."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from actors.exchange.core import ExchangeCore
from actors.journal.store import JournalStore
from actors.messages import (
    AdoptPosition,
    CancelLeftovers,
    ClosePosition,
    ClosuresFetched,
    ExitSet,
    FillStreamed,
    JournalCancel,
    JournalExit,
    JournalFailed,
    JournalOrder,
    JournalTransition,
    OpenPosition,
    OrderJournaled,
    OrderPlaced,
    OrderQueried,
    OrderStreamed,
    PlaceOrder,
    PositionObserved,
    PositionSnapshot,
    PositionStreamed,
    PositionTimer,
    Reprotect,
    StopOrderStreamed,
    StopsCancelled,
    StopSet,
)
from actors.position.core import PositionCore
from actors.position.states import State, Trigger
from actors.settings import PositionSettings
from adapters.base import Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig, EngineEvent
from adapters.sim.faults import Fault
from adapters.sim.stream import items_of
from adapters.sim.truth import TrueState
from adapters.streams import StreamFill, StreamOrder, StreamPosition, StreamStopOrder
from tests.support.kit import ManualClock

SYMBOL = "BTCUSDT"
PRICE = 100.0


def fast_settings(**kw) -> PositionSettings:
    base = dict(naked_deadline_s=10.0, entry_unknown_window_s=5.0, poll_s=0.2, retry_s=0.25,
                retry_cap_s=4.0, max_close_attempts=3, max_entry_retries=3, reply_timeout_s=15.0)
    base.update(kw)
    return PositionSettings(**base)


def venue(*faults: Fault, attached: bool = True, lag: float = 24.0, ack_only: bool = False,
          volatility: float = 0.0, stop_orders: bool = False) -> SimVenueConfig:
    """The simulated venue; `stop_orders`: stops are close-all orders that outlive their
    position (Binance's way; no stop travels with an entry there)."""
    return SimVenueConfig(
        engine=EngineConfig(seed=5, prices={SYMBOL: PRICE}, position_lag_s=lag, volatility=volatility),
        attached_stops=attached and not stop_orders, latency_s=0.0, orders_per_second=1e9, reads_per_second=1e9,
        ack_only=ack_only, faults=faults, stop_orders=stop_orders)


OPEN_HARNESSES: list[Harness] = []          # closed after each test (conftest), so no journal thread lingers


class InjectedCrash(Exception):
    """Raised inside a handler to play an actor dying at that point."""


@dataclass
class Harness:
    config: SimVenueConfig
    settings: PositionSettings = field(default_factory=fast_settings)
    fail_journal: bool = False
    crash_after: list[tuple[State, Trigger]] = field(default_factory=list)  # die right after journaling
                                                       # each of these edges, once, in order
    crash_on: Callable[[object], bool] | None = None   # die instead of receiving the first such message
    drop: Callable[[object], bool] | None = None       # lose every such message on its way to the core
    streams: bool = False                              # the venue's stream feeds the core too
    stream_fate: Callable[[object], str] | None = None  # per stream message: deliver | drop | twice | late

    def __post_init__(self) -> None:
        self.clock = ManualClock(10_000.0)
        self.adapter = SimulatedAdapter(self.config, clock=self.clock, sleep=self._pass_time)
        self.service = ExchangeCore(self.adapter)
        self.loop = asyncio.new_event_loop()
        self.store = JournalStore(":memory:")
        self.loop.run_until_complete(self.store.open())
        self.inbox: deque[object] = deque()
        self.timers: list[tuple[float, int, PositionTimer]] = []
        self._seq = 0
        self.to_venue: list[object] = []
        self.journal: list[object] = []
        self.published: list[PositionSnapshot] = []
        self.crashes = 0
        self.late: list[object] = []                   # stream messages held back, delivered at the next timer
        if self.streams:
            self.adapter.engine.listeners.append(self._streamed)
        OPEN_HARNESSES.append(self)
        self._start_core()

    def _streamed(self, event: EngineEvent) -> None:
        """What the stream tells the core (through the StreamActor), lies by omission included."""
        received = time.monotonic_ns()                   # as the exchange process stamps it
        for item in items_of(event):
            if isinstance(item, StreamOrder):
                msg: object = OrderStreamed(item.report, item.closed_by, received)
            elif isinstance(item, StreamFill):
                msg = FillStreamed(item.symbol, item.client_order_id)
            elif isinstance(item, StreamPosition):
                msg = PositionStreamed(item.symbol, item.position, item.stop_known, received)
            elif isinstance(item, StreamStopOrder):
                msg = StopOrderStreamed(item.order, item.open, item.ended, received)
            else:
                continue
            fate = self.stream_fate(msg) if self.stream_fate is not None else "deliver"
            if fate in ("deliver", "twice"):
                self.inbox.append(msg)
            if fate == "twice":
                self.inbox.append(msg)
            elif fate == "late":
                self.late.append(msg)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.run_until_complete(self.store.close())
        self.loop.close()
        if self in OPEN_HARNESSES:
            OPEN_HARNESSES.remove(self)

    def _start_core(self) -> None:
        """A fresh PositionCore that rebuilds itself from the journal, as a restarted actor does."""
        self.core = PositionCore(SYMBOL, self.adapter.capabilities, self.settings, self)
        self._guarded(lambda: self.core.recover(self.loop.run_until_complete(self.store.load_symbol(SYMBOL))))

    def crash(self) -> None:
        """The actor dies: its memory, its timers and every reply on its way to it are lost."""
        self.crashes += 1
        self.inbox.clear()
        self.timers.clear()
        self._start_core()

    def _guarded(self, action) -> object:
        try:
            return action()
        except InjectedCrash:
            self.crash()
            return None

    async def _pass_time(self, seconds: float) -> None:
        self.clock.t += seconds                              # a slow venue: the world waits with it

    # -- PositionPorts -------------------------------------------------------------------

    def to_exchange(self, msg: object) -> None:
        self.to_venue.append(msg)
        self.inbox.append(self.loop.run_until_complete(self.service.handle(msg)))

    def to_journal(self, msg: object) -> None:
        self.journal.append(msg)
        if not self.fail_journal:
            self.loop.run_until_complete(self.store.record(msg))
        if (isinstance(msg, JournalTransition) and self.crash_after
                and self.crash_after[0] == (State(msg.from_state), Trigger(msg.trigger))):
            self.crash_after.pop(0)
            raise InjectedCrash(f"after {msg.from_state} --{msg.trigger}-->")
        if isinstance(msg, JournalOrder):
            cid = msg.request.client_order_id
            if self.fail_journal:
                self.inbox.append(JournalFailed(cid, "disk full"))
            else:
                self.to_exchange(PlaceOrder(msg.request))     # the journal forwards once committed
                self.inbox.append(OrderJournaled(cid))
        elif isinstance(msg, JournalCancel | JournalExit):
            if self.fail_journal:
                self.inbox.append(JournalFailed(msg.request.request_id, "disk full"))
            else:
                self.to_exchange(msg.request)

    def publish(self, snapshot: PositionSnapshot) -> None:
        self.published.append(snapshot)

    def wake_after(self, seconds: float, timer: PositionTimer) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (self.clock.t + seconds, self._seq, timer))

    def monotonic(self) -> float:
        return self.clock.t

    def wall(self) -> float:
        return self.clock.t

    # -- driving -------------------------------------------------------------------------

    def open(self, qty: float = 1.0, stop: float = 95.0, side: Side = Side.BUY, tp: float | None = None,
             trail: float | None = None):
        return self._guarded(lambda: self.core.open(OpenPosition(SYMBOL, side, qty, stop, take_profit=tp,
                                                                 trail_pct=trail)))

    def adopt(self, qty: float = 1.0, stop: float | None = 95.0, side: Side = Side.BUY):
        return self._guarded(lambda: self.core.adopt(AdoptPosition(SYMBOL, side, qty, stop)))

    def reprotect(self, reason: str = "stop missing on the venue"):
        return self._guarded(lambda: self.core.reprotect(Reprotect(SYMBOL, reason)))

    def foreign_position(self, qty: float = 1.0, side: Side = Side.BUY) -> None:
        """Someone opened a position on the venue by hand, without a stop."""
        from adapters.base import OrderRequest

        self.adapter.engine.create_order(OrderRequest(SYMBOL, side, qty, f"manual-{self._seq}"), attached_stops=True)

    def close_position(self, qty: float | None = None):
        return self._guarded(lambda: self.core.close(ClosePosition(SYMBOL, qty=qty)))

    def amend(self, stop: float | None = None, breakeven: bool = False, tp: float | None = None,
              trail: float | None = None):
        from actors.messages import AmendPosition

        return self._guarded(lambda: self.core.amend(AmendPosition(SYMBOL, stop, breakeven, take_profit=tp,
                                                                   trail_pct=trail)))

    def observe(self, finding: str = "missing", missing: bool = False):
        """What a settled REST read shows of the symbol, as the ProtectionActor passes it (the
        lagging view; `missing`: a list read that left it out)."""
        seen = None if missing else next((p for p in self.adapter.engine.position_view() if p.symbol == SYMBOL), None)
        return self._guarded(lambda: self.core.observe(PositionObserved(SYMBOL, seen, finding)))

    def cancel_leftovers(self, *ids: str):
        return self._guarded(lambda: self.core.cancel_leftovers(CancelLeftovers(SYMBOL, ids)))

    def outside(self, action: str, **args) -> None:
        """Something done to the account outside posguard (adapters/sim/outside.py)."""
        from adapters.sim.outside import outside

        outside(self.adapter.engine, action, SYMBOL, **args)

    def working_stops(self) -> list:
        """Stop orders working on the venue (where stops are orders)."""
        return self.adapter.engine.stop_orders(SYMBOL)

    def deliver(self, msg: object) -> None:
        if self.drop is not None and self.drop(msg):
            return
        if self.crash_on is not None and self.crash_on(msg):
            self.crash_on = None
            self.crash()                                     # the message dies with the actor
            return
        self._guarded(lambda: self._dispatch(msg))

    def _dispatch(self, msg: object) -> None:
        match msg:
            case OrderJournaled():
                self.core.on_journaled(msg)
            case JournalFailed():
                self.core.on_journal_failed(msg)
            case OrderPlaced():
                self.core.on_order_placed(msg)
            case OrderQueried():
                self.core.on_order_queried(msg)
            case StopSet():
                self.core.on_stop_set(msg)
            case ExitSet():
                self.core.on_exit_set(msg)
            case PositionTimer():
                self.core.on_timer(msg)
            case OrderStreamed():
                self.core.on_order_streamed(msg)
            case FillStreamed():
                self.core.on_fill_streamed(msg)
            case PositionStreamed():
                self.core.on_position_streamed(msg)
            case StopOrderStreamed():
                self.core.on_stop_order_streamed(msg)
            case ClosuresFetched():
                self.core.on_closures(msg)
            case StopsCancelled():
                self.core.on_stops_cancelled(msg)
            case _:
                raise AssertionError(f"unexpected message {msg!r}")

    def run(self, until: float = 120.0) -> None:
        """Deliver messages; fire timers in time order; stop when idle or `until` seconds pass."""
        limit = self.clock.t + until
        while True:
            while self.inbox:
                self.deliver(self.inbox.popleft())
            if not self.timers or self.timers[0][0] > limit:
                self.clock.t = max(self.clock.t, limit)
                return
            due, _, timer = heapq.heappop(self.timers)
            self.clock.t = max(self.clock.t, due)
            self.inbox.extend(self.late)                   # what the stream held back arrives now
            self.late.clear()
            self.deliver(timer)

    def advance(self, seconds: float) -> None:
        self.run(until=seconds)

    # -- observations --------------------------------------------------------------------

    def truth(self) -> TrueState:
        return self.adapter.engine.true_state()

    def entries_on_venue(self) -> int:
        """Entries of ours (orders by hand, the venue's own closes and our adds not counted)."""
        return sum(1 for o in self.truth().orders if not o.reduce_only and o.client_order_id.startswith("pg")
                   and not o.client_order_id.startswith("pga"))

    def position_reads(self) -> int:
        return sum(1 for op, _ in self.adapter.calls if op == "fetch_positions")

    def venue_ops(self) -> list[str]:
        return [op for op, _ in self.adapter.calls]

    def sent(self, kind: type) -> list:
        return [m for m in self.to_venue if isinstance(m, kind)]

