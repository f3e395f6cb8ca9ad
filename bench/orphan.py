"""A position opened by hand (outside posguard) while the venue's REST position view lags: seconds
until it has a stop, with REST scans alone vs with the private stream, on both venues through
real ccxt against the project's emulators (the incident's 24 s lag; scans every 5 s).

REST alone can only see it once the lagging view shows it: lag + up to one scan. The stream
pushes the position as the matching engine opens it.

    python bench/orphan.py [--lag 24] [--scan 5] [--venues bybit,binance]
Last line: `orphan_protected_seconds rest=<x> streams=<y>` (the slower venue of each).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from loguru import logger

from actors.settings import ProtectionSettings
from adapters.base import OrderRequest, Side
from adapters.emulators.base import EmulatorConfig
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.bybit import BybitEmulator
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from tests.support import kit
from tests.support.emulator import EmulatorThread

SYMBOL = "ETHUSDT"
DIALECTS = {"bybit": BybitEmulator, "binance": BinanceEmulator}


def protected_after(venue: str, lag: float, scan: float, streams: bool) -> float:
    """Seconds from the hand-opened position to its stop, as the venue's truth shows it."""
    config = EmulatorConfig(venue=SimVenueConfig(engine=EngineConfig(prices={SYMBOL: 3000.0, "BTCUSDT": 60_000.0},
                                                                     position_lag_s=lag, volatility=0.0),
                                                 latency_s=0.05, orders_per_second=100))
    with (kit.actor_system() as asys, EmulatorThread(config, DIALECTS[venue]) as emu,
          tempfile.TemporaryDirectory() as tmp):
        d = kit.Deployment(asys, (SYMBOL,), f"{tmp}/j.sqlite", emu.factory(streams=streams),
                           protection=ProtectionSettings(scan_s=scan, grace_s=lag + 1))
        if streams:
            d.until(lambda: d.stream_state() == "up", 30, "the stream up and reconciled")
        opened = time.monotonic()
        emu.on_loop(lambda: emu.emulator.engine.create_order(OrderRequest(SYMBOL, Side.BUY, 0.5, "by-hand"), True))
        took = float("nan")
        while time.monotonic() - opened < lag + 3 * scan + 10:
            position = emu.truth().open_positions().get(SYMBOL)
            if position is not None and position.stop_price is not None:
                took = time.monotonic() - opened
                break
            time.sleep(0.005)                                    # polling the venue's truth, not synchronising
        d.stop()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lag", type=float, default=24.0)
    parser.add_argument("--scan", type=float, default=5.0)
    parser.add_argument("--venues", default="bybit,binance")
    args = parser.parse_args()
    logger.remove()
    kit.set_test_keys()                                             # the emulators' test keys, before any fork
    venues = [v.strip() for v in args.venues.split(",") if v.strip()]
    rows = {v: (protected_after(v, args.lag, args.scan, streams=True),
                protected_after(v, args.lag, args.scan, streams=False)) for v in venues}
    print(f"position opened by hand, REST lag {args.lag:g} s, REST scan every {args.scan:g} s (through ccxt)")
    print(f"{'venue':<10}{'streams s':>12}{'REST only s':>14}")
    for venue, (streams, rest) in rows.items():
        print(f"{venue:<10}{streams:>12.3f}{rest:>14.2f}")
    worst_streams = max(s for s, _ in rows.values())
    worst_rest = max(r for _, r in rows.values())
    print(f"orphan_protected_seconds rest={worst_rest:.2f} streams={worst_streams:.3f}")


if __name__ == "__main__":
    main()
