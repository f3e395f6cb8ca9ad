"""One writer per account, enforced by the database the journal lives in (PostgreSQL).

A row per account in `posguard.leases`: who holds it, its epoch, and when it expires -- judged
by the database's clock, never a host's. The holder renews it; anyone takes it only once it has
expired, with epoch + 1. Every journal write checks, in its own transaction and first, that its
epoch still holds the lease (`fence`, on the journal's connection), and takes a share lock on the
row: a takeover's update waits for that write to commit, and once it has committed no write of
the old epoch can. A writer that lost the lease therefore cannot journal an order, and so cannot
send one (the journal is the gate to the venue: rule 3).

The expiry is the database's clock (one clock for every host; a step of it moves every lease at
once, which is why the database host keeps NTP slewing, not stepping). Beside it, the holder's
own deadline on its boot-time clock (it runs through a suspend): the last renewal the database
confirmed + TTL - margin. Past it the holder fences itself without asking anyone (a host cut off
from the database cannot even be told it lost), and it is what a venue request's signed
timestamp must not pass (the venue's recvWindow then refuses what a frozen holder sends late).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actors.settings import LeaseSettings

__all__ = ["Fenced", "Lease", "LeaseSettings", "boottime", "ensure_schema", "holder_of"]

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS posguard;
CREATE TABLE IF NOT EXISTS posguard.leases (
    account     TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL
);
"""

# Taken only when there is no row or it has expired; the epoch only ever grows.
ACQUIRE = """
INSERT INTO posguard.leases AS l (account, holder, epoch, expires_at, acquired_at, renewed_at)
VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3), clock_timestamp(), clock_timestamp())
ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1,
    expires_at = excluded.expires_at, acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at
WHERE l.expires_at < clock_timestamp()
RETURNING epoch
"""
RENEW = """
UPDATE posguard.leases SET expires_at = clock_timestamp() + make_interval(secs => $4), renewed_at = clock_timestamp()
WHERE account = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
RETURNING epoch
"""
RELEASE = """
UPDATE posguard.leases SET expires_at = clock_timestamp()
WHERE account = $1 AND holder = $2 AND epoch = $3
"""
HOLDS = """
SELECT 1 FROM posguard.leases
WHERE account = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
FOR SHARE
"""
HOLDER = """
SELECT holder, epoch, expires_at > clock_timestamp() AS live, acquired_at, renewed_at,
       EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8 AS left_s
FROM posguard.leases WHERE account = $1
"""

DEFAULT_SETTINGS = LeaseSettings()


def boottime() -> float:
    """Seconds on a clock that keeps running while the host is suspended (CLOCK_MONOTONIC stops:
    a resumed holder would think its deadline still ahead), the same in every process."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Fenced(Exception):
    """This writer no longer holds the account's lease: nothing may be journaled (or sent)."""


async def ensure_schema(conn: Any) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('posguard.schema'))")
        await conn.execute(SCHEMA)


async def holder_of(conn: Any, account: str) -> dict[str, Any] | None:
    """Who holds `account` now (holder, epoch, live, acquired_at, renewed_at, left_s), or None."""
    row = await conn.fetchrow(HOLDER, account)
    return dict(row) if row else None


class Lease:
    """A holder's lease on one account, on a connection of its own. A renewal (an UPDATE) waits
    for a journal write in flight (its share lock), never for the journal's queue; a standby
    looks with a plain read and tries to take the row only once it has expired, so its polls
    never lock the holder's writes. `clock`: seconds that never stop (boot time: the self-fence deadline)."""

    def __init__(self, conn: Any, account: str, holder: str, settings: LeaseSettings = DEFAULT_SETTINGS,
                 clock: Callable[[], float] = boottime) -> None:
        self.conn, self.account, self.holder, self.settings, self.clock = conn, account, holder, settings, clock
        self.epoch: int | None = None
        self.deadline = 0.0              # on `clock`: past it we hold nothing, whatever we were told

    def valid(self) -> bool:
        return self.epoch is not None and self.clock() < self.deadline

    def _renewed(self, asked_at: float) -> None:
        # From when we asked, not when the answer came: the database's expiry ran from somewhere
        # in between, so this errs early, never late.
        self.deadline = asked_at + self.settings.ttl_s - self.settings.margin_s

    async def acquire(self) -> int | None:
        """The new epoch if the account was free (no row, or its lease expired), else None."""
        current = await holder_of(self.conn, self.account)
        if current is not None and current["live"]:
            return None                              # held: no lock taken on its row
        asked_at = self.clock()
        async with self.conn.transaction():
            # A write of the old holder in flight holds the row; wait for it, bounded (a lost
            # host's transaction is ended by the server's own timeouts, actors/journal/postgres.py).
            await self.conn.execute(f"SET LOCAL lock_timeout = '{int(max(self.settings.ttl_s, 5.0) * 1000)}ms'")
            epoch = await self.conn.fetchval(ACQUIRE, self.account, self.holder, self.settings.ttl_s)
        if epoch is None:
            return None
        self.epoch = int(epoch)
        self._renewed(asked_at)
        return self.epoch

    async def renew(self) -> bool:
        """Extend it; False (and fenced from now on) when the database says it is no longer ours."""
        if self.epoch is None:
            return False
        asked_at = self.clock()
        if await self.conn.fetchval(RENEW, self.account, self.holder, self.epoch, self.settings.ttl_s) is None:
            self.deadline = 0.0
            return False
        self._renewed(asked_at)
        return True

    async def release(self) -> None:
        """A clean stop: expire it now, so a standby takes over at once rather than after the TTL."""
        if self.epoch is not None:
            await self.conn.execute(RELEASE, self.account, self.holder, self.epoch)
            self.deadline = 0.0

    async def fence(self, conn: Any) -> None:
        """First in every journal write's transaction (on the journal's connection)."""
        if not self.valid():
            raise Fenced(f"account {self.account}: lease epoch {self.epoch} is past its deadline (not renewed)")
        if await conn.fetchval(HOLDS, self.account, self.holder, self.epoch) is None:
            self.deadline = 0.0
            raise Fenced(f"account {self.account}: lease epoch {self.epoch} is no longer ours")
