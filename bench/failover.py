"""Failover of an account between two hosts on a shared journal (PostgreSQL), for lease TTLs side
by side: `posguard run` on host A holds the account with a protected position, host B stands by;
A's whole host is killed (kill -9 of its `posguard run` and of every process of its actor system),
and B is timed from that instant:

- `lease_s`: until B holds the account's lease (epoch + 1);
- `protected_s`: until B's deployment has recovered the position from the shared journal and the
  venue and reports it PROTECTED (its first protective action: the stop verified by client id);
- `entry_s`: until B's first entry is accepted (after its wait for the previous holder's late
  orders: the venue's recv window + 1 s + the lease's margin);
- `late_writes`: orders of A's epoch the venue accepted after the kill (the duplicate-writer
  window, which must be 0), read from the venue's own order log by the epoch in the client ids.

Everything runs on this machine: a private PostgreSQL cluster, the simulated venue in its own
process (`posguard venue`), and each host a `posguard run` with a runtime directory of its own.
The journal's own cost per entry on each backend is bench/journal_cost.py.

    python bench/failover.py [--ttls 2,3] [--rounds 2]
Last line: `failover ttl=<s> lease_s=<p50> protected_s=<p50> entry_s=<p50> late_writes=<n>` per TTL.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.position.base import epoch_of
from supervisor.actor_system.start import free_port
from supervisor.client import ClientError
from supervisor.host.procfs import kill_sessions
from supervisor.host.runtime import read_holder
from tests.support import postgres
from tests.support.configs import demo_config
from tests.support.processes import PosguardRun, Served, venue_orders

POLL_S = 0.02                        # between status round trips (a bench measures by polling)


def _configs(folder: Path, url: str, password_file: str, account: str, ttl: float) -> tuple[Path, Path, Path]:
    (folder / "venue").mkdir()
    venue = demo_config(folder / "venue", free_port(), opens=False,
                        tables={"venue.simulated": {"recv_window_s": 1.0}})
    lease = {"ttl_s": ttl, "renew_s": round((ttl - 0.5) / 4, 3), "margin_s": 0.5}
    hosts = []
    for name in ("a", "b"):
        (folder / name).mkdir()
        hosts.append(demo_config(folder / name, free_port(), opens=False, tables={
            "venue.simulated": {"recv_window_s": 1.0, "server": str(folder / "venue" / "venue.sock")},
            "journal": {"url": url, "account": account, "password_file": password_file},
            "runtime": {"dir": "var"}, "lease": lease}))
    return venue, hosts[0], hosts[1]


def _until(check: Any, within: float) -> float:
    """Seconds on the monotonic clock when `check()` first held (polled)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(ClientError, OSError, StopIteration, KeyError):
            if check():
                return time.monotonic()
        time.sleep(POLL_S)
    raise RuntimeError("the standby did not get there in time")


def _state(run: PosguardRun, symbol: str) -> str:
    return next(p["state"] for p in run.status()["positions"] if p["symbol"] == symbol)


def one_round(folder: Path, server: Any, ttl: float, n: int) -> dict[str, float]:
    url = server.create_database(f"failover_{n}")
    venue_cfg, host_a, host_b = _configs(folder, url, server.password_file, "desk", ttl)
    socket = str(folder / "venue" / "venue.sock")
    with contextlib.ExitStack() as stack:
        stack.enter_context(Served("venue", venue_cfg, "--socket", socket))
        a = stack.enter_context(PosguardRun(host_a, duration=300, lock="deployment.lock"))
        a.read_until("holds account desk")
        a.read_until("API on")
        b = stack.enter_context(PosguardRun(host_b, duration=300, lock="deployment.lock"))
        b.read_until("standby for account desk", "held by")
        with a.client(timeout=30.0) as pg:
            pg.open("BTCUSDT", "buy", 0.01, sl_pct=2.0, wait=30.0)
        a.wait_states({"BTCUSDT": "PROTECTED"})
        before = {o.client_order_id for o in venue_orders(socket) if epoch_of(o.client_order_id) == 1}

        session = read_holder(str(a.lock)).get("session")
        killed = time.monotonic()
        a.proc.kill()
        kill_sessions({str(session)})
        b.read_until("holds account desk", "epoch 2")
        leased = time.monotonic()
        protected = _until(lambda: _state(b, "BTCUSDT") == "PROTECTED", 60.0)
        entered = None
        while entered is None:
            with b.client(timeout=30.0) as pg:
                try:
                    pg.open("ETHUSDT", "sell", 0.5, sl_pct=2.0, wait=30.0)
                    entered = time.monotonic()
                except ClientError as exc:              # the deployment still starting: ask again
                    if time.monotonic() - killed > 60:
                        raise RuntimeError(f"no entry accepted: {exc.message}") from None
                    time.sleep(POLL_S)
        late = {o.client_order_id for o in venue_orders(socket) if epoch_of(o.client_order_id) == 1} - before
        b.interrupt()
    return {"lease_s": leased - killed, "protected_s": protected - killed, "entry_s": entered - killed,
            "late_writes": float(len(late))}


def main(ttls: list[float], rounds: int) -> None:
    server = postgres.PostgresServer().start()
    try:
        results: dict[float, list[dict[str, float]]] = {}
        n = 0
        for _ in range(rounds):
            for ttl in ttls:                            # in turns: a slow moment hits every TTL alike
                n += 1
                with tempfile.TemporaryDirectory(prefix="posguard-failover-") as folder:
                    figures = one_round(Path(folder), server, ttl, n)
                results.setdefault(ttl, []).append(figures)
                print(f"ttl={ttl:g} round: " + " ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)
    finally:
        server.stop()
    for ttl, rows in results.items():
        p50 = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"failover ttl={ttl:g} lease_s={p50['lease_s']:.2f} protected_s={p50['protected_s']:.2f}"
              f" entry_s={p50['entry_s']:.2f} late_writes={int(sum(r['late_writes'] for r in rows))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttls", default="2,3", help="lease TTLs to compare, seconds (default 2,3)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    why = postgres.missing()
    if why:
        sys.exit(f"failover: {why}")
    main([float(t) for t in args.ttls.split(",")], args.rounds)
