"""Messages survive pickling (thespian sends them between processes); the journal's schema is
versioned and its order rows are written before anything is sent."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
import pickle
import pkgutil
import sqlite3
from typing import Any

import pytest

import actors.messages as messages
import actors.settings as settings
from actors.journal.store import SCHEMA_VERSION, JournalStore
from actors.messages import JournalIntent, JournalOrder, JournalOrderUpdate, JournalTransition, PositionSnapshot
from actors.position.states import State, TimerKind, Trigger
from adapters.base import OrderRequest, Side
from supervisor.api.actor import position_json
from supervisor.api.protocol import encode, event_line


def message_classes() -> list[type]:
    """Every message and every setting: the package re-exports each message from one place."""
    found = [c for module in (messages, settings) for _, c in inspect.getmembers(module, inspect.isclass)
             if dataclasses.is_dataclass(c) and c.__module__.startswith((messages.__name__, settings.__name__))]
    defined = {c for module in pkgutil.iter_modules(messages.__path__)
               for _, c in inspect.getmembers(importlib.import_module(f"{messages.__name__}.{module.name}"),
                                              inspect.isclass) if c.__module__.startswith(messages.__name__)}
    missing = sorted(c.__name__ for c in defined - set(found))
    assert not missing, f"not re-exported by actors.messages: {missing}"
    return found


@pytest.mark.parametrize("cls", message_classes(), ids=lambda c: c.__name__)
def test_every_message_is_a_frozen_documented_picklable_value(cls):
    assert cls.__dataclass_params__.frozen
    assert cls.__doc__ and cls.__doc__.strip()
    required = {f.name: _sample(f.type) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    msg = cls(**required)
    assert pickle.loads(pickle.dumps(msg)) == msg
    for f in dataclasses.fields(cls)[:1]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(msg, f.name, None)


def _sample(annotation: str):
    text = str(annotation)
    if "OrderRequest" in text:
        return OrderRequest("BTCUSDT", Side.BUY, 1.0, "pgeabc")
    if "PositionSnapshot" in text:
        return PositionSnapshot("BTCUSDT", State.IDLE)
    if text.startswith("Side"):
        return Side.BUY
    for enum in (State, Trigger, TimerKind):
        if text == enum.__name__:
            return next(iter(enum))
    if text.startswith("float"):
        return 1.0
    if text.startswith("tuple"):
        return ()
    if text.startswith("bool"):
        return True
    if "Capabilities" in text:
        from adapters.base import Capabilities
        return Capabilities("sim", True, 10.0, "bybit")
    if "Outcome" in text:
        from adapters.errors import Outcome
        return Outcome.UNKNOWN
    if "Callable" in text:
        return len
    return "x"


def test_journal_schema_is_versioned_and_migrations_run_once(tmp_path):
    path = str(tmp_path / "j.sqlite")

    async def open_twice() -> tuple[int, int]:
        first = JournalStore(path)
        v1 = await first.open()
        await first.record(JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pge1"), "i1", "entry"))
        await first.close()
        second = JournalStore(path)
        v2 = await second.open()                       # must not re-create tables (would fail)
        rows = await second.orders()
        await second.close()
        assert [r["client_order_id"] for r in rows] == ["pge1"]
        return v1, v2

    assert asyncio.run(open_twice()) == (SCHEMA_VERSION, SCHEMA_VERSION)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(RuntimeError, match="newer"):
        asyncio.run(JournalStore(path).open())


def test_journal_records_order_outcomes_and_transitions(tmp_path):
    async def scenario():
        store = JournalStore(str(tmp_path / "j.sqlite"))
        await store.open()
        await store.record(JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 2.0, "pge1", stop_price=90.0), "i1", "entry"))
        await store.record(JournalOrderUpdate("pge1", "filled", 2.0, 100.0, "v9"))
        snap = PositionSnapshot("BTCUSDT", "PROTECTED", Side.BUY, 2.0, 2.0, 100.0, 90.0, "i1")
        await store.record(JournalTransition(snap, "ENTERING", "entry_filled_with_stop", "filled"))
        out = await store.orders(), await store.last_states(), await store.transitions("BTCUSDT")
        await store.close()
        return out

    orders, states, transitions = asyncio.run(scenario())
    assert orders[0]["status"] == "filled" and orders[0]["filled_qty"] == 2.0 and orders[0]["stop_price"] == 90.0
    assert states == {"BTCUSDT": "PROTECTED"}
    assert transitions[0]["from_state"] == "ENTERING" and transitions[0]["to_state"] == "PROTECTED"


def test_states_and_triggers_travel_as_enums_and_read_as_the_same_strings(tmp_path):
    """The core sends State and Trigger members; the API's JSON, the journal's rows and its event
    stream hold exactly the strings they always held, and a restart reads a State back."""
    def snap(state: Any, trigger: Any) -> PositionSnapshot:       # plain strings too, as a JSON reader has
        return PositionSnapshot("BTCUSDT", state, Side.BUY, 2.0, 2.0, 100.0, 90.0, "i1", trigger=trigger,
                                updated_at=1.0, made_ns=1)

    typed, plain = snap(State.PROTECTED, Trigger.ENTRY_FILLED_WITH_STOP), snap("PROTECTED", "entry_filled_with_stop")
    assert encode(position_json(typed, 2.0)) == encode(position_json(plain, 2.0))
    assert json.loads(encode(position_json(typed, 2.0)))["state"] == "PROTECTED"
    assert pickle.loads(pickle.dumps(typed)).state is State.PROTECTED

    async def scenario():
        store = JournalStore(str(tmp_path / "j.sqlite"))
        await store.open()
        await store.record(JournalIntent("i1", "BTCUSDT", Side.BUY, 2.0, 90.0))
        await store.record(JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 2.0, "pge1", stop_price=90.0), "i1", "entry"))
        pushed = await store.record(JournalTransition(typed, State.ENTERING, Trigger.ENTRY_FILLED_WITH_STOP, "filled"))
        stored, _, _ = await store.read_events(0, 100)
        out = await store.transitions("BTCUSDT"), pushed, stored, await store.load_symbol("BTCUSDT")
        await store.close()
        return out

    transitions, pushed, stored, journal = asyncio.run(scenario())
    row = transitions[0]
    assert (row["from_state"], row["to_state"], row["trigger"]) == ("ENTERING", "PROTECTED", "entry_filled_with_stop")
    assert all(type(row[k]) is str for k in ("from_state", "to_state", "trigger"))
    for events in (pushed, stored):                 # as pushed to subscribers, and as read back
        line = json.loads(event_line(1, next(e for e in events if e.kind == "transition")))["event"]
        assert (line["from"], line["to"], line["trigger"]) == ("ENTERING", "PROTECTED", "entry_filled_with_stop")
    assert journal.last_state is State.PROTECTED


def test_the_journal_tells_a_burst_of_commits_in_one_message_per_receiver():
    # A thousand entries at once: one PlaceOrders to the exchange and one OrdersJournaled per
    # PositionActor, not two thousand sends (thespian stopped reading while it drained them, and
    # the watchdog killed the journal as hung behind them).
    from actors.journal.actor import JournalActor
    from actors.messages import (
        EventsCommitted,
        JournalOrder,
        OrderJournaled,
        OrdersJournaled,
        PlaceOrder,
        PlaceOrders,
    )

    journal = JournalActor.__new__(JournalActor)           # its bookkeeping, without a system
    journal.to_place, journal.journaled, journal.committed, journal.to_forward = {}, {}, [], []
    journal.subscribers, journal.failing, journal.supervisor, journal.keeper = ["api"], None, None, None
    sent: list[tuple[Any, Any]] = []
    journal.send = lambda to, msg: sent.append((to, msg))   # type: ignore[method-assign]
    for i in range(6):
        owner = "pos-a" if i % 3 else "pos-b"
        order = JournalOrder(OrderRequest(f"S{i}USDT", Side.BUY, 1.0, f"pge{i}"), f"i{i}", "entry",
                             forward_to="exchange", reply_to=owner)
        journal._committed(order, owner, [])
    journal._committed(JournalOrder(OrderRequest("S9USDT", Side.BUY, 1.0, "pge9"), "i9", "entry",
                                    forward_to="exchange", reply_to="pos-c"), "pos-c", [])
    assert sent == []                                         # nothing until the handler ends
    journal._flush()
    by_to = {to: msg for to, msg in sent}
    assert len(sent) == 4 and set(by_to) == {"exchange", "pos-a", "pos-b", "pos-c"}
    assert sent[0][0] == "exchange" and isinstance(by_to["exchange"], PlaceOrders)   # the venue first
    placed = by_to["exchange"].orders
    assert [p.request.client_order_id for p in placed] == ["pge0", "pge1", "pge2", "pge3", "pge4", "pge5", "pge9"]
    assert all(isinstance(p, PlaceOrder) for p in placed) and placed[1].reply_to == "pos-a"
    assert by_to["pos-a"] == OrdersJournaled(("pge1", "pge2", "pge4", "pge5"))
    assert by_to["pos-b"] == OrdersJournaled(("pge0", "pge3"))
    assert by_to["pos-c"] == OrderJournaled("pge9")             # alone: the single message
    assert not any(isinstance(m, EventsCommitted) for _, m in sent)   # no events, none sent
    sent.clear()
    journal._flush()
    assert sent == []                                         # told once


def test_a_send_failing_midway_through_the_journals_flush_never_sends_twice():
    from actors.journal.actor import JournalActor
    from actors.messages import JournalOrder

    journal = JournalActor.__new__(JournalActor)
    journal.to_place, journal.journaled, journal.committed, journal.to_forward = {}, {}, [], []
    journal.subscribers, journal.failing, journal.supervisor, journal.keeper = [], None, None, None
    sent: list[Any] = []

    def send(to: Any, msg: Any) -> None:
        if to == "pos-a":
            raise OSError("transport refused")
        sent.append((to, msg))
    journal.send = send                                      # type: ignore[method-assign]
    journal._committed(JournalOrder(OrderRequest("S1USDT", Side.BUY, 1.0, "pge1"), "i1", "entry",
                                    forward_to="exchange", reply_to="pos-a"), "pos-a", [])
    with pytest.raises(OSError):
        journal._flush()
    assert [to for to, _ in sent] == ["exchange"]
    journal._flush()                                         # what a re-run would do: nothing again
    assert [to for to, _ in sent] == ["exchange"]


def test_an_order_the_exchange_cannot_take_yet_is_refused_to_its_owner_not_the_journal():
    from actors.exchange.actor import ExchangeActor
    from actors.messages import OrderPlaced, PlaceOrder

    exchange = ExchangeActor.__new__(ExchangeActor)
    exchange.service, exchange.bridge = None, None
    sent: list[Any] = []
    exchange.send = lambda to, msg: sent.append((to, msg))   # type: ignore[method-assign]
    exchange._request(PlaceOrder(OrderRequest("S1USDT", Side.BUY, 1.0, "pge1"), reply_to="pos-a"), "journal")
    (to, reply), = sent
    assert to == "pos-a" and isinstance(reply, OrderPlaced) and reply.failure is not None
