"""Recovery times, on the simulated venue in its own process (it outlives our crashes).

1. kill -9 of one PositionActor (holding a protected position) -> a new actor restarted,
   reconciled with the journal and the venue, ready (PROTECTED again). Two figures, apart:
   - the first restart after a quiet period -- what an operator meets: the supervisor's back-off
     starts from `[supervision] backoff_s` (50 ms). One kill in each of `--rounds` fresh
     deployments. Goal <= 2 s.
   - consecutive restarts: one actor killed again as soon as it is ready, `--rounds` times after
     a first kill. Its back-off doubles with each restart (to 5 s), so these figures are mostly
     that back-off, by design: a crash loop is slowed down.
2. kill -9 of the whole program (`posguard run` and every actor process) -> `posguard run`
   started again -> deployment ready (every symbol reconciled).
3. kill -9 of the Supervisor under `posguard run` -> run notices, replaces the actor system,
   every symbol PROTECTED again (reconciled from the journal).

    python bench/recovery.py [--rounds 10]          # the quickest: --rounds 1
Last line: `actor_ready_s first=<median> consecutive_median=<x> consecutive_max=<y> program_ready_s=<z>`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from loguru import logger

from actors.messages import ClosePosition, OpenPosition, PositionSnapshot
from adapters.base import Side
from adapters.sim.remote import RemoteSimAdapter
from supervisor.host.procfs import kill_system
from tests.support import kit

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def config(tmp: Path, venue_socket: str, admin_port: int) -> Path:
    prices = {s: 100.0 * (i + 1) for i, s in enumerate(SYMBOLS)}
    return kit.demo_config(tmp, admin_port, symbols=prices, lag=24.0, name="recovery.toml",
                           opens=[{"symbol": s, "side": "buy", "qty": 1.0, "stop_pct": 3.0} for s in SYMBOLS],
                           tables={"venue.simulated": {"server": venue_socket, "latency_s": 0.05, "volatility": 0.0},
                                   "supervision": {"heartbeat_s": 0.5}})


def kill_until_ready(d: kit.Deployment, symbol: str) -> float:
    """kill -9 the symbol's PositionActor; seconds until the restarted one is PROTECTED again."""
    pid = d.pid(f"position:{symbol}")
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    recovering = d.wait(symbol, "RECOVERING", after=killed)
    ready: PositionSnapshot = d.wait(symbol, "PROTECTED", after=recovering.updated_at, within=30)
    return ready.updated_at - killed


def protected_deployment(asys: object, tmp: Path, name: str, venue_socket: str) -> kit.Deployment:
    d = kit.Deployment(asys, ("BTCUSDT",), str(tmp / f"{name}.sqlite"),
                       functools.partial(RemoteSimAdapter, venue_socket), timeout=20)
    d.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 90.0))
    d.wait("BTCUSDT", "PROTECTED")
    return d


def flat_and_stopped(d: kit.Deployment) -> None:
    """Close (the next deployment finds the venue flat) and stop."""
    d.ask(ClosePosition("BTCUSDT"))
    d.wait("BTCUSDT", "IDLE", within=30)
    d.stop()


def position_actor_restarts(tmp: Path, venue_socket: str, rounds: int) -> tuple[list[float], list[float]]:
    """(first restarts after a quiet period, consecutive restarts)."""
    first, consecutive = [], []
    with kit.actor_system() as asys:
        for n in range(rounds):                           # a fresh deployment: nothing restarted before
            d = protected_deployment(asys, tmp, f"quiet-{n}", venue_socket)
            first.append(kill_until_ready(d, "BTCUSDT"))
            flat_and_stopped(d)
        d = protected_deployment(asys, tmp, "consecutive", venue_socket)
        kill_until_ready(d, "BTCUSDT")                    # the first of the series: a quiet one
        consecutive = [kill_until_ready(d, "BTCUSDT") for _ in range(rounds)]
        flat_and_stopped(d)
    return first, consecutive


def until_protected(run: kit.PosguardRun, *words: str) -> None:
    """Read the live view until every symbol has shown PROTECTED (with `words`) in it."""
    assert run.proc.stdout is not None
    protected: set[str] = set()
    for line in run.proc.stdout:
        run.out.append(line)
        protected |= {s for s in SYMBOLS if s in line and "PROTECTED" in line and all(w in line for w in words)}
        if protected == set(SYMBOLS):
            return
    raise RuntimeError(f"not every symbol was shown protected: {''.join(run.out[-20:])}")


def whole_program_restart(cfg: Path, admin_port: int) -> tuple[float, float]:
    with kit.running(cfg, duration=600) as first:
        until_protected(first)
        killed = time.monotonic()
        kill_system(admin_port, {first.proc.pid})
        first.proc.wait()
    started = time.monotonic()
    with kit.running(cfg, duration=600) as second:
        second.read_until("symbols on simulated venue")  # printed once every symbol is reconciled
        ready = time.monotonic()
        second.interrupt()
    return ready - killed, ready - started


def supervisor_replaced(cfg: Path) -> tuple[float, float]:
    with kit.running(cfg, duration=600) as run:
        until_protected(run)
        status = kit.posguard("status", "--config", str(cfg), "--json")
        killed = time.monotonic()
        os.kill(json.loads(status.stdout)["supervisor_pid"], signal.SIGKILL)
        run.read_until("ALERT supervisor")
        noticed = time.monotonic()
        until_protected(run, "confirmed")                # every symbol recovered in the new system
        replaced = time.monotonic()
        run.interrupt()
    return noticed - killed, replaced - killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="quiet restarts, and consecutive ones (default 10)")
    args = parser.parse_args()
    logger.remove()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        venue_socket = str(tmp / "venue.sock")           # outside var/: a deployment's end leaves it serving
        admin_port = kit.free_port()
        cfg = config(tmp, venue_socket, admin_port)
        with kit.Served("venue", cfg) as venue:
            assert "listening" in venue.first_line, venue.first_line
            first, consecutive = position_actor_restarts(tmp, venue_socket, args.rounds)
            whole_from_kill, whole_from_start = whole_program_restart(cfg, admin_port)
            noticed, replaced = supervisor_replaced(cfg)
    print("recovery on the simulated venue (50 ms round trip, 24 s REST lag)")
    print(f"kill -9 PositionActor, first restart after a quiet period -> restarted, reconciled, ready:"
          f" median {statistics.median(first):.3f} s, max {max(first):.3f} s over {len(first)} deployments"
          f" (goal <= 2 s)")
    print(f"kill -9 PositionActor, {len(consecutive)} consecutive restarts of one actor (its back-off doubling"
          f" from 50 ms to 5 s): median {statistics.median(consecutive):.3f} s, max {max(consecutive):.3f} s;"
          f" in order: {' '.join(f'{t:.2f}' for t in consecutive)}")
    print(f"kill -9 whole program -> restarted, reconciled, ready: {whole_from_kill:.3f} s"
          f" ({whole_from_start:.3f} s of it the new process starting and reconciling)")
    print(f"kill -9 Supervisor under posguard run -> noticed in {noticed:.3f} s, new system with every symbol"
          f" protected again in {replaced:.3f} s")
    print(f"actor_ready_s first={statistics.median(first):.3f} consecutive_median={statistics.median(consecutive):.3f}"
          f" consecutive_max={max(consecutive):.3f} program_ready_s={whole_from_kill:.3f}")


if __name__ == "__main__":
    main()
