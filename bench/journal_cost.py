"""The journal's cost per entry on each backend: what an entry waits for before its order may be
sent -- the intent and the order row committed durably (fsync'd) -- on the embedded SQLite file
and on PostgreSQL (a private cluster on 127.0.0.1, fsync on, as tests/support/postgres.py starts
it), and the same with the account's lease checked in the transaction (the fence every write of
a fleet's holder pays). Both in this process, in turns, so the ratio compares like with like.

    python bench/journal_cost.py [--entries 400] [--rounds 3]
Last line: `entry_ms sqlite=<p50> postgresql=<p50> postgresql_fenced=<p50> ratio=<fenced/sqlite>`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from actors.journal.lease import Lease, LeaseSettings, ensure_schema
from actors.journal.store import JournalStore
from actors.messages import JournalIntent, JournalOrder
from adapters.base import OrderRequest, Side
from tests.support import postgres


async def _entries(store: JournalStore, tag: str, n: int) -> list[float]:
    took = []
    for i in range(n):
        cid = f"{tag}-{i}"
        msg = JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, cid, stop_price=95.0), "i" + cid, "entry",
                           intent=JournalIntent("i" + cid, "BTCUSDT", Side.BUY, 1.0, 95.0))
        start = time.perf_counter()
        await store.record(msg)
        took.append(time.perf_counter() - start)
    return took


async def main(entries: int, rounds: int) -> None:
    server = postgres.PostgresServer().start()
    folder = Path(tempfile.mkdtemp(prefix="posguard-bench-"))
    try:
        url = server.create_database("bench")
        sqlite = JournalStore(str(folder / "j.sqlite"))
        plain = JournalStore(url, account="plain", password_file=server.password_file)
        fenced = JournalStore(url, account="fenced", password_file=server.password_file)
        lease_conn = await asyncpg.connect(url, password=server.password)
        await ensure_schema(lease_conn)
        lease = Lease(lease_conn, "fenced", "bench", LeaseSettings(ttl_s=3600.0, margin_s=1.0))
        for store in (sqlite, plain, fenced):
            await store.open()
        assert await lease.acquire() is not None
        fenced.backend.fence = lease.fence  # type: ignore[attr-defined]
        took: dict[str, list[float]] = {"sqlite": [], "postgresql": [], "postgresql_fenced": []}
        for r in range(rounds):                       # in turns: a slow moment of the disk hits all three
            for name, store in (("sqlite", sqlite), ("postgresql", plain), ("postgresql_fenced", fenced)):
                took[name] += await _entries(store, f"{name}-{r}", entries)
        for store in (sqlite, plain, fenced):
            await store.close()
        await lease_conn.close()
    finally:
        server.stop()
    p50 = {k: statistics.median(v) * 1000 for k, v in took.items()}
    for name, values in took.items():
        ms = sorted(v * 1000 for v in values)
        print(f"{name:18} entries={len(ms)} p50={p50[name]:.3f} ms p90={ms[int(len(ms) * 0.9)]:.3f} ms"
              f" max={ms[-1]:.3f} ms")
    print(f"entry_ms sqlite={p50['sqlite']:.3f} postgresql={p50['postgresql']:.3f}"
          f" postgresql_fenced={p50['postgresql_fenced']:.3f} ratio={p50['postgresql_fenced'] / p50['sqlite']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    why = postgres.missing()
    if why:
        raise SystemExit(f"journal_cost: {why}")
    asyncio.run(main(args.entries, args.rounds))
