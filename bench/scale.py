"""A whole venue in one deployment: N symbols opened at once on the simulated venue, where the
account's order rate is the floor.

    python bench/scale.py --symbols 100,300,500,1000 [--per-process K]

Venue: 50 ms round trip, 10 orders/s account limit (over it: 10006). Per N, one row: seconds
until the deployment is ready (goal <= 10 s at 1 000), all entries PROTECTED divided by the
rate-limit floor N / 10 s (waiting for PROTECTED only; goal <= 1.05), rate-limit errors (goal 0),
`status` through the deployment's Unix-socket API, p50/p99 over 200 asks for what the status
table shows, in the `columns` form (goal p99 <= 10 ms), and, for the record, p99 of every field
as objects (the default form: about three times the bytes to parse),
descriptors per PositionActor process (median/max: constant, whatever N), PSS per symbol of the
PositionActor processes and of the whole system (goal <= 6 MiB), asks never answered (goal 0),
and the clean stop (seconds; processes left, goal 0). K symbols per PositionActor process:
`[supervision] symbols_per_process` (0, the default: one each up to 40 symbols, then about 40
such processes). Last line: `scale symbols=<N> protected_over_floor=<x> fds_max=<k>` for the
largest N.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

from loguru import logger

from actors.messages import (
    CommandAccepted,
    DeploymentReady,
    GetTrueState,
    OpenPosition,
    PositionSnapshot,
    StartDeployment,
    StatusRequest,
    StopDeployment,
    WaitForState,
)
from actors.settings import ControlPlane, SupervisionSettings
from adapters.base import Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig
from supervisor.actor_system.start import start_system
from supervisor.cli.views import TABLE_FIELDS
from supervisor.client import Client, positions_of
from supervisor.host.procfs import in_sessions, sessions_of, wait_exited
from supervisor.supervisor import Supervisor

ORDERS_PER_SECOND = 10


def pss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descriptors(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    symbols: int
    processes: int
    ready_s: float
    over_floor: float
    protected: int
    rate_errors: int
    status_p50_ms: float
    status_p99_ms: float
    objects_p99_ms: float
    fds_median: float
    fds_max: int
    core_fds: str
    pss_per_symbol: float
    pss_system_per_symbol: float
    unanswered: int
    stop_s: float
    left: int


def run(n: int, per_process: int) -> Row:
    symbols = tuple(f"S{i:04d}USDT" for i in range(n))
    venue = SimVenueConfig(engine=EngineConfig(prices=dict.fromkeys(symbols, 100.0), volatility=0.0),
                           latency_s=0.05, orders_per_second=ORDERS_PER_SECOND)
    asys = start_system(0)
    sessions = sessions_of(asys.posguard_port)
    unanswered = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o700)
            control = ControlPlane(f"{tmp}/pg.sock", f"{tmp}/j.sqlite.lock")
            sup = asys.createActor(Supervisor)
            t = time.monotonic()
            ready = asys.ask(sup, StartDeployment(
                symbols, f"{tmp}/j.sqlite", functools.partial(SimulatedAdapter, venue), protection=None,
                control=control, supervision=SupervisionSettings(symbols_per_process=per_process)), 300)
            assert isinstance(ready, DeploymentReady), ready
            ready_s = time.monotonic() - t
            t = time.monotonic()
            for s in symbols:                              # accepted at once; the venue work is queued
                reply = asys.ask(sup, OpenPosition(s, Side.BUY, 1.0, 95.0), 10)
                unanswered += reply is None
                assert reply is None or isinstance(reply, CommandAccepted), reply
            bound = 3 * n / ORDERS_PER_SECOND + 60
            for s in symbols:                              # PROTECTED only: IDLE is also "not sent yet"
                snap = asys.ask(sup, WaitForState(s, ("PROTECTED",)), max(1.0, bound - (time.monotonic() - t)))
                unanswered += not isinstance(snap, PositionSnapshot)
            protected_s = time.monotonic() - t
            latencies, objects = [], []
            with Client(control.socket_path) as api:
                api.status(columns=True, fields=list(TABLE_FIELDS))   # warm: the connection, the rows
                api.status()
                for _ in range(200):                       # what a table of every symbol needs ...
                    t0 = time.perf_counter()
                    status = api.status(columns=True, fields=list(TABLE_FIELDS))
                    latencies.append((time.perf_counter() - t0) * 1000)
                for _ in range(200):                       # ... and the objects, for the record
                    t0 = time.perf_counter()
                    api.status()
                    objects.append((time.perf_counter() - t0) * 1000)
            status["positions"] = positions_of(status)
            protected = sum(1 for p in status["positions"] if p["state"] == "PROTECTED")
            report = asys.ask(sup, StatusRequest(), 30)
            unanswered += report is None
            children = {child: pid for child, pid, _ in report.children if pid}
            workers = [pid for child, pid in children.items() if child.startswith("position")]
            fds = [descriptors(pid) for pid in workers]
            core = {c: descriptors(children[c]) for c in ("journal", "exchange") if c in children}
            core_fds = " ".join([f"sup {descriptors(int(status.get('supervisor_pid') or 0))}",
                                 *(f"{c} {k}" for c, k in core.items())])
            pss_workers = sum(pss_mib(pid) for pid in workers)
            pss_system = sum(pss_mib(pid) for pid in in_sessions(sessions))
            truth = asys.ask(sup, GetTrueState(), 30).state
            t = time.monotonic()
            stopped = asys.ask(sup, StopDeployment(), 120)
            unanswered += stopped is None
            stop_s = time.monotonic() - t
    finally:
        asys.shutdown()
    left = wait_exited(in_sessions(sessions), timeout=30)
    # No faults are injected: every create_order the venue saw but did not book was refused by
    # its rate limit (10006).
    rate_errors = truth.call_count("create_order") - len(truth.orders)
    return Row(n, len(workers), ready_s, protected_s / (n / ORDERS_PER_SECOND), protected, rate_errors,
               statistics.median(latencies), pct(latencies, 0.99), pct(objects, 0.99), statistics.median(fds),
               max(fds), core_fds,
               pss_workers / n, pss_system / n, unanswered, stop_s, len(left))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="100", help="comma-separated: 100,300,500,1000")
    parser.add_argument("--per-process", type=int, default=0, help="symbols per PositionActor process (0: auto)")
    parser.add_argument("--log", default=None, help="the deployment's log, to this file (DEBUG)")
    args = parser.parse_args()
    logger.remove()
    if args.log:
        from actors.logs import LogSettings, configure_logging

        configure_logging(LogSettings(file=args.log, level="DEBUG", stderr_level="CRITICAL"))
    ns = [int(x) for x in args.symbols.split(",") if x.strip()]
    print(f"venue: 50 ms round trip, {ORDERS_PER_SECOND} orders/s; floor = N / {ORDERS_PER_SECOND} s;"
          f" load average {os.getloadavg()[0]:.1f}", flush=True)
    header = (f"{'N':>5} {'procs':>5} {'ready s':>8} {'÷floor':>7} {'PROT':>5} {'10006':>5} {'st p50':>7}"
              f" {'st p99':>7} {'obj p99':>7} {'fds med/max':>11} {'core fds':>26} {'PSS/sym':>8} {'sys/sym':>8}"
              f" {'lost':>4} {'stop s':>6} {'left':>4}")
    print(header, flush=True)
    row = None
    for n in ns:
        row = run(n, args.per_process)
        print(f"{row.symbols:>5} {row.processes:>5} {row.ready_s:>8.2f} {row.over_floor:>7.3f} {row.protected:>5}"
              f" {row.rate_errors:>5} {row.status_p50_ms:>7.2f} {row.status_p99_ms:>7.2f}"
              f" {row.objects_p99_ms:>7.2f}"
              f" {row.fds_median:>5.0f}/{row.fds_max:<5} {row.core_fds:>26} {row.pss_per_symbol:>8.2f}"
              f" {row.pss_system_per_symbol:>8.2f} {row.unanswered:>4} {row.stop_s:>6.2f} {row.left:>4}", flush=True)
    if row is not None:
        print(f"scale symbols={row.symbols} protected_over_floor={row.over_floor:.3f} fds_max={row.fds_max}")


if __name__ == "__main__":
    main()
