"""Changing a guarded position -- moving its stop, then a take-profit set and moved, a venue-held
trail, a partial close and an add: how long the venue sees any of the position uncovered, and
what each change costs -- on the simulated venue and both emulators through real ccxt (50 ms of
venue latency), posguard's stop moves beside the peers' cancel-then-place in the same run.

- uncovered_qty_s: the integral over the venue's time of the open quantity no working stop
  covers, measured on the venue's own thread at every change it makes (goal 0);
- latency_s and round_trips: from the command to the new stop confirmed, and the venue requests
  it took (posguard's way only; the peers' is one cancel and one place).

The peers' way is played after the deployment stopped, on the same position: the stop removed at
the venue itself (the most favourable cancel there can be: it costs no round trip), then the new
one placed through the same adapter posguard uses.

    python bench/amend.py [--moves 5] [--venues sim,bybit,binance]
posguard_qty_s covers the whole run: the moves and the changes beside the stop.
Last line: `amend uncovered_qty_s posguard=<x> cancel_then_place=<y> round_trips_max=<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from drift import PRICE, QTY, SETTINGS, STOP, Venue  # the same venues as bench/drift.py (run from bench/)
from loguru import logger

from actors.messages import AmendPosition, ClosePosition, CommandAccepted, OpenPosition
from actors.settings import ProtectionSettings, StreamSettings
from adapters.base import Side
from tests.support import kit
from tests.support.coverage import uncovered_qty

SYMBOL = "S0USDT"


class Meter:
    """Uncovered quantity-seconds of one symbol, integrated between the venue's changes (called
    on the venue's loop for every engine event)."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.at, self.open_uncovered, self.total = engine, None, 0.0, 0.0

    def __call__(self, _event: object = None) -> None:
        now = self.engine.now()
        if self.at is not None:
            self.total += self.open_uncovered * (now - self.at)
        self.at, self.open_uncovered = now, uncovered_qty(self.engine, SYMBOL)


@dataclass
class Row:
    venue: str
    posguard: float = 0.0
    peers: float = 0.0
    latencies: list[float] = field(default_factory=list)
    round_trips: list[int] = field(default_factory=list)
    changes: dict[str, tuple[float, int]] = field(default_factory=dict)   # change -> (latency_s, round trips)


# The changes beside the stop, in order: (name, command, the snapshot that says it is done).
CHANGES = (
    ("tp_set", AmendPosition(SYMBOL, take_profit=PRICE * 1.02), lambda s: s.take_profit == PRICE * 1.02),
    ("tp_moved", AmendPosition(SYMBOL, take_profit=PRICE * 1.03), lambda s: s.take_profit == PRICE * 1.03),
    ("trail_set", AmendPosition(SYMBOL, trail_pct=1.0), lambda s: s.trail_pct == 1.0),
    ("added", OpenPosition(SYMBOL, Side.BUY, QTY, STOP), lambda s: abs(s.filled_qty - 2 * QTY) < 1e-12),
    ("reduced", ClosePosition(SYMBOL, qty=QTY), lambda s: abs(s.filled_qty - QTY) < 1e-12),   # (the lot size)
)


def calls(venue: Venue) -> int:
    return sum(n for op, n in venue.thread.truth().calls if op not in ("fetch_price",))


def run(kind: str, moves: int) -> Row:
    row = Row(kind)
    targets = [STOP + (1.0 if i % 2 == 0 else -1.0) for i in range(moves)]
    with tempfile.TemporaryDirectory() as tmp, kit.actor_system() as asys:
        venue = Venue(kind, [SYMBOL], 0.5, tmp)
        with venue.thread:
            d = kit.Deployment(asys, (SYMBOL,), f"{tmp}/j.sqlite", venue.factory(True), settings=SETTINGS,
                               protection=ProtectionSettings(scan_s=60.0, grace_s=30.0),
                               stream=StreamSettings(backoff_s=0.05, backoff_cap_s=0.5), timeout=30)
            d.until(lambda: d.stream_state() == "up", 30, "the stream up")
            d.open(SYMBOL, Side.BUY, QTY, STOP)
            d.wait(SYMBOL, "PROTECTED", within=30)
            meter = Meter(venue.engine)
            venue.thread.on_loop(lambda: (venue.engine.listeners.append(meter), meter()))
            for target in targets:
                before, began = calls(venue), time.monotonic()
                reply = d.ask(AmendPosition(SYMBOL, target))
                assert isinstance(reply, CommandAccepted), reply
                d.until(lambda t=target: (s := d.snapshot(SYMBOL)).state == "PROTECTED" and s.stop_price == t,
                        30, "the stop moved")
                row.latencies.append(time.monotonic() - began)
                row.round_trips.append(calls(venue) - before)
            for name, command, done in CHANGES:
                before, began = calls(venue), time.monotonic()
                reply = d.ask(command)
                assert isinstance(reply, CommandAccepted), reply
                d.until(lambda done=done: (s := d.snapshot(SYMBOL)).state == "PROTECTED" and done(s), 30, name)
                row.changes[name] = (time.monotonic() - began, calls(venue) - before)
            venue.thread.on_loop(meter)
            row.posguard = meter.total
            d.stop()
            # The peers' way, on the same position: cancel (at the venue), then place through the adapter.
            peers = Meter(venue.engine)
            venue.thread.on_loop(lambda: (venue.engine.listeners.append(peers), peers()))
            adapter = venue.factory(False)()

            async def cancel_then_place() -> None:
                await adapter.start()
                for target in targets:
                    venue.thread.on_loop(lambda: venue.engine.clear_stop(SYMBOL))
                    await adapter.set_stop(SYMBOL, target, Side.BUY)
                await adapter.close()
            asyncio.run(cancel_then_place())
            venue.thread.on_loop(peers)
            row.peers = peers.total
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--venues", default="sim,bybit,binance")
    args = parser.parse_args()
    logger.remove()
    kit.set_test_keys()
    rows = [run(v.strip(), args.moves) for v in args.venues.split(",") if v.strip()]
    print(f"{args.moves} stop moves of a {QTY:g} position at {PRICE:g}, venue latency 50 ms")
    print(f"{'venue':<9}{'posguard_qty_s':>16}{'cancel_then_place_qty_s':>25}{'latency_s':>11}{'round_trips':>13}")
    for r in rows:
        print(f"{r.venue:<9}{r.posguard:>16.4f}{r.peers:>25.4f}{max(r.latencies):>11.3f}{max(r.round_trips):>13}")
    print("changes beside the stop (after the moves, same position): latency_s / venue requests")
    for r in rows:
        print(f"{r.venue:<9}" + "  ".join(f"{k} {t:.3f}/{n}" for k, (t, n) in r.changes.items()))
    print(f"amend uncovered_qty_s posguard={sum(r.posguard for r in rows):.4f}"
          f" cancel_then_place={sum(r.peers for r in rows):.4f}"
          f" round_trips_max={max(max(r.round_trips) for r in rows)}")


if __name__ == "__main__":
    main()
