"""The bad-input corpus, venue part: replies missing a field we rely on (or carrying garbage in
it), served by the project's emulators through real ccxt and HTTP. Each row is the reply's
defect and what it must mean: for an order we sent, an unknown outcome resolved by its client id
(never assumed, never sent twice; a close still reaches the venue); for a scan, a refused
observation (nothing acted on); for a foreign position, a stop from the entry or the mark price,
never from nothing. (tests/test_bad_input.py holds the config, CLI and API rows.)"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from actors.messages import (
    ClosePosition,
    CommandAccepted,
    DeploymentReady,
    OpenPosition,
    ProtectionSettings,
    ScanDone,
    ScanNow,
    StartDeployment,
    StatusReport,
    StatusRequest,
    StopDeployment,
    WaitForState,
)
from adapters.base import OrderRequest, Side
from adapters.binance import BinanceAdapter
from adapters.binance_emulator import BinanceEmulator
from adapters.bybit import BybitAdapter
from adapters.bybit_emulator import BybitEmulator
from adapters.emulator_base import DROP, EmulatorConfig
from adapters.sim_engine import EngineConfig
from adapters.simulated import SimVenueConfig
from supervisor.supervisor import Supervisor
from tests.emulator import EmulatorThread
from tests.test_venue_system import SETTINGS

PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}
BYBIT_QUERY, BYBIT_POSITIONS = "/v5/order/realtime", "/v5/position/list"
BINANCE_ORDER, BINANCE_POSITIONS = "/fapi/v1/order", "/fapi/v3/positionRisk"
CREATES = {"bybit": "/v5/order/create", "binanceusdm": BINANCE_ORDER}
STOPS = {"bybit": "/v5/position/trading-stop", "binanceusdm": "/fapi/v1/algoOrder"}


class Venue:
    """One deployment on one emulator, REST only (the replies under test are the only evidence)."""

    def __init__(self, asys: Any, emu: EmulatorThread, journal: str) -> None:
        self.asys, self.emu = asys, emu
        adapter = BinanceAdapter if emu.venue == "binanceusdm" else BybitAdapter
        self.sup = asys.createActor(Supervisor)
        reply = asys.ask(self.sup, StartDeployment(
            tuple(PRICES), journal, functools.partial(adapter, emu.settings(streams=False)), SETTINGS,
            protection=ProtectionSettings(scan_s=600.0, grace_s=0.0)), 30)   # scans only when asked
        assert isinstance(reply, DeploymentReady), reply
        deadline = time.monotonic() + 15                  # the start-up read of positions is over: the
        while not asys.ask(self.sup, StatusRequest(), 5).reconciliation:     # next read is the test's own
            assert time.monotonic() < deadline, "no start-up reconciliation"

    def posts(self, path: str) -> list[dict[str, Any]]:
        """Requests that change something (POST) on `path`."""
        return [p for method, q, p in self.emu.requests_log() if q == path and method == "POST"]

    def wait(self, symbol: str, state: str, within: float = 20.0) -> Any:
        snap = self.asys.ask(self.sup, WaitForState(symbol, (state,)), within)
        assert snap is not None, f"{symbol} never {state}: {self.snapshot(symbol)}"
        return snap

    def snapshot(self, symbol: str) -> Any:
        report = self.asys.ask(self.sup, StatusRequest(), 5)
        assert isinstance(report, StatusReport)
        return {p.symbol: p for p in report.positions}[symbol]

    def scan(self) -> ScanDone:
        done = self.asys.ask(self.sup, ScanNow(), 15)
        assert isinstance(done, ScanDone), done
        return done


@pytest.fixture
def venue_on(tcp_system, tmp_path) -> Iterator[Any]:
    made: list[tuple[Venue, EmulatorThread]] = []

    def start(dialect: type, lag: float = 24.0) -> Venue:
        config = EmulatorConfig(venue=SimVenueConfig(
            engine=EngineConfig(seed=5, prices=PRICES, position_lag_s=lag, volatility=0.0), latency_s=0.02,
            orders_per_second=100))
        emu = EmulatorThread(config, dialect).__enter__()
        v = Venue(tcp_system, emu, str(tmp_path / f"journal{len(made)}.sqlite"))
        made.append((v, emu))
        return v

    yield start
    for v, emu in made:
        v.asys.ask(v.sup, StopDeployment(), 15)
        emu.__exit__(None, None, None)


# -- an order we sent: the defect is an unknown outcome, resolved by its client id -------------

ORDER_REPLIES = [
    pytest.param(BybitEmulator, BYBIT_QUERY, "side", DROP, id="bybit-query-without-side"),
    pytest.param(BybitEmulator, BYBIT_QUERY, "orderStatus", DROP, id="bybit-query-without-status"),
    pytest.param(BybitEmulator, BYBIT_QUERY, "cumExecQty", "abc", id="bybit-query-filled-not-a-number"),
    pytest.param(BybitEmulator, BYBIT_QUERY, "avgPrice", "NaN", id="bybit-query-price-nan"),
    pytest.param(BybitEmulator, BYBIT_QUERY, "orderStatus", "Exploded", id="bybit-query-unknown-status"),
    pytest.param(BinanceEmulator, BINANCE_ORDER, "side", DROP, id="binance-reply-without-side"),
    pytest.param(BinanceEmulator, BINANCE_ORDER, "status", DROP, id="binance-reply-without-status"),
    pytest.param(BinanceEmulator, BINANCE_ORDER, "executedQty", "1e999", id="binance-filled-infinite"),
]


@pytest.mark.parametrize(("dialect", "path", "key", "value"), ORDER_REPLIES)
def test_an_entry_reply_missing_a_field_is_resolved_by_client_id_never_resent(venue_on, dialect, path, key, value):
    v = venue_on(dialect)
    v.emu.mangle(path, key, value, times=2)
    assert isinstance(v.asys.ask(v.sup, OpenPosition("BTCUSDT", Side.BUY, 0.01, 58_800.0), 5), CommandAccepted)
    v.wait("BTCUSDT", "PROTECTED")
    (entry,) = v.posts(CREATES[v.emu.venue])                           # sent once, never again
    truth = v.emu.truth()
    assert [o.symbol for o in truth.orders if not o.reduce_only and not o.client_order_id.startswith("stop-")] \
        == ["BTCUSDT"]
    assert truth.open_positions()["BTCUSDT"].stop_price == 58_800.0 and truth.max_naked_seconds() < 15
    cid = entry.get("orderLinkId") or entry.get("newClientOrderId")
    queried = [p for method, q, p in v.emu.requests_log() if q == path and method == "GET"
               and cid in (p.get("orderLinkId"), p.get("origClientOrderId"))]
    assert queried, "the outcome was not asked by its client id"


CLOSE_REPLIES = [
    pytest.param(BybitEmulator, BYBIT_QUERY, "side", DROP, id="bybit-close-query-without-side"),
    pytest.param(BinanceEmulator, BINANCE_ORDER, "status", DROP, id="binance-close-reply-without-status"),
]


@pytest.mark.parametrize(("dialect", "path", "key", "value"), CLOSE_REPLIES)
def test_a_close_whose_reply_is_malformed_still_reaches_the_venue_and_is_confirmed(venue_on, dialect, path, key,
                                                                                  value):
    v = venue_on(dialect)
    assert isinstance(v.asys.ask(v.sup, OpenPosition("BTCUSDT", Side.BUY, 0.01, 58_800.0), 5), CommandAccepted)
    v.wait("BTCUSDT", "PROTECTED")
    v.emu.mangle(path, key, value, times=2)
    assert isinstance(v.asys.ask(v.sup, ClosePosition("BTCUSDT"), 5), CommandAccepted)
    v.wait("BTCUSDT", "IDLE")
    truth = v.emu.truth()
    assert truth.open_positions() == {}
    assert len([o for o in truth.orders if o.reduce_only and not o.client_order_id.startswith("stop-")]) == 1


# -- a scan: the defect refuses the observation; nothing is acted on ---------------------------

SCAN_REPLIES = [
    pytest.param(BybitEmulator, BYBIT_POSITIONS, {"side": DROP}, id="bybit-position-without-side"),
    pytest.param(BybitEmulator, BYBIT_POSITIONS, {"size": "a lot"}, id="bybit-position-size-not-a-number"),
    pytest.param(BybitEmulator, BYBIT_POSITIONS, {"avgPrice": "inf"}, id="bybit-position-entry-infinite"),
    pytest.param(BinanceEmulator, BINANCE_POSITIONS, {"positionAmt": DROP, "notional": DROP},
                 id="binance-position-without-size"),              # ccxt derives the size from the notional
    pytest.param(BinanceEmulator, BINANCE_POSITIONS, {"positionAmt": "lots"}, id="binance-position-size-garbage"),
    pytest.param(BinanceEmulator, BINANCE_POSITIONS, {"entryPrice": "x"}, id="binance-position-entry-not-a-number"),
]


@pytest.mark.parametrize(("dialect", "path", "defects"), SCAN_REPLIES)
def test_a_scan_reply_missing_a_field_is_a_refused_observation(venue_on, dialect, path, defects):
    v = venue_on(dialect, lag=0.0)
    v.emu.on_loop(lambda: v.emu.emulator.engine.create_order(OrderRequest("ETHUSDT", Side.SELL, 0.5, "web-1"), True))
    for key, value in defects.items():
        v.emu.mangle(path, key, value)
    refused = v.scan()
    assert refused.failure == "unknown malformed", refused
    assert v.posts(STOPS[v.emu.venue]) == [] and v.snapshot("ETHUSDT").state == "IDLE"    # nothing acted on
    assert v.scan().failure is None                                  # a well-formed reply: adopted
    v.wait("ETHUSDT", "PROTECTED")
    assert v.emu.truth().open_positions()["ETHUSDT"].stop_price == pytest.approx(3_000.0 * 1.02)


def test_a_foreign_position_without_an_entry_price_is_protected_from_the_mark_price(venue_on):
    v = venue_on(BybitEmulator, lag=0.0)
    v.emu.on_loop(lambda: v.emu.emulator.engine.create_order(OrderRequest("ETHUSDT", Side.SELL, 0.5, "web-1"), True))
    v.emu.mangle(BYBIT_POSITIONS, "avgPrice")
    v.emu.mangle(BYBIT_POSITIONS, "markPrice", "3010")               # the mark a tick away from the entry
    assert v.scan().failure is None
    v.wait("ETHUSDT", "PROTECTED")
    assert v.emu.truth().open_positions()["ETHUSDT"].stop_price == pytest.approx(3_010.0 * 1.02)


def test_a_foreign_position_with_neither_entry_nor_mark_price_gets_no_stop_from_nothing(venue_on):
    v = venue_on(BybitEmulator, lag=0.0)
    v.emu.on_loop(lambda: v.emu.emulator.engine.create_order(OrderRequest("ETHUSDT", Side.SELL, 0.5, "web-1"), True))
    for key in ("avgPrice", "markPrice", "positionValue"):           # ccxt derives a mark from the value
        v.emu.mangle(BYBIT_POSITIONS, key, times=2)
    assert v.scan().failure is None and v.scan().failure is None       # read, judged, twice: an alert only
    assert v.posts(STOPS["bybit"]) == [] and v.snapshot("ETHUSDT").state == "IDLE"
    assert v.scan().failure is None                                  # the prices are back: protected
    v.wait("ETHUSDT", "PROTECTED")
    assert v.emu.truth().open_positions()["ETHUSDT"].stop_price == pytest.approx(3_060.0)
