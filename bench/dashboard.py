"""The live page at scale, in Debian's Chromium (headless, through Playwright): N symbols PROTECTED
on the simulated venue, the page served by the deployment itself.

    python bench/dashboard.py [--symbols 1000] [--loads 5] [--closes 20] [--viewers 1,5] [--window 10]

Figures:
- cold load: a new browser context (no cache) from navigation to the first full table (N symbols
  counted, a page of rows drawn), median and max over --loads; beside it, in the same run, one
  fetch of the same status over HTTP without a browser (the data's own cost), and the ratio.
- update delay: for --closes closes, from the journal's commit of the `closed` event to the
  event shown in the page's list, and to the symbol's row showing IDLE (goal <= 0.5 s), p50/max.
- cost of serving: CPU seconds per second of the API's process (which serves the page) over
  --window s while a stop is moved twice a second, with 0 viewers and with each of --viewers,
  and the added CPU per viewer.
Last line: `dashboard symbols=<N> cold_load_s=<median> update_p50_s=<x> update_max_s=<y>
cpu_per_viewer=<z>`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request

from loguru import logger

from actors.messages import (
    AmendPosition,
    ClosePosition,
    DeploymentReady,
    OpenPosition,
    StartDeployment,
    StopDeployment,
    WaitForState,
)
from actors.settings import ControlPlane
from adapters.base import Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig
from supervisor.actor_system.start import free_port, start_system
from supervisor.client import Client
from supervisor.dashboard.token import read_token
from supervisor.host.procfs import in_sessions, sessions_of, wait_exited
from supervisor.supervisor import Supervisor

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=1000)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--closes", type=int, default=20)
    ap.add_argument("--viewers", default="1,5")
    ap.add_argument("--window", type=float, default=10.0)
    args = ap.parse_args()
    logger.remove()
    from playwright.sync_api import sync_playwright

    n = args.symbols
    symbols = tuple(f"S{i:04d}USDT" for i in range(n))
    venue = SimVenueConfig(engine=EngineConfig(prices=dict.fromkeys(symbols, 100.0), volatility=0.0),
                           latency_s=0.01, orders_per_second=500)
    port = free_port()
    asys = start_system(0)
    sessions = sessions_of(asys.posguard_port)
    try:
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            os.chmod(tmp, 0o700)
            control = ControlPlane(f"{tmp}/pg.sock", f"{tmp}/j.sqlite.lock", dashboard_port=port,
                                   token_path=f"{tmp}/dashboard.token")
            sup = asys.createActor(Supervisor)
            adapter = functools.partial(SimulatedAdapter, venue)
            ready = asys.ask(sup, StartDeployment(symbols, f"{tmp}/j.sqlite", adapter, protection=None,
                                                  control=control), 300)
            assert isinstance(ready, DeploymentReady), ready
            for s in symbols:
                asys.ask(sup, OpenPosition(s, Side.BUY, 1.0, 95.0), 10)
            for s in symbols:
                asys.ask(sup, WaitForState(s, ("PROTECTED",)), 120)
            token = read_token(control.token_path)
            base = f"http://127.0.0.1:{port}/"
            url = f"{base}?token={token}"
            with Client(control.socket_path) as api:
                api_pid = next(c["pid"] for c in api.status()["children"] if c["id"] == "api")

            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
            full = f"document.getElementById('counts').textContent.startsWith('{n} symbols: {n} PROTECTED')" \
                   f" && document.querySelectorAll('#positions tbody tr').length === {min(n, 50)}"
            loads, fetches = [], []
            for _ in range(args.loads):
                context = browser.new_context()
                page = context.new_page()
                t = time.perf_counter()
                page.goto(url)
                page.wait_for_function(full, timeout=60_000)
                loads.append(time.perf_counter() - t)
                context.close()
                request = urllib.request.Request(base + "api/status", headers={"Authorization": "Bearer " + token})
                t = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as response:      # noqa: S310 - 127.0.0.1
                    json.loads(response.read())
                fetches.append(time.perf_counter() - t)

            page = browser.new_page()
            page.goto(url)
            page.wait_for_function(full, timeout=60_000)
            to_list, to_row = [], []
            with Client(control.socket_path) as api:
                for s in symbols[:args.closes]:
                    page.fill("#filter", s)                           # its row on the page
                    since = api.status(fields=["symbol"])["last_event"]
                    asys.ask(sup, ClosePosition(s), 10)
                    shown = page.wait_for_function(
                        f"() => {{ const r = document.querySelector('#positions tr[data-symbol={s}]');"
                        f" return r && r.dataset.state === 'IDLE' && Date.now(); }}", timeout=30_000).json_value()
                    with Client(control.socket_path) as follow:        # a stream: its own connection
                        closed = next(e for e in follow.events(since=since)
                                      if e["kind"] == "closed" and e["symbol"] == s)
                    listed = page.wait_for_function(f"() => {{ const li = document.querySelector("
                                                    f"'#events li[data-seq=\"{closed['seq']}\"]');"
                                                    f" return li && +li.dataset.shown; }}").json_value()
                    to_row.append(shown / 1000 - closed["at"])
                    to_list.append(listed / 1000 - closed["at"])
            page.fill("#filter", "")
            page.close()

            moving = threading.Event()

            def move_stops() -> None:                                  # events, twice a second
                i = 0
                while not moving.is_set():
                    s = symbols[args.closes + i % (n - args.closes)]
                    asys.ask(sup, AmendPosition(s, 95.0 - 0.01 * (i % 50 + 1)), 10)
                    i += 1
                    moving.wait(0.5)
            mover = threading.Thread(target=move_stops)
            mover.start()
            cpu: dict[int, float] = {}
            try:
                for viewers in [0, *(int(v) for v in args.viewers.split(","))]:
                    pages = [browser.new_page() for _ in range(viewers)]
                    for pg in pages:
                        pg.goto(url)
                        pg.wait_for_function(f"document.getElementById('counts').textContent.startsWith('{n} ')")
                    c0, t0 = cpu_s(api_pid), time.monotonic()
                    time.sleep(args.window)                             # the measuring window itself
                    cpu[viewers] = (cpu_s(api_pid) - c0) / (time.monotonic() - t0)
                    for pg in pages:
                        pg.close()
            finally:
                moving.set()
                mover.join()
            browser.close()
            asys.ask(sup, StopDeployment(), 60)
    finally:
        asys.shutdown()
        wait_exited(in_sessions(sessions), timeout=30)

    load, fetch = statistics.median(loads), statistics.median(fetches)
    print(f"symbols {n}")
    print(f"cold load to first full table: median {load:.3f} s, max {max(loads):.3f} s over {len(loads)} loads;"
          f" one status fetch without a browser {fetch * 1000:.1f} ms (page / fetch {load / fetch:.1f}x)")
    print(f"update delay after an event ({len(to_row)} closes): to the event list p50 {pct(to_list, 0.5):.3f} s,"
          f" max {max(to_list):.3f} s; to the row p50 {pct(to_row, 0.5):.3f} s, max {max(to_row):.3f} s (goal <= 0.5)")
    per_viewer = [(cpu[v] - cpu[0]) / v for v in cpu if v]
    print("API process CPU (s per s): " + ", ".join(f"{v} viewers {c:.4f}" for v, c in cpu.items())
          + f"; per viewer {max(per_viewer):.4f}")
    print(f"dashboard symbols={n} cold_load_s={load:.3f} update_p50_s={pct(to_row, 0.5):.3f}"
          f" update_max_s={max(max(to_row), max(to_list)):.3f} cpu_per_viewer={max(per_viewer):.4f}")


if __name__ == "__main__":
    main()
