"""posguard's entry->protected time over real ccxt and HTTP, against the Bybit emulator, divided
by a bare ccxt create_order round trip measured in the same run against the same emulator.

Two figures for posguard, both from the PositionActor's own clock (from taking the open
command, journal write included):
- guarded: until the venue guarantees that no fill can exist without its stop. On Bybit the
  stop travels with the entry, so that is the entry's acknowledgement: one venue round trip.
  Goal: guarded / bare <= 1.1.
- confirmed: until the state is PROTECTED. Bybit v5 acknowledges an order with ids only, so
  over REST alone the fill (and the stop it carries) is learnt by a second call, the query by
  orderLinkId: two round trips by construction. With the private stream the order's own update
  (filled, stop attached) confirms it: one round trip (goal <= 1.1).
The separate-stop venue (Binance-like: entry, then the stop) needs two round trips for either.
posguard's own part of the entry path (journal write and actor hops) is guarded - bare, in ms.

    python bench/venue_overhead.py                 # 50 ms venue round trip, 15 opens per mode
    python bench/venue_overhead.py --latency 0.1 --opens 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from loguru import logger

from actors.messages import ClosePosition, OpenPosition
from actors.settings import PositionSettings
from adapters.base import Side
from adapters.bybit.adapter import BybitAdapter
from adapters.emulators.base import EmulatorConfig
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from tests.support import kit
from tests.support.emulator import EmulatorThread

SYMBOL, QTY, PRICE = "BTCUSDT", 0.01, 60_000.0


async def bare_round_trips(emu: EmulatorThread, samples: int) -> list[float]:
    """ccxt alone: the same market order with its stop attached, timed around the call, on the
    very client the adapter configures (same options, same connection pool)."""
    adapter = BybitAdapter(emu.settings())
    await adapter.start()
    ex = adapter.ex
    try:
        times = []
        for i in range(samples):
            side = "buy" if i % 2 == 0 else "sell"      # in and out, so the position stays small
            stop = PRICE * (0.9 if side == "buy" else 1.1)
            params = {"clientOrderId": f"bare-{time.time_ns()}", "positionIdx": 0, "stopLoss": str(stop),
                      "slTriggerBy": "LastPrice", "tpslMode": "Full"}
            t = time.perf_counter()
            await ex.create_order("BTC/USDT:USDT", "market", side, QTY, None, params)
            times.append(time.perf_counter() - t)
        return times
    finally:
        await adapter.close()


def posguard_opens(emu: EmulatorThread, opens: int, attached: bool, streams: bool) -> tuple[list[float], list[float]]:
    settings = PositionSettings(poll_s=0.02, retry_s=0.05)
    guarded, confirmed = [], []
    with kit.actor_system() as asys, tempfile.TemporaryDirectory() as tmp:
        d = kit.Deployment(asys, (SYMBOL,), f"{tmp}/journal.sqlite",
                           emu.factory(attached_stop=attached, streams=streams), settings=settings, protection=None)
        d.wait(SYMBOL, "IDLE")
        if streams:                                          # the stream up and reconciled first
            d.until(lambda: d.stream_state() == "up", 30, "the stream up and reconciled")
        for _ in range(opens):
            d.ask(OpenPosition(SYMBOL, Side.BUY, QTY, PRICE * 0.9))
            snap = d.wait(SYMBOL, "PROTECTED", "STUCK", within=30)
            assert snap.state == "PROTECTED", snap
            guarded.append(snap.guarded_latency_s)
            confirmed.append(snap.protect_latency_s)
            d.ask(ClosePosition(SYMBOL))
            d.wait(SYMBOL, "IDLE", within=30)
        d.stop()
    return guarded, confirmed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="venue round trip, seconds (default 0.05)")
    parser.add_argument("--opens", type=int, default=15, help="positions opened per mode (default 15)")
    args = parser.parse_args()
    logger.remove()
    kit.set_test_keys()                                             # the emulator's keys, before any fork
    config = EmulatorConfig(venue=SimVenueConfig(
        engine=EngineConfig(seed=1, prices={SYMBOL: PRICE}, position_lag_s=24.0, volatility=0.0),
        latency_s=args.latency, orders_per_second=1000))
    ms = 1000.0
    with EmulatorThread(config) as emu:
        bare = asyncio.run(bare_round_trips(emu, 30))
        modes = {"attached, REST": posguard_opens(emu, args.opens, attached=True, streams=False),
                 "attached, stream": posguard_opens(emu, args.opens, attached=True, streams=True),
                 "separate, REST": posguard_opens(emu, args.opens, attached=False, streams=False)}
        bare += asyncio.run(bare_round_trips(emu, 30))              # before and after: drift shows
    base = statistics.median(bare)
    print(f"venue round trip {args.latency * ms:.0f} ms; bare ccxt create_order median {base * ms:.1f} ms"
          f" (p90 {statistics.quantiles(bare, n=10)[-1] * ms:.1f} ms, n={len(bare)})")
    print(f"{'mode':<18}{'guarded ms':>12}{'ratio':>8}{'own ms':>8}{'confirmed ms':>14}{'round trips':>13}")
    for name, (guarded, confirmed) in modes.items():
        g, c = statistics.median(guarded), statistics.median(confirmed)
        print(f"{name:<18}{g * ms:>12.1f}{g / base:>8.2f}{(g - base) * ms:>8.1f}{c * ms:>14.1f}{c / base:>13.2f}")
    g = statistics.median(modes["attached, REST"][0])
    rest_rt = statistics.median(modes["attached, REST"][1]) / base
    stream_rt = statistics.median(modes["attached, stream"][1]) / base
    print(f"confirmed_round_trips rest={rest_rt:.2f} streams={stream_rt:.2f} (goal streams <= 1.1)")
    print(f"venue_overhead guarded/bare={g / base:.3f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
