"""The whole deployment on thespian's multiprocess TCP base, as `posguard run` starts it:
the incident replayed through real actor processes (lag scaled to 2.4 s), loopback-only
sockets, a slow symbol that does not stall the others, and a clean stop."""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest

from actors.journal.store import SCHEMA_VERSION
from actors.messages import JournalSynced
from actors.settings import PositionSettings
from adapters.base import Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from supervisor.host.procfs import listening_sockets, socket_inodes, system_pids
from tests.support import kit

LAG = 2.4                                  # the incident's 24 s, scaled by 1/10
PRICES = {"BTCUSDT": 100.0, "ETHUSDT": 10.0, "SLOWUSDT": 1.0}
SETTINGS = PositionSettings(naked_deadline_s=1.0, entry_unknown_window_s=0.5, poll_s=0.02, retry_s=0.02,
                            retry_cap_s=0.2)


def sim(*faults: Fault, attached: bool = True) -> SimVenueConfig:
    return SimVenueConfig(engine=EngineConfig(seed=11, prices=PRICES, position_lag_s=LAG, volatility=0.0),
                          attached_stops=attached, latency_s=0.01, orders_per_second=200, faults=faults,
                          recv_window_s=0.3)          # scaled with the 0.5 s "never arrived" window


class Deployment(kit.Deployment):
    def __init__(self, asys: Any, venue: SimVenueConfig, journal: str) -> None:
        super().__init__(asys, tuple(PRICES), journal, functools.partial(SimulatedAdapter, venue), settings=SETTINGS,
                         protection=None, timeout=10)

    def open(self, symbol: str = "BTCUSDT", qty: float = 1.0, stop: float | None = None) -> None:
        super().open(symbol, Side.BUY, qty, PRICES[symbol] * 0.95 if stop is None else stop)

    def wait_state(self, symbol: str, *states: str, within: float = 10.0) -> str:
        return self.wait(symbol, *states, within=within).state


@pytest.fixture
def deploy(tcp_system, tmp_path):
    with kit.Deployments(tcp_system, expect_stopped=True) as made:
        def start(venue: SimVenueConfig) -> Deployment:
            return made.add(Deployment(tcp_system, venue, str(tmp_path / f"journal{len(made.made)}.sqlite")))

        yield start


def test_every_listening_socket_of_a_running_system_is_loopback(deploy):
    d = deploy(sim())
    d.open()
    d.wait_state("BTCUSDT", "PROTECTED")
    pids = system_pids(d.asys.posguard_port) | {os.getpid()}
    listening = listening_sockets()
    owned = {inode: listening[inode] for pid in pids for inode in socket_inodes(pid) if inode in listening}
    assert len(set(owned.values())) >= 6       # admin, supervisor, journal, exchange, 3 positions (+ logger)
    bad = [addr for addr in owned.values() if addr[0] not in ("127.0.0.1", "::1")]
    assert not bad, f"listening on non-loopback addresses: {bad}"


def test_a_attached_stop_venue_through_the_actors_leaves_no_naked_second(deploy):
    d = deploy(sim(attached=True))
    d.open("BTCUSDT")
    d.open("ETHUSDT")
    d.wait_state("BTCUSDT", "PROTECTED")
    d.wait_state("ETHUSDT", "PROTECTED")
    truth = d.truth()
    assert truth.max_naked_seconds() == 0.0
    assert truth.call_count("fetch_positions") <= 1       # the start-up report only
    assert truth.now < LAG                                # all of it happened inside the REST lag


def test_b_c_separate_stop_venue_sets_the_stop_or_rolls_back_without_a_read(deploy):
    d = deploy(sim(Fault("set_stop", FaultKind.ERROR, symbol="ETHUSDT", code=10001, message="risk limit"),
                   attached=False))
    d.open("BTCUSDT")
    d.open("ETHUSDT", qty=2.0)
    d.wait_state("BTCUSDT", "PROTECTED")
    d.wait_state("ETHUSDT", "IDLE")
    truth = d.truth()
    assert truth.now < LAG
    assert set(truth.open_positions()) == {"BTCUSDT"}
    assert truth.open_positions()["BTCUSDT"].stop_price == 95.0
    (eth,) = [p for p in truth.positions if p.symbol == "ETHUSDT"]
    assert eth.closed_at is not None                      # closed while reads still showed nothing
    assert truth.call_count("fetch_positions") <= 1       # the start-up report only


def test_d_lost_entry_reply_is_resolved_by_client_id_through_the_actors(deploy):
    d = deploy(sim(Fault("create_order", FaultKind.TIMEOUT_AFTER, symbol="BTCUSDT")))
    d.open("BTCUSDT")
    d.wait_state("BTCUSDT", "PROTECTED")
    truth = d.truth()
    entries = [o for o in truth.orders if o.symbol == "BTCUSDT" and not o.reduce_only]
    assert len(entries) == 1
    assert truth.call_count("create_order") == 1 and truth.call_count("fetch_order") >= 1


def test_a_slow_venue_call_for_one_symbol_does_not_hold_up_the_others(deploy):
    # SLOWUSDT's entry takes 30 s at the venue; BTCUSDT, sent after it, must not wait for it.
    d = deploy(sim(Fault("create_order", FaultKind.DELAY, symbol="SLOWUSDT", delay_s=30.0)))
    d.open("SLOWUSDT")
    d.open("BTCUSDT")
    d.wait_state("BTCUSDT", "PROTECTED")
    assert d.states()["SLOWUSDT"] == "ENTERING"


def test_journal_holds_the_order_before_and_after_and_the_transitions(deploy, tmp_path):
    import sqlite3

    d = deploy(sim(attached=False))
    d.open("BTCUSDT")
    d.wait_state("BTCUSDT", "PROTECTED")
    assert isinstance(d.sync("BTCUSDT"), JournalSynced)
    with sqlite3.connect(tmp_path / "journal0.sqlite") as db:     # WAL: readable while the journal writes
        (status, purpose), = db.execute("SELECT status, purpose FROM orders").fetchall()
        states = [r[0] for r in db.execute("SELECT to_state FROM transitions WHERE symbol='BTCUSDT' ORDER BY id")]
        (pos_state,), = db.execute("SELECT to_state FROM transitions WHERE symbol='BTCUSDT'"
                                   " ORDER BY id DESC LIMIT 1").fetchall()
        (version,), = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchall()
        (mode,), = db.execute("PRAGMA journal_mode").fetchall()
    assert (status, purpose) == ("filled", "entry")
    assert states == ["IDLE", "ENTERING", "PROTECTING", "PROTECTED"]     # IDLE: recovered at start
    assert pos_state == "PROTECTED" and version == str(SCHEMA_VERSION) and mode == "wal"
