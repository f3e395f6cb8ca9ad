"""Private streams through the whole deployment against both venues' emulators, through real
ccxt.pro over real sockets: what they buy, and recovery when a venue refuses the stream."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors.messages import (
    CommandAccepted,
    DeploymentReady,
    DeploymentStopped,
    OpenPosition,
    PositionSettings,
    ProtectionSettings,
    StartDeployment,
    StatusReport,
    StatusRequest,
    StopDeployment,
    StreamSettings,
    WaitForState,
)
from adapters.base import OrderRequest, Side
from adapters.binance import BinanceAdapter
from adapters.binance_emulator import BinanceEmulator
from adapters.bybit import BybitAdapter
from adapters.bybit_emulator import BybitEmulator
from adapters.emulator_base import EmulatorConfig
from adapters.sim_engine import EngineConfig
from adapters.simulated import SimVenueConfig
from supervisor.supervisor import Supervisor
from tests.emulator import EmulatorThread

PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}
SETTINGS = PositionSettings(naked_deadline_s=5.0, entry_unknown_window_s=6.0, poll_s=0.05, retry_s=0.05,
                            retry_cap_s=0.5)
VENUES = pytest.mark.parametrize("dialect", [BybitEmulator, BinanceEmulator], ids=["bybit", "binance"])


class Venue:
    """A deployment on one emulator, through ccxt, with its stream."""

    def __init__(self, asys: Any, emu: EmulatorThread, journal: str) -> None:
        self.asys, self.emu = asys, emu
        adapter = BinanceAdapter if emu.venue == "binanceusdm" else BybitAdapter
        self.sup = asys.createActor(Supervisor)
        reply = asys.ask(self.sup, StartDeployment(
            tuple(PRICES), journal, functools.partial(adapter, emu.settings()), SETTINGS,
            protection=ProtectionSettings(scan_s=60.0, grace_s=30.0),            # no REST scan helps here
            stream=StreamSettings(backoff_s=0.05, backoff_cap_s=0.5)), 30)
        assert isinstance(reply, DeploymentReady), reply
        self.until(lambda: self.stream().state == "up", 15, "the stream up and reconciled")

    def stream(self) -> Any:
        report = self.asys.ask(self.sup, StatusRequest(), 5)
        assert isinstance(report, StatusReport) and report.streams
        return report.streams[0]

    def until(self, check: Callable[[], Any], within: float, what: str) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:               # each check is a round trip
            result = check()
            if result:
                return result
        raise AssertionError(f"{what}: not within {within}s (stream: {self.stream()})")

    def stop_of(self, symbol: str) -> float | None:
        position = self.emu.truth().open_positions().get(symbol)
        return position.stop_price if position is not None else None


@pytest.fixture
def venue_for(tcp_system, tmp_path) -> Iterator[Callable[[type], Venue]]:
    made: list[tuple[Venue, EmulatorThread]] = []

    def start(dialect: type) -> Venue:
        config = EmulatorConfig(venue=SimVenueConfig(engine=EngineConfig(seed=5, prices=PRICES, position_lag_s=24.0,
                                                                         volatility=0.0),
                                                     latency_s=0.02, orders_per_second=100))
        emu = EmulatorThread(config, dialect).__enter__()
        v = Venue(tcp_system, emu, str(tmp_path / "journal.sqlite"))
        made.append((v, emu))
        return v

    yield start
    for v, emu in made:
        assert isinstance(v.asys.ask(v.sup, StopDeployment(), 15), DeploymentStopped)
        emu.__exit__(None, None, None)


@VENUES
def test_a_foreign_position_is_protected_from_the_stream_while_rest_lags_24s(venue_for, dialect):
    # The stream's evidence alone: the REST view still shows nothing when the stop is there (how
    # fast, in seconds, is bench/orphan.py's to measure, not a test's).
    v = venue_for(dialect)
    v.emu.on_loop(lambda: v.emu.emulator.engine.create_order(OrderRequest("ETHUSDT", Side.SELL, 0.5, "web-1"), True))
    stop = v.until(lambda: v.stop_of("ETHUSDT"), 15, "the foreign position protected")
    assert stop > 3_000.0                                          # a short's stop, above its entry
    assert v.emu.on_loop(lambda: v.emu.emulator.engine.position_view()) == []   # REST shows nothing yet
    assert v.asys.ask(v.sup, WaitForState("ETHUSDT", ("PROTECTED",)), 5) is not None


@pytest.mark.parametrize(("dialect", "how", "label"), [(BybitEmulator, "stop", "stop loss triggered"),
                                                       (BinanceEmulator, "liquidation", "liquidated")],
                         ids=["bybit-stop", "binance-liquidation"])
def test_the_venue_closing_our_position_is_closed_with_its_reason_within_one_event(venue_for, dialect, how, label):
    v = venue_for(dialect)
    assert isinstance(v.asys.ask(v.sup, OpenPosition("BTCUSDT", Side.BUY, 0.01, 58_800.0), 5), CommandAccepted)
    assert v.asys.ask(v.sup, WaitForState("BTCUSDT", ("PROTECTED",)), 15) is not None
    engine = v.emu.emulator.engine
    v.emu.on_loop(lambda: engine.trigger_stop_now("BTCUSDT") if how == "stop" else engine.liquidate("BTCUSDT"))
    snap = v.asys.ask(v.sup, WaitForState("BTCUSDT", ("IDLE",)), 5)
    assert snap is not None and label in snap.last_event and "stream" in snap.last_event
    assert v.emu.truth().open_positions() == {}


@VENUES
def test_a_refused_stream_recovers_without_a_hang_and_status_says_what_happened(venue_for, dialect):
    v = venue_for(dialect)
    if dialect is BybitEmulator:
        v.emu.stream_fault("reject_auth", on=True)
        v.emu.stream_fault("drop")
    else:
        v.emu.stream_fault("expire_listen_key")                    # the listen key dies on the venue
    v.until(lambda: v.stream().state != "up", 20, "the stream lost")
    if dialect is BybitEmulator:
        v.until(lambda: "authentication refused" in v.stream().reason, 10, "the status says the keys were refused")
        v.emu.stream_fault("reject_auth", on=False)
    v.until(lambda: v.stream().state == "up", 20, "recovered")
    assert v.stream().reconnects >= 1
    assert isinstance(v.asys.ask(v.sup, OpenPosition("BTCUSDT", Side.BUY, 0.01, 58_800.0), 5), CommandAccepted)
    assert v.asys.ask(v.sup, WaitForState("BTCUSDT", ("PROTECTED",)), 15) is not None
