"""kill -9 with the venue in its own process (it outlives us, like a real one): the
ExchangeActor mid-entry, and the whole program mid-entry on a venue with the incident's 24 s
REST lag, then started again. Both converge: protected, one entry, journal == venue."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.messages import (
    CommandAccepted,
    DeploymentReady,
    OpenPosition,
    PositionSettings,
    StartDeployment,
    StatusReport,
    StatusRequest,
    StopDeployment,
    SupervisionSettings,
    WaitForState,
)
from adapters.base import Side, TrueState
from adapters.sim_server import RemoteSimAdapter
from supervisor.processes import kill_system, wait_exited
from supervisor.supervisor import Supervisor
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
POSGUARD = [sys.executable, "-m", "supervisor.cli"]


def write_config(tmp_path: Path, venue_socket: str, admin_port: int, *, attached: bool, lag: float,
                 entry_delay_s: float) -> Path:
    cfg = tmp_path / "recovery.toml"
    cfg.write_text(textwrap.dedent(f"""
        [venue]
        name = "simulated"
        [venue.simulated]
        server = "{venue_socket}"
        seed = 9
        position_lag_s = {lag}
        latency_s = 0.01
        volatility = 0.0
        attached_stops = {str(attached).lower()}
        orders_per_second = 200
        recv_window_s = 1.0
        [venue.simulated.prices]
        BTCUSDT = 100.0
        [[venue.simulated.faults]]
        op = "create_order"
        kind = "delay"
        symbol = "BTCUSDT"
        delay_s = {entry_delay_s}
        [deployment]
        symbols = ["BTCUSDT"]
        refresh_s = 0.1
        [position]
        naked_deadline_s = 10.0
        entry_unknown_window_s = 2.5
        poll_s = 0.05
        retry_s = 0.05
        reply_timeout_s = 2.0
        [protection]
        enabled = false
        [supervision]
        backoff_s = 0.01
        heartbeat_s = 0.1
        heartbeat_timeout_s = 2.0
        [risk]
        max_notional = 100000.0
        [journal]
        path = "var/journal.sqlite"
        [admin]
        port = {admin_port}
        [logging]
        file = "var/posguard.log"
        [[open]]
        symbol = "BTCUSDT"
        side = "buy"
        qty = 2.0
        stop = 95.0
        """))
    return cfg


@pytest.fixture
def venue(tmp_path) -> Iterator[tuple[int, callable]]:
    """A simulated venue process of our own; yields a function that configures it and returns its socket."""
    procs: list[subprocess.Popen[str]] = []

    def start(**kw) -> str:
        path = str(tmp_path / "venue.sock")
        cfg = write_config(tmp_path, path, free_port(), **kw)
        proc = subprocess.Popen([*POSGUARD, "venue", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert "listening" in proc.stdout.readline()
        return path

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def truth(path: str) -> TrueState:
    async def ask() -> TrueState:
        client = RemoteSimAdapter(path)
        await client.start()
        try:
            return await client.true_state()
        finally:
            await client.close()

    return asyncio.run(ask())


def wait_for_venue_call(path: str, op: str, within: float = 10.0) -> None:
    """Ask the venue (each ask a round trip) until it has seen `op`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if truth(path).call_count(op):
            return
    raise AssertionError(f"the venue never saw {op}")


def test_kill_9_of_the_exchange_actor_mid_entry_converges(tcp_system, venue, tmp_path):
    venue_socket = venue(attached=False, lag=2.4, entry_delay_s=0.5)
    import functools

    settings = PositionSettings(naked_deadline_s=10.0, entry_unknown_window_s=2.5, poll_s=0.05, retry_s=0.05,
                                reply_timeout_s=2.0)
    sup = tcp_system.createActor(Supervisor)
    ready = tcp_system.ask(sup, StartDeployment(
        ("BTCUSDT",), str(tmp_path / "j.sqlite"), functools.partial(RemoteSimAdapter, venue_socket), settings,
        supervision=SupervisionSettings(backoff_s=0.01, heartbeat_s=0.1), protection=None), 10)
    assert isinstance(ready, DeploymentReady)
    report = tcp_system.ask(sup, StatusRequest(), 5)
    exchange_pid = dict((c, p) for c, p, _ in report.children)["exchange"]
    assert isinstance(tcp_system.ask(sup, OpenPosition("BTCUSDT", Side.BUY, 2.0, 95.0), 5), CommandAccepted)
    assert tcp_system.ask(sup, WaitForState("BTCUSDT", ("ENTERING",)), 5) is not None
    wait_for_venue_call(venue_socket, "create_order")     # the venue has it; its reply is pending
    os.kill(exchange_pid, signal.SIGKILL)
    snap = tcp_system.ask(sup, WaitForState("BTCUSDT", ("PROTECTED",)), 20)
    assert snap is not None and snap.filled_qty == 2.0
    venue_truth = truth(venue_socket)
    entries = [o for o in venue_truth.orders if not o.reduce_only]
    assert len(entries) == 1
    assert venue_truth.open_positions()["BTCUSDT"].stop_price == 95.0
    assert venue_truth.call_count("fetch_positions") <= 1       # the start-up report only
    after = tcp_system.ask(sup, StatusRequest(), 5)
    assert isinstance(after, StatusReport) and after.restarts == 1
    tcp_system.ask(sup, StopDeployment(), 10)


def run_program(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*POSGUARD, "run", "--config", str(cfg), "--duration", "60"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"never saw {needle!r}: {''.join(seen)} {proc.stderr.read()}")


def test_kill_9_of_the_whole_program_mid_entry_with_a_24s_lag_then_restart_converges(venue, tmp_path):
    # Separate-stop venue: the entry executes at the venue while the program is dead, so the
    # position is naked until the restarted program rebuilds from the journal and protects it
    # by client-id query and a direct stop -- while position reads would still show nothing.
    venue_socket = venue(attached=False, lag=24.0, entry_delay_s=0.5)
    cfg = tmp_path / "recovery.toml"
    admin_port = int(next(line for line in cfg.read_text().splitlines() if line.startswith("port")).split("=")[1])

    first = run_program(cfg)
    read_until(first, "opening buy 2.0 BTCUSDT")
    wait_for_venue_call(venue_socket, "create_order")     # the entry reached the venue, unanswered
    doomed = kill_system(admin_port, {first.pid})         # the whole program, mid-entry
    first.wait(timeout=10)
    assert not wait_exited(doomed)
    killed_at = time.monotonic()

    second = run_program(cfg)
    try:
        out = read_until(second, "PROTECTED")
        assert any("not opened: BTCUSDT is PROTECTED" in s or "BTCUSDT" in s for s in out)
        status = subprocess.run([*POSGUARD, "status", "--config", str(cfg), "--json"], cwd=ROOT,
                                capture_output=True, text=True, timeout=20)
        (btc,) = json.loads(status.stdout)["positions"]
        assert btc["state"] == "PROTECTED" and btc["filled_qty"] == 2.0
        second.send_signal(signal.SIGINT)
        second.communicate(timeout=30)
    finally:
        if second.poll() is None:                       # a failure half-way: leave nothing behind
            kill_system(admin_port, {second.pid})
            second.wait()
    assert second.returncode == 0
    venue_truth = truth(venue_socket)
    assert venue_truth.now < 24.0 + (time.monotonic() - killed_at) + 5     # sanity: same venue run
    assert len([o for o in venue_truth.orders if not o.reduce_only]) == 1
    assert venue_truth.open_positions()["BTCUSDT"].stop_price == 95.0
    assert venue_truth.call_count("fetch_positions") <= 2       # one start-up report per run
    with sqlite3.connect(tmp_path / "var" / "journal.sqlite") as db:
        (state,), = db.execute("SELECT state FROM positions WHERE symbol='BTCUSDT'").fetchall()
        (filled,), = db.execute("SELECT filled_qty FROM orders WHERE purpose='entry'").fetchall()
    assert state == "PROTECTED" and filled == 2.0                         # the journal agrees
