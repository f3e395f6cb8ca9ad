"""The journal's schema: numbered migrations, one text for both backends. They are written in
SQLite's words; `for_postgres` says the same in PostgreSQL's (a REAL there is 4 bytes, a row
has no rowid), so the two databases hold the same tables, columns and meaning.

`meta.schema_version` says which migrations ran; each runs in its own transaction with its
version row, so a crash part-way leaves the previous version, and the next start runs it whole.
"""

from __future__ import annotations

import re

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE intents (
        intent_id   TEXT PRIMARY KEY,
        symbol      TEXT NOT NULL,
        side        TEXT NOT NULL,
        qty         REAL NOT NULL,
        stop_price  REAL NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY,
        intent_id   TEXT NOT NULL,
        symbol      TEXT NOT NULL,
        purpose     TEXT NOT NULL,          -- entry | close
        side        TEXT NOT NULL,
        qty         REAL NOT NULL,
        reduce_only INTEGER NOT NULL,
        stop_price  REAL,
        status      TEXT NOT NULL,          -- journaled | venue status | failure:<outcome>
        filled_qty  REAL NOT NULL DEFAULT 0,
        avg_price   REAL,
        venue_order_id TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX orders_by_symbol ON orders(symbol, created_at);
    CREATE TABLE positions (
        symbol      TEXT PRIMARY KEY,
        state       TEXT NOT NULL,
        intent_id   TEXT,
        snapshot    TEXT NOT NULL,          -- JSON of the last PositionSnapshot
        updated_at  REAL NOT NULL
    );
    CREATE TABLE transitions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        symbol      TEXT NOT NULL,
        intent_id   TEXT,
        from_state  TEXT NOT NULL,
        to_state    TEXT NOT NULL,
        trigger     TEXT NOT NULL,
        detail      TEXT NOT NULL,
        at          REAL NOT NULL
    );
    CREATE INDEX transitions_by_symbol ON transitions(symbol, id);
    """,
    # 2: adopted (foreign) positions are intents too
    """
    ALTER TABLE intents ADD COLUMN kind TEXT NOT NULL DEFAULT 'entry';
    """,
    # 3: the event stream operators and strategies follow (`posguard events`); seq never reused
    """
    CREATE TABLE events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        at          REAL NOT NULL,
        kind        TEXT NOT NULL,
        symbol      TEXT,
        data        TEXT NOT NULL           -- JSON object
    );
    """,
    # 4: the positions table goes: nothing read it (a symbol's state is its last transition), and
    # it cost a second write in every transition's fsync'd transaction
    """
    DROP TABLE positions;
    """,
    # 5: what an episode holds after a change made outside posguard (a resize, a followed stop)
    """
    ALTER TABLE intents ADD COLUMN position_qty REAL;
    ALTER TABLE intents ADD COLUMN current_stop REAL;
    """,
    # 6: a take-profit and a venue-held trail beside the stop, and the one being asked for
    """
    ALTER TABLE intents ADD COLUMN take_profit REAL;
    ALTER TABLE intents ADD COLUMN trail_pct REAL;
    ALTER TABLE intents ADD COLUMN pending_exit TEXT;
    ALTER TABLE intents ADD COLUMN applied_change TEXT;
    """,
)


SCHEMA_VERSION = len(MIGRATIONS)


META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
SET_VERSION = ("INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
               " ON CONFLICT (key) DO UPDATE SET value = excluded.value")


def check_version(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"journal {where} has schema {version}, newer than this program's {SCHEMA_VERSION}")


_PLACEHOLDER = re.compile(r"\?")


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...` (our SQL has no `?` in its literals)."""
    count = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)


# SQLite gives every table an insertion-ordered rowid (load_symbol orders by it); in PostgreSQL
# the tables without a key of their own get one by that name.
_TABLE = re.compile(r"CREATE TABLE (\w+) \(")


def for_postgres(sql: str) -> str:
    """A migration (or statement) in PostgreSQL's words."""
    sql = sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    parts = re.split(r"(?<=;)", sql)
    out = []
    for part in parts:
        if _TABLE.search(part) and "BIGSERIAL PRIMARY KEY" not in part:
            part = _TABLE.sub(lambda m: f"CREATE TABLE {m.group(1)} (\n        rowid BIGSERIAL,", part, count=1)
        out.append(part)
    return "".join(out)
