"""The simulated venue's semantics, on a manual clock (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import CloseKind, OrderRequest, OrderStatus, Side, VenueError, VenueTimeout
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import ZERO_POSITION, EngineConfig, SimEngine
from adapters.sim.faults import Fault, FaultKind
from tests.support.kit import ManualClock


def engine(lag: float = 24.0, volatility: float = 0.0, **kw) -> tuple[SimEngine, ManualClock]:
    clock = ManualClock(1000.0)
    cfg = EngineConfig(seed=3, prices={"BTCUSDT": 100.0, "ETHUSDT": 10.0}, position_lag_s=lag,
                       volatility=volatility, **kw)
    return SimEngine(cfg, clock), clock


def buy(qty: float = 1.0, cid: str = "e1", stop: float | None = None, reduce_only: bool = False,
        side: Side = Side.BUY, symbol: str = "BTCUSDT") -> OrderRequest:
    return OrderRequest(symbol=symbol, side=side, qty=qty, client_order_id=cid, stop_price=stop,
                        reduce_only=reduce_only)


def test_market_order_fills_at_current_price_and_is_queryable_by_client_id_at_once():
    eng, _ = engine()
    report = eng.create_order(buy(), attached_stops=True)
    assert report.status is OrderStatus.FILLED and report.filled_qty == 1.0 and report.avg_price == 100.0
    assert eng.fetch_order("e1") == report


def test_position_view_lags_the_engine_by_the_configured_delay():
    eng, clock = engine(lag=24.0)
    eng.create_order(buy(stop=90.0), attached_stops=True)
    assert eng.position_view() == []
    clock.advance(23.9)
    assert eng.position_view() == []
    clock.advance(0.2)
    (pos,) = eng.position_view()
    assert pos.qty == 1.0 and pos.side is Side.BUY and pos.stop_price == 90.0


def test_attached_stop_means_zero_naked_seconds():
    eng, clock = engine()
    eng.create_order(buy(stop=90.0), attached_stops=True)
    clock.advance(30)
    assert eng.true_state().max_naked_seconds() == 0.0


def test_naked_seconds_count_until_a_direct_stop_is_set_while_the_position_is_invisible():
    eng, clock = engine(lag=24.0)
    eng.create_order(buy(), attached_stops=False)
    clock.advance(2.5)
    assert eng.position_view() == []           # invisible to reads ...
    eng.set_stop("BTCUSDT", 95.0)              # ... yet the direct stop works
    clock.advance(10)
    assert eng.true_state().max_naked_seconds() == pytest.approx(2.5)


def test_attached_stop_refused_where_the_venue_lacks_the_capability():
    eng, _ = engine()
    with pytest.raises(VenueError) as err:
        eng.create_order(buy(stop=90.0), attached_stops=False)
    assert err.value.code == 10001
    assert eng.true_state().positions == ()


def test_direct_stop_on_zero_position_is_a_clear_error():
    eng, _ = engine()
    with pytest.raises(VenueError) as err:
        eng.set_stop("BTCUSDT", 90.0)
    assert err.value.code == 10001 and ZERO_POSITION in err.value.message


def test_same_stop_again_is_not_modified():
    eng, _ = engine()
    eng.create_order(buy(stop=90.0), attached_stops=True)
    with pytest.raises(VenueError) as err:
        eng.set_stop("BTCUSDT", 90.0)
    assert err.value.code == 34040


def test_stop_on_the_wrong_side_is_rejected():
    eng, _ = engine()
    with pytest.raises(VenueError) as err:
        eng.create_order(buy(stop=110.0), attached_stops=True)
    assert err.value.code == 10001
    eng.create_order(buy(cid="e2"), attached_stops=True)
    with pytest.raises(VenueError):
        eng.set_stop("BTCUSDT", 101.0)


def test_reduce_only_clips_to_the_position_and_fails_when_flat():
    eng, _ = engine()
    eng.create_order(buy(qty=1.0), attached_stops=True)
    close = eng.create_order(buy(qty=5.0, cid="c1", side=Side.SELL, reduce_only=True), attached_stops=True)
    assert close.filled_qty == 1.0
    assert eng.true_state().open_positions() == {}
    with pytest.raises(VenueError) as err:
        eng.create_order(buy(qty=1.0, cid="c2", side=Side.SELL, reduce_only=True), attached_stops=True)
    assert err.value.code == 110017


def test_reduce_only_in_the_same_direction_cannot_open_or_add():
    eng, _ = engine()
    with pytest.raises(VenueError) as err:
        eng.create_order(buy(reduce_only=True), attached_stops=True)
    assert err.value.code == 110017
    assert eng.true_state().positions == ()


def test_duplicate_client_order_id_is_an_error_and_executes_nothing():
    eng, _ = engine()
    eng.create_order(buy(), attached_stops=True)
    with pytest.raises(VenueError) as err:
        eng.create_order(buy(), attached_stops=True)
    assert err.value.code == 110072
    assert eng.true_state().open_positions()["BTCUSDT"].qty == 1.0


def test_unknown_order_id_is_not_found():
    eng, _ = engine()
    with pytest.raises(VenueError) as err:
        eng.fetch_order("nope")
    assert err.value.code == 110001


def test_stop_triggers_when_the_price_crosses_it():
    eng, clock = engine(volatility=0.01)
    eng.create_order(buy(stop=99.0), attached_stops=True)
    for _ in range(2000):
        clock.advance(0.05)
        eng.advance()
        if not eng.true_state().open_positions():
            break
    state = eng.true_state()
    assert state.open_positions() == {}
    (ep,) = state.positions
    assert ep.closed_at is not None
    trigger = [o for o in state.orders if o.client_order_id.startswith("stop-")]
    assert len(trigger) == 1 and trigger[0].avg_price <= 99.0


def test_prices_are_deterministic_from_the_seed():
    a, _ = engine(volatility=0.01)
    b, _ = engine(volatility=0.01)
    assert [a.price_at("BTCUSDT", t / 10) for t in range(100)] == \
           [b.price_at("BTCUSDT", t / 10) for t in range(100)]


def run(coro):
    return asyncio.run(coro)


def adapter(*faults: Fault, **kw) -> SimulatedAdapter:
    cfg = SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0}, volatility=0.0),
                         faults=faults, **kw)
    return SimulatedAdapter(cfg)


def test_ambiguous_timeout_executes_the_order_but_loses_the_reply():
    ad = adapter(Fault("create_order", FaultKind.TIMEOUT_AFTER))
    with pytest.raises(VenueTimeout):
        run(ad.create_order(buy()))
    assert run(ad.fetch_order("BTCUSDT", "e1")).status is OrderStatus.FILLED


def test_timeout_before_execution_leaves_nothing_on_the_venue():
    ad = adapter(Fault("create_order", FaultKind.TIMEOUT_BEFORE))
    with pytest.raises(VenueTimeout):
        run(ad.create_order(buy()))
    with pytest.raises(VenueError):
        run(ad.fetch_order("BTCUSDT", "e1"))


def test_one_shot_rejection_then_normal_service():
    ad = adapter(Fault("set_stop", FaultKind.ERROR, code=10001, message="risk limit"))
    run(ad.create_order(buy()))
    with pytest.raises(VenueError):
        run(ad.set_stop("BTCUSDT", 90.0))
    run(ad.set_stop("BTCUSDT", 90.0))
    assert run(ad.true_state()).open_positions()["BTCUSDT"].stop_price == 90.0


def test_venue_rate_limit_rejects_order_calls_over_the_limit():
    ad = adapter(orders_per_second=3)

    async def burst():
        out = []
        for i in range(5):
            try:
                await ad.create_order(buy(qty=0.1, cid=f"e{i}"))
                out.append("ok")
            except VenueError as e:
                out.append(e.code)
        return out

    assert run(burst()) == ["ok", "ok", "ok", 10006, 10006]


def test_ack_only_replies_carry_no_fill():
    ad = adapter(ack_only=True)
    ack = run(ad.create_order(buy()))
    assert ack.fill_known is False and ack.status is OrderStatus.NEW
    assert run(ad.fetch_order("BTCUSDT", "e1")).filled_qty == 1.0


def test_late_request_times_out_for_the_client_and_executes_when_it_arrives():
    clock = ManualClock(1000.0)
    ad = SimulatedAdapter(SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0}, volatility=0.0),
                                         faults=(Fault("create_order", FaultKind.LATE, delay_s=2.0),)), clock=clock)
    with pytest.raises(VenueTimeout):
        run(ad.create_order(buy()))
    with pytest.raises(VenueError):
        run(ad.fetch_order("BTCUSDT", "e1"))                 # not there yet
    clock.advance(2.5)
    report = run(ad.fetch_order("BTCUSDT", "e1"))
    assert report.status is OrderStatus.FILLED
    (episode,) = run(ad.true_state()).positions
    assert episode.opened_at == pytest.approx(2.0)           # when it arrived, not when we looked


def test_an_order_arriving_outside_the_recv_window_is_refused_not_executed():
    clock = ManualClock(1000.0)

    async def pass_time(seconds: float) -> None:
        clock.advance(seconds)

    ad = SimulatedAdapter(SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0}, volatility=0.0),
                                         recv_window_s=5.0,
                                         faults=(Fault("create_order", FaultKind.DELAY, delay_s=6.0),
                                                 Fault("create_order", FaultKind.LATE, delay_s=6.0))),
                          clock=clock, sleep=pass_time)
    with pytest.raises(VenueError) as err:
        run(ad.create_order(buy(cid="slow")))
    assert err.value.code == 10002
    with pytest.raises(VenueTimeout):
        run(ad.create_order(buy(cid="late")))
    clock.advance(10)
    assert run(ad.true_state()).positions == ()               # neither ever executed


def test_closures_tell_why_a_position_went_away():
    engine = SimEngine(EngineConfig(prices={"BTCUSDT": 100.0}, volatility=0.0), clock=lambda: 0.0)
    engine.create_order(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pge1", stop_price=90.0), True)
    engine.trigger_stop_now("BTCUSDT")
    engine.create_order(OrderRequest("BTCUSDT", Side.SELL, 2.0, "foreign-entry"), True)
    engine.liquidate("BTCUSDT")
    engine.create_order(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pge2"), True)
    engine.create_order(OrderRequest("BTCUSDT", Side.SELL, 0.25, "app-close", reduce_only=True), True)
    engine.create_order(OrderRequest("BTCUSDT", Side.SELL, 5.0, "pgc1", reduce_only=True), True)
    kinds = [(c.kind, c.side, c.qty) for c in engine.closures("BTCUSDT")]
    assert kinds == [(CloseKind.OURS, Side.SELL, 0.75), (CloseKind.MANUAL, Side.SELL, 0.25),
                     (CloseKind.LIQUIDATION, Side.BUY, 2.0), (CloseKind.STOP, Side.SELL, 1.0)]
    assert engine.true_state().open_positions() == {}
