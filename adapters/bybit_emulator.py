"""A Bybit-v5-compatible HTTP server on 127.0.0.1: the project's own test instrument.

Real ccxt talks to it exactly as to api.bybit.com (only `urls['api']` differs). Behind the
HTTP surface sits the simulated venue (`SimulatedAdapter` over `SimEngine`), so the REST
position lag, attached and direct stops, reduce-only, stop triggers, duplicate orderLinkId,
recv window, rate limit and injected faults are the same ones every other test relies on.

Requests to private endpoints are authenticated like the venue does it: key, timestamp within
the recv window of the server's clock (which may be skewed on purpose), HMAC-SHA256 signature
over timestamp + key + recvWindow + (query string | JSON body).

Faults: an ERROR fault answers with its retCode; a TIMEOUT_* or LATE fault (no reply from the
engine) answers HTTP 504 with an HTML body, as a gateway does, after `hang_s`: the client cannot
tell whether the order executed -- the ambiguous outcome our safety must resolve by client id.

`/emulator/*` is the test rig's side door (truth, faults, a position opened "by hand"); it
needs no signature and exists only because the server binds to loopback alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from adapters.base import OrderReport, OrderRequest, OrderStatus, Side, VenueError, VenueTimeout
from adapters.faults import Fault, FaultKind
from adapters.sim_server import LOOPBACK, encode
from adapters.simulated import SimulatedAdapter, SimVenueConfig

MIN_NOTIONAL = 5.0                   # USDT, like Bybit's linear perpetuals


@dataclass(frozen=True, slots=True)
class Instrument:
    """Trading rules the emulator enforces and publishes in instruments-info."""

    symbol: str
    tick_size: float
    qty_step: float
    min_qty: float
    max_qty: float
    min_notional: float = MIN_NOTIONAL

    @classmethod
    def for_price(cls, symbol: str, price: float) -> Instrument:
        # Roughly Bybit's: ~6 significant digits of price, a lot worth ~60 USDT or less.
        tick = 10.0 ** (math.floor(math.log10(price)) - 5)
        step = 10.0 ** round(math.log10(60.0 / price))
        return cls(symbol, tick, step, step, step * 1_000_000)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    venue: SimVenueConfig = field(default_factory=SimVenueConfig)
    keys: tuple[tuple[str, str], ...] = ()      # (api key, secret) pairs the server accepts
    clock_offset_s: float = 0.0      # the server's clock minus ours (tests of clock skew)
    hang_s: float = 0.0              # how long a lost reply keeps the connection before the 504


def _now_ms(offset_s: float) -> int:
    return int((time.time() + offset_s) * 1000)


def _num(value: float | None) -> str:
    return "" if value is None else format(value, ".10g")


class BybitEmulator:
    def __init__(self, config: EmulatorConfig, port: int = 0) -> None:
        # The engine replies in full; the HTTP layer answers create with ids only, like v5.
        self.config = config
        self.adapter = SimulatedAdapter(config.venue)
        self.engine = self.adapter.engine
        self.instruments = {s: Instrument.for_price(s, p) for s, p in config.venue.engine.prices.items()}
        self.port = port
        self._secrets = dict(config.keys)
        self._runner: web.AppRunner | None = None
        self.requests: list[tuple[str, str, dict[str, Any]]] = []   # (method, path, params) as received
        self._by_venue_id: dict[str, str] = {}        # orderId -> orderLinkId

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/v5/market/time", self._time)
        app.router.add_get("/v5/market/instruments-info", self._instruments)
        app.router.add_get("/v5/market/tickers", self._tickers)
        app.router.add_post("/v5/order/create", self._private(self._create))
        app.router.add_get("/v5/order/realtime", self._private(self._realtime))
        app.router.add_get("/v5/order/history", self._private(self._history))
        app.router.add_post("/v5/position/trading-stop", self._private(self._trading_stop))
        app.router.add_get("/v5/position/list", self._private(self._positions))
        app.router.add_get("/emulator/truth", self._truth)
        app.router.add_post("/emulator/fault", self._add_fault)
        app.router.add_post("/emulator/open", self._open_by_hand)
        app.router.add_post("/emulator/clear-stop", self._clear_stop)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # -- envelope ------------------------------------------------------------------------

    def _reply(self, result: Any, code: int = 0, msg: str = "OK") -> web.Response:
        body = {"retCode": code, "retMsg": msg, "result": result if result is not None else {},
                "retExtInfo": {}, "time": _now_ms(self.config.clock_offset_s)}
        return web.json_response(body)

    def _error(self, exc: VenueError) -> web.Response:
        return self._reply({}, int(exc.code), exc.message)

    async def _lost(self) -> web.Response:
        if self.config.hang_s:
            await asyncio.sleep(self.config.hang_s)
        return web.Response(status=504, text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
                            content_type="text/html")

    def _private(self, handler):
        async def wrapped(request: web.Request) -> web.Response:
            raw = await request.text()
            try:
                params = json.loads(raw) if request.method == "POST" and raw else dict(request.query)
                self.requests.append((request.method, request.path, params))
                self._authenticate(request, raw)
                return await handler(params)
            except VenueError as exc:
                return self._error(exc)
            except VenueTimeout:
                return await self._lost()
            except (ValueError, KeyError, TypeError) as exc:
                return self._reply({}, 10001, f"params error: {type(exc).__name__}: {exc}")
        return wrapped

    def _authenticate(self, request: web.Request, raw_body: str) -> None:
        h = request.headers
        key, ts, sign = h.get("X-BAPI-API-KEY", ""), h.get("X-BAPI-TIMESTAMP", ""), h.get("X-BAPI-SIGN", "")
        recv = h.get("X-BAPI-RECV-WINDOW", "5000")
        secret = self._secrets.get(key)
        if secret is None:
            raise VenueError(10003, "API key is invalid.")
        server_ms = _now_ms(self.config.clock_offset_s)
        if not ts.isdigit() or not recv.isdigit() or not (server_ms - int(recv) <= int(ts) < server_ms + 1000):
            raise VenueError(10002, f"invalid request, please check your server timestamp or recv_window param."
                                    f" req_timestamp[{ts}],server_timestamp[{server_ms}],recv_window[{recv}]")
        payload = ts + key + recv + (raw_body if request.method == "POST" else request.query_string)
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sign):
            raise VenueError(10004, "error sign! origin_string[" + payload + "]")

    # -- public market data --------------------------------------------------------------

    async def _time(self, request: web.Request) -> web.Response:
        ms = _now_ms(self.config.clock_offset_s)
        return self._reply({"timeSecond": str(ms // 1000), "timeNano": str(ms * 1_000_000)})

    async def _instruments(self, request: web.Request) -> web.Response:
        if request.query.get("category") != "linear" or request.query.get("status") == "PreLaunch":
            return self._reply({"category": request.query.get("category", ""), "list": [], "nextPageCursor": ""})
        return self._reply({"category": "linear", "nextPageCursor": "", "list": [
            {"symbol": i.symbol, "contractType": "LinearPerpetual", "status": "Trading",
             "baseCoin": i.symbol.removesuffix("USDT"), "quoteCoin": "USDT", "settleCoin": "USDT",
             "launchTime": "1585526400000", "deliveryTime": "0", "priceScale": "2",
             "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
             "priceFilter": {"minPrice": _num(i.tick_size), "maxPrice": "1999999.8", "tickSize": _num(i.tick_size)},
             "lotSizeFilter": {"maxOrderQty": _num(i.max_qty), "minOrderQty": _num(i.min_qty),
                               "qtyStep": _num(i.qty_step), "postOnlyMaxOrderQty": _num(i.max_qty),
                               "maxMktOrderQty": _num(i.max_qty), "minNotionalValue": _num(i.min_notional)},
             "unifiedMarginTrade": True, "fundingInterval": 480, "copyTrading": "both"}
            for i in self.instruments.values()]})

    async def _tickers(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        if symbol not in self.instruments:
            return self._reply({}, 10001, "params error: symbol invalid")
        px = await self.adapter.fetch_price(symbol)
        return self._reply({"category": "linear", "list": [
            {"symbol": symbol, "lastPrice": _num(px), "markPrice": _num(px), "indexPrice": _num(px),
             "bid1Price": _num(px), "ask1Price": _num(px), "volume24h": "0", "turnover24h": "0"}]})

    # -- private: orders and positions ---------------------------------------------------

    def _instrument(self, params: dict[str, Any]) -> Instrument:
        if params.get("category") != "linear":
            raise VenueError(10001, "params error: category only supports linear here")
        instrument = self.instruments.get(str(params.get("symbol", "")))
        if instrument is None:
            raise VenueError(10001, f"params error: symbol invalid: {params.get('symbol')}")
        return instrument

    async def _create(self, p: dict[str, Any]) -> web.Response:
        ins = self._instrument(p)
        if p.get("orderType") != "Market":
            raise VenueError(10001, "params error: this emulator takes market orders only")
        if int(p.get("positionIdx", 0)) != 0:
            raise VenueError(10001, "position idx not match position mode")
        qty = float(p["qty"])
        steps = qty / ins.qty_step
        if abs(steps - round(steps)) > 1e-6:
            raise VenueError(10001, f"Qty invalid: not a multiple of qtyStep {_num(ins.qty_step)}")
        if qty < ins.min_qty - 1e-12:
            raise VenueError(10001, f"The number of contracts below min limit allowed: {_num(ins.min_qty)}")
        reduce_only = bool(p.get("reduceOnly", False))
        stop = float(p["stopLoss"]) if p.get("stopLoss") not in (None, "") else None
        if stop is not None and p.get("tpslMode", "Full") != "Full":
            raise VenueError(10001, "params error: only tpslMode Full is emulated")
        if not reduce_only and qty * self.engine.price(ins.symbol) < ins.min_notional:
            raise VenueError(110094, f"Order does not meet minimum order value {_num(ins.min_notional)}USDT")
        link_id = str(p.get("orderLinkId") or f"emu-{len(self._by_venue_id) + 1}")
        if len(link_id) > 36:
            raise VenueError(10001, "params error: orderLinkId too long (max 36)")
        report = await self.adapter.create_order(OrderRequest(
            symbol=ins.symbol, side=Side(str(p["side"]).lower()), qty=qty, client_order_id=link_id,
            reduce_only=reduce_only, stop_price=stop))
        self._by_venue_id[report.venue_order_id] = link_id
        return self._reply({"orderId": report.venue_order_id, "orderLinkId": link_id})

    async def _realtime(self, p: dict[str, Any]) -> web.Response:
        if p.get("symbol") or not p.get("settleCoin"):           # one of symbol / settleCoin is required
            self._instrument({"category": p.get("category"), "symbol": p.get("symbol")})
        link_id = p.get("orderLinkId") or self._by_venue_id.get(str(p.get("orderId", "")), "")
        if p.get("orderFilter") == "StopOrder" or not link_id:
            return self._reply({"category": "linear", "list": [], "nextPageCursor": ""})
        try:
            report = await self.adapter.fetch_order(str(p["symbol"]), link_id)
        except VenueError as exc:
            if exc.code != 110001:
                raise
            return self._reply({"category": "linear", "list": [], "nextPageCursor": ""})
        return self._reply({"category": "linear", "list": [self._order_json(report)], "nextPageCursor": ""})

    async def _history(self, p: dict[str, Any]) -> web.Response:
        """Closed orders of a symbol, newest first, including the venue's own (stop triggers)."""
        ins = self._instrument(p)
        truth = await self.adapter.true_state()
        orders = [o for o in truth.orders if o.symbol == ins.symbol]
        return self._reply({"category": "linear", "list": [self._order_json(o) for o in reversed(orders)],
                            "nextPageCursor": ""})

    async def _trading_stop(self, p: dict[str, Any]) -> web.Response:
        ins = self._instrument(p)
        if int(p.get("positionIdx", 0)) != 0:
            raise VenueError(10001, "position idx not match position mode")
        stop = str(p.get("stopLoss", ""))
        if stop == "":
            raise VenueError(10001, "params error: stopLoss is required here")
        if float(stop) == 0:                               # "0" cancels the stop on Bybit
            self.engine.clear_stop(ins.symbol)
        else:
            await self.adapter.set_stop(ins.symbol, float(stop))
        return self._reply({})

    async def _positions(self, p: dict[str, Any]) -> web.Response:
        if p.get("category") != "linear" or not (p.get("symbol") or p.get("settleCoin")):
            raise VenueError(10001, "params error: symbol or settleCoin is required")
        rows = []
        for pos in await self.adapter.fetch_positions():
            if p.get("symbol") and pos.symbol != p["symbol"]:
                continue
            px = self.engine.price(pos.symbol)
            rows.append({
                "positionIdx": 0, "symbol": pos.symbol, "side": "Buy" if pos.side is Side.BUY else "Sell",
                "size": _num(pos.qty), "avgPrice": _num(pos.entry_price), "markPrice": _num(px),
                "positionValue": _num(pos.qty * pos.entry_price), "leverage": "10", "tradeMode": 0,
                "positionStatus": "Normal", "autoAddMargin": 0, "tpslMode": "Full", "riskId": 1,
                "stopLoss": _num(pos.stop_price) or "0", "takeProfit": "0", "trailingStop": "0",
                "unrealisedPnl": "0", "cumRealisedPnl": "0", "liqPrice": "", "bustPrice": "",
                "positionIM": "0", "positionMM": "0", "createdTime": "0", "updatedTime": "0", "seq": 0})
        return self._reply({"category": "linear", "list": rows, "nextPageCursor": ""})

    @staticmethod
    def _order_json(o: OrderReport) -> dict[str, Any]:
        status = {OrderStatus.NEW: "New", OrderStatus.PARTIALLY_FILLED: "PartiallyFilled",
                  OrderStatus.FILLED: "Filled", OrderStatus.CANCELLED: "Cancelled",
                  OrderStatus.REJECTED: "Rejected"}[o.status]
        by_stop = o.client_order_id.startswith("stop-")    # the engine's own stop-loss execution
        return {
            "orderId": o.venue_order_id, "orderLinkId": "" if by_stop else o.client_order_id,
            "symbol": o.symbol, "side": "Buy" if o.side is Side.BUY else "Sell", "orderType": "Market",
            "price": "0", "qty": _num(o.qty), "cumExecQty": _num(o.filled_qty),
            "leavesQty": _num(max(o.qty - o.filled_qty, 0.0) if not o.status.is_final else 0.0),
            "avgPrice": _num(o.avg_price), "cumExecValue": _num(o.filled_qty * (o.avg_price or 0.0)),
            "cumExecFee": "0", "orderStatus": status, "timeInForce": "IOC", "positionIdx": 0,
            "reduceOnly": o.reduce_only, "closeOnTrigger": by_stop,
            "stopOrderType": "StopLoss" if by_stop else "", "createType": "CreateByStopLoss" if by_stop
            else "CreateByUser", "stopLoss": _num(o.stop_price), "takeProfit": "", "triggerPrice": "",
            "slTriggerBy": "LastPrice" if o.stop_price else "", "tpslMode": "Full" if o.stop_price else "",
            "rejectReason": "EC_NoError", "createdTime": "0", "updatedTime": "0", "isLeverage": "",
            "orderIv": "", "lastPriceOnCreated": "", "cancelType": "UNKNOWN", "triggerDirection": 0}

    # -- the test rig's side door -------------------------------------------------------

    async def _truth(self, request: web.Request) -> web.Response:
        truth = await self.adapter.true_state()
        return web.json_response({**encode(truth), "requests": len(self.requests)})

    async def _add_fault(self, request: web.Request) -> web.Response:
        f = await request.json()
        self.adapter.faults.add(Fault(**{**f, "kind": FaultKind(f["kind"])}))
        return web.json_response({"ok": True})

    async def _open_by_hand(self, request: web.Request) -> web.Response:
        """A position opened outside posguard (the web UI, another bot): no stop."""
        b = await request.json()
        report = self.engine.create_order(OrderRequest(b["symbol"], Side(b["side"]), float(b["qty"]),
                                                       b.get("client_order_id", f"hand-{time.time_ns()}")), True)
        return web.json_response(encode(report))

    async def _clear_stop(self, request: web.Request) -> web.Response:
        self.engine.clear_stop((await request.json())["symbol"])
        return web.json_response({"ok": True})
