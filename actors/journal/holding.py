"""The journal's process holds the account's lease while its deployment runs.

`posguard run` takes the lease (epoch N) before it starts anything; the JournalActor renews
that very (account, holder, epoch) on a connection of its own, every `renew_s`, and every write
it commits is fenced on it (actors/journal/lease.py). The renewal runs on the journal's event
loop, beside the writes, never behind them: a journal busy with a burst still renews.

Three outcomes of a renewal, each told to the actor thread once:
- renewed: the self-fence deadline moves on (a fence that had closed opens again);
- the database cannot be reached: nothing is said to it, the deadline runs out by itself and
  every write (so every entry, cancel and stop move) is refused from then on; we keep trying;
- the database says the lease is no longer ours (taken over, or expired while we were away):
  lost for good -- this process never journals again; `posguard run` stops the deployment and
  stands by.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from loguru import logger

from actors.journal.lease import Lease
from actors.journal.postgres import CONNECT_TIMEOUT_S, PostgresBackend
from actors.settings import LeaseGrant


class LeaseKeeper:
    def __init__(self, backend: PostgresBackend, grant: LeaseGrant,
                 on_change: Callable[[bool, str], None],
                 on_renewed: Callable[[float], None] = lambda deadline: None) -> None:
        self.backend, self.grant, self.on_change, self.on_renewed = backend, grant, on_change, on_renewed
        self.lease: Lease | None = None
        self.lost: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._said_ok = True

    @property
    def deadline(self) -> float:
        """Boot-time seconds: nothing of this holder may reach the venue later (0: none)."""
        return self.lease.deadline if self.lease is not None and self.lost is None else 0.0

    async def start(self) -> None:
        """Renew once, now: a grant that is no longer ours opens nothing (raises)."""
        conn = await self.backend.connect()
        self.lease = Lease(conn, self.grant.account, self.grant.holder, self.grant.settings)
        self.lease.epoch = self.grant.epoch
        if not await self.lease.renew():
            await self.close()
            raise RuntimeError(f"account {self.grant.account}: lease epoch {self.grant.epoch} is no longer ours")
        self.backend.fence = self.lease.fence
        self.on_renewed(self.lease.deadline)
        self.task = asyncio.get_running_loop().create_task(self._renewing())

    async def _renewing(self) -> None:
        assert self.lease is not None
        while self.lost is None:
            await asyncio.sleep(self.grant.settings.renew_s)
            try:
                if self.lease.conn is None or self.lease.conn.is_closed():
                    self.lease.conn = await self.backend.connect(timeout=min(CONNECT_TIMEOUT_S,
                                                                             self.grant.settings.ttl_s))
                renewed = await asyncio.wait_for(self.lease.renew(), self.grant.settings.ttl_s)
            except Exception as exc:  # noqa: BLE001 - unreachable: the deadline fences us meanwhile
                self._say(False, f"lease not renewed ({type(exc).__name__}: {exc}); entries fenced"
                                 " from its deadline until the database answers")
                with contextlib.suppress(Exception):
                    if self.lease.conn is not None:
                        self.lease.conn.terminate()
                self.lease.conn = None
                continue
            if not renewed:
                self.lost = (f"account {self.grant.account}: lease epoch {self.grant.epoch} lost (taken over"
                             " or expired); this deployment journals nothing more")
                logger.critical("ALERT {}", self.lost)
                self.on_change(False, self.lost)
                self.on_renewed(0.0)
                return
            self.on_renewed(self.lease.deadline)
            self._say(True, "lease renewed")

    def _say(self, ok: bool, what: str) -> None:
        if ok != self._said_ok:
            self._said_ok = ok
            (logger.info if ok else logger.error)("account {}: {}", self.grant.account, what)
            self.on_change(ok, what)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self.lease is not None and self.lease.conn is not None:
            with contextlib.suppress(Exception):
                await self.lease.conn.close(timeout=2)
