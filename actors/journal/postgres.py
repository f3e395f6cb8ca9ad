"""The journal on PostgreSQL (asyncpg): the shared store of a fleet, where any host can take an
account over. Each account's journal is a schema of its own (`acct_<name>`: the same tables as
a SQLite file), so the SQL is the same; the leases of every account sit beside them in the
`posguard` schema (actors/journal/lease.py).

The password comes from the environment (PGPASSWORD, as libpq) or a 0600 file named in the
config, never from the URL that is logged: `safe_url` is what may be shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from actors.journal.schema import META, MIGRATIONS, SCHEMA_VERSION, SET_VERSION, check_version, for_postgres, numbered

ACCOUNT = re.compile(r"[a-z0-9_]{1,40}")
CONNECT_TIMEOUT_S = 5.0
STATEMENT_TIMEOUT_S = 10.0               # a database that stopped answering is an error, not a hang
# Server-side too: a host cut off mid-transaction cannot cancel it, and its transaction would
# hold the lease row's lock (and so every standby's takeover) until TCP noticed -- hours by
# default. The server ends it instead: an idle transaction, a statement, a silent peer.
SERVER_SETTINGS = {"idle_in_transaction_session_timeout": "5000", "statement_timeout": "10000",
                   "tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}


class CredentialError(Exception):
    """The database's password cannot be read safely."""


def schema_of(account: str) -> str:
    if not ACCOUNT.fullmatch(account):
        raise ValueError(f"account {account!r}: use 1 to 40 of a-z, 0-9 and _")
    return f"acct_{account}"


def safe_url(url: str) -> str:
    """The URL without any password in it: what a log line or an error may show."""
    parts = urlsplit(url)
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    if parts.password is not None:
        host = parts.hostname or ""
        parts = parts._replace(netloc=f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts._replace(query=query))


def read_password(path: str) -> str:
    """A password from a regular file of ours that nobody else can read (as ~/.pgpass must be)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CredentialError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise CredentialError(f"{path} is not a private file of this user (mode {stat.S_IMODE(st.st_mode):04o}):"
                                  " chmod 600 it")
        return fh.read().strip()


class PostgresBackend:
    name = "postgresql"

    def __init__(self, url: str, account: str = "default", password_file: str | None = None) -> None:
        import asyncpg

        self.url, self.account, self.schema = url, account, schema_of(account)
        self.password_file = password_file
        self.integrity_error = asyncpg.exceptions.IntegrityConstraintViolationError
        self.conn: Any = None
        # Run first in every write transaction (the lease's epoch check): a writer that lost
        # the account's lease has its transaction refused by the database, whatever it believes.
        self.fence: Callable[[Any], Awaitable[None]] | None = None
        # One operation at a time on the connection (asyncpg refuses a second: "another operation
        # is in progress"): a read of the journal's loop waits for the write in its transaction.
        self._turn = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    async def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> Any:
        """A new connection with this journal's settings (the lease keeps one of its own)."""
        import asyncpg

        password = read_password(self.password_file) if self.password_file else None
        return await asyncpg.connect(
            self.url, password=password, timeout=timeout, command_timeout=STATEMENT_TIMEOUT_S,
            server_settings={"application_name": f"posguard:{self.account}", **SERVER_SETTINGS})

    async def open(self) -> None:
        self.conn = await self.connect()
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('posguard.schema'))")
            await self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        await self.conn.execute(f"SET search_path TO {self.schema}")

    async def _live(self) -> Any:
        """The connection, made again if the last one broke (a database restart, a cut network):
        the write that finds it broken fails, the next one tries a new connection."""
        if self.conn is None or self.conn.is_closed():
            conn = await self.connect()
            await conn.execute(f"SET search_path TO {self.schema}")
            self.conn = conn
        return self.conn

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close(timeout=2)
            self.conn = None

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self) -> AsyncIterator[None]:
        if self._owner is not None and self._owner is asyncio.current_task():
            yield                                    # inside our own transaction
            return
        async with self._turn:
            self._owner = asyncio.current_task()
            try:
                yield
            finally:
                self._owner = None

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        async with self._one_at_a_time():
            await (await self._live()).execute(numbered(sql), *params)

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with self._one_at_a_time():
            return [dict(r) for r in await (await self._live()).fetch(numbered(sql), *params)]

    async def insert_id(self, sql: str, params: tuple[Any, ...], key: str) -> int:
        return int(await self.conn.fetchval(numbered(sql) + f" RETURNING {key}", *params))

    @contextlib.asynccontextmanager
    async def transaction(self, durable: bool) -> AsyncIterator[None]:
        async with self._one_at_a_time(), self._transaction(durable):
            yield

    @contextlib.asynccontextmanager
    async def _transaction(self, durable: bool) -> AsyncIterator[None]:
        tx = (await self._live()).transaction()
        await tx.start()
        try:
            # What SQLite's FULL and NORMAL are: only an order row waits for the WAL's fsync -- said
            # each time, never left to a role's or server's default.
            await self.conn.execute(f"SET LOCAL synchronous_commit TO {'ON' if durable else 'OFF'}")
            if self.fence is not None:
                await self.fence(self.conn)
            yield
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()

    async def migrate(self) -> int:
        for _ in range(SCHEMA_VERSION + 1):
            async with self.conn.transaction():
                # Two hosts starting at once: one migrates, the other finds it done.
                await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.schema)
                await self.conn.execute(META)
                value = await self.conn.fetchval("SELECT value FROM meta WHERE key='schema_version'")
                version = int(value) if value else 0
                check_version(version, f"{safe_url(self.url)} ({self.schema})")
                if version >= SCHEMA_VERSION:
                    return SCHEMA_VERSION
                await self.conn.execute(for_postgres(MIGRATIONS[version]))
                await self.conn.execute(numbered(SET_VERSION), str(version + 1))
        return SCHEMA_VERSION

    async def events_counter(self) -> int:
        async with self._one_at_a_time():
            return await self._counter()

    async def _counter(self) -> int:
        row = await (await self._live()).fetchrow("SELECT last_value, is_called FROM events_seq_seq")
        return int(row["last_value"]) if row and row["is_called"] else 0
