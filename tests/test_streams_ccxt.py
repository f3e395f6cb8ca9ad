"""The venues' private streams through real ccxt.pro, over real sockets, against the emulators'
stream endpoints (same port as their REST): what arrives, normalised, for our orders, orders
placed by hand, stop triggers and liquidations, Binance's conditional orders -- while REST
position reads still lag -- and how each failure (drop, stall, refused auth, an expired listen
key) ends `next()` instead of hanging it, after which a new `open()` works.

Nothing here sleeps to synchronise: a test waits for the stream item it expects (bounded), and
every scenario runs in a fresh event loop that must end with no task left and no loop error."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from adapters.base import OrderRequest, OrderStatus, PositionReport, Side
from adapters.binance.adapter import BinanceAdapter
from adapters.binance.stream import BinanceStream
from adapters.bybit.adapter import BybitAdapter
from adapters.bybit.stream import BybitStream
from adapters.ccxt.adapter import CcxtAdapter
from adapters.ccxt.settings import CcxtVenueSettings
from adapters.ccxt.stream import CcxtStream, stream_base
from adapters.emulators.base import EmulatorConfig
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.binance_ws import ALGO_ID_BASE
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.streams import (
    StreamAuthFailed,
    StreamDown,
    StreamFill,
    StreamItem,
    StreamOrder,
    StreamPosition,
    StreamStopOrder,
)
from tests.support.emulator import EmulatorThread
from tests.support.kit import KEY, SECRET, SECRET_ENV

PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}
STREAMS: dict[str, type[CcxtStream]] = {"bybit": BybitStream, "binanceusdm": BinanceStream}
ADAPTERS: dict[str, type[CcxtAdapter]] = {"bybit": BybitAdapter, "binanceusdm": BinanceAdapter}
DIALECTS = {"bybit": None, "binanceusdm": BinanceEmulator}
WAIT_S = 5.0                          # the most any single expected item may take (they take ms)


def venue(latency_s: float = 0.0, **kw: Any) -> EmulatorConfig:
    return EmulatorConfig(venue=SimVenueConfig(
        engine=EngineConfig(seed=3, prices=PRICES, position_lag_s=24.0, volatility=0.0), orders_per_second=1000,
        latency_s=latency_s), **kw)


def emulator(name: str, config: EmulatorConfig | None = None) -> EmulatorThread:
    dialect = DIALECTS[name]
    return EmulatorThread(config or venue(), dialect) if dialect else EmulatorThread(config or venue())


@pytest.fixture(params=["bybit", "binanceusdm"])
def emu(request):
    with emulator(request.param) as e:
        yield e


Scenario = Callable[[CcxtStream, CcxtAdapter], Awaitable[Any]]


def run(emu: EmulatorThread, scenario: Scenario, keep_alive_s: float = 1.0, stream_kw: dict[str, Any] | None = None,
        **settings: Any) -> Any:
    """`scenario(stream, rest_adapter)` in a fresh event loop; both are always closed, and the
    loop must end with no task of theirs left and no error reported to it."""
    async def main() -> Any:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        parser = ADAPTERS[emu.venue](emu.settings(**settings))
        stream = STREAMS[emu.venue](emu.settings(**settings), parser, keep_alive_s=keep_alive_s, **(stream_kw or {}))
        adapter = ADAPTERS[emu.venue](emu.settings(**settings))
        await adapter.start()
        try:
            return await scenario(stream, adapter)
        finally:
            await stream.close()
            await adapter.close()
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert not left, f"tasks left behind: {left}"
            assert not errors, f"errors reported to the loop: {errors}"
    return asyncio.run(main())


async def read_until(stream: CcxtStream, *wanted: Callable[[StreamItem], bool],
                     timeout: float = WAIT_S) -> list[StreamItem]:
    """Items from the stream until every predicate matched one of them (bounded)."""
    seen: list[StreamItem] = []
    try:
        async with asyncio.timeout(timeout):
            while not all(any(w(i) for i in seen) for w in wanted):
                seen += await stream.next()
    except TimeoutError:
        raise AssertionError(f"not all expected items arrived within {timeout} s; seen: {seen}") from None
    return seen


async def failure_of(stream: CcxtStream, timeout: float = WAIT_S) -> tuple[StreamDown, float, list[StreamItem]]:
    """Read until the stream fails: (the failure, how long it took, the items before it)."""
    seen: list[StreamItem] = []
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen += await stream.next()
    except StreamDown as exc:
        return exc, time.monotonic() - t0, seen
    except TimeoutError:
        raise AssertionError(f"the stream did not fail within {timeout} s (a hang); seen: {seen}") from None


def order(cid: str, status: OrderStatus = OrderStatus.FILLED, closed_by: str | None = None):
    return lambda i: (isinstance(i, StreamOrder) and i.report.status is status
                      and (i.report.client_order_id == cid if cid != "*" else True)
                      and (closed_by is None or i.closed_by == closed_by))


def fill(cid: str):
    return lambda i: isinstance(i, StreamFill) and i.client_order_id == cid


def position(qty: float | None, symbol: str = "BTCUSDT"):
    """qty None: flat."""
    return lambda i: (isinstance(i, StreamPosition) and i.symbol == symbol
                      and (i.position is None if qty is None else i.position is not None and i.position.qty == qty))


def stop_order(price: float, is_open: bool):
    return lambda i: isinstance(i, StreamStopOrder) and i.order.stop_price == price and i.open is is_open


def first(items: list[StreamItem], wanted: Callable[[StreamItem], bool]) -> Any:
    return next(i for i in items if wanted(i))


async def enter(ad: CcxtAdapter, cid: str, side: Side = Side.BUY, qty: float = 0.01, stop: float = 58_000.0) -> None:
    """An entry with its stop, the venue's way: attached (Bybit) or right after (Binance)."""
    if ad.capabilities.attached_stop:
        await ad.create_order(OrderRequest("BTCUSDT", side, qty, cid, stop_price=stop))
    else:
        await ad.create_order(OrderRequest("BTCUSDT", side, qty, cid))
        await ad.set_stop("BTCUSDT", stop, side)


# -- what arrives --------------------------------------------------------------------------------------


def test_an_entry_arrives_as_our_order_its_fill_its_stop_and_the_position_while_rest_lags(emu):
    bybit = emu.venue == "bybit"

    async def scenario(stream: CcxtStream, ad: CcxtAdapter):
        await stream.open()
        await enter(ad, "pg-e1")
        wanted = [order("pg-e1"), fill("pg-e1"), position(0.01)]
        if not bybit:
            wanted.append(stop_order(58_000.0, True))
        items = await read_until(stream, *wanted)
        return items, await ad.fetch_positions()
    items, rest = run(emu, scenario)
    entry = first(items, order("pg-e1"))
    assert entry.closed_by == "" and entry.report.side is Side.BUY and entry.report.filled_qty == 0.01
    assert not entry.report.reduce_only and entry.report.avg_price == pytest.approx(60_000.0)
    assert entry.report.venue_order_id
    the_fill = first(items, fill("pg-e1"))
    assert (the_fill.symbol, the_fill.qty, the_fill.venue_order_id) == ("BTCUSDT", 0.01, entry.report.venue_order_id)
    assert the_fill.price == entry.report.avg_price
    pos = first(items, position(0.01)).position
    assert (pos.side, pos.entry_price) == (Side.BUY, entry.report.avg_price)
    if bybit:                                               # the stop rides on the order and the position
        assert entry.report.stop_price == 58_000.0 and pos.stop_price == 58_000.0
        log = emu.stream_log()
        auth = next(m for k, m in log if k == "private" and m.get("op") == "auth")
        assert auth["args"][0] == KEY and SECRET not in json.dumps(log)
        assert sorted(t for k, m in log if m.get("op") == "subscribe" for t in m["args"]) == \
            ["execution", "order", "position"]
    else:                                                   # a conditional (algo) order of its own
        stop = first(items, stop_order(58_000.0, True)).order
        assert (stop.side, stop.qty, stop.reduce_only) == (Side.SELL, None, True)
        assert stop.client_order_id.startswith("pgsl-") and int(stop.venue_order_id) > ALGO_ID_BASE
        assert pos.stop_price is None                       # Binance positions carry no stop
    assert rest == []                                       # the REST view is 24 s behind


def test_a_position_opened_by_hand_arrives_while_rest_positions_show_nothing(emu):
    async def scenario(stream: CcxtStream, ad: CcxtAdapter):
        await stream.open()
        async with aiohttp.ClientSession() as http, http.post(
                f"{emu.url}/emulator/open", json={"symbol": "ETHUSDT", "side": "sell", "qty": 0.5,
                                                  "client_order_id": "web-1"}) as reply:
            assert reply.status == 200
        items = await read_until(stream, position(0.5, "ETHUSDT"), order("web-1"))
        return items, await ad.fetch_positions()
    items, rest = run(emu, scenario)
    pos = first(items, position(0.5, "ETHUSDT")).position
    assert pos == PositionReport("ETHUSDT", Side.SELL, 0.5, pos.entry_price, None, pos.mark_price)
    assert pos.entry_price > 0
    assert first(items, order("web-1")).closed_by == ""     # not ours, not the venue's: by hand
    assert rest == []


def test_a_stop_trigger_and_a_liquidation_arrive_as_the_venues_own_closing_orders(emu):
    engine = emu.emulator.engine
    bybit = emu.venue == "bybit"

    async def scenario(stream: CcxtStream, ad: CcxtAdapter):
        await stream.open()
        await enter(ad, "pg-s1")
        await read_until(stream, position(0.01), *([] if bybit else [stop_order(58_000.0, True)]))
        emu.on_loop(lambda: engine.trigger_stop_now("BTCUSDT"))
        stopped = await read_until(stream, order("*", closed_by="stop"), position(None),
                                   *([] if bybit else [stop_order(58_000.0, False)]))
        await enter(ad, "pg-s2")
        await read_until(stream, position(0.01))
        emu.on_loop(lambda: engine.liquidate("BTCUSDT"))
        liquidated = await read_until(stream, order("*", closed_by="liquidation"), position(None))
        return stopped, liquidated, await ad.fetch_positions()
    stopped, liquidated, rest = run(emu, scenario)
    by_stop = first(stopped, order("*", closed_by="stop")).report
    assert (by_stop.side, by_stop.filled_qty, by_stop.reduce_only) == (Side.SELL, 0.01, True)
    assert not by_stop.client_order_id.startswith("pg")     # the venue's order, not ours
    by_liq = first(liquidated, order("*", closed_by="liquidation")).report
    assert (by_liq.side, by_liq.filled_qty, by_liq.reduce_only) == (Side.SELL, 0.01, True)
    if bybit:
        assert by_stop.stop_price == 58_000.0 and by_liq.client_order_id == ""
    else:
        assert by_liq.client_order_id.startswith("autoclose-")
    assert rest == []                                       # REST has not seen any of it yet


def test_bybit_a_moved_or_removed_stop_arrives_on_the_position():
    with emulator("bybit") as emu:
        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            await stream.open()
            await enter(ad, "pg-m1", stop=58_000.0)
            await read_until(stream, position(0.01), order("pg-m1"), fill("pg-m1"))
            await ad.set_stop("BTCUSDT", 59_000.0)
            moved = await read_until(stream, lambda i: position(0.01)(i) and i.position.stop_price == 59_000.0)
            async with aiohttp.ClientSession() as http, http.post(f"{emu.url}/emulator/clear-stop",
                                                                  json={"symbol": "BTCUSDT"}):
                pass
            naked = await read_until(stream, lambda i: position(0.01)(i) and i.position.stop_price is None)
            return moved, naked
        moved, naked = run(emu, scenario)
    assert [i for i in moved + naked if isinstance(i, StreamOrder)] == []    # a stop change is no order


def test_binance_stop_orders_arrive_placed_and_replaced_and_outlive_their_position():
    with emulator("binanceusdm") as emu:
        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            await stream.open()
            await enter(ad, "pg-b1", stop=58_000.0)
            placed = await read_until(stream, stop_order(58_000.0, True), order("pg-b1"))
            await ad.set_stop("BTCUSDT", 58_500.0, Side.BUY)            # the new stop, then the old one cancelled
            moved = await read_until(stream, stop_order(58_500.0, True), stop_order(58_000.0, False))
            await ad.create_order(OrderRequest("BTCUSDT", Side.SELL, 0.01, "pg-b1-close", reduce_only=True))
            flat = await read_until(stream, position(None))
            return placed, moved, flat, await ad.fetch_stop_orders("BTCUSDT")
        placed, moved, flat, working = run(emu, scenario)
    entry = first(placed, order("pg-b1")).report
    old = first(placed, stop_order(58_000.0, True)).order
    new = first(moved, stop_order(58_500.0, True)).order
    assert old.venue_order_id != new.venue_order_id and entry.venue_order_id not in (old.venue_order_id,
                                                                                     new.venue_order_id)
    assert first(moved, stop_order(58_000.0, False)).order.venue_order_id == old.venue_order_id
    # Flat, and the close-all stop still works, as on Binance: nothing ended it (REST says so too).
    assert not any(stop_order(58_500.0, False)(i) for i in flat)
    assert [o.venue_order_id for o in working] == [new.venue_order_id]


def test_a_push_leaves_after_half_the_round_trip_plus_the_injected_delay():
    with emulator("bybit", venue(latency_s=0.2)) as emu:
        emu.stream_fault("delay", seconds=0.3)

        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            await stream.open()
            t0 = time.monotonic()
            await enter(ad, "pg-d1")
            answered = time.monotonic() - t0
            await read_until(stream, order("pg-d1"))
            return answered, time.monotonic() - t0
        answered, arrived = run(emu, scenario)
    assert answered >= 0.2 and arrived >= 0.1 + 0.1 + 0.3     # engine at 0.1 s, then 0.1 s + 0.3 s


# -- how it fails, and comes back ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["close", "abort"])
def test_a_drop_ends_next_and_a_new_open_works(emu, mode):
    async def scenario(stream: CcxtStream, ad: CcxtAdapter):
        await stream.open()
        emu.stream_fault("drop", mode=mode)
        down, took, _ = await failure_of(stream)
        again = await failure_of(stream, timeout=0.5)        # it stays down until a new open()
        await stream.close()
        await stream.open()
        await enter(ad, "pg-r1")
        await read_until(stream, order("pg-r1"), position(0.01))
        return down, took, again[0]
    down, took, again = run(emu, scenario)
    # Learnt from the connection itself (ccxt's NetworkError: "connection lost"); a hang would fail
    # failure_of() at its bound instead. No wall-clock bound here: the cause says it was not waited out.
    assert type(down) is StreamDown and "connection lost" in str(down)
    assert type(again) is StreamDown


def test_a_stall_is_a_drop_within_the_keep_alive_bound(emu):
    keep_alive = 0.5

    async def scenario(stream: CcxtStream, ad: CcxtAdapter):
        await stream.open()
        key = emu.on_loop(emu.emulator.stream.live_key) if emu.venue == "binanceusdm" else None
        emu.stream_fault("stall")
        await enter(ad, "pg-lost")                            # pushed while stalled: lost, never replayed
        down, took, seen = await failure_of(stream, timeout=4 * keep_alive + 2.0)
        emu.stream_fault("resume")
        await stream.close()
        await stream.open()
        await enter(ad, "pg-after", side=Side.SELL, qty=0.02, stop=62_000.0)
        items = await read_until(stream, order("pg-after"))
        return down, took, seen, items, key
    down, took, seen, items, key = run(emu, scenario, keep_alive_s=keep_alive)
    assert type(down) is StreamDown and "keepalive" in str(down)
    assert took <= 3 * keep_alive + 1.0                      # ccxt: 2-3 keep-alives after the last pong
    assert seen == [] and not any(order("pg-lost")(i) for i in items)
    if key is not None:                                      # the URL names the listen key: not in the message
        assert key not in str(down) and "listenKey=***" in str(down)


@pytest.mark.parametrize("how", ["v5 reply", "legacy reply", "wrong secret"])
def test_bybit_refused_auth_is_auth_failed_then_a_new_open_authenticates_afresh(how, monkeypatch):
    with emulator("bybit") as emu:
        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            if how == "wrong secret":                         # a real signature mismatch
                monkeypatch.setenv(SECRET_ENV, "a-wrong-secret-0000")
            else:                                             # the venue refuses (v5: a plain ExchangeError in ccxt)
                emu.emulator.stream.auth_style = how.split()[0]
                emu.stream_fault("reject_auth", on=True)
            t0 = time.monotonic()
            with pytest.raises(StreamAuthFailed) as info:
                await stream.open()
            took = time.monotonic() - t0
            with pytest.raises(StreamDown):
                await stream.next()
            monkeypatch.setenv(SECRET_ENV, SECRET)
            emu.stream_fault("reject_auth", on=False)
            await stream.open()                               # the same stream: a new client, a new auth
            await enter(ad, "pg-a1")
            await read_until(stream, order("pg-a1"))
            return info.value, took
        refused, took = run(emu, scenario)
    assert "credentials refused" in str(refused)          # the venue's answer, not a timeout's
    assert SECRET not in str(refused) and "a-wrong-secret-0000" not in str(refused)
    assert sum(1 for _, m in emu.stream_log() if m.get("op") == "auth") == 2


def test_a_missing_key_is_auth_failed_naming_the_variable(emu):
    async def scenario(stream: CcxtStream, ad: CcxtAdapter):
        no_key = emu.settings(key_env="POSGUARD_TEST_NO_SUCH_KEY")
        stream = STREAMS[emu.venue](no_key, ADAPTERS[emu.venue](no_key))
        with pytest.raises(StreamAuthFailed, match="POSGUARD_TEST_NO_SUCH_KEY is not set"):
            await stream.open()
        await stream.close()
    run(emu, scenario)


def test_bybit_auth_with_expires_in_the_venues_past_is_refused_not_hung():
    # ccxt signs `expires` with its local clock (+10 s), not the REST time difference: a venue
    # clock 15 s ahead refuses the stream's auth although REST works.
    with emulator("bybit", venue(clock_offset_s=15.0)) as emu:
        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            await ad.fetch_positions()                          # REST learnt the offset and works
            with pytest.raises(StreamAuthFailed):
                await stream.open()
        run(emu, scenario)


def test_binance_refused_listen_key_is_auth_failed_then_a_new_open_works():
    with emulator("binanceusdm") as emu:
        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            emu.stream_fault("reject_auth", on=True)
            with pytest.raises(StreamAuthFailed) as info:
                await stream.open()
            emu.stream_fault("reject_auth", on=False)
            await stream.open()
            await enter(ad, "pg-k1")
            await read_until(stream, order("pg-k1"))
            return str(info.value)
        text = run(emu, scenario)
    assert "-2015" in text and KEY not in text and SECRET not in text


@pytest.mark.parametrize("silent", [False, True], ids=["listenKeyExpired", "keep-alive answers -1125"])
def test_binance_listen_key_expiry_is_auth_failed_and_a_new_open_gets_a_new_key(silent):
    with emulator("binanceusdm") as emu:
        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            await stream.open()
            old = emu.on_loop(emu.emulator.stream.live_key)
            emu.stream_fault("expire_listen_key", silent=silent)
            expired, took, _ = await failure_of(stream)
            await stream.close()
            await stream.open()
            new = emu.on_loop(emu.emulator.stream.live_key)
            await enter(ad, "pg-x1")
            await read_until(stream, order("pg-x1"), position(0.01))
            return old, new, expired, took
        old, new, expired, took = run(emu, scenario, stream_kw={"listen_key_keepalive_s": 0.3})
    assert isinstance(expired, StreamAuthFailed) and "listen key expired" in str(expired)
    assert old and new and new != old and old not in str(expired)
    calls = [m["method"] for k, m in emu.stream_log() if k == "rest"]
    assert calls.count("POST") == 2
    if silent:
        assert "PUT" in calls                                 # our own keep-alive found it gone


def test_the_side_door_throws_stream_faults_over_http(emu):
    async def scenario(stream: CcxtStream, ad: CcxtAdapter):
        await stream.open()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{emu.url}/emulator/stream", json={"kind": "no-such-fault"}) as bad:
                assert bad.status == 400
            async with http.post(f"{emu.url}/emulator/stream", json={"kind": "drop"}) as ok:
                assert (await ok.json()) == {"dropped": 1}
        return await failure_of(stream)
    down, _, _ = run(emu, scenario)
    assert type(down) is StreamDown


def test_close_and_next_are_safe_in_any_state(emu):
    async def scenario(stream: CcxtStream, ad: CcxtAdapter):
        await stream.close()                                  # never opened
        await stream.close()
        with pytest.raises(StreamDown):
            await stream.next()
        await stream.open()
        await stream.open()                                   # re-open: the old client is let go first
        await stream.close()
        with pytest.raises(StreamDown):
            await stream.next()
        await stream.close()
    run(emu, scenario)


def test_an_open_cancelled_while_authenticating_leaves_nothing_and_the_next_open_works():
    # Cancelling a ccxt watch that is authenticating breaks its client for good: open() lets the
    # whole client go when its caller gives up, so the next open() starts afresh.
    with emulator("bybit") as emu:
        emu.on_loop(lambda: setattr(emu.emulator.stream, "auth_delay_s", 1.0))

        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(stream.open(), 0.3)
            emu.on_loop(lambda: setattr(emu.emulator.stream, "auth_delay_s", 0.0))
            await stream.open()
            await enter(ad, "pg-c1")
            await read_until(stream, order("pg-c1"))
        run(emu, scenario)


def test_open_is_bounded_when_nothing_answers():
    # A stalled venue accepts the connection and answers nothing: open() gives up in time.
    with emulator("bybit") as emu:
        emu.stream_fault("stall")

        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            t0 = time.monotonic()
            with pytest.raises(StreamDown) as info:
                await stream.open()
            return info.value, time.monotonic() - t0
        down, took = run(emu, scenario, stream_kw={"open_timeout_s": 1.0}, keep_alive_s=10.0)
    assert "within 1 s" in str(down) and took < 2.0
    assert any(m.get("op") == "auth" for _, m in emu.stream_log())


# -- the emulators' other stream endpoints --------------------------------------------------------------


def test_bybit_trade_endpoint_creates_through_the_rest_path_and_public_answers_pings():
    with emulator("bybit") as emu:
        async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(f"{emu.ws_url}/v5/trade") as ws:
                    expires = str(int(time.time() * 1000) + 10_000)
                    sign = hmac.new(SECRET.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
                    await ws.send_json({"op": "auth", "args": [KEY, expires, sign]})
                    assert (await ws.receive_json(timeout=WAIT_S))["retCode"] == 0
                    order_args = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
                                  "qty": "0.01", "orderLinkId": "pg-ws-1", "positionIdx": 0}
                    header = {"X-BAPI-TIMESTAMP": str(int(time.time() * 1000)), "X-BAPI-RECV-WINDOW": "5000"}
                    for req in ("1", "2"):
                        await ws.send_json({"op": "order.create", "reqId": req, "args": [order_args],
                                            "header": header})
                    created = await ws.receive_json(timeout=WAIT_S)
                    duplicate = await ws.receive_json(timeout=WAIT_S)
                async with http.ws_connect(f"{emu.ws_url}/v5/public/linear") as ws:
                    await ws.send_json({"op": "ping", "req_id": "7"})
                    pong = await ws.receive_json(timeout=WAIT_S)
            return created, duplicate, pong
        created, duplicate, pong = asyncio.run(scenario())
    assert created["retCode"] == 0 and created["data"]["orderLinkId"] == "pg-ws-1"
    assert (duplicate["retCode"], duplicate["retMsg"]) == (110072, "OrderLinkedID is duplicate")
    assert (pong["ret_msg"], pong["op"]) == ("pong", "ping")
    assert [o.client_order_id for o in emu.truth().orders] == ["pg-ws-1"]


def test_bybit_positions_of_the_inverse_category_are_an_empty_list():
    # ccxt's first watch_positions (with its default REST snapshot) asks for them.
    with emulator("bybit") as emu:
        async def scenario(stream: CcxtStream, ad: CcxtAdapter):
            await enter(ad, "pg-i1")
            return await ad.ex.fetch_positions(None, {"type": "swap", "subType": "inverse"})
        assert run(emu, scenario) == []


def test_stream_urls_follow_the_rest_url_unless_given():
    def settings(**kw: Any) -> CcxtVenueSettings:
        return CcxtVenueSettings("bybit", "K", "S", **kw)
    assert stream_base(settings(api_url="http://127.0.0.1:8123")) == "ws://127.0.0.1:8123"
    assert stream_base(settings(api_url="https://proxy.example/bybit/")) == "wss://proxy.example/bybit"
    assert stream_base(settings(api_url="http://127.0.0.1:8123", ws_url="wss://other:9/")) == "wss://other:9"
    assert stream_base(settings()) is None                     # the venue's own (testnet / demo respected)
    assert settings().streams is True
