"""The account's lease on PostgreSQL and the fencing inside the journal's transactions: a writer
whose epoch was taken over is refused by the database whatever its own clock says; a holder past
its own deadline refuses itself without asking; a takeover waits for a write in flight, and no
write of the old epoch follows it; the epoch only grows; a clean release frees it at once."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest

from actors.journal.lease import Fenced, Lease, LeaseSettings, ensure_schema, holder_of
from actors.journal.store import JournalStore
from actors.messages import JournalIntent, JournalOrder
from adapters.base import OrderRequest, Side

SETTINGS = LeaseSettings(ttl_s=30.0, renew_s=10.0, margin_s=1.0)     # expiry is made by hand, not waited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _run(scenario: Any) -> None:
    """Run a scenario; every connection and store it opened is closed, however it ends (a failing
    test must not leave connections behind for the next ones: the server has a few dozen)."""
    async def go() -> None:
        opened: list[Any] = []
        try:
            await scenario(opened)
        finally:
            for thing in reversed(opened):
                with contextlib.suppress(Exception):
                    await thing.close()
    asyncio.run(go())


async def _connect(server: Any, url: str, opened: list[Any]) -> Any:
    conn = await asyncpg.connect(url, password=server.password)
    opened.append(conn)
    return conn


async def _expire(conn: Any, account: str) -> None:
    """What the database's clock does when nobody renews: the lease lapses (made now, not waited for)."""
    await conn.execute("UPDATE posguard.leases SET expires_at = clock_timestamp() - interval '1 second'"
                       " WHERE account = $1", account)


async def _writer(server: Any, url: str, lease: Lease, opened: list[Any]) -> JournalStore:
    store = JournalStore(url, account="acct1", password_file=server.password_file)
    opened.append(store)
    await store.open()
    store.backend.fence = lease.fence  # type: ignore[attr-defined]
    return store


def _order(cid: str) -> JournalOrder:
    return JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, cid), "i-" + cid, "entry",
                        intent=JournalIntent("i-" + cid, "BTCUSDT", Side.BUY, 1.0, 95.0))


def test_a_writer_whose_lease_was_taken_over_is_refused_by_the_database(postgres_server, pg_url):
    async def scenario(opened: list[Any]) -> None:
        admin = await _connect(postgres_server, pg_url, opened)
        await ensure_schema(admin)
        a_conn = await _connect(postgres_server, pg_url, opened)
        b_conn = await _connect(postgres_server, pg_url, opened)
        a, b = Lease(a_conn, "acct1", "host-a", SETTINGS), Lease(b_conn, "acct1", "host-b", SETTINGS)
        assert await a.acquire() == 1 and await b.acquire() is None          # live: b stands by
        assert (await holder_of(admin, "acct1"))["holder"] == "host-a"
        a_store = await _writer(postgres_server, pg_url, a, opened)
        await a_store.record(_order("a1"))

        await _expire(admin, "acct1")                # host-a paused past the TTL; its own clock has not moved
        assert await b.acquire() == 2
        b_store = await _writer(postgres_server, pg_url, b, opened)
        assert a.valid()                             # a still believes it holds the account ...
        with pytest.raises(Fenced, match="no longer ours"):
            await a_store.record(_order("a2"))       # ... the database says otherwise
        assert not a.valid() and not await a.renew()
        await b_store.record(_order("b1"))
        assert [r["client_order_id"] for r in await b_store.orders()] == ["a1", "b1"]   # nothing of a2
    _run(scenario)


def test_a_holder_past_its_own_deadline_fences_itself_without_asking(postgres_server, pg_url):
    async def scenario(opened: list[Any]) -> None:
        admin = await _connect(postgres_server, pg_url, opened)
        await ensure_schema(admin)
        clock = Clock()
        conn = await _connect(postgres_server, pg_url, opened)
        lease = Lease(conn, "acct1", "host-a", SETTINGS, clock=clock)
        assert await lease.acquire() == 1 and lease.deadline == 1000.0 + 30.0 - 1.0
        store = await _writer(postgres_server, pg_url, lease, opened)
        await store.record(_order("a1"))
        clock.now += 29.5                            # no renewal got through (cut off from the database)
        assert not lease.valid()
        with pytest.raises(Fenced, match="past its deadline"):
            await store.record(_order("a2"))         # refused here: the database's lease is still live
        assert (await holder_of(admin, "acct1"))["live"]
        assert await lease.renew() and lease.valid()  # a renewal that gets through: ours again
        await store.record(_order("a3"))
        assert [r["client_order_id"] for r in await store.orders()] == ["a1", "a3"]
    _run(scenario)


def test_a_takeover_waits_for_a_write_in_flight_and_no_old_write_follows_it(postgres_server, pg_url):
    async def scenario(opened: list[Any]) -> None:
        admin = await _connect(postgres_server, pg_url, opened)
        await ensure_schema(admin)
        a_conn = await _connect(postgres_server, pg_url, opened)
        b_conn = await _connect(postgres_server, pg_url, opened)
        short = LeaseSettings(ttl_s=0.5, renew_s=0.1, margin_s=0.0)
        a, b = Lease(a_conn, "acct1", "host-a", short), Lease(b_conn, "acct1", "host-b", short)
        store = await _writer(postgres_server, pg_url, a, opened)     # migrated before the short lease
        await a.acquire()
        backend = store.backend
        async with backend.transaction(durable=True):          # a's write: fenced, its lock on the row taken
            await backend.execute("INSERT INTO intents (intent_id, symbol, side, qty, stop_price, created_at)"
                                  " VALUES ('in-flight', 'BTCUSDT', 'buy', 1, 95, 0)")
            # The lease lapses on the database's clock while the write is still open (a slow
            # host); only elapsed time makes that, so it is waited for, bounded.
            while (await holder_of(admin, "acct1"))["live"]:
                await asyncio.sleep(0.05)
            takeover = asyncio.create_task(b.acquire())
            for _ in range(500):                                # until it waits on a's lock (bounded)
                if await _waiting(postgres_server, pg_url):
                    break
                await asyncio.sleep(0.01)
            assert not takeover.done()               # the takeover waits for this write
        assert await takeover == 2                   # a's write committed first; then b holds it
        with pytest.raises(Fenced):
            await store.record(_order("late"))
        rows = await store.rows("SELECT intent_id FROM intents")
        assert [r["intent_id"] for r in rows] == ["in-flight"]
    _run(scenario)


async def _waiting(server: Any, url: str) -> int:
    probe = await asyncpg.connect(url, password=server.password)
    try:
        return int(await probe.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                        " AND datname = current_database()"))
    finally:
        await probe.close()


def test_the_epoch_only_grows_and_a_clean_release_frees_the_account_at_once(postgres_server, pg_url):
    async def scenario(opened: list[Any]) -> None:
        admin = await _connect(postgres_server, pg_url, opened)
        await ensure_schema(admin)
        conns = [await _connect(postgres_server, pg_url, opened) for _ in range(3)]
        leases = [Lease(c, "acct1", f"host-{i}", SETTINGS) for i, c in enumerate(conns)]
        assert await leases[0].acquire() == 1
        await leases[0].release()                    # posguard stop: no TTL to wait out
        assert not leases[0].valid() and await leases[1].acquire() == 2
        assert await leases[2].acquire() is None
        await _expire(admin, "acct1")
        assert await leases[2].acquire() == 3 and await leases[0].acquire() is None
        other = Lease(conns[0], "acct2", "host-0", SETTINGS)
        assert await other.acquire() == 1            # accounts are leased apart
    _run(scenario)


def test_the_journals_keeper_renews_the_grant_it_was_given_and_once_taken_over_journals_nothing(
        postgres_server, pg_url):
    """The journal's process (actors/journal/holding.py): it renews exactly the epoch `posguard
    run` took; a grant that is no longer ours opens nothing; a takeover is found by its next
    renewal, said once, and no write of it lands from then on."""
    from actors.journal.holding import LeaseKeeper
    from actors.settings import LeaseGrant

    fast = LeaseSettings(ttl_s=30.0, renew_s=0.1, margin_s=1.0)

    async def scenario(opened: list[Any]) -> None:
        admin = await _connect(postgres_server, pg_url, opened)
        await ensure_schema(admin)
        run = Lease(await _connect(postgres_server, pg_url, opened), "acct1", "host-a", fast)
        assert await run.acquire() == 1                          # what `posguard run` took
        store = JournalStore(pg_url, account="acct1", password_file=postgres_server.password_file)
        opened.append(store)
        await store.open()
        said: list[tuple[bool, str]] = []
        lost = asyncio.Event()

        def told(ok: bool, what: str) -> None:
            said.append((ok, what))
            lost.set()

        stale = LeaseKeeper(store.backend, LeaseGrant("acct1", "host-a", 7, fast), told)   # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="epoch 7 is no longer ours"):
            await stale.start()
        keeper = LeaseKeeper(store.backend, LeaseGrant("acct1", "host-a", 1, fast), told)  # type: ignore[arg-type]
        opened.append(keeper)
        await keeper.start()
        await store.record(_order("a1"))                         # fenced on epoch 1, which holds
        assert keeper.deadline > 0

        await _expire(admin, "acct1")
        other = Lease(await _connect(postgres_server, pg_url, opened), "acct1", "host-b", fast)
        assert await other.acquire() == 2
        await asyncio.wait_for(lost.wait(), 10.0)                # its next renewal finds out
        assert said == [(False, "account acct1: lease epoch 1 lost (taken over or expired); this deployment"
                                " journals nothing more")]
        assert keeper.deadline == 0.0                            # what the exchange is told: send nothing
        with pytest.raises(Fenced):
            await store.record(_order("a2"))
        assert [r["client_order_id"] for r in await store.orders()] == ["a1"]
    _run(scenario)
