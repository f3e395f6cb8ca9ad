"""Admin status round trip with many symbols running: what `posguard status` costs the system.

    python bench/admin_latency.py [--symbols 20] [--asks 500]
Prints p50/p99 of a StatusRequest ask to the supervisor (goal p99 <= 5 ms) and, as a baseline
in the same run, of a bare thespian ask to a trivial actor.
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
from thespian.actors import Actor  # noqa: E402

from actors.messages import DeploymentReady, OpenPosition, StartDeployment, StatusRequest, StopDeployment  # noqa: E402
from adapters.base import Side  # noqa: E402
from adapters.sim_engine import EngineConfig  # noqa: E402
from adapters.simulated import SimulatedAdapter, SimVenueConfig  # noqa: E402
from supervisor.supervisor import Supervisor  # noqa: E402
from supervisor.system import start_system  # noqa: E402
from tests.conftest import free_port  # noqa: E402


class Echo(Actor):
    def receiveMessage(self, msg, sender):  # noqa: N802
        self.send(sender, msg)


def timed(ask, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        ask()
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--asks", type=int, default=500)
    args = parser.parse_args()
    logger.remove()
    symbols = tuple(f"S{i:03d}USDT" for i in range(args.symbols))
    venue = SimVenueConfig(engine=EngineConfig(prices={s: 100.0 for s in symbols}, volatility=0.0),
                           latency_s=0.05, orders_per_second=100)
    asys = start_system(free_port())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sup = asys.createActor(Supervisor)
            start = StartDeployment(symbols, f"{tmp}/j.sqlite", functools.partial(SimulatedAdapter, venue))
            ready = asys.ask(sup, start, 60)
            assert isinstance(ready, DeploymentReady), ready
            for s in symbols:
                asys.ask(sup, OpenPosition(s, Side.BUY, 1.0, 95.0), 5)
            echo = asys.createActor(Echo)
            bare = timed(lambda: asys.ask(echo, 1, 5), args.asks)
            status = timed(lambda: asys.ask(sup, StatusRequest(), 5), args.asks)
            asys.ask(sup, StopDeployment(), 30)
    finally:
        asys.shutdown()
    print(f"{args.symbols} symbols running, {args.asks} asks each")
    print(f"bare thespian ask:  p50 {statistics.median(bare):.2f} ms  p99 {pct(bare, 0.99):.2f} ms")
    print(f"status ask:         p50 {statistics.median(status):.2f} ms  p99 {pct(status, 0.99):.2f} ms"
          f"  (goal p99 <= 5 ms; {statistics.median(status) / statistics.median(bare):.2f}x the bare ask)")


if __name__ == "__main__":
    main()
