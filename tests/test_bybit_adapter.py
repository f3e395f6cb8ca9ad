"""The Bybit adapter through real ccxt, over HTTP, against the project's Bybit-v5 emulator:
the calls our safety relies on, every row of the retCode table, precision and minimums,
clock offset, signatures, and keys that never leak."""

from __future__ import annotations

import dataclasses
import os

import pytest

from adapters.base import OrderRequest, OrderStatus, Side, VenueError, VenueTimeout
from adapters.bybit.adapter import BybitAdapter
from adapters.ccxt.settings import CcxtVenueSettings, MissingKey
from adapters.emulators.base import EmulatorConfig
from adapters.errors import Outcome, classify_error
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from tests.support.emulator import EmulatorThread, failure, run_adapter
from tests.support.kit import KEY, SECRET

PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}


def venue(lag: float = 24.0, **kw) -> EmulatorConfig:
    return EmulatorConfig(venue=SimVenueConfig(
        engine=EngineConfig(seed=3, prices=PRICES, position_lag_s=lag, volatility=0.0), orders_per_second=1000),
        **kw)


@pytest.fixture
def emu():
    with EmulatorThread(venue()) as e:
        yield e


def run(emu: EmulatorThread, scenario, **settings):
    return run_adapter(emu, BybitAdapter, scenario, **settings)


def test_entry_carries_its_stop_and_is_learnt_by_client_id(emu):
    async def scenario(ad: BybitAdapter):
        ack = await ad.create_order(OrderRequest("BTCUSDT", Side.BUY, 0.01, "pg-entry-1", stop_price=58_800.0))
        return ack, await ad.fetch_order("BTCUSDT", "pg-entry-1")
    ack, report = run(emu, scenario)
    (sent,) = emu.requests("/v5/order/create")
    assert sent["orderLinkId"] == "pg-entry-1" and sent["orderType"] == "Market" and sent["side"] == "Buy"
    assert (sent["stopLoss"], sent["slTriggerBy"], sent["tpslMode"], sent["positionIdx"]) == \
        ("58800", "LastPrice", "Full", 0)
    assert ack.fill_known is False and ack.status is OrderStatus.NEW          # v5 acknowledges ids only
    assert report.status is OrderStatus.FILLED and report.filled_qty == 0.01 and report.stop_price == 58_800.0
    (query,) = emu.requests("/v5/order/realtime")
    assert query["orderLinkId"] == "pg-entry-1"
    truth = emu.truth()
    assert truth.max_naked_seconds() == 0.0 and truth.open_positions()["BTCUSDT"].stop_price == 58_800.0


def test_direct_stop_works_while_the_position_is_invisible_to_reads(emu):
    async def scenario(ad: BybitAdapter):
        await ad.create_order(OrderRequest("BTCUSDT", Side.SELL, 0.02, "pg-entry-2"))
        seen = await ad.fetch_positions()
        held = await ad.set_stop("BTCUSDT", 61_234.56)
        return seen, held
    seen, held = run(emu, scenario)
    assert seen == []                                          # the 24 s REST lag
    assert held == 61_234.6                                    # rounded to the 0.1 tick
    (sent,) = emu.requests("/v5/position/trading-stop")
    assert (sent["category"], sent["symbol"], sent["stopLoss"], sent["positionIdx"], sent["tpslMode"]) == \
        ("linear", "BTCUSDT", "61234.6", 0, "Full")
    assert emu.truth().open_positions()["BTCUSDT"].stop_price == 61_234.6


def test_reduce_only_close_clips_to_the_position_and_the_fill_is_learnt_by_id(emu):
    async def scenario(ad: BybitAdapter):
        await ad.create_order(OrderRequest("ETHUSDT", Side.BUY, 0.5, "pg-entry-3", stop_price=2_900.0))
        await ad.create_order(OrderRequest("ETHUSDT", Side.SELL, 0.8, "pg-close-3", reduce_only=True))
        return await ad.fetch_order("ETHUSDT", "pg-close-3")
    report = run(emu, scenario)
    assert report.status is OrderStatus.FILLED and report.filled_qty == 0.5 and report.reduce_only
    assert emu.truth().open_positions() == {}
    assert emu.requests("/v5/order/create")[1]["reduceOnly"] is True


def test_positions_and_stop_orders_for_the_scan():
    with EmulatorThread(venue(lag=0.0)) as emu:
        async def scenario(ad: BybitAdapter):
            await ad.create_order(OrderRequest("BTCUSDT", Side.BUY, 0.01, "pg-entry-4", stop_price=58_000.0))
            return await ad.fetch_positions(), await ad.fetch_stop_orders()
        positions, stop_orders = run(emu, scenario)
    (p,) = positions
    assert (p.symbol, p.side, p.qty, p.stop_price) == ("BTCUSDT", Side.BUY, 0.01, 58_000.0)
    assert stop_orders == []
    assert emu.requests("/v5/order/realtime")[-1]["orderFilter"] == "StopOrder"


# -- the retCode table, each row produced by the emulator and classified from ccxt's exception ---------


def _entry(cid: str = "pg-x", **kw) -> OrderRequest:
    return OrderRequest(**{"symbol": "BTCUSDT", "side": Side.BUY, "qty": 0.01, "client_order_id": cid, **kw})


TABLE = [
    # (name, fault on the venue or None, the call, expected code, expected outcome)
    ("zero position", None, lambda ad: ad.set_stop("BTCUSDT", 50_000.0), 10001, Outcome.NO_POSITION),
    ("stop on the wrong side", None,
     lambda ad: ad.create_order(_entry(stop_price=65_000.0)), 10001, Outcome.REJECTED),
    ("rate limit", Fault("create_order", FaultKind.ERROR, code=10006, message="Too many visits!"),
     lambda ad: ad.create_order(_entry()), 10006, Outcome.RETRY_LATER),
    ("server timeout", Fault("create_order", FaultKind.ERROR, code=10016, message="Server Timeout"),
     lambda ad: ad.create_order(_entry()), 10016, Outcome.UNKNOWN),
    ("server error", Fault("create_order", FaultKind.ERROR, code=10000, message="Server error"),
     lambda ad: ad.create_order(_entry()), 10000, Outcome.UNKNOWN),
    ("order not found", None, lambda ad: ad.fetch_order("BTCUSDT", "pg-never-sent"), 110001,
     Outcome.ORDER_NOT_FOUND),
    ("nothing to reduce", None,
     lambda ad: ad.create_order(_entry(side=Side.SELL, reduce_only=True)), 110017, Outcome.NO_POSITION),
    ("leverage not modified", Fault("set_stop", FaultKind.ERROR, code=110043, message="Set leverage not modified"),
     lambda ad: ad.set_stop("BTCUSDT", 50_000.0), 110043, Outcome.NOT_MODIFIED),
]


@pytest.mark.parametrize(("name", "fault", "call", "code", "outcome"), TABLE, ids=[row[0] for row in TABLE])
def test_each_retcode_arrives_with_its_code_and_classifies(emu, name, fault, call, code, outcome):
    if fault is not None:
        emu.add_fault(fault)

    async def scenario(ad: BybitAdapter):
        return await failure(call(ad))
    exc = run(emu, scenario)
    assert isinstance(exc, VenueError) and exc.code == code, exc
    assert classify_error(exc, "bybit") is outcome


def test_duplicate_order_link_id_means_already_placed_and_same_stop_means_not_modified(emu):
    async def scenario(ad: BybitAdapter):
        await ad.create_order(_entry("pg-dup", stop_price=58_000.0))
        dup = await failure(ad.create_order(_entry("pg-dup", stop_price=58_000.0)))
        same = await failure(ad.set_stop("BTCUSDT", 58_000.0))
        return dup, same
    dup, same = run(emu, scenario)
    assert (dup.code, classify_error(dup)) == (110072, Outcome.ALREADY_PLACED)
    assert (same.code, classify_error(same)) == (34040, Outcome.NOT_MODIFIED)
    assert len([o for o in emu.truth().orders if o.client_order_id == "pg-dup"]) == 1


@pytest.mark.parametrize("kind", [FaultKind.TIMEOUT_AFTER, FaultKind.TIMEOUT_BEFORE])
def test_a_gateway_timeout_is_an_unknown_outcome_resolved_by_the_client_id(emu, kind):
    emu.add_fault(Fault("create_order", kind))

    async def scenario(ad: BybitAdapter):
        exc = await failure(ad.create_order(_entry("pg-ambiguous", stop_price=58_000.0)))
        found = await failure(ad.fetch_order("BTCUSDT", "pg-ambiguous")) if kind is FaultKind.TIMEOUT_BEFORE \
            else await ad.fetch_order("BTCUSDT", "pg-ambiguous")
        return exc, found
    exc, found = run(emu, scenario)
    assert isinstance(exc, VenueTimeout) and classify_error(exc) is Outcome.UNKNOWN
    if kind is FaultKind.TIMEOUT_AFTER:                   # it executed: the query finds it, filled
        assert found.status is OrderStatus.FILLED and found.stop_price == 58_000.0
    else:                                                 # it never reached the engine
        assert classify_error(found) is Outcome.ORDER_NOT_FOUND


def test_a_client_side_timeout_is_an_unknown_outcome():
    with EmulatorThread(venue(hang_s=3.0)) as emu:
        emu.add_fault(Fault("create_order", FaultKind.TIMEOUT_AFTER))

        async def scenario(ad: BybitAdapter):
            return await failure(ad.create_order(_entry("pg-hung")))
        exc = run(emu, scenario, timeout_s=0.5)
    assert isinstance(exc, VenueTimeout) and classify_error(exc) is Outcome.UNKNOWN
    assert [o.client_order_id for o in emu.truth().orders] == ["pg-hung"]      # it did execute


# -- authentication, clock, keys ----------------------------------------------------------------------


def test_bad_key_and_bad_signature_are_auth_errors_that_never_show_the_keys(emu, monkeypatch):
    settings = emu.settings()
    monkeypatch.setenv(settings.key_env, "not-a-known-key")
    exc = run(emu, lambda ad: failure(ad.create_order(_entry())))
    assert (exc.code, classify_error(exc)) == (10003, Outcome.AUTH)
    monkeypatch.setenv(settings.key_env, KEY)
    monkeypatch.setenv(settings.secret_env, "a-wrong-secret-0000")
    exc = run(emu, lambda ad: failure(ad.create_order(_entry())))
    assert (exc.code, classify_error(exc)) == (10004, Outcome.AUTH)
    # Bybit echoes the signed string (which holds the key) in "error sign!": scrubbed.
    assert KEY not in str(exc) and "a-wrong-secret-0000" not in str(exc) and "***" in str(exc)
    assert emu.truth().orders == ()


def test_a_venue_clock_ahead_of_ours_is_learnt_at_start_and_after_it_jumps():
    with EmulatorThread(venue(clock_offset_s=30.0)) as emu:     # 30 s: far outside the 5 s recv window
        async def scenario(ad: BybitAdapter):
            await ad.create_order(_entry("pg-clock-1", stop_price=58_000.0))      # offset learnt at start
            emu.emulator.config = dataclasses.replace(emu.emulator.config, clock_offset_s=-40.0)
            refused = await failure(ad.create_order(_entry("pg-clock-2", stop_price=58_000.0)))
            await ad.fetch_order("BTCUSDT", "pg-clock-1")                          # re-learnt after the refusal
            return refused
        refused = run(emu, scenario)
    assert (refused.code, classify_error(refused)) == (10002, Outcome.AUTH)
    assert [o.client_order_id for o in emu.truth().orders] == ["pg-clock-1"]   # the refused one never executed


def test_missing_key_names_the_variable_not_a_value(monkeypatch):
    settings = CcxtVenueSettings("bybit", key_env="PG_TEST_NO_SUCH_KEY", secret_env="PG_TEST_SECRET")
    monkeypatch.delenv("PG_TEST_NO_SUCH_KEY", raising=False)
    monkeypatch.setenv("PG_TEST_SECRET", "s3cr3t-value")
    with pytest.raises(MissingKey, match="PG_TEST_NO_SUCH_KEY is not set") as info:
        settings.credentials()
    assert "s3cr3t-value" not in str(info.value)
    assert "s3cr3t-value" not in repr(settings) and KEY not in repr(settings) and SECRET not in repr(settings)
    assert os.environ.get("PG_TEST_SECRET") == "s3cr3t-value"


# -- precision and minimums: denied here, never sent --------------------------------------------------


def test_quantities_and_prices_are_rounded_to_the_market(emu):
    async def scenario(ad: BybitAdapter):
        return await ad.create_order(_entry("pg-round", qty=0.01234, stop_price=58_000.04))
    ack = run(emu, scenario)
    (sent,) = emu.requests("/v5/order/create")
    assert (sent["qty"], sent["stopLoss"]) == ("0.012", "58000")        # qty truncated to the step, stop to tick
    assert ack.qty == 0.012


@pytest.mark.parametrize(("qty", "code"), [(0.0004, "min_qty"), (0.003, "min_qty")])
def test_below_minimums_is_denied_locally_with_a_clear_error(qty, code):
    with EmulatorThread(venue()) as emu:
        emu.emulator.instruments["BTCUSDT"] = dataclasses.replace(emu.emulator.instruments["BTCUSDT"], min_qty=0.005)

        async def scenario(ad: BybitAdapter):
            return await failure(ad.create_order(_entry(qty=qty)))
        exc = run(emu, scenario)
    assert exc.code == code and "not sent" in exc.message and classify_error(exc) is Outcome.REJECTED
    assert emu.requests("/v5/order/create") == []


def test_below_min_notional_is_denied_locally_using_the_last_price(emu):
    emu.emulator.instruments["BTCUSDT"] = dataclasses.replace(emu.emulator.instruments["BTCUSDT"], min_notional=1000)

    async def scenario(ad: BybitAdapter):
        await ad.fetch_price("BTCUSDT")
        await ad.start()                                        # markets reloaded with the new minimum
        return await failure(ad.create_order(_entry(qty=0.01)))
    exc = run(emu, scenario)
    assert exc.code == "min_notional" and "below the minimum 1000" in exc.message
    assert classify_error(exc) is Outcome.REJECTED and emu.requests("/v5/order/create") == []


def test_order_history_tells_a_stop_a_liquidation_ours_and_by_hand_apart(emu):
    async def scenario(ad: BybitAdapter):
        engine = emu.emulator.engine
        await ad.create_order(_entry("pg-h1", stop_price=58_000.0))
        emu.on_loop(lambda: engine.trigger_stop_now("BTCUSDT"))
        await ad.create_order(_entry("pg-h2", stop_price=58_000.0))
        emu.on_loop(lambda: engine.liquidate("BTCUSDT"))
        await ad.create_order(_entry("pg-h3", stop_price=58_000.0))
        await ad.create_order(_entry("web-close", side=Side.SELL, qty=0.004, reduce_only=True))
        await ad.create_order(_entry("pg-close", side=Side.SELL, reduce_only=True))
        return await ad.fetch_closures("BTCUSDT")
    closures = run(emu, scenario)
    assert [(c.kind.name, c.qty) for c in closures] == [("OURS", 0.006), ("MANUAL", 0.004), ("LIQUIDATION", 0.01),
                                                         ("STOP", 0.01)]
    assert "stop loss triggered (sell 0.01" in closures[-1].describe()


def test_an_order_older_than_the_realtime_window_is_found_in_the_history():
    # Bybit's realtime query sees the account's latest 500 orders; after a long downtime the
    # entry a restart asks about may be older. Depth 1 here: the first order drops out at once.
    with EmulatorThread(dataclasses.replace(venue(), realtime_depth=1)) as emu:
        async def scenario(ad: BybitAdapter):
            await ad.create_order(_entry("pg-old", stop_price=58_000.0))
            await ad.create_order(_entry("pg-new", stop_price=58_000.0))
            old = await ad.fetch_order("BTCUSDT", "pg-old")
            return old, await failure(ad.fetch_order("BTCUSDT", "pg-never"))
        old, missing = run(emu, scenario)
    assert old.client_order_id == "pg-old" and old.status is OrderStatus.FILLED and old.filled_qty == 0.01
    assert classify_error(missing) is Outcome.ORDER_NOT_FOUND
    assert emu.requests("/v5/order/history")[0]["orderLinkId"] == "pg-old"
