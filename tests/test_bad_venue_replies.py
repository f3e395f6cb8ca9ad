"""The bad-input corpus, venue part: replies missing a field we rely on (or carrying garbage in
it), served by the project's emulators through real ccxt and HTTP. Each row is the reply's
defect and what it must mean: for an order we sent, an unknown outcome resolved by its client id
(never assumed, never sent twice; a close still reaches the venue); for a scan, a refused
observation (nothing acted on); for a foreign position, a stop from the entry or the mark price,
never from nothing. (tests/test_bad_input.py holds the config, CLI and API rows.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from actors.messages import ClosePosition, CommandAccepted
from actors.settings import ProtectionSettings
from adapters.base import OrderRequest, Side
from adapters.emulators.base import DROP
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.bybit import BybitEmulator
from tests.support import kit
from tests.support.emulator import SETTINGS, EmulatorThread, emulator_config
from tests.support.kit import PRICES

BYBIT_QUERY, BYBIT_POSITIONS = "/v5/order/realtime", "/v5/position/list"
BINANCE_ORDER, BINANCE_POSITIONS = "/fapi/v1/order", "/fapi/v3/positionRisk"
CREATES = {"bybit": "/v5/order/create", "binanceusdm": BINANCE_ORDER}
STOPS = {"bybit": "/v5/position/trading-stop", "binanceusdm": "/fapi/v1/algoOrder"}


class Venue(kit.Deployment):
    """One deployment on one emulator, REST only (the replies under test are the only evidence)."""

    def __init__(self, asys: Any, emu: EmulatorThread, journal: str) -> None:
        self.emu = emu
        super().__init__(asys, tuple(PRICES), journal, emu.factory(streams=False), settings=SETTINGS,
                         protection=ProtectionSettings(scan_s=600.0, grace_s=0.0))   # scans only when asked
        # The start-up read of positions is over: the next read is the test's own.
        self.until(lambda: self.status().reconciliation, 15, "no start-up reconciliation")


@pytest.fixture
def venue_on(tcp_system, tmp_path) -> Iterator[Any]:
    with kit.Deployments(tcp_system) as made:
        def start(dialect: type, lag: float = 24.0) -> Venue:
            emu = made.venue(EmulatorThread(emulator_config(lag=lag), dialect))
            return made.add(Venue(tcp_system, emu, str(tmp_path / f"journal{len(made.made)}.sqlite")))

        yield start


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
    v.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    v.wait("BTCUSDT", "PROTECTED", within=20)
    (entry,) = v.emu.posts(CREATES[v.emu.venue])                           # sent once, never again
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
    v.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    v.wait("BTCUSDT", "PROTECTED", within=20)
    v.emu.mangle(path, key, value, times=2)
    assert isinstance(v.asys.ask(v.sup, ClosePosition("BTCUSDT"), 5), CommandAccepted)
    v.wait("BTCUSDT", "IDLE", within=20)
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
    assert v.emu.posts(STOPS[v.emu.venue]) == [] and v.snapshot("ETHUSDT").state == "IDLE"    # nothing acted on
    assert v.scan().failure is None                                  # a well-formed reply: adopted
    v.wait("ETHUSDT", "PROTECTED", within=20)
    assert v.emu.truth().open_positions()["ETHUSDT"].stop_price == pytest.approx(3_000.0 * 1.02)


def test_a_foreign_position_without_an_entry_price_is_protected_from_the_mark_price(venue_on):
    v = venue_on(BybitEmulator, lag=0.0)
    v.emu.on_loop(lambda: v.emu.emulator.engine.create_order(OrderRequest("ETHUSDT", Side.SELL, 0.5, "web-1"), True))
    v.emu.mangle(BYBIT_POSITIONS, "avgPrice")
    v.emu.mangle(BYBIT_POSITIONS, "markPrice", "3010")               # the mark a tick away from the entry
    assert v.scan().failure is None
    v.wait("ETHUSDT", "PROTECTED", within=20)
    assert v.emu.truth().open_positions()["ETHUSDT"].stop_price == pytest.approx(3_010.0 * 1.02)


def test_a_foreign_position_with_neither_entry_nor_mark_price_gets_no_stop_from_nothing(venue_on):
    v = venue_on(BybitEmulator, lag=0.0)
    v.emu.on_loop(lambda: v.emu.emulator.engine.create_order(OrderRequest("ETHUSDT", Side.SELL, 0.5, "web-1"), True))
    for key in ("avgPrice", "markPrice", "positionValue"):           # ccxt derives a mark from the value
        v.emu.mangle(BYBIT_POSITIONS, key, times=2)
    assert v.scan().failure is None and v.scan().failure is None       # read, judged, twice: an alert only
    assert v.emu.posts(STOPS["bybit"]) == [] and v.snapshot("ETHUSDT").state == "IDLE"
    assert v.scan().failure is None                                  # the prices are back: protected
    v.wait("ETHUSDT", "PROTECTED", within=20)
    assert v.emu.truth().open_positions()["ETHUSDT"].stop_price == pytest.approx(3_060.0)
