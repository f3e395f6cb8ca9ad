"""Many symbols opened at once on the simulated venue: the rate limit is the floor.

    python bench/scale.py --symbols 100
Venue: 50 ms round trip, 10 orders/s account limit (over it: 10006). Prints seconds until every
symbol is protected (floor: symbols / 10 s; goal <= 11 s for 100), rate-limit errors (goal 0)
and memory per symbol (PSS of the PositionActor processes; goal <= 10 MiB).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger  # noqa: E402

from actors.messages import (  # noqa: E402
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
from adapters.base import Side  # noqa: E402
from adapters.sim_engine import EngineConfig  # noqa: E402
from adapters.simulated import SimulatedAdapter, SimVenueConfig  # noqa: E402
from supervisor.supervisor import Supervisor  # noqa: E402
from supervisor.system import start_system  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def pss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    args = parser.parse_args()
    logger.remove()
    symbols = tuple(f"S{i:03d}USDT" for i in range(args.symbols))
    venue = SimVenueConfig(engine=EngineConfig(prices={s: 100.0 for s in symbols}, volatility=0.0),
                           latency_s=0.05, orders_per_second=10)
    asys = start_system(free_port())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sup = asys.createActor(Supervisor)
            t = time.monotonic()
            start = StartDeployment(symbols, f"{tmp}/j.sqlite", functools.partial(SimulatedAdapter, venue),
                                    protection=None)
            ready = asys.ask(sup, start, 120)
            assert isinstance(ready, DeploymentReady), ready
            started = time.monotonic() - t
            t = time.monotonic()
            for s in symbols:                              # accepted at once; the venue work is queued
                assert isinstance(asys.ask(sup, OpenPosition(s, Side.BUY, 1.0, 95.0), 10), CommandAccepted)
            for s in symbols:
                assert isinstance(asys.ask(sup, WaitForState(s, ("PROTECTED", "IDLE")), 60), PositionSnapshot)
            protected = time.monotonic() - t
            report = asys.ask(sup, StatusRequest(), 10)
            states = [p.state for p in report.positions]
            pids = [pid for child, pid, _ in report.children if child.startswith("position:") and pid]
            pss = [pss_mib(pid) for pid in pids]
            truth = asys.ask(sup, GetTrueState(), 10).state
            asys.ask(sup, StopDeployment(), 60)
    finally:
        asys.shutdown()
    # No faults are injected: every create_order the venue saw but did not book was refused by
    # its rate limit (10006).
    errors = truth.call_count("create_order") - len(truth.orders)
    print(f"{args.symbols} symbols: deployment ready in {started:.1f} s")
    print(f"all protected in {protected:.2f} s (rate-limit floor {args.symbols / 10:.1f} s; goal <= 11 s for 100);"
          f" PROTECTED {states.count('PROTECTED')}/{len(states)}")
    print(f"rate-limit errors (10006): {errors} (goal 0); orders on the venue: {len(truth.orders)}")
    print(f"memory per symbol (PSS of a PositionActor process): median {statistics.median(pss):.1f} MiB,"
          f" max {max(pss):.1f} MiB (goal <= 10 MiB)")


if __name__ == "__main__":
    main()
