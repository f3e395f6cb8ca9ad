"""`posguard run` on a shared journal (PostgreSQL): stand by until the account's lease is ours.

Any number of hosts run the same account's config; the one whose `posguard run` takes the lease
(actors/journal/lease.py) starts the deployment, the others wait here and say who holds it and
since when. This process renews the lease as long as it lives -- beside the journal's own
renewal, on the same (account, holder, epoch): either keeps it, neither can make a second
writer -- and finds out first when it was lost, so the deployment it runs is stopped and it
stands by again.

A new holder holds its entries for the venue's recv window + 1 s + the lease's margin after it
took over (`entries_after`): an order the previous holder signed before its deadline can still
be accepted until then. Protection, recovery and closes start at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from loguru import logger

from actors.journal.lease import Lease, boottime, ensure_schema, holder_of
from actors.journal.postgres import CredentialError, PostgresBackend, safe_url
from actors.settings import LeaseGrant
from supervisor.cli.exits import EXIT_USAGE, UserError
from supervisor.config.loader import DeploymentConfig

HELD_HERE = """SELECT count(*) FROM posguard.leases
WHERE split_part(holder, ':', 1) = $1 AND account <> $2 AND expires_at > clock_timestamp()"""
CLOCK_SKEW_S = 1.0                   # hosts' wall clocks may differ this much (NTP keeps them closer)


def holder_name() -> str:
    """Who holds a lease: the host, the `posguard run`, and a nonce (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def recv_window_s(cfg: DeploymentConfig) -> float:
    if cfg.simulated is not None:
        return cfg.simulated.recv_window_s
    return cfg.ccxt.recv_window_ms / 1000 if cfg.ccxt is not None else 5.0


class Standby:
    def __init__(self, cfg: DeploymentConfig, say: Callable[[str], None] = print) -> None:
        self.cfg, self.say = cfg, say
        self.backend = PostgresBackend(cfg.journal_url, cfg.account, cfg.password_file)
        self.host = socket.gethostname()
        self.holder = holder_name()
        self.lease: Lease | None = None
        self.grant: LeaseGrant | None = None
        self.lost: str | None = None         # set by the renewal: the deployment must stop
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lease", daemon=True)
        self.thread.start()
        self.renewing: Any = None

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self) -> Lease:
        if self.lease is None or self.lease.conn is None or self.lease.conn.is_closed():
            conn = await self.backend.connect()
            await ensure_schema(conn)
            self.lease = Lease(conn, self.cfg.account, self.holder, self.cfg.lease)
        return self.lease

    async def _try(self) -> tuple[int | None, dict[str, Any] | None, bool]:
        """(our new epoch, or who holds it; and whether this host's cap left it to another)."""
        lease = await self._connect()
        cap = self.cfg.lease.max_per_host
        if cap and await lease.conn.fetchval(HELD_HERE, self.host, self.cfg.account) >= cap:
            return None, await holder_of(lease.conn, self.cfg.account), True
        epoch = await lease.acquire()
        return epoch, None if epoch is not None else await holder_of(lease.conn, self.cfg.account), False

    def wait(self, stop: threading.Event) -> LeaseGrant | None:
        """Block until the lease is ours (the grant) or `stop` is set (None)."""
        said: Any = None
        while not stop.is_set():
            try:
                epoch, current, capped = self._run(self._try())
            except CredentialError as exc:
                raise UserError(f"journal.password_file: {exc}", EXIT_USAGE) from None
            except Exception as exc:  # noqa: BLE001 - the database may come back: keep standing by
                if said != "unreachable":
                    self.say(f"posguard: standby for account {self.cfg.account}: the journal's database"
                             f" {safe_url(self.cfg.journal_url)} does not answer ({type(exc).__name__}); trying")
                    said = "unreachable"
                self._drop()
                stop.wait(self.cfg.lease.renew_s)
                continue
            if epoch is not None:
                wait = recv_window_s(self.cfg) + CLOCK_SKEW_S + self.cfg.lease.margin_s
                self.grant = LeaseGrant(self.cfg.account, self.holder, epoch, self.cfg.lease,
                                        entries_after=boottime() + wait)
                self.lost = None
                self.say(f"posguard: this host holds account {self.cfg.account} (lease epoch {epoch}, holder"
                         f" {self.holder}); entries held {wait:.1f} s for the previous holder's late orders")
                self.renewing = asyncio.run_coroutine_threadsafe(self._renew(self.grant), self.loop)
                return self.grant
            if capped and (current is None or not current["live"]) and said != "capped":
                said = "capped"
                self.say(f"posguard: standby for account {self.cfg.account}: this host holds"
                         f" {self.cfg.lease.max_per_host} accounts already (lease.max_per_host); left to another host")
            elif current is not None and current["live"] and (current["holder"], current["epoch"]) != said:
                said = (current["holder"], current["epoch"])
                self.say(f"posguard: standby for account {self.cfg.account}: held by {current['holder']}"
                         f" (epoch {current['epoch']}) since {current['acquired_at']:%Y-%m-%d %H:%M:%S%z}")
            stop.wait(self.cfg.lease.renew_s)
        return None

    async def _renew(self, grant: LeaseGrant) -> None:
        while self.lost is None:
            await asyncio.sleep(self.cfg.lease.renew_s)
            try:
                lease = await self._connect()
                lease.epoch = grant.epoch
                renewed = await asyncio.wait_for(lease.renew(), self.cfg.lease.ttl_s)
            except Exception as exc:  # noqa: BLE001 - the journal's process fences itself meanwhile
                logger.error("account {}: lease not renewed by posguard run ({}: {})", grant.account,
                             type(exc).__name__, exc)
                self._drop_now()
                continue
            if not renewed:
                self.lost = f"lease epoch {grant.epoch} on account {grant.account} lost (taken over or expired)"
                logger.critical("ALERT {}", self.lost)

    def release(self) -> None:
        """A clean stop: expire the lease now, so a standby takes over at once."""
        grant, self.grant = self.grant, None
        if self.renewing is not None:
            self.loop.call_soon_threadsafe(self.renewing.cancel)
            self.renewing = None
        if grant is None or self.lost is not None:
            return
        try:
            self._run(self._release(grant), timeout=10.0)
        except Exception as exc:  # noqa: BLE001 - it then expires by itself, after its TTL
            logger.warning("lease of account {} not released ({}); it expires by itself", grant.account, exc)

    async def _release(self, grant: LeaseGrant) -> None:
        lease = await self._connect()
        lease.epoch = grant.epoch
        await lease.release()

    def _drop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._close(), timeout=5.0)

    def _drop_now(self) -> None:
        if self.lease is not None and self.lease.conn is not None:
            with contextlib.suppress(Exception):
                self.lease.conn.terminate()
        self.lease = None

    async def _close(self) -> None:
        if self.lease is not None and self.lease.conn is not None:
            with contextlib.suppress(Exception):
                await self.lease.conn.close(timeout=2)
        self.lease = None

    def close(self) -> None:
        self.release()
        self._drop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
