"""Private streams through the whole deployment against both venues' emulators, through real
ccxt.pro over real sockets: what they buy, and recovery when a venue refuses the stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors.settings import ProtectionSettings, StreamSettings
from adapters.base import OrderRequest, Side
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.bybit import BybitEmulator
from tests.support import kit
from tests.support.emulator import SETTINGS, EmulatorThread, emulator_config
from tests.support.kit import PRICES

VENUES = pytest.mark.parametrize("dialect", [BybitEmulator, BinanceEmulator], ids=["bybit", "binance"])


class Venue(kit.Deployment):
    """A deployment on one emulator, through ccxt, with its stream."""

    def __init__(self, asys: Any, emu: EmulatorThread, journal: str) -> None:
        self.emu = emu
        super().__init__(asys, tuple(PRICES), journal, emu.factory(), settings=SETTINGS,
                         protection=ProtectionSettings(scan_s=60.0, grace_s=30.0),     # no REST scan helps here
                         stream=StreamSettings(backoff_s=0.05, backoff_cap_s=0.5))
        self.until(lambda: self.stream().state == "up", 15, "the stream up and reconciled")

    def stop_of(self, symbol: str) -> float | None:
        position = self.emu.truth().open_positions().get(symbol)
        return position.stop_price if position is not None else None


@pytest.fixture
def venue_for(tcp_system, tmp_path) -> Iterator[Callable[[type], Venue]]:
    with kit.Deployments(tcp_system, expect_stopped=True) as made:
        def start(dialect: type) -> Venue:
            emu = made.venue(EmulatorThread(emulator_config(lag=24.0), dialect))
            return made.add(Venue(tcp_system, emu, str(tmp_path / "journal.sqlite")))

        yield start


@VENUES
def test_a_foreign_position_is_protected_from_the_stream_while_rest_lags_24s(venue_for, dialect):
    # The stream's evidence alone: the REST view still shows nothing when the stop is there (how
    # fast, in seconds, is bench/orphan.py's to measure, not a test's).
    v = venue_for(dialect)
    v.emu.on_loop(lambda: v.emu.emulator.engine.create_order(OrderRequest("ETHUSDT", Side.SELL, 0.5, "web-1"), True))
    stop = v.until(lambda: v.stop_of("ETHUSDT"), 15, "the foreign position protected")
    assert stop > 3_000.0                                          # a short's stop, above its entry
    assert v.emu.on_loop(lambda: v.emu.emulator.engine.position_view()) == []   # REST shows nothing yet
    v.wait("ETHUSDT", "PROTECTED", within=5)


@pytest.mark.parametrize(("dialect", "how", "label"), [(BybitEmulator, "stop", "stop loss triggered"),
                                                       (BinanceEmulator, "liquidation", "liquidated")],
                         ids=["bybit-stop", "binance-liquidation"])
def test_the_venue_closing_our_position_is_closed_with_its_reason_within_one_event(venue_for, dialect, how, label):
    v = venue_for(dialect)
    v.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    v.wait("BTCUSDT", "PROTECTED", within=15)
    engine = v.emu.emulator.engine
    v.emu.on_loop(lambda: engine.trigger_stop_now("BTCUSDT") if how == "stop" else engine.liquidate("BTCUSDT"))
    snap = v.wait("BTCUSDT", "IDLE", within=5)
    assert label in snap.last_event and "stream" in snap.last_event
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
    v.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    v.wait("BTCUSDT", "PROTECTED", within=15)
