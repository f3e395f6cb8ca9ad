"""Private streams through the whole deployment (the simulated venue in its own server): what they
buy, and that safety holds when they lie by omission -- drops, stalls, refused keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from actors.settings import PositionSettings, ProtectionSettings, StreamSettings, SupervisionSettings
from adapters.base import OrderRequest, Side
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from tests.support import kit
from tests.support.kit import SimVenueThread

PRICES = {"BTCUSDT": 100.0, "ETHUSDT": 10.0}
SETTINGS = PositionSettings(naked_deadline_s=5.0, entry_unknown_window_s=1.5, poll_s=0.05, retry_s=0.05,
                            reply_timeout_s=2.0)


def venue(lag: float = 24.0, attached: bool = True, *faults: Fault) -> SimVenueConfig:
    return SimVenueConfig(engine=EngineConfig(seed=5, prices=PRICES, position_lag_s=lag, volatility=0.0),
                          attached_stops=attached, latency_s=0.01, orders_per_second=200, recv_window_s=0.5,
                          streams=True, faults=faults)


@pytest.fixture
def deploy(tcp_system, tmp_path) -> Iterator[Callable[..., kit.Deployment]]:
    with kit.Deployments(tcp_system) as made:
        def start(config: SimVenueConfig, protection: ProtectionSettings | None = None) -> kit.Deployment:
            sim = made.venue(SimVenueThread(config, tmp_path))
            d = made.start(tuple(PRICES), str(tmp_path / "j.sqlite"), sim.factory(), settings=SETTINGS,
                           supervision=SupervisionSettings(backoff_s=0.01, heartbeat_s=0.2),
                           protection=protection or ProtectionSettings(scan_s=60.0, grace_s=30.0),
                           stream=StreamSettings(backoff_s=0.05, backoff_cap_s=0.5), timeout=15)
            d.sim = sim
            d.until(lambda: d.stream_state() == "up", 10, "the stream came up")
            return d

        yield start


def test_a_foreign_position_is_protected_from_the_stream_while_rest_lags_24s(deploy):
    # The stream's evidence alone: the REST view still shows nothing when the stop is there (the
    # seconds it takes are bench/orphan.py's to measure, not a test's).
    d = deploy(venue(lag=24.0))
    d.sim.on_loop(lambda: d.sim.engine.create_order(OrderRequest("ETHUSDT", Side.BUY, 3.0, "by-hand-1"), True))
    protected = d.until(lambda: (d.sim.truth().open_positions().get("ETHUSDT") or None)
                        and d.sim.truth().open_positions()["ETHUSDT"].stop_price, 15, "the foreign position protected")
    assert protected == pytest.approx(10.0 * 0.98)                  # foreign_stop_pct 2 % from its entry
    assert d.sim.on_loop(lambda: d.sim.engine.position_view()) == []  # the REST view still shows nothing
    assert d.wait("ETHUSDT", "PROTECTED").stop_price == protected


def test_a_stop_that_triggers_closes_the_position_with_its_reason_without_a_scan(deploy):
    d = deploy(venue(lag=24.0))                                     # scans every 60 s: none happens here
    d.open("BTCUSDT", Side.BUY, 1.0, 95.0)
    d.wait("BTCUSDT", "PROTECTED")
    reads = d.sim.truth().call_count("fetch_positions")
    d.sim.on_loop(lambda: d.sim.engine.trigger_stop_now("BTCUSDT"))
    snap = d.wait("BTCUSDT", "IDLE", within=3.0)
    assert "stop loss triggered" in snap.last_event and "stream" in snap.last_event
    truth = d.sim.truth()
    assert truth.call_count("fetch_positions") == reads              # no scan was needed (nor made)
    assert not truth.open_positions()


def test_a_stream_dropped_mid_entry_still_ends_protected_and_nothing_is_applied_twice(deploy, tmp_path):
    slow = Fault("create_order", FaultKind.DELAY, symbol="BTCUSDT", delay_s=0.3)
    d = deploy(venue(2.4, False, slow))                             # separate stop: the fill matters
    d.open("BTCUSDT", Side.BUY, 2.0, 95.0)
    d.sim.stream_fault("drop")                                      # while the entry is in flight
    d.sim.stream_fault("stall")                                     # and the next connection is silent
    snap = d.wait("BTCUSDT", "PROTECTED", within=10.0)        # through REST alone
    assert snap.filled_qty == 2.0
    d.until(lambda: d.stream_state() == "down", 15, "the stall seen as a drop")
    d.sim.stream_fault("resume")
    d.until(lambda: d.stream_state() == "up", 10, "reconnected and reconciled")
    assert d.status().streams[0].reconnects >= 1
    import sqlite3
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events WHERE symbol='BTCUSDT' AND kind IN"
                                          " ('fill', 'stop') ORDER BY seq")]
        entries = db.execute("SELECT COUNT(*) FROM orders WHERE purpose='entry'").fetchone()[0]
    assert kinds == ["fill", "stop"] and entries == 1               # each once, whatever told it
    assert len([o for o in d.sim.truth().orders if not o.reduce_only]) == 1


def test_a_stall_falls_back_to_rest_and_a_refused_key_recovers_without_a_hang(deploy):
    d = deploy(venue(lag=0.2), ProtectionSettings(scan_s=0.3, grace_s=0.5))
    d.sim.stream_fault("stall")
    d.until(lambda: d.stream_state() == "down", 15, "the stall detected")   # how soon: bench, not a test
    assert "stalled" in d.status().streams[0].reason
    # Meanwhile a position opened by hand is still found -- by the REST scan.
    d.sim.on_loop(lambda: d.sim.engine.create_order(OrderRequest("ETHUSDT", Side.SELL, 2.0, "by-hand-2"), True))
    d.until(lambda: (d.sim.truth().open_positions().get("ETHUSDT") or None)
            and d.sim.truth().open_positions()["ETHUSDT"].stop_price, 10, "protected through REST")
    d.sim.stream_fault("reject_auth", True)                         # the keys refused on reconnect
    d.sim.stream_fault("resume")
    d.sim.stream_fault("drop")                                      # whatever connection there is now
    d.until(lambda: "authentication refused" in d.status().streams[0].reason, 10, "the refusal said")
    assert d.stream_state() == "down"
    d.sim.stream_fault("reject_auth", False)
    d.until(lambda: d.stream_state() == "up", 15, "recovered once the keys are accepted")
