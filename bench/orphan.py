"""A position opened by hand (outside posguard) on a venue with a lagging REST view: seconds
until it has a stop, posguard's protection scan vs the seed's periodic sync, same venue setup.

Both can only see it through position reads, so both wait out the lag; the figure shows the
scan adds no more than its interval and never a second stop.

    python bench/orphan.py [--lag 24] [--scan 5]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger  # noqa: E402

from actors.messages import (  # noqa: E402
    DeploymentReady,
    GetTrueState,
    PositionSnapshot,
    ProtectionSettings,
    StartDeployment,
    StopDeployment,
    WaitForState,
)
from adapters.base import OrderRequest, Side  # noqa: E402
from adapters.sim_engine import EngineConfig  # noqa: E402
from adapters.simulated import SimulatedAdapter, SimVenueConfig  # noqa: E402
from supervisor.supervisor import Supervisor  # noqa: E402
from supervisor.system import start_system  # noqa: E402
from tests.conftest import free_port  # noqa: E402

SYMBOL = "ETHUSDT"


class VenueWithHandOpenedPosition(SimulatedAdapter):
    async def start(self) -> None:
        await self.create_order(OrderRequest(SYMBOL, Side.BUY, 1.0, "by-hand"))


def config(lag: float) -> SimVenueConfig:
    return SimVenueConfig(engine=EngineConfig(prices={SYMBOL: 3000.0}, position_lag_s=lag, volatility=0.0),
                          latency_s=0.05)


def posguard(lag: float, scan: float) -> tuple[float, int]:
    asys = start_system(free_port())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sup = asys.createActor(Supervisor)
            start = StartDeployment((SYMBOL,), f"{tmp}/j.sqlite",
                                    functools.partial(VenueWithHandOpenedPosition, config(lag)),
                                    protection=ProtectionSettings(scan_s=scan, grace_s=lag + 1))
            assert isinstance(asys.ask(sup, start, 20), DeploymentReady)
            snap = asys.ask(sup, WaitForState(SYMBOL, ("PROTECTED",)), lag + 10 * scan)
            assert isinstance(snap, PositionSnapshot), snap
            truth = asys.ask(sup, GetTrueState(), 5).state
            asys.ask(sup, StopDeployment(), 10)
    finally:
        asys.shutdown()
    return truth.max_naked_seconds(SYMBOL), truth.call_count("set_stop")


async def seed_sync(lag: float, scan: float) -> tuple[float, int]:
    venue = VenueWithHandOpenedPosition(config(lag))
    await venue.start()
    while True:
        for p in await venue.fetch_positions():
            if p.stop_price is None:
                await venue.set_stop(p.symbol, p.entry_price * 0.98)
        truth = await venue.true_state()
        if truth.open_positions()[SYMBOL].stop_price is not None:
            return truth.max_naked_seconds(SYMBOL), truth.call_count("set_stop")
        await asyncio.sleep(scan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lag", type=float, default=24.0)
    parser.add_argument("--scan", type=float, default=5.0)
    args = parser.parse_args()
    logger.remove()
    t = time.monotonic()
    ours, our_stops = posguard(args.lag, args.scan)
    seed, seed_stops = asyncio.run(seed_sync(args.lag, args.scan))
    print(f"hand-opened position, REST lag {args.lag:g} s, scan/sync every {args.scan:g} s"
          f" ({time.monotonic() - t:.0f} s of benchmark)")
    print(f"seed periodic sync : naked {seed:.2f} s, stops set {seed_stops}")
    print(f"posguard protection: naked {ours:.2f} s, stops set {our_stops}"
          f" (lag + at most one scan: <= {args.lag + args.scan + 1:.1f} s)")
    print(f"orphan_naked_seconds seed={seed:.2f} posguard={ours:.2f}")


if __name__ == "__main__":
    main()
