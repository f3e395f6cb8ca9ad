"""Where the journal lives: an embedded SQLite file (the default, the demo) or a PostgreSQL
database shared by the hosts of a fleet. Both take the same SQL -- written with `?` placeholders
and portable words (upserts, RETURNING) -- and the same migrations (actors/journal/schema.py);
what differs is here: connecting, transactions, durability per write, and the event counter.

One connection each, used one statement at a time under the store's lock: the journal has one
writer (the JournalActor), and the order of its writes is the order they arrived in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

from actors.journal.schema import META, MIGRATIONS, SCHEMA_VERSION, SET_VERSION, check_version


class Backend(Protocol):
    name: str
    integrity_error: type[Exception]        # what a second row under the same key raises

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None: ...
    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]: ...
    async def insert_id(self, sql: str, params: tuple[Any, ...], key: str) -> int: ...
    def transaction(self, durable: bool) -> contextlib.AbstractAsyncContextManager[None]: ...
    async def migrate(self) -> int: ...
    async def events_counter(self) -> int: ...


def backend_for(target: str, **kw: Any) -> Backend:
    """`postgresql://...` (or `postgres://...`): PostgreSQL; anything else: a SQLite file."""
    if target.startswith(("postgresql://", "postgres://")):
        from actors.journal.postgres import PostgresBackend

        return PostgresBackend(target, **kw)
    return SqliteBackend(target)


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        import sqlite3

        self.path = path
        self.integrity_error = sqlite3.IntegrityError
        self.conn: Any = None
        self._durability = "FULL"

    async def open(self) -> None:
        import aiosqlite

        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.conn = await aiosqlite.connect(self.path)
        await self.conn.execute("PRAGMA journal_mode=WAL")
        await self.conn.execute("PRAGMA synchronous=FULL")
        await self.conn.execute("PRAGMA busy_timeout=5000")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        await self.conn.execute(sql, params)

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cursor = await self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def insert_id(self, sql: str, params: tuple[Any, ...], key: str) -> int:
        cursor = await self.conn.execute(sql, params)
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    @contextlib.asynccontextmanager
    async def transaction(self, durable: bool) -> AsyncIterator[None]:
        # An order row must survive power loss before the order is sent (fsync); the rest may
        # ride on the next fsync (WAL with NORMAL survives a process crash).
        durability = "FULL" if durable else "NORMAL"
        if durability != self._durability:
            await self.conn.execute(f"PRAGMA synchronous={durability}")
            self._durability = durability
        try:
            yield
            await self.conn.commit()
        except BaseException:
            # Never leave half a message pending: the next successful commit would keep it.
            await self.conn.rollback()
            raise

    async def migrate(self) -> int:
        await self.conn.execute(META)
        rows = await self.rows("SELECT value FROM meta WHERE key='schema_version'")
        version = int(rows[0]["value"]) if rows else 0
        check_version(version, self.path)
        for number in range(version, SCHEMA_VERSION):
            await self.conn.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[number]}\n"
                f"{SET_VERSION.replace('?', repr(str(number + 1)))};\nCOMMIT;")
        return SCHEMA_VERSION

    async def events_counter(self) -> int:
        counter = await self.rows("SELECT seq FROM sqlite_sequence WHERE name='events'")
        return int(counter[0]["seq"]) if counter else 0
