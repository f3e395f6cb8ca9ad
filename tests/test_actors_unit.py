"""Each actor in isolation on simpleSystemBase (one process, no sockets), with fake collaborators."""

from __future__ import annotations

import threading
from typing import Any

from thespian.actors import Actor, PoisonMessage

from actors.exchange.actor import ExchangeActor
from actors.messages import (
    ActorFailed,
    ClosePosition,
    CommandAccepted,
    CommandDenied,
    ConfigureExchange,
    ConfigurePosition,
    ExchangeReady,
    GetPositionState,
    JournalOrder,
    LoadPositionJournal,
    OpenPosition,
    OrderJournaled,
    OrderPlaced,
    PlaceOrder,
    PositionJournal,
    PositionJournals,
    PositionReady,
    PositionSnapshot,
    SafeModeChanged,
)
from actors.position.actor import PositionActor
from adapters.base import (
    Capabilities,
    OrderReport,
    OrderRequest,
    OrderStatus,
    PositionReport,
    Side,
    VenueAdapter,
    VenueError,
)
from adapters.errors import Outcome

CAPS = Capabilities(venue="fake", attached_stop=True, orders_per_second=1000.0, dialect="bybit",
                    reads_per_second=1000.0)


class Recorder(Actor):
    """Fake journal + exchange: acks journal writes, fills orders with their attached stop."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.waiting: list[tuple[str, Any]] = []

    def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
        if msg == "records":
            self.send(sender, list(self.seen))
            return
        if isinstance(msg, tuple) and msg[0] == "await_state":       # reply once a snapshot shows it
            self.waiting.append((msg[1], sender))
        else:
            self.seen.append(msg)
        for state, asker in list(self.waiting):
            match = [m for m in self.seen if isinstance(m, PositionSnapshot) and m.state == state]
            if match:
                self.waiting.remove((state, asker))
                self.send(asker, match[-1])
        if isinstance(msg, LoadPositionJournal):
            self.send(sender, PositionJournals(tuple(PositionJournal(s) for s in msg.symbols)))   # empty
        elif isinstance(msg, JournalOrder):
            if msg.forward_to is not None:
                self.send(msg.forward_to, PlaceOrder(msg.request, reply_to=msg.reply_to))
            self.send(sender, OrderJournaled(msg.request.client_order_id))
        elif isinstance(msg, PlaceOrder):
            r = msg.request
            self.send(msg.reply_to or sender, OrderPlaced(msg.request_id, r.client_order_id, OrderReport(
                r.symbol, r.client_order_id, "v1", r.side, r.qty, OrderStatus.FILLED, r.qty, 100.0,
                stop_price=r.stop_price)))


def configured_position(asys: Any) -> tuple[Any, Any]:
    fake = asys.createActor(Recorder)
    pos = asys.createActor(PositionActor)
    assert isinstance(asys.ask(pos, ConfigurePosition(("BTCUSDT",), fake, fake, CAPS, observer=fake), 2), PositionReady)
    return pos, fake


def test_position_actor_journals_then_sends_then_reports_protected(simple_system):
    pos, fake = configured_position(simple_system)
    reply = simple_system.ask(pos, OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0), 2)
    assert isinstance(reply, CommandAccepted)
    snap = simple_system.ask(fake, ("await_state", "PROTECTED"), 2)
    assert isinstance(snap, PositionSnapshot) and snap.stop_price == 95.0
    assert simple_system.ask(pos, GetPositionState(), 2).state == "PROTECTED"
    seen = simple_system.ask(fake, "records", 2)
    kinds = [type(m).__name__ for m in seen]
    assert kinds.index("JournalOrder") < kinds.index("PlaceOrder")
    assert "FetchPositions" not in kinds


def test_position_actor_denies_a_bad_command_without_side_effects(simple_system):
    pos, fake = configured_position(simple_system)
    assert isinstance(simple_system.ask(fake, ("await_state", "IDLE"), 2), PositionSnapshot)   # recovered
    before = simple_system.ask(fake, "records", 2)
    reply = simple_system.ask(pos, OpenPosition("BTCUSDT", Side.BUY, -1.0, 95.0), 2)
    assert isinstance(reply, CommandDenied) and "qty" in reply.reason
    assert simple_system.ask(fake, "records", 2) == before


def test_safe_mode_is_enforced_by_the_position_actor_whoever_sends_the_entry(simple_system):
    fake = simple_system.createActor(Recorder)
    pos = simple_system.createActor(PositionActor)
    configure = ConfigurePosition(("BTCUSDT",), fake, fake, CAPS, observer=fake, safe_mode="3 restarts within 60s")
    assert isinstance(simple_system.ask(pos, configure, 2), PositionReady)
    refused = simple_system.ask(pos, OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0), 2)   # straight to the actor
    assert isinstance(refused, CommandDenied) and "safe mode (3 restarts" in refused.reason
    assert not any(isinstance(m, JournalOrder | PlaceOrder) for m in simple_system.ask(fake, "records", 2))
    simple_system.tell(pos, SafeModeChanged(False))
    assert isinstance(simple_system.ask(pos, OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0), 2), CommandAccepted)
    simple_system.tell(pos, SafeModeChanged(True, "operator"))
    assert simple_system.ask(fake, ("await_state", "PROTECTED"), 2) is not None
    again = simple_system.ask(pos, ClosePosition("BTCUSDT"), 2)
    assert isinstance(again, CommandAccepted)                          # closing always works in safe mode


class Exploding(PositionActor):
    runs = 0

    def receiveMsg_OpenPosition(self, msg: Any, sender: Any) -> None:  # noqa: N802
        type(self).runs += 1
        raise RuntimeError("boom")


def test_a_failing_handler_is_not_rerun_by_the_runtime(simple_system):
    # thespian re-delivers a message whose handler raised (3 runs on this base); ours must run once
    # and answer, because a handler may already have journaled or sent an order.
    Exploding.runs = 0
    actor = simple_system.createActor(Exploding)
    reply = simple_system.ask(actor, OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0), 2)
    assert Exploding.runs == 1
    assert isinstance(reply, CommandDenied) and not isinstance(reply, PoisonMessage)
    assert "internal error" in reply.reason


class GatedAdapter(VenueAdapter):
    """create_order for SLOWUSDT waits for a gate the test holds; everything else answers at once."""

    gate = threading.Event()
    calls: list[str] = []
    capabilities = CAPS

    async def create_order(self, request: OrderRequest) -> OrderReport:
        import asyncio

        type(self).calls.append(request.symbol)
        if request.symbol == "SLOWUSDT":
            while not self.gate.is_set():
                await asyncio.sleep(0.001)
        if request.symbol == "BADUSDT":
            raise KeyError("adapter bug")
        if request.symbol == "REJECTUSDT":
            raise VenueError(110007, "ab not enough for new order")
        return OrderReport(request.symbol, request.client_order_id, "v", request.side, request.qty,
                           OrderStatus.FILLED, request.qty, 1.0)

    async def set_stop(self, symbol: str, stop_price: float, position_side: Side | None = None) -> float | None:
        return None

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderReport:
        raise VenueError(110001, "not found")

    async def fetch_price(self, symbol: str) -> float:
        return 1.0

    async def fetch_positions(self) -> list[PositionReport]:
        return []


def place(symbol: str, cid: str) -> PlaceOrder:
    return PlaceOrder(OrderRequest(symbol, Side.BUY, 1.0, cid))


def exchange(asys: Any) -> Any:
    GatedAdapter.gate.clear()
    GatedAdapter.calls = []
    ex = asys.createActor(ExchangeActor)
    assert isinstance(asys.ask(ex, ConfigureExchange(GatedAdapter, watch=False), 2), ExchangeReady)
    return ex


def test_a_slow_call_for_one_symbol_does_not_hold_up_another(simple_system):
    ex = exchange(simple_system)
    simple_system.tell(ex, place("SLOWUSDT", "slow"))
    fast = simple_system.ask(ex, place("FASTUSDT", "fast"), 5)
    assert isinstance(fast, OrderPlaced) and fast.client_order_id == "fast" and fast.report is not None
    assert not GatedAdapter.gate.is_set()                  # the slow call is still in flight
    GatedAdapter.gate.set()
    slow = simple_system.listen(5)
    assert isinstance(slow, OrderPlaced) and slow.client_order_id == "slow"


def test_exchange_classifies_venue_errors_and_local_bugs_without_rerunning(simple_system):
    ex = exchange(simple_system)
    rejected = simple_system.ask(ex, place("REJECTUSDT", "r"), 5)
    assert rejected.failure.outcome is Outcome.REJECTED and rejected.failure.code == "110007"
    bug = simple_system.ask(ex, place("BADUSDT", "b"), 5)
    assert bug.failure.outcome is Outcome.BUG
    assert GatedAdapter.calls.count("BADUSDT") == 1


def broken_factory() -> VenueAdapter:
    raise RuntimeError("cannot reach venue")


def test_exchange_reports_a_failed_start_instead_of_crashing(simple_system):
    ex = simple_system.createActor(ExchangeActor)
    reply = simple_system.ask(ex, ConfigureExchange(broken_factory, watch=False), 2)
    assert isinstance(reply, ActorFailed) and "cannot reach venue" in reply.reason


class HungAdapter(GatedAdapter):
    async def create_order(self, request: OrderRequest) -> OrderReport:
        import asyncio

        await asyncio.Event().wait()                      # the venue never answers
        raise AssertionError("unreachable")


def test_a_hung_venue_call_times_out_as_an_unknown_outcome():
    import asyncio

    from actors.exchange.core import ExchangeCore

    service = ExchangeCore(HungAdapter(), call_timeout_s=0.05)
    reply = asyncio.run(service.handle(place("BTCUSDT", "hung")))
    assert isinstance(reply, OrderPlaced) and reply.failure is not None
    assert reply.failure.outcome is Outcome.UNKNOWN              # query by client id, never resend


def test_every_handler_is_named_for_a_message_it_can_receive():
    # thespian finds a handler by the name receiveMsg_<message class>: a misspelt one is never
    # called and its message is dropped as unknown (found: the Supervisor's StopRequest).
    import inspect

    import thespian.actors

    from actors import messages
    from actors.exchange.actor import ExchangeActor
    from actors.journal.actor import JournalActor
    from actors.position.actor import PositionActor
    from actors.protection import ProtectionActor
    from actors.stream import StreamActor
    from supervisor.api.actor import ApiActor
    from supervisor.supervisor import Supervisor

    known = {name for name, value in [*vars(messages).items(), *vars(thespian.actors).items()]
             if inspect.isclass(value)}
    for actor in (ExchangeActor, JournalActor, PositionActor, ProtectionActor, StreamActor, ApiActor, Supervisor):
        handlers = [name for name in dir(actor) if name.startswith("receiveMsg")]
        assert handlers, actor
        wrong = [h for h in handlers if not h.startswith("receiveMsg_") or h.removeprefix("receiveMsg_") not in known]
        assert not wrong, (actor.__name__, wrong)


def test_a_stream_gap_reaches_each_position_process_once_however_many_symbols_it_hosts():
    # A process hosting 25 symbols told 25 times asked the venue 25 times per open order, on the
    # reads pacer everything else queues on.
    from actors.messages import StreamGap
    from actors.stream import StreamActor

    stream = StreamActor.__new__(StreamActor)              # its bookkeeping, without a system
    stream.positions = {"A": "proc-1", "B": "proc-1", "C": "proc-2"}
    stream.protection, stream.supervisor, stream.stream = None, None, "private"
    stream.reconnects, stream.gap_s, stream.reconciling = 0, 0.0, None
    sent: list[tuple[Any, Any]] = []
    stream.send = lambda to, msg: sent.append((to, msg))   # type: ignore[method-assign]
    stream._reconcile("reconnected")
    gaps = sorted(to for to, msg in sent if isinstance(msg, StreamGap))
    assert gaps == ["proc-1", "proc-2"]
