"""The journal's own tests, run on both of its backends: the embedded SQLite file and PostgreSQL
(a private cluster the tests start, tests/support/postgres.py). The same migrations, the same
rows read back, the same all-or-nothing writes, the same event counter and pruning bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.journal import store as store_module
from actors.journal.postgres import CredentialError, read_password, safe_url
from actors.journal.store import SCHEMA_VERSION, JournalStore
from actors.messages import (
    EventRecord,
    JournalEvent,
    JournalExit,
    JournalIntent,
    JournalOrder,
    JournalOrderUpdate,
    JournalPosition,
    JournalSafeMode,
    JournalTransition,
    PositionSnapshot,
    SetExit,
)
from actors.position.states import State
from adapters.base import ExitKind, OrderRequest, Side


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_at(request, tmp_path) -> Callable[..., JournalStore]:
    """A factory of stores on one journal of the backend under test (each call: a new connection)."""
    if request.param == "sqlite":
        path = str(tmp_path / "j.sqlite")
        return lambda **kw: JournalStore(path)
    server = request.getfixturevalue("postgres_server")
    url = request.getfixturevalue("pg_url")
    return lambda account="default": JournalStore(url, account=account, password_file=server.password_file)


def run(make: Callable[..., JournalStore], body: Callable[[JournalStore], Awaitable[Any]], **kw: Any) -> Any:
    async def go() -> Any:
        store = make(**kw)
        try:
            await store.open()
            return await body(store)
        finally:
            await store.close()
    return asyncio.run(go())


def test_migrations_run_once_and_a_newer_schema_is_refused(journal_at):
    async def first(store: JournalStore) -> None:
        await store.record(JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pge1"), "i1", "entry"))

    async def second(store: JournalStore) -> list[str]:
        return [r["client_order_id"] for r in await store.orders()]

    run(journal_at, first)
    assert run(journal_at, second) == ["pge1"]             # the second open re-created nothing

    async def newer(store: JournalStore) -> None:
        await store.record(JournalIntent("i9", "BTCUSDT", Side.BUY, 1.0, 95.0))
        async with store.backend.transaction(durable=True):
            await store.backend.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    run(journal_at, newer)
    with pytest.raises(RuntimeError, match="newer"):
        run(journal_at, second)


def test_an_episode_reads_back_as_it_was_written(journal_at):
    async def body(store: JournalStore) -> Any:
        intent = JournalIntent("i1", "BTCUSDT", Side.BUY, 2.0, 90.0, at=1.0, take_profit=120.0)
        await store.record(JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 2.0, "e1", stop_price=90.0), "i1", "entry",
                                        at=1.0, intent=intent))
        await store.record(JournalOrderUpdate("e1", "filled", 2.0, 100.0, "v9", at=2.0))
        await store.record(JournalOrderUpdate("e1", "filled", 1.0, None, None, at=3.0))   # never shrinks
        snap = PositionSnapshot("BTCUSDT", State.PROTECTED, Side.BUY, 2.0, 2.0, 100.0, 90.0, "i1")
        await store.record(JournalTransition(snap, State.ENTERING, "entry_filled_with_stop", "filled", at=4.0))
        await store.record(JournalPosition("i1", "BTCUSDT", 2.0, 95.0, take_profit=120.0, applied_change="c1"))
        await store.record(JournalExit("i1", SetExit("BTCUSDT", ExitKind.TRAILING, 1.5, Side.BUY, 2.0), at=5.0))
        await store.record(JournalOrder(OrderRequest("BTCUSDT", Side.SELL, 2.0, "x1", reduce_only=True), "i1",
                                        "close", at=6.0))
        return await store.load_symbol("BTCUSDT"), await store.last_states(), await store.orders("BTCUSDT")

    journal, states, orders = run(journal_at, body)
    assert journal.intent.intent_id == "i1" and journal.last_state is State.PROTECTED
    assert states == {"BTCUSDT": "PROTECTED"}
    assert [(o.request.client_order_id, o.purpose) for o in journal.orders] == [("e1", "entry"), ("x1", "close")]
    entry = journal.orders[0]
    assert (entry.status, entry.filled_qty, entry.avg_price, entry.request.stop_price) == ("filled", 2.0, 100.0, 90.0)
    assert journal.orders[1].request.reduce_only and orders[0]["venue_order_id"] == "v9"
    assert (journal.position_qty, journal.stop_price, journal.take_profit) == (2.0, 95.0, 120.0)
    assert journal.applied_change == "c1" and journal.pending_exit == ("trailing", 1.5)


def test_the_latest_intent_wins_even_at_the_same_instant(journal_at):
    async def body(store: JournalStore) -> str:
        for iid in ("a", "b", "c"):                         # insertion order breaks the tie
            await store.record(JournalIntent(iid, "ETHUSDT", Side.SELL, 1.0, 11.0, at=7.0))
        journal = await store.load_symbol("ETHUSDT")
        return journal.intent.intent_id
    assert run(journal_at, body) == "c"


def test_a_failed_write_leaves_nothing_behind(journal_at):
    async def body(store: JournalStore) -> list[str]:
        intent = JournalIntent("i1", "BTCUSDT", Side.BUY, 1.0, 95.0)
        await store.record(JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, "e1"), "i1", "entry", intent=intent))
        with pytest.raises(store.backend.integrity_error):          # the same order row again: refused ...
            await store.record(JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, "e1"), "i2", "entry",
                                            intent=JournalIntent("i2", "BTCUSDT", Side.BUY, 1.0, 95.0)))
        await store.record(JournalIntent("i3", "BTCUSDT", Side.SELL, 1.0, 105.0))   # ... and the next write
        return [r["intent_id"] for r in await store.rows("SELECT intent_id FROM intents ORDER BY intent_id")]
    assert run(journal_at, body) == ["i1", "i3"]            # i2's intent did not ride along


def test_events_count_up_for_good_and_safe_mode_outlives_the_connection(journal_at, monkeypatch):
    async def write(store: JournalStore) -> list[int]:
        seqs = []
        for n in range(5):
            seqs += [e.seq for e in await store.record(JournalEvent(EventRecord("note", None, {"n": n})))]
        seqs += [e.seq for e in await store.record(JournalSafeMode(True, "operator pause"))]
        return seqs

    assert run(journal_at, write) == [1, 2, 3, 4, 5, 6]
    monkeypatch.setattr(store_module, "KEEP_EVENTS", 2)       # the next open prunes all but the last 2

    async def read(store: JournalStore) -> Any:
        events, oldest, latest = await store.read_events(0, 100)
        return [e.seq for e in events], oldest, latest, await store.safe_mode_reason(), events[-1].data
    assert run(journal_at, read) == ([5, 6], 5, 6, "operator pause", {"on": True, "reason": "operator pause"})

    async def empty(store: JournalStore) -> Any:
        async with store.backend.transaction(durable=False):
            await store.backend.execute("DELETE FROM events")
        _, oldest, latest = await store.read_events(0, 100)
        after = await store.record(JournalEvent(EventRecord("note", None, {})))
        return oldest, latest, after[0].seq
    assert run(journal_at, empty) == (0, 6, 7)               # the counter is never reused


def test_schema_version_is_the_programs(journal_at):
    async def body(store: JournalStore) -> str:
        return (await store.rows("SELECT value FROM meta WHERE key='schema_version'"))[0]["value"]
    assert run(journal_at, body) == str(SCHEMA_VERSION)


def test_the_url_shown_never_carries_a_password_and_the_password_file_must_be_private(tmp_path):
    assert safe_url("postgresql://pg:s3cret@db.example:5432/posguard") == "postgresql://pg:***@db.example:5432/posguard"
    assert safe_url("postgresql://pg@db/posguard") == "postgresql://pg@db/posguard"
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    path.chmod(0o644)
    with pytest.raises(CredentialError, match="chmod 600") as refused:
        read_password(str(path))
    assert "s3cret" not in str(refused.value)
    path.chmod(0o600)
    assert read_password(str(path)) == "s3cret"
