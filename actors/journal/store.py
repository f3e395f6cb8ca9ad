"""The journal: everything a restart needs -- intents, orders (written before they are sent)
and state transitions with times, and the event stream -- in a SQLite file in WAL mode or a
PostgreSQL database (actors/journal/backends.py: the same SQL and migrations on both).

Schema changes are numbered migrations (actors/journal/schema.py). Keys and secrets never
reach this module: it stores symbols, quantities, prices, ids and states.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiosqlite

from actors.journal.backends import Backend, SqliteBackend, backend_for
from actors.journal.schema import MIGRATIONS, SCHEMA_VERSION
from actors.messages import (
    Event,
    EventRecord,
    EventsReport,
    JournalCancel,
    JournaledOrder,
    JournalEvent,
    JournalExit,
    JournalIntent,
    JournalOrder,
    JournalOrderUpdate,
    JournalPosition,
    JournalSafeMode,
    JournalTransition,
    PositionJournal,
    PositionJournals,
)
from actors.position.states import State
from adapters.base import OrderRequest, Side

KEEP_EVENTS = 100_000                # older events are pruned at open; a reader asking for them is told
__all__ = ["KEEP_EVENTS", "MIGRATIONS", "SCHEMA_VERSION", "JournalStore"]


class JournalStore:
    def __init__(self, path: str, backend: Backend | None = None, **where: str | None) -> None:
        """`path`: a SQLite file, or a postgresql:// URL (`where`: its account, password_file)."""
        self.path = path
        self.backend: Backend = backend or backend_for(path, **where)
        self._lock = asyncio.Lock()          # one write (execute + commit) at a time, in arrival order

    async def open(self) -> int:
        """Connect and run pending migrations; returns the schema version."""
        await self.backend.open()
        version = await self.backend.migrate()
        async with self.backend.transaction(durable=False):
            await self.backend.execute("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?",
                                       (KEEP_EVENTS,))
        return version

    # Maintenance and fault injection take the write lock: on the one connection, a checkpoint or
    # a pragma between another write's execute and its commit fails ("database table is locked").

    async def limit_pages(self, pages: int) -> int:
        """Fault injection, a full disk for real: cap the database at `pages` pages (0: where it
        is now) and fill what is left, so the very next write fails with SQLITE_FULL."""
        async with self._lock:
            await self.db.execute("CREATE TABLE IF NOT EXISTS filler (pad TEXT)")
            await self.db.commit()
            if pages <= 0:
                rows = await self.rows("PRAGMA page_count")
                pages = int(next(iter(rows[0].values())))
            await self.db.execute(f"PRAGMA max_page_count={int(pages)}")
            try:
                while True:
                    await self.db.execute("INSERT INTO filler VALUES (?)", ("x" * 64,))
                    await self.db.commit()
            except aiosqlite.OperationalError:
                await self.db.rollback()                 # full: nothing more fits
            return pages

    async def refuse_writes(self, refuse: bool) -> None:
        """Fault injection: every write fails (SQLite's query_only), or works again."""
        async with self._lock:
            await self.db.execute(f"PRAGMA query_only={'ON' if refuse else 'OFF'}")

    async def heal(self) -> None:
        """Undo limit_pages and refuse_writes: the journal can write again."""
        async with self._lock:
            await self.db.execute("PRAGMA max_page_count=1073741823")
            await self.db.execute("PRAGMA query_only=OFF")

    async def truncate_wal(self) -> None:
        """Checkpoint and empty the WAL file (SQLite maintenance; the fault tests use it so that
        the next write on a full disk has to grow the file)."""
        async with self._lock:
            await self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        await self.backend.close()

    @property
    def db(self) -> aiosqlite.Connection:
        """The SQLite connection, for its maintenance and fault injection (SQLite's alone)."""
        backend = self.backend
        if not isinstance(backend, SqliteBackend) or backend.conn is None:
            raise RuntimeError("journal is not open" if isinstance(backend, SqliteBackend)
                               else f"{backend.name}: no SQLite connection")
        return backend.conn

    async def record(self, msg: object) -> list[Event]:
        """Write one journal message durably, all of it or nothing (committed before returning);
        returns the events it added, with their sequence numbers."""
        async with self._lock:
            # An order row must survive power loss before the order is sent; the rest may ride
            # on the next flush of the log (each backend says what that means for it).
            events: list[Event] = []
            async with self.backend.transaction(durable=isinstance(msg, JournalOrder)):
                await self._write(msg, events)
            return events

    async def safe_mode_reason(self) -> str | None:
        """The safe mode an earlier run left on (its reason), or None."""
        rows = await self.rows("SELECT value FROM meta WHERE key='safe_mode'")
        if not rows:
            return None
        state = json.loads(rows[0]["value"])
        return state["reason"] if state.get("on") else None

    async def sync(self) -> None:
        """Return once every write that started before this call is committed."""
        async with self._lock:
            pass

    async def _event(self, events: list[Event], at: float, record: EventRecord) -> None:
        seq = await self.backend.insert_id("INSERT INTO events (at, kind, symbol, data) VALUES (?,?,?,?)",
                                           (at, record.kind, record.symbol, json.dumps(record.data)), "seq")
        events.append(Event(seq, at, record.kind, record.symbol, dict(record.data)))

    async def _write(self, msg: object, events: list[Event]) -> None:
        execute = self.backend.execute
        match msg:
            case JournalOrder(request=r, intent_id=intent, purpose=purpose, at=at, intent=intent_msg):
                if intent_msg is not None:
                    await self._write(intent_msg, events)
                await execute(
                    "INSERT INTO orders (client_order_id, intent_id, symbol, purpose, side, qty, reduce_only,"
                    " stop_price, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (r.client_order_id, intent, r.symbol, purpose, str(r.side), r.qty, int(r.reduce_only),
                     r.stop_price, "journaled", at, at))
            case JournalOrderUpdate(client_order_id=cid, status=status, filled_qty=filled, avg_price=px,
                                    venue_order_id=vid, at=at):
                before = await self.rows("SELECT symbol, purpose, filled_qty FROM orders WHERE client_order_id=?",
                                         (cid,))
                if before and filled > before[0]["filled_qty"] + 1e-12:
                    await self._event(events, at, EventRecord("fill", before[0]["symbol"], {
                        "client_order_id": cid, "purpose": before[0]["purpose"], "filled_qty": filled,
                        "avg_price": px, "status": status}))
                await execute(
                    "UPDATE orders SET status=?, filled_qty=CASE WHEN filled_qty > ? THEN filled_qty ELSE ? END,"
                    " avg_price=COALESCE(?, avg_price), venue_order_id=COALESCE(?, venue_order_id), updated_at=?"
                    " WHERE client_order_id=?", (status, filled, filled, px, vid, at, cid))
            case JournalIntent(intent_id=iid, symbol=symbol, side=side, qty=qty, stop_price=stop, at=at, kind=kind,
                               take_profit=tp, trail_pct=trail):
                await execute("INSERT INTO intents (intent_id, symbol, side, qty, stop_price, created_at, kind,"
                                      " take_profit, trail_pct) VALUES (?,?,?,?,?,?,?,?,?)",
                                      (iid, symbol, str(side), qty, stop, at, kind, tp, trail))
            case JournalTransition(snapshot=snap, from_state=before, trigger=trigger, detail=detail, at=at,
                                   events=extra):
                await execute(
                    "INSERT INTO transitions (symbol, intent_id, from_state, to_state, trigger, detail, at)"
                    " VALUES (?,?,?,?,?,?,?)", (snap.symbol, snap.intent_id, before, snap.state, trigger, detail, at))
                await self._event(events, at, EventRecord("transition", snap.symbol, {
                    "from": before, "to": snap.state, "trigger": trigger, "detail": detail,
                    "intent_id": snap.intent_id}))
                for record in extra:
                    await self._event(events, at, record)
            case JournalSafeMode(on=on, reason=reason, at=at):
                await execute("INSERT INTO meta (key, value) VALUES ('safe_mode', ?) ON CONFLICT (key)"
                                           " DO UPDATE SET value = excluded.value",
                                           (json.dumps({"on": on, "reason": reason, "at": at}),))
                await self._event(events, at, EventRecord("safe_mode", None, {"on": on, "reason": reason}))
            case JournalEvent(event=record, at=at):
                await self._event(events, at, record)
            case JournalCancel(request=request, reason=reason, at=at):
                await self._event(events, at, EventRecord("cancel_stops", request.symbol, {
                    "reason": reason, "orders": list(request.client_order_ids) or "every stop order of ours"}))
            case JournalPosition(intent_id=iid, qty=qty, stop_price=stop, take_profit=tp, trail_pct=trail,
                                 applied_change=applied):
                await execute("UPDATE intents SET position_qty=?, current_stop=?, take_profit=?, trail_pct=?,"
                                      " pending_exit=NULL, applied_change=? WHERE intent_id=?",
                                      (qty, stop, tp, trail, applied, iid))
            case JournalExit(intent_id=iid, request=request, at=at):
                await execute("UPDATE intents SET pending_exit=? WHERE intent_id=?",
                                      (json.dumps([str(request.kind), request.value]), iid))
                await self._event(events, at, EventRecord("exit_asked", request.symbol, {
                    "exit": str(request.kind), "value": request.value}))
            case _:
                raise TypeError(f"journal cannot record {type(msg).__name__}")

    # -- reads (restart, inspection, tests) ---------------------------------------------------

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return await self.backend.rows(sql, params)

    async def orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        if symbol is None:
            return await self.rows("SELECT * FROM orders ORDER BY created_at")
        return await self.rows("SELECT * FROM orders WHERE symbol=? ORDER BY created_at", (symbol,))

    async def last_states(self) -> dict[str, str]:
        """Each symbol's state as of its last journaled transition."""
        rows = await self.rows("SELECT symbol, to_state FROM transitions WHERE id IN"
                               " (SELECT MAX(id) FROM transitions GROUP BY symbol) ORDER BY symbol")
        return {r["symbol"]: r["to_state"] for r in rows}

    async def load_symbols(self, symbols: tuple[str, ...]) -> PositionJournals:
        return PositionJournals(tuple([await self.load_symbol(s) for s in symbols]))

    async def load_symbol(self, symbol: str) -> PositionJournal:
        """What a restarted PositionActor needs: the latest intent, its orders, its last snapshot."""
        intents = await self.rows("SELECT * FROM intents WHERE symbol=? ORDER BY created_at DESC, rowid DESC LIMIT 1",
                                  (symbol,))
        if not intents:
            return PositionJournal(symbol)
        i = intents[0]
        intent = JournalIntent(i["intent_id"], symbol, Side(i["side"]), i["qty"], i["stop_price"], i["created_at"],
                               i["kind"])
        # Transitions are append-only and carry the intent: the symbol's last one may already
        # belong to a later, intent-less recovery and must not be trusted for this.
        last = await self.rows("SELECT to_state FROM transitions WHERE intent_id=? ORDER BY id DESC LIMIT 1",
                               (i["intent_id"],))
        orders = tuple(
            JournaledOrder(OrderRequest(symbol, Side(o["side"]), o["qty"], o["client_order_id"], bool(o["reduce_only"]),
                                        o["stop_price"]),
                           o["purpose"], o["status"], o["filled_qty"], o["avg_price"], o["created_at"])
            for o in await self.rows("SELECT * FROM orders WHERE intent_id=? ORDER BY created_at, rowid",
                                     (i["intent_id"],)))
        pending = json.loads(i["pending_exit"]) if i["pending_exit"] else None
        return PositionJournal(symbol, intent, _state(last[0]["to_state"]) if last else None, orders,
                               position_qty=i["position_qty"], stop_price=i["current_stop"],
                               take_profit=i["take_profit"], trail_pct=i["trail_pct"],
                               applied_change=i["applied_change"],
                               pending_exit=(pending[0], float(pending[1])) if pending else None)

    async def recent_events(self, symbol: str, limit: int) -> EventsReport:
        rows = await self.rows("SELECT at, from_state, to_state, trigger, detail FROM transitions WHERE symbol=?"
                               " ORDER BY id DESC LIMIT ?", (symbol, limit))
        return EventsReport(symbol, tuple((r["at"], r["from_state"], r["to_state"], r["trigger"], r["detail"])
                                          for r in reversed(rows)))

    async def read_events(self, since: int, limit: int) -> tuple[list[Event], int, int]:
        """Events after `since` (oldest first, at most `limit`), and the oldest and latest seq held."""
        rows = await self.rows("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (since, limit))
        bounds = await self.rows("SELECT COALESCE(MIN(seq), 0) AS oldest, COALESCE(MAX(seq), 0) AS latest FROM events")
        latest = bounds[0]["latest"]
        if latest == 0:                                  # nothing held yet: the counter may still be past 0
            latest = await self.backend.events_counter()
        events = [Event(r["seq"], r["at"], r["kind"], r["symbol"], json.loads(r["data"])) for r in rows]
        return events, bounds[0]["oldest"], latest

    async def transitions(self, symbol: str) -> list[dict[str, Any]]:
        return await self.rows("SELECT * FROM transitions WHERE symbol=? ORDER BY id", (symbol,))


def _state(value: str) -> State | None:
    """A journaled state. One this version does not know reads as none: recovery then asks the
    venue, as it does after a crash before the first transition (never a refusal to start)."""
    try:
        return State(value)
    except ValueError:
        return None
