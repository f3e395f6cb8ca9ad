"""Recovery times, on the simulated venue in its own process (it outlives our crashes).

1. kill -9 of one PositionActor (holding a protected position) -> a new actor restarted,
   reconciled with the journal and the venue, ready (out of RECOVERING). Goal <= 2 s.
2. kill -9 of the whole program (`posguard run` and every actor process) -> `posguard run`
   started again -> deployment ready (every symbol reconciled).
3. kill -9 of the Supervisor under `posguard run` -> run notices, replaces the actor system,
   every symbol PROTECTED again (reconciled from the journal).

    python bench/recovery.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from actors.messages import (  # noqa: E402
    DeploymentReady,
    OpenPosition,
    PositionSettings,
    StartDeployment,
    StatusRequest,
    StopDeployment,
    WaitForState,
)
from adapters.base import Side  # noqa: E402
from adapters.sim_server import RemoteSimAdapter  # noqa: E402
from supervisor.processes import kill_system  # noqa: E402
from tests.conftest import free_port  # noqa: E402

POSGUARD = [sys.executable, "-m", "supervisor.cli"]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def config(tmp: Path, venue_port: int, admin_port: int) -> Path:
    prices = "\n".join(f"{s} = {100.0 * (i + 1)}" for i, s in enumerate(SYMBOLS))
    opens = "\n".join(f'[[open]]\nsymbol = "{s}"\nside = "buy"\nqty = 1.0\nstop_pct = 3.0\n' for s in SYMBOLS)
    path = tmp / "recovery.toml"
    path.write_text(textwrap.dedent(f"""
        [venue]
        name = "simulated"
        [venue.simulated]
        server = "127.0.0.1:{venue_port}"
        position_lag_s = 24.0
        latency_s = 0.05
        attached_stops = true
        volatility = 0.0
        [venue.simulated.prices]
        """) + prices + textwrap.dedent(f"""
        [deployment]
        symbols = {list(SYMBOLS)!r}
        refresh_s = 0.2
        [supervision]
        heartbeat_s = 0.5
        [risk]
        max_notional = 100000.0
        [journal]
        path = "journal.sqlite"
        [admin]
        port = {admin_port}
        [logging]
        file = "posguard.log"
        """).replace("'", '"') + opens)
    return path


def position_actor_restart(tmp: Path, venue_port: int, rounds: int) -> list[float]:
    import functools

    from supervisor.supervisor import Supervisor
    from supervisor.system import start_system

    asys = start_system(free_port())
    times = []
    try:
        sup = asys.createActor(Supervisor)
        ready = asys.ask(sup, StartDeployment(("BTCUSDT",), str(tmp / "actor-bench.sqlite"),
                                              functools.partial(RemoteSimAdapter, "127.0.0.1", venue_port),
                                              PositionSettings()), 20)
        assert isinstance(ready, DeploymentReady), ready
        asys.ask(sup, OpenPosition("BTCUSDT", Side.BUY, 1.0, 90.0), 5)
        asys.ask(sup, WaitForState("BTCUSDT", ("PROTECTED",)), 10)
        for _ in range(rounds):
            pid = dict((c, p) for c, p, _ in asys.ask(sup, StatusRequest(), 5).children)["position:BTCUSDT"]
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            recovering = asys.ask(sup, WaitForState("BTCUSDT", ("RECOVERING",), newer_than=killed), 10)
            ready_snap = asys.ask(sup, WaitForState("BTCUSDT", ("PROTECTED",), newer_than=recovering.updated_at), 10)
            times.append(ready_snap.updated_at - killed)
        asys.ask(sup, StopDeployment(), 10)
    finally:
        asys.shutdown()
    return times


def whole_program_restart(cfg: Path, admin_port: int) -> tuple[float, float]:
    first = subprocess.Popen([*POSGUARD, "run", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    protected: set[str] = set()
    for line in first.stdout:                            # the live table: wait for every symbol
        protected |= {s for s in SYMBOLS if s in line and "PROTECTED" in line}
        if protected == set(SYMBOLS):
            break
    killed = time.monotonic()
    kill_system(admin_port, {first.pid})
    first.wait()
    started = time.monotonic()
    second = subprocess.Popen([*POSGUARD, "run", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        for line in second.stdout:
            if "symbols on simulated venue" in line:     # printed once every symbol is reconciled
                ready = time.monotonic()
                break
        else:
            raise RuntimeError("the restarted program never became ready")
    finally:
        second.send_signal(signal.SIGINT)
        second.communicate(timeout=30)
    return ready - killed, ready - started


def supervisor_replaced(cfg: Path) -> tuple[float, float]:
    import json

    run = subprocess.Popen([*POSGUARD, "run", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        protected: set[str] = set()
        for line in run.stdout:
            protected |= {s for s in SYMBOLS if s in line and "PROTECTED" in line}
            if protected == set(SYMBOLS):
                break
        status = subprocess.run([*POSGUARD, "status", "--config", str(cfg), "--json"], cwd=ROOT, text=True,
                                capture_output=True, timeout=20)
        killed = time.monotonic()
        os.kill(json.loads(status.stdout)["supervisor_pid"], signal.SIGKILL)
        for line in run.stdout:
            if "ALERT supervisor" in line:
                noticed = time.monotonic()
                break
        protected = set()
        for line in run.stdout:                          # every symbol recovered in the new system
            protected |= {s for s in SYMBOLS if s in line and "PROTECTED" in line and "confirmed" in line}
            if protected == set(SYMBOLS):
                return noticed - killed, time.monotonic() - killed
        raise RuntimeError("the replaced system never showed every symbol protected")
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    logger.remove()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        venue_port, admin_port = free_port(), free_port()
        cfg = config(tmp, venue_port, admin_port)
        venue = subprocess.Popen([*POSGUARD, "venue", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert "listening" in venue.stdout.readline()
            actor = position_actor_restart(tmp, venue_port, args.rounds)
            whole_from_kill, whole_from_start = whole_program_restart(cfg, admin_port)
            noticed, replaced = supervisor_replaced(cfg)
        finally:
            venue.terminate()
            venue.wait(timeout=10)
    print(f"recovery on the simulated venue (50 ms round trip, 24 s REST lag), {args.rounds} rounds")
    print(f"kill -9 PositionActor -> restarted, reconciled, ready: median {statistics.median(actor):.3f} s,"
          f" max {max(actor):.3f} s (goal <= 2 s)")
    print(f"kill -9 whole program -> restarted, reconciled, ready: {whole_from_kill:.3f} s"
          f" ({whole_from_start:.3f} s of it the new process starting and reconciling)")
    print(f"kill -9 Supervisor under posguard run -> noticed in {noticed:.3f} s, new system with every symbol"
          f" protected again in {replaced:.3f} s")
    print(f"actor_ready_s median={statistics.median(actor):.3f} max={max(actor):.3f}"
          f" program_ready_s={whole_from_kill:.3f}")


if __name__ == "__main__":
    main()
