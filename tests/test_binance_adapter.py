"""The Binance USDⓈ-M adapter through real ccxt, over HTTP, against the project's fapi
emulator: entry then a closePosition STOP_MARKET on the algo-order endpoint, stops the scan
can see, and Binance's error codes each produced on the wire and classified."""

from __future__ import annotations

import dataclasses

import pytest

from actors.exchange.core import ExchangeCore
from actors.messages import FetchPositions, PositionsFetched
from adapters.base import OrderRequest, OrderStatus, Side, VenueError
from adapters.binance.adapter import BinanceAdapter, stop_client_id
from adapters.emulators.base import EmulatorConfig
from adapters.emulators.binance import BinanceEmulator
from adapters.errors import Outcome, classify_error
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from tests.support.emulator import EmulatorThread, failure, run_adapter

PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}


def venue(lag: float = 0.0) -> EmulatorConfig:
    return EmulatorConfig(venue=SimVenueConfig(
        engine=EngineConfig(seed=3, prices=PRICES, position_lag_s=lag, volatility=0.0), orders_per_second=1000))


@pytest.fixture
def emu():
    with EmulatorThread(venue(), BinanceEmulator) as e:
        yield e


def run(emu: EmulatorThread, scenario, **settings):
    return run_adapter(emu, BinanceAdapter, scenario, **settings)


def entry(cid: str = "pg-e", symbol: str = "BTCUSDT", side: Side = Side.BUY, qty: float = 0.01,
          reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(symbol, side, qty, cid, reduce_only=reduce_only)


def test_entry_then_a_close_all_stop_on_the_algo_endpoint(emu):
    async def scenario(ad: BinanceAdapter):
        report = await ad.create_order(entry("pg-entry-1"))
        held = await ad.set_stop("BTCUSDT", 58_800.04, Side.BUY)
        return report, held, await ad.fetch_order("BTCUSDT", "pg-entry-1"), ad.capabilities
    report, held, queried, capabilities = run(emu, scenario)
    assert capabilities.attached_stop is False and capabilities.stop_orders   # entry, then the stop
    assert report.status is OrderStatus.FILLED and report.fill_known and report.filled_qty == 0.01
    assert queried.client_order_id == "pg-entry-1" and queried.status is OrderStatus.FILLED
    order = emu.requests("/fapi/v1/order")[0]
    assert (order["type"], order["side"], order["newClientOrderId"]) == ("MARKET", "BUY", "pg-entry-1")
    (algo,) = emu.requests("/fapi/v1/algoOrder")
    assert (algo["algoType"], algo["type"], algo["side"], algo["closePosition"], algo["triggerPrice"]) == \
        ("CONDITIONAL", "STOP_MARKET", "SELL", "true", "58800")
    assert algo["clientAlgoId"] == stop_client_id("BTCUSDT", Side.BUY, "58800") and "quantity" not in algo
    assert held == 58_800.0 and emu.truth().open_positions()["BTCUSDT"].stop_price == 58_800.0


def test_a_resent_stop_is_a_duplicate_not_a_second_order_and_a_moved_stop_replaces_the_old(emu):
    async def scenario(ad: BinanceAdapter):
        await ad.create_order(entry("pg-entry-2", side=Side.SELL))
        await ad.set_stop("BTCUSDT", 61_000.0, Side.SELL)
        await ad.set_stop("BTCUSDT", 61_000.0, Side.SELL)        # after an unknown outcome, say
        once = await ad.fetch_stop_orders()
        await ad.set_stop("BTCUSDT", 60_500.0, Side.SELL)
        return once, await ad.fetch_stop_orders()
    once, moved = run(emu, scenario)
    assert [(s.side, s.stop_price, s.qty, s.reduce_only) for s in once] == [(Side.BUY, 61_000.0, None, True)]
    assert [s.stop_price for s in moved] == [60_500.0]
    # The new stop stood before the old one was cancelled: never naked while moving it.
    calls = [(m, p.get("triggerPrice")) for m, path, p in emu.requests_log() if path == "/fapi/v1/algoOrder"]
    assert calls[-2:] == [("POST", "60500"), ("DELETE", None)]
    assert emu.truth().open_positions()["BTCUSDT"].stop_price == 60_500.0


def test_the_scan_sees_the_stop_order_as_the_positions_stop():
    with EmulatorThread(venue(), BinanceEmulator) as emu:
        async def scenario(ad: BinanceAdapter):
            await ad.create_order(entry("pg-entry-3"))
            await ad.create_order(entry("pg-entry-4", symbol="ETHUSDT", qty=0.5))
            await ad.set_stop("BTCUSDT", 58_000.0, Side.BUY)
            reply = await ExchangeCore(ad).handle(FetchPositions())
            return reply
        reply = run(emu, scenario)
    assert isinstance(reply, PositionsFetched) and reply.failure is None
    stops = {p.symbol: p.stop_price for p in reply.positions}
    assert stops == {"BTCUSDT": 58_000.0, "ETHUSDT": None}      # ETH: naked, the scan will protect it


TABLE = [
    ("would trigger immediately", None, lambda ad: ad.set_stop("BTCUSDT", 61_000.0, Side.BUY), -2021,
     Outcome.REJECTED),
    ("reduce-only rejected", None, lambda ad: ad.create_order(entry("pg-r", symbol="ETHUSDT", side=Side.SELL,
                                                                     reduce_only=True)), -2022, Outcome.NO_POSITION),
    ("duplicate client id", None, lambda ad: ad.create_order(entry("pg-base")), -4116, Outcome.ALREADY_PLACED),
    ("backend timeout", Fault("create_order", FaultKind.ERROR, code=10016), lambda ad: ad.create_order(entry("pg-t")),
     -1007, Outcome.UNKNOWN),
    ("service unavailable", Fault("create_order", FaultKind.ERROR, code=503),
     lambda ad: ad.create_order(entry("pg-u")), 503, Outcome.UNKNOWN),
    ("price band", Fault("create_order", FaultKind.ERROR, code=-4131, message="PERCENT_PRICE filter limit"),
     lambda ad: ad.create_order(entry("pg-b")), -4131, Outcome.REJECTED),
    # The venue's minimum rose after our markets loaded: our own check passes, the venue's refuses.
    ("min notional at the venue", lambda emu: emu.on_loop(lambda: emu.emulator.instruments.update(
        ETHUSDT=dataclasses.replace(emu.emulator.instruments["ETHUSDT"], min_notional=100.0))),
     lambda ad: ad.create_order(entry("pg-n", symbol="ETHUSDT", qty=0.01)), -4164, Outcome.REJECTED),
    ("order does not exist", None, lambda ad: ad.fetch_order("BTCUSDT", "pg-never"), -2013,
     Outcome.ORDER_NOT_FOUND),
]


@pytest.mark.parametrize(("name", "fault", "call", "code", "outcome"), TABLE, ids=[r[0] for r in TABLE])
def test_each_binance_code_arrives_with_its_code_and_classifies(emu, name, fault, call, code, outcome):
    async def scenario(ad: BinanceAdapter):
        await ad.create_order(entry("pg-base"))                  # a long BTCUSDT position to act on
        if isinstance(fault, Fault):
            emu.add_fault(fault)
        elif fault is not None:
            fault(emu)
        return await failure(call(ad))
    exc = run(emu, scenario)
    assert isinstance(exc, VenueError) and exc.code == code, exc
    assert classify_error(exc, "binance") is outcome


def test_a_lost_reply_is_an_unknown_outcome_resolved_by_client_id(emu):
    emu.add_fault(Fault("create_order", FaultKind.TIMEOUT_AFTER))

    async def scenario(ad: BinanceAdapter):
        exc = await failure(ad.create_order(entry("pg-lost")))
        return exc, await ad.fetch_order("BTCUSDT", "pg-lost")
    exc, found = run(emu, scenario)
    assert classify_error(exc, "binance") is Outcome.UNKNOWN
    assert found.status is OrderStatus.FILLED and len(emu.truth().orders) == 1


def test_bad_signature_is_auth_and_shows_no_key(emu, monkeypatch):
    monkeypatch.setenv(emu.settings().secret_env, "wrong-binance-secret")
    exc = run(emu, lambda ad: failure(ad.create_order(entry("pg-auth"))))
    assert (exc.code, classify_error(exc, "binance")) == (-1022, Outcome.AUTH)
    assert "wrong-binance-secret" not in str(exc) and emu.truth().orders == ()


def test_order_history_tells_a_stop_and_a_liquidation_apart(emu):
    async def scenario(ad: BinanceAdapter):
        engine = emu.emulator.engine
        await ad.create_order(entry("pg-h1"))
        await ad.set_stop("BTCUSDT", 58_000.0, Side.BUY)
        emu.on_loop(lambda: engine.trigger_stop_now("BTCUSDT"))
        await ad.create_order(entry("pg-h2"))
        emu.on_loop(lambda: engine.liquidate("BTCUSDT"))
        return await ad.fetch_closures("BTCUSDT")
    closures = run(emu, scenario)
    assert [c.kind.name for c in closures] == ["LIQUIDATION", "STOP"]


def test_moving_our_stop_never_cancels_a_stop_someone_else_placed(emu):
    async def scenario(ad: BinanceAdapter):
        await ad.create_order(entry("pg-entry-9"))
        await ad.ex.create_order("BTC/USDT:USDT", "STOP_MARKET", "sell", None, None,   # placed by hand
                                 {"triggerPrice": "57000", "closePosition": True, "clientOrderId": "web-sl-1"})
        await ad.set_stop("BTCUSDT", 58_000.0, Side.BUY)
        await ad.set_stop("BTCUSDT", 58_500.0, Side.BUY)
        return await ad.fetch_stop_orders("BTCUSDT")
    stops = run(emu, scenario)
    assert sorted((s.client_order_id.startswith("pg"), s.stop_price) for s in stops) == [(False, 57_000.0),
                                                                                     (True, 58_500.0)]
