"""Time to truth: what is done to a guarded position outside posguard, and how long until its
picture follows -- on the simulated venue and both emulators through real ccxt, with the private
stream and with REST alone, the venue's REST position view lagging (24 s, the incident's).

For every outside action (closed by hand, reduced, increased, flipped, liquidated, ADL, our
stop cancelled or moved by hand, a list read that omits the position), on its own symbol of one
deployment per venue and mode, all at once:
- event_s: from the venue's change to posguard's journaled event naming its cause;
- clean_s: until nothing of ours is left wrong on the venue (no stop order of ours on a flat
  symbol, our stop back on a live one);
- cancelled_live: stop orders whose cancel left a live position without a stop (must be 0).

    python bench/drift.py [--lag 24] [--scan 5] [--venues sim,bybit,binance] [--modes streams,rest]
Last line: `drift streams_max=<s> rest_max=<s> cancelled_live=<n>` (goal: streams <= 1 s,
REST <= lag + scan + 1 s, 0).
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from actors.settings import PositionSettings, ProtectionSettings, StreamSettings
from adapters.base import Side
from adapters.emulators.base import EmulatorConfig
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.bybit import BybitEmulator
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from adapters.sim.outside import outside
from tests.support import kit
from tests.support.emulator import EmulatorThread

PRICE, QTY, STOP = 100.0, 1.0, 95.0
# action -> (what is done, what the journal says when posguard knows)
ACTIONS: dict[str, tuple[dict[str, Any], tuple[str, str]]] = {
    "closed_by_hand": ({"action": "order", "side": "sell", "qty": QTY, "reduce_only": True}, ("closed", "")),
    "reduced": ({"action": "order", "side": "sell", "qty": QTY / 2, "reduce_only": True}, ("outside", "reduced")),
    "increased": ({"action": "order", "side": "buy", "qty": QTY}, ("outside", "increased")),
    "flipped": ({"action": "order", "side": "sell", "qty": 2 * QTY}, ("closed", "")),
    "liquidated": ({"action": "liquidate"}, ("closed", "")),
    "adl": ({"action": "deleverage"}, ("closed", "")),
    "stop_cancelled": ({"action": "clear_stop"}, ("outside", "stop_removed")),
    # where stops are orders a move by hand is a cancel of ours and an order of theirs: "removed"
    "stop_moved": ({"action": "move_stop", "price": 97.0}, ("outside", "stop_moved|stop_removed")),
    "omitted_read": ({"action": "omit"}, ("", "")),
}
SETTINGS = PositionSettings(naked_deadline_s=5.0, entry_unknown_window_s=6.0, poll_s=0.05, retry_s=0.05,
                            retry_cap_s=0.5)


@dataclass
class Row:
    venue: str
    mode: str
    action: str
    event_s: float = math.nan
    clean_s: float = math.nan


class Venue:
    def __init__(self, kind: str, symbols: list[str], lag: float, folder: str) -> None:
        engine = EngineConfig(seed=5, prices={s: PRICE for s in symbols}, position_lag_s=lag, volatility=0.0)
        self.kind = kind
        if kind == "sim":
            self.thread: Any = kit.SimVenueThread(SimVenueConfig(engine=engine, latency_s=0.05, orders_per_second=100,
                                                                 streams=True), Path(folder))
            self.engine, self.adapter = self.thread.engine, self.thread.adapter
        else:
            dialect = BybitEmulator if kind == "bybit" else BinanceEmulator
            self.thread = EmulatorThread(EmulatorConfig(venue=SimVenueConfig(engine=engine, latency_s=0.05,
                                                                             orders_per_second=100)), dialect)
            self.engine, self.adapter = self.thread.emulator.engine, self.thread.emulator.adapter

    def factory(self, streams: bool) -> Any:
        if self.kind == "sim":
            import functools

            from adapters.sim.remote import RemoteSimAdapter

            if not streams:
                self.thread.stream_fault("reject_auth", True)      # no stream for this run
            return functools.partial(RemoteSimAdapter, self.thread.path)
        return self.thread.factory(streams=streams)

    def do(self, symbol: str, what: dict[str, Any]) -> None:
        args = dict(what)
        action = args.pop("action")
        if action == "omit":
            fault = Fault("fetch_positions", FaultKind.OMIT, symbol=symbol, times=1)
            self.thread.on_loop(lambda: self.adapter.faults.add(fault))
            return
        self.thread.on_loop(lambda: outside(self.engine, action, symbol, **args))

    def clean(self, symbol: str, flipped: bool) -> bool:
        """Nothing of ours left wrong on the venue: no stop order of ours on a flat symbol (nor,
        flipped, one of the old long's), and a live position of ours covered by a stop."""
        def look() -> bool:
            pos = self.engine.true_state().open_positions().get(symbol)
            ours = [o for o in self.engine.stop_orders(symbol) if o.client_order_id.startswith("pg")]
            if flipped:                                      # the new short is the adoption's (bench/orphan.py)
                return not [o for o in ours if o.side is Side.SELL]
            return (pos is None and not ours) or (pos is not None and pos.stop_price is not None)
        return bool(self.thread.on_loop(look))


def journaled(db: sqlite3.Connection, symbol: str, after: int, kind: str, change: str) -> bool:
    for (data,) in db.execute("SELECT data FROM events WHERE symbol=? AND kind=? AND seq>?", (symbol, kind, after)):
        if not change or json.loads(data).get("change") in change.split("|"):
            return True
    return False


def run(kind: str, mode: str, lag: float, scan: float) -> tuple[list[Row], int]:
    symbols = [f"S{i}USDT" for i in range(len(ACTIONS))]
    plan = dict(zip(symbols, ACTIONS, strict=True))
    rows = {s: Row(kind, mode, a) for s, a in plan.items()}
    with tempfile.TemporaryDirectory() as tmp, kit.actor_system() as asys:
        venue = Venue(kind, symbols, lag, tmp)
        with venue.thread:
            streams = mode == "streams"
            d = kit.Deployment(asys, tuple(symbols), f"{tmp}/j.sqlite", venue.factory(streams), settings=SETTINGS,
                               protection=ProtectionSettings(scan_s=scan, grace_s=lag + 0.5),
                               stream=StreamSettings(backoff_s=0.05, backoff_cap_s=0.5), timeout=30)
            if streams:
                d.until(lambda: d.stream_state() == "up", 30, "the stream up")
            for s in symbols:
                d.open(s, Side.BUY, QTY, STOP)
            for s in symbols:
                d.wait(s, "PROTECTED", within=30)
            time.sleep(lag + 1.0)                  # settled past the REST lag, as the scan needs (a bench's wait)
            db = sqlite3.connect(f"{tmp}/j.sqlite")
            d.sync()
            start_seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            began = {}
            for s, action in plan.items():
                began[s] = time.monotonic()
                venue.do(s, ACTIONS[action][0])
            deadline = time.monotonic() + 2 * lag + 3 * scan + 15
            pending_event = {s for s in symbols if ACTIONS[plan[s]][1][0]}
            pending_clean = set(symbols)
            while (pending_event or pending_clean) and time.monotonic() < deadline:
                for s in list(pending_event):
                    kind_, change = ACTIONS[plan[s]][1]
                    if journaled(db, s, start_seq, kind_, change):
                        rows[s].event_s = time.monotonic() - began[s]
                        pending_event.discard(s)
                for s in list(pending_clean):
                    if venue.clean(s, plan[s] == "flipped") and s not in pending_event:
                        rows[s].clean_s = time.monotonic() - began[s]
                        pending_clean.discard(s)
                time.sleep(0.005)                  # polling the journal and the venue's truth
            cancelled_live = len([c for c in venue.thread.on_loop(lambda: list(venue.engine.cancelled_live))
                                  if c.startswith("pg")])
            db.close()
            d.stop()
    return list(rows.values()), cancelled_live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lag", type=float, default=24.0)
    parser.add_argument("--scan", type=float, default=5.0)
    parser.add_argument("--venues", default="sim,bybit,binance")
    parser.add_argument("--modes", default="streams,rest")
    args = parser.parse_args()
    logger.remove()
    kit.set_test_keys()
    rows: list[Row] = []
    cancelled = 0
    for venue in [v.strip() for v in args.venues.split(",") if v.strip()]:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            got, live = run(venue, mode, args.lag, args.scan)
            rows += got
            cancelled += live
    print(f"outside changes, REST lag {args.lag:g} s, scan every {args.scan:g} s; seconds from the venue's change")
    print(f"{'venue':<9}{'mode':<9}{'action':<16}{'event_s':>9}{'clean_s':>9}")
    for r in rows:
        print(f"{r.venue:<9}{r.mode:<9}{r.action:<16}{r.event_s:>9.3f}{r.clean_s:>9.3f}")

    def worst(mode: str) -> float:
        values = [v for r in rows if r.mode == mode for v in (r.event_s, r.clean_s) if not math.isnan(v)]
        missing = [r for r in rows if r.mode == mode and r.action != "omitted_read" and math.isnan(r.event_s)]
        return math.inf if missing else max(values, default=math.nan)
    print(f"drift streams_max={worst('streams'):.3f} rest_max={worst('rest'):.2f} cancelled_live={cancelled}")


if __name__ == "__main__":
    main()
