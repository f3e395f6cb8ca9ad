"""kill -9 with the venue in its own process (it outlives us, like a real one): the
ExchangeActor mid-entry, and the whole program mid-entry on a venue with the incident's 24 s
REST lag, then started again. Both converge: protected, one entry, journal == venue."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.settings import PositionSettings, SupervisionSettings
from adapters.base import Side
from adapters.sim.remote import RemoteSimAdapter
from supervisor.host.procfs import kill_system, wait_exited
from tests.support import kit


def write_config(tmp_path: Path, venue_socket: str, admin_port: int, *, attached: bool, lag: float,
                 entry_delay_s: float) -> Path:
    return kit.demo_config(
        tmp_path, admin_port, symbols={"BTCUSDT": 100.0}, lag=lag, attached=attached, name="recovery.toml",
        opens=[{"symbol": "BTCUSDT", "side": "buy", "qty": 2.0, "stop": 95.0}],
        tables={"venue.simulated": {"server": venue_socket, "seed": 9, "volatility": 0.0, "orders_per_second": 200,
                                    "recv_window_s": 1.0},
                "venue.simulated.faults": [{"op": "create_order", "kind": "delay", "symbol": "BTCUSDT",
                                            "delay_s": entry_delay_s}],
                "deployment": {"refresh_s": 0.1},
                "position": {"naked_deadline_s": 10.0, "entry_unknown_window_s": 2.5, "poll_s": 0.05, "retry_s": 0.05,
                             "reply_timeout_s": 2.0},
                "protection": {"enabled": False},
                "supervision": {"backoff_s": 0.01, "heartbeat_s": 0.1, "heartbeat_timeout_s": 2.0}})


@pytest.fixture
def venue(tmp_path) -> Iterator[Callable[..., str]]:
    """A simulated venue process of our own; yields a function that configures it and returns its socket."""
    with contextlib.ExitStack() as served:
        def start(**kw: Any) -> str:
            path = str(tmp_path / "venue.sock")
            venue = served.enter_context(kit.Served("venue", write_config(tmp_path, path, kit.free_port(), **kw)))
            assert "listening" in venue.first_line
            return path

        yield start


def wait_for_venue_call(path: str, op: str, within: float = 10.0) -> None:
    """Ask the venue (each ask a round trip) until it has seen `op`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if kit.venue_truth(path).call_count(op):
            return
    raise AssertionError(f"the venue never saw {op}")


def test_kill_9_of_the_exchange_actor_mid_entry_converges(tcp_system, venue, tmp_path):
    venue_socket = venue(attached=False, lag=2.4, entry_delay_s=0.5)
    settings = PositionSettings(naked_deadline_s=10.0, entry_unknown_window_s=2.5, poll_s=0.05, retry_s=0.05,
                                reply_timeout_s=2.0)
    d = kit.Deployment(tcp_system, ("BTCUSDT",), str(tmp_path / "j.sqlite"),
                       functools.partial(RemoteSimAdapter, venue_socket), settings=settings,
                       supervision=SupervisionSettings(backoff_s=0.01, heartbeat_s=0.1), protection=None, timeout=10)
    exchange_pid = dict((c, p) for c, p, _ in d.status().children)["exchange"]
    d.open("BTCUSDT", Side.BUY, 2.0, 95.0)
    d.wait("BTCUSDT", "ENTERING", within=5)
    wait_for_venue_call(venue_socket, "create_order")     # the venue has it; its reply is pending
    os.kill(exchange_pid, signal.SIGKILL)
    assert d.wait("BTCUSDT", "PROTECTED", within=20).filled_qty == 2.0
    venue_truth = kit.venue_truth(venue_socket)
    entries = [o for o in venue_truth.orders if not o.reduce_only]
    assert len(entries) == 1
    assert venue_truth.open_positions()["BTCUSDT"].stop_price == 95.0
    assert venue_truth.call_count("fetch_positions") <= 1       # the start-up report only
    assert d.status().restarts == 1
    d.stop(10)


def test_kill_9_of_the_whole_program_mid_entry_with_a_24s_lag_then_restart_converges(venue, tmp_path):
    # Separate-stop venue: the entry executes at the venue while the program is dead, so the
    # position is naked until the restarted program rebuilds from the journal and protects it
    # by client-id query and a direct stop -- while position reads would still show nothing.
    venue_socket = venue(attached=False, lag=24.0, entry_delay_s=0.5)
    cfg = tmp_path / "recovery.toml"
    admin_port = int(next(line for line in cfg.read_text().splitlines() if line.startswith("port")).split("=")[1])

    with kit.running(cfg, duration=60) as first:
        first.read_until("opening buy 2.0 BTCUSDT")
        wait_for_venue_call(venue_socket, "create_order")     # the entry reached the venue, unanswered
        doomed = kill_system(admin_port, {first.proc.pid})    # the whole program, mid-entry
        first.proc.wait(timeout=10)
        assert not wait_exited(doomed)
    killed_at = time.monotonic()

    with kit.running(cfg, duration=60) as second:             # a failure half-way leaves nothing behind
        # The restarted job asks to open BTCUSDT again: refused, the journal says it is held (the
        # venue, asked by client id, then says how far it got: PROTECTED below).
        second.read_until("not opened: BTCUSDT", "only an IDLE symbol accepts an entry")
        second.read_until("PROTECTED")
        status = kit.posguard("status", "--config", str(cfg), "--json")
        (btc,) = json.loads(status.stdout)["positions"]
        assert btc["state"] == "PROTECTED" and btc["filled_qty"] == 2.0
        second.interrupt()
    assert second.proc.returncode == 0
    venue_truth = kit.venue_truth(venue_socket)
    assert venue_truth.now < 24.0 + (time.monotonic() - killed_at) + 5     # sanity: same venue run
    assert len([o for o in venue_truth.orders if not o.reduce_only]) == 1
    assert venue_truth.open_positions()["BTCUSDT"].stop_price == 95.0
    assert venue_truth.call_count("fetch_positions") <= 2       # one start-up report per run
    with sqlite3.connect(tmp_path / "var" / "journal.sqlite") as db:
        (state,), = db.execute("SELECT to_state FROM transitions WHERE symbol='BTCUSDT'"
                                   " ORDER BY id DESC LIMIT 1").fetchall()
        (filled,), = db.execute("SELECT filled_qty FROM orders WHERE purpose='entry'").fetchall()
    assert state == "PROTECTED" and filled == 2.0                         # the journal agrees
