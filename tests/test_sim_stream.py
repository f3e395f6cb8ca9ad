"""The simulated venue's private stream, in process and over its own socket: live changes while the
REST view lags, and the ways a stream fails (drop, stall, auth refusal), never a hang."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.base import OrderRequest, Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.remote import RemoteSimAdapter
from adapters.sim.server import SimVenueServer
from adapters.sim.stream import STALL_S
from adapters.streams import StreamAuthFailed, StreamDown, StreamFill, StreamOrder, StreamPosition

CONFIG = SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0}, volatility=0.0, position_lag_s=24.0),
                        latency_s=0.01, streams=True)


async def until(stream: Any, wanted: Callable[[Any], bool], within: float = 5.0) -> Any:
    """Items from the stream until one is wanted (bounded)."""
    async def read() -> Any:
        while True:
            for item in await stream.next():
                if wanted(item):
                    return item
    return await asyncio.wait_for(read(), within)


async def collect(stream: Any, kinds: set[type], within: float = 5.0) -> dict[type, Any]:
    """The first item of each kind, reading until every kind was seen (bounded)."""
    seen: dict[type, Any] = {}

    async def read() -> None:
        while not kinds <= set(seen):
            for item in await stream.next():
                seen.setdefault(type(item), item)
    await asyncio.wait_for(read(), within)
    return seen


async def in_process(body: Callable[[Any, Any, Callable[..., Awaitable[None]]], Awaitable[None]]) -> None:
    venue = SimulatedAdapter(CONFIG)

    async def fault(kind: str, value: Any = None) -> None:
        venue.stream_control.apply(kind, value)
    await body(venue, venue.stream, fault)


async def remote(body: Callable[[Any, Any, Callable[..., Awaitable[None]]], Awaitable[None]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = SimVenueServer(CONFIG, f"{tmp}/venue.sock")
        await server.start()
        venue = RemoteSimAdapter(f"{tmp}/venue.sock", timeout_s=2.0)
        await venue.start()
        try:
            await body(venue, venue.stream, venue.stream_fault)
        finally:
            await venue.close()
            await server.close()


WHERE = pytest.mark.parametrize("where", [in_process, remote], ids=["in-process", "own-process"])


@WHERE
def test_orders_fills_positions_and_stop_triggers_arrive_while_rest_still_lags(where):
    async def body(venue: Any, stream: Callable[[], Any], fault: Any) -> None:
        s = stream()
        await s.open()
        try:
            await venue.create_order(OrderRequest("BTCUSDT", Side.BUY, 2.0, "pge1", stop_price=95.0))
            seen = await collect(s, {StreamOrder, StreamFill, StreamPosition})
            order, fill, position = seen[StreamOrder], seen[StreamFill], seen[StreamPosition]
            assert order.report.client_order_id == "pge1" and order.report.filled_qty == 2.0
            assert order.report.stop_price == 95.0 and order.closed_by == ""
            assert fill.client_order_id == "pge1" and fill.qty == 2.0
            assert position.position is not None and position.position.qty == 2.0
            assert await venue.fetch_positions() == []           # the REST view still lags 24 s
            if isinstance(venue, SimulatedAdapter):
                venue.engine.trigger_stop_now("BTCUSDT")
                seen = await collect(s, {StreamOrder, StreamPosition})
                assert seen[StreamOrder].closed_by == "stop" and seen[StreamOrder].report.reduce_only
                assert seen[StreamPosition].position is None
        finally:
            await s.close()
    asyncio.run(where(body))


@WHERE
def test_a_drop_ends_the_stream_and_a_new_one_works(where):
    async def body(venue: Any, stream: Callable[[], Any], fault: Any) -> None:
        s = stream()
        await s.open()
        await fault("drop")
        with pytest.raises(StreamDown):
            await asyncio.wait_for(until(s, lambda i: False), 5)
        await s.close()
        again = stream()
        await again.open()
        await venue.create_order(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pge2", stop_price=95.0))
        assert (await until(again, lambda i: isinstance(i, StreamOrder))).report.client_order_id == "pge2"
        await again.close()
    asyncio.run(where(body))


@WHERE
def test_a_stall_is_a_drop_within_the_bound(where):
    async def body(venue: Any, stream: Callable[[], Any], fault: Any) -> None:
        s = stream()
        await s.open()
        await fault("stall")
        with pytest.raises(StreamDown, match="stalled"):        # the stall bound, not the wait's, ends it
            await asyncio.wait_for(until(s, lambda i: False), STALL_S * 20)
        await s.close()
        await fault("resume")
    asyncio.run(where(body))


@WHERE
def test_an_auth_refusal_is_said_and_the_next_open_authenticates_afresh(where):
    async def body(venue: Any, stream: Callable[[], Any], fault: Any) -> None:
        await fault("reject_auth", True)
        s = stream()
        with pytest.raises(StreamAuthFailed):
            await asyncio.wait_for(s.open(), 5)
        await s.close()
        await fault("reject_auth", False)
        again = stream()
        await asyncio.wait_for(again.open(), 5)
        await again.close()
    asyncio.run(where(body))
