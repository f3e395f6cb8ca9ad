"""The simulated venue in its own server: same semantics over loopback JSON, concurrent calls."""

from __future__ import annotations

import asyncio
import tempfile

import pytest

from adapters.base import OrderRequest, OrderStatus, Side, VenueError, VenueTimeout
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from adapters.sim.remote import RemoteSimAdapter
from adapters.sim.server import SimVenueServer
from adapters.sim.truth import TruthSource


def config(*faults: Fault) -> SimVenueConfig:
    return SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0, "ETHUSDT": 10.0}, volatility=0.0,
                                              position_lag_s=24.0), attached_stops=False, faults=faults)


async def with_venue(cfg: SimVenueConfig, body):
    with tempfile.TemporaryDirectory() as tmp:
        server = SimVenueServer(cfg, f"{tmp}/venue.sock")
        path = await server.start()
        try:
            return await _with_client(path, body)
        finally:
            await server.close()


async def _with_client(path: str, body):
    client = RemoteSimAdapter(path, timeout_s=0.5)
    await client.start()
    try:
        return await body(client)
    finally:
        await client.close()


def test_orders_stops_queries_and_truth_over_the_wire():
    async def body(venue: RemoteSimAdapter):
        assert venue.capabilities.attached_stop is False and isinstance(venue, TruthSource)
        report = await venue.create_order(OrderRequest("BTCUSDT", Side.BUY, 2.0, "pge1"))
        assert report.status is OrderStatus.FILLED and report.side is Side.BUY
        await venue.set_stop("BTCUSDT", 95.0)
        assert (await venue.fetch_order("BTCUSDT", "pge1")).filled_qty == 2.0
        assert await venue.fetch_positions() == []                 # the lag is served too
        with pytest.raises(VenueError) as err:
            await venue.create_order(OrderRequest("BTCUSDT", Side.BUY, 2.0, "pge1"))
        assert err.value.code == 110072
        truth = await venue.true_state()
        assert truth.open_positions()["BTCUSDT"].stop_price == 95.0
        assert truth.call_count("create_order") == 2

    asyncio.run(with_venue(config(), body))


def test_a_lost_reply_is_a_timeout_and_the_order_still_executed():
    async def body(venue: RemoteSimAdapter):
        with pytest.raises(VenueTimeout):
            await venue.create_order(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pge1"))
        assert (await venue.fetch_order("BTCUSDT", "pge1")).status is OrderStatus.FILLED

    asyncio.run(with_venue(config(Fault("create_order", FaultKind.TIMEOUT_AFTER)), body))


def test_calls_are_concurrent_a_slow_one_does_not_block_another():
    async def body(venue: RemoteSimAdapter):
        venue.timeout_s = 5.0
        slow = asyncio.create_task(venue.create_order(OrderRequest("BTCUSDT", Side.BUY, 1.0, "slow")))
        fast = await venue.create_order(OrderRequest("ETHUSDT", Side.BUY, 1.0, "fast"))
        assert fast.client_order_id == "fast" and not slow.done()
        slow.cancel()

    asyncio.run(with_venue(config(Fault("create_order", FaultKind.DELAY, symbol="BTCUSDT", delay_s=3.0)), body))
