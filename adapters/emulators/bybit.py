"""A Bybit-v5-compatible HTTP server on 127.0.0.1: the project's own test instrument.

Real ccxt talks to it exactly as to api.bybit.com (only `urls['api']` differs). Behind it sits
the simulated venue (see adapters.emulators.base), so the REST position lag, attached and direct
stops, reduce-only, stop triggers, duplicate orderLinkId, recv window, rate limit and injected
faults are the same ones every other test relies on.

Private requests are authenticated like the venue does it: key, timestamp within the recv
window of the server's clock (which may be skewed on purpose), HMAC-SHA256 signature over
timestamp + key + recvWindow + (query string | JSON body).

Private streams (`/v5/private`, `/v5/public/linear`, `/v5/trade`) on the same port: see
adapters/emulators/bybit_ws.py. `/v5/position/list?category=inverse` answers an empty list (ccxt's
first watch_positions asks for it).

Faults: an ERROR fault answers with its retCode; a TIMEOUT_* or LATE fault (no reply from the
engine) answers HTTP 504 with an HTML body, as a gateway does, after `hang_s`: the client cannot
tell whether the order executed -- the ambiguous outcome our safety must resolve by client id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web

from adapters.base import OrderReport, OrderRequest, OrderStatus, Side, VenueError
from adapters.emulators.base import EmulatorBase, EmulatorConfig, Instrument, num, order_time
from adapters.emulators.bybit_ws import BybitStreams


class BybitEmulator(EmulatorBase):
    def __init__(self, config: EmulatorConfig, port: int = 0) -> None:
        super().__init__(config, port)
        self._by_venue_id: dict[str, str] = {}        # orderId -> orderLinkId
        self._accepted_at: dict[str, float] = {}      # orderLinkId -> when create answered
        self.stream: BybitStreams = BybitStreams(self)

    def routes(self, app: web.Application) -> None:
        self.stream.attach(app)                        # /v5/private, /v5/public/linear, /v5/trade
        app.router.add_get("/v5/market/time", self._time)
        app.router.add_get("/v5/market/instruments-info", self._instruments)
        app.router.add_get("/v5/market/tickers", self._tickers)
        app.router.add_post("/v5/order/create", self.private(self._create))
        app.router.add_get("/v5/order/realtime", self.private(self._realtime))
        app.router.add_get("/v5/order/history", self.private(self._history))
        app.router.add_post("/v5/position/trading-stop", self.private(self._trading_stop))
        app.router.add_get("/v5/position/list", self.private(self._positions))
        app.router.add_get("/v5/user/query-api", self.private(self._query_api))

    # -- envelope ------------------------------------------------------------------------

    def _reply(self, result: Any, code: int = 0, msg: str = "OK") -> web.Response:
        body = {"retCode": code, "retMsg": msg, "result": result if result is not None else {},
                "retExtInfo": {}, "time": self.now_ms()}
        return web.json_response(body)

    def error(self, exc: VenueError) -> web.Response:
        return self._reply({}, int(exc.code), exc.message)

    def params(self, request: web.Request, raw: str) -> dict[str, Any]:
        return json.loads(raw) if request.method == "POST" and raw else dict(request.query)

    def authenticate(self, request: web.Request, raw_body: str) -> None:
        h = request.headers
        key, ts, sign = h.get("X-BAPI-API-KEY", ""), h.get("X-BAPI-TIMESTAMP", ""), h.get("X-BAPI-SIGN", "")
        recv = h.get("X-BAPI-RECV-WINDOW", "5000")
        secret = self.secrets.get(key)
        if secret is None:
            raise VenueError(10003, "API key is invalid.")
        server_ms = self.now_ms()
        if not ts.isdigit() or not recv.isdigit() or not (server_ms - int(recv) <= int(ts) < server_ms + 1000):
            raise VenueError(10002, f"invalid request, please check your server timestamp or recv_window param."
                                    f" req_timestamp[{ts}],server_timestamp[{server_ms}],recv_window[{recv}]")
        payload = ts + key + recv + (raw_body if request.method == "POST" else request.query_string)
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sign):
            raise VenueError(10004, "error sign! origin_string[" + payload + "]")

    # -- public market data --------------------------------------------------------------

    async def _time(self, request: web.Request) -> web.Response:
        ms = self.now_ms()
        return self._reply({"timeSecond": str(ms // 1000), "timeNano": str(ms * 1_000_000)})

    async def _instruments(self, request: web.Request) -> web.Response:
        if request.query.get("category") != "linear" or request.query.get("status") == "PreLaunch":
            return self._reply({"category": request.query.get("category", ""), "list": [], "nextPageCursor": ""})
        return self._reply({"category": "linear", "nextPageCursor": "", "list": [
            {"symbol": i.symbol, "contractType": "LinearPerpetual",
             "status": "Settling" if i.symbol in self.config.account.halted else "Trading",
             "baseCoin": i.symbol.removesuffix("USDT"), "quoteCoin": "USDT", "settleCoin": "USDT",
             "launchTime": "1585526400000", "deliveryTime": "0", "priceScale": "2",
             "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
             "priceFilter": {"minPrice": num(i.tick_size), "maxPrice": "1999999.8", "tickSize": num(i.tick_size)},
             "lotSizeFilter": {"maxOrderQty": num(i.max_qty), "minOrderQty": num(i.min_qty),
                               "qtyStep": num(i.qty_step), "postOnlyMaxOrderQty": num(i.max_qty),
                               "maxMktOrderQty": num(i.max_qty), "minNotionalValue": num(i.min_notional)},
             "unifiedMarginTrade": True, "fundingInterval": 480, "copyTrading": "both"}
            for i in self.instruments.values()]})

    async def _tickers(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        if symbol not in self.instruments:
            return self._reply({}, 10001, "params error: symbol invalid")
        px = await self.adapter.fetch_price(symbol)
        return self._reply({"category": "linear", "list": [
            {"symbol": symbol, "lastPrice": num(px), "markPrice": num(px), "indexPrice": num(px),
             "bid1Price": num(px), "ask1Price": num(px), "volume24h": "0", "turnover24h": "0"}]})

    # -- private: orders and positions ---------------------------------------------------

    def _linear(self, params: dict[str, Any]) -> Instrument:
        if params.get("category") != "linear":
            raise VenueError(10001, "params error: category only supports linear here")
        return self.instrument(params.get("symbol"))

    async def _create(self, p: dict[str, Any]) -> web.Response:
        ins = self._linear(p)
        if p.get("orderType") != "Market":
            raise VenueError(10001, "params error: this emulator takes market orders only")
        self._position_idx(p)
        qty = float(p["qty"])
        reduce_only = bool(p.get("reduceOnly", False))
        self.check_qty(ins, qty, reduce_only)
        stop = float(p["stopLoss"]) if p.get("stopLoss") not in (None, "") else None
        tp = float(p["takeProfit"]) if p.get("takeProfit") not in (None, "") else None
        if (stop is not None or tp is not None) and p.get("tpslMode", "Full") != "Full":
            raise VenueError(10001, "params error: only tpslMode Full is emulated")
        link_id = str(p.get("orderLinkId") or f"emu-{len(self._by_venue_id) + 1}")
        if len(link_id) > 36:
            raise VenueError(10001, "params error: orderLinkId too long (max 36)")
        report = await self.adapter.create_order(OrderRequest(
            symbol=ins.symbol, side=Side(str(p["side"]).lower()), qty=qty, client_order_id=link_id,
            reduce_only=reduce_only, stop_price=stop, take_profit=tp))
        self._by_venue_id[report.venue_order_id] = link_id
        self._accepted_at[link_id] = time.monotonic()
        return self._reply({"orderId": report.venue_order_id, "orderLinkId": link_id})

    async def _realtime(self, p: dict[str, Any]) -> web.Response:
        if p.get("symbol") or not p.get("settleCoin"):           # one of symbol / settleCoin is required
            self._linear({"category": p.get("category"), "symbol": p.get("symbol")})
        link_id = p.get("orderLinkId") or self._by_venue_id.get(str(p.get("orderId", "")), "")
        young = time.monotonic() - self._accepted_at.get(link_id, 0.0) < self.config.visibility_lag_s
        if p.get("orderFilter") == "StopOrder" or not link_id or young:   # young: not visible to queries yet
            return self._reply({"category": "linear", "list": [], "nextPageCursor": ""})
        recent = list(self._accepted_at)[-self.config.realtime_depth:]
        try:
            report = await self.adapter.fetch_order(str(p["symbol"]), link_id)
        except VenueError as exc:
            if exc.code != 110001:
                raise
            return self._reply({"category": "linear", "list": [], "nextPageCursor": ""})
        if link_id not in recent:                          # older ones only in /v5/order/history
            return self._reply({"category": "linear", "list": [], "nextPageCursor": ""})
        return self._reply({"category": "linear", "list": [self._order_json(report)], "nextPageCursor": ""})

    async def _history(self, p: dict[str, Any]) -> web.Response:
        """Closed orders of a symbol, newest first, including the venue's own (stop triggers)."""
        ins = self._linear(p)
        truth = await self.adapter.true_state()
        now = time.monotonic()
        orders = [o for o in truth.orders if o.symbol == ins.symbol
                  and (not p.get("orderLinkId") or o.client_order_id == p["orderLinkId"])
                  and now - self._accepted_at.get(o.client_order_id, 0.0) >= self.config.visibility_lag_s]
        return self._reply({"category": "linear", "list": [self._order_json(o) for o in reversed(orders)],
                            "nextPageCursor": ""})

    async def _trading_stop(self, p: dict[str, Any]) -> web.Response:
        ins = self._linear(p)
        self._position_idx(p)
        stop, tp, trail = (str(p.get(k, "")) for k in ("stopLoss", "takeProfit", "trailingStop"))
        if stop == tp == trail == "":
            raise VenueError(10001, "params error: stopLoss, takeProfit or trailingStop is required")
        if stop != "" and float(stop) == 0:                # "0" cancels it on Bybit
            self.engine.clear_stop(ins.symbol)
        elif stop != "":
            await self.adapter.set_stop(ins.symbol, float(stop))
        if tp != "" or trail != "":                        # omitted ones are left as they are
            active = float(p["activePrice"]) if p.get("activePrice") not in (None, "", "0") else None
            await self.adapter.set_position_exits(ins.symbol, float(tp) if tp != "" else None,
                                                  float(trail) if trail != "" else None, active)
        return self._reply({})

    def _position_idx(self, p: dict[str, Any]) -> None:
        """One-way mode takes positionIdx 0 only; hedge mode 1 (buy side) or 2 (sell side)."""
        idx = int(p.get("positionIdx", 0))
        if (idx != 0) != self.config.account.hedge_mode:
            raise VenueError(10001, "position idx not match position mode")

    async def _query_api(self, p: dict[str, Any]) -> web.Response:
        """The key's own permissions (what the preflight checks)."""
        account = self.config.account
        wallet = ["AccountTransfer", "SubMemberTransfer"] + (["Withdraw"] if account.can_withdraw else [])
        return self._reply({
            "id": "1", "note": "emulator", "apiKey": "", "readOnly": 1 if account.read_only else 0, "secret": "",
            "permissions": {"ContractTrade": [] if account.read_only else ["Order", "Position"],
                            "Spot": [], "Wallet": wallet, "Options": [], "Derivatives": [], "CopyTrading": [],
                            "BlockTrade": [], "Exchange": [], "NFT": []},
            "ips": ["*"], "type": 1, "unified": 0, "uta": 1})

    async def _positions(self, p: dict[str, Any]) -> web.Response:
        if p.get("category") == "inverse":                 # ccxt's first watch_positions asks: none here
            return self._reply({"category": "inverse", "list": [], "nextPageCursor": ""})
        if p.get("category") != "linear" or not (p.get("symbol") or p.get("settleCoin")):
            raise VenueError(10001, "params error: symbol or settleCoin is required")
        if p.get("symbol") and not [v for v in await self.adapter.fetch_positions() if v.symbol == p["symbol"]]:
            # A symbol asked for by name is listed even when flat, in the account's position mode.
            self.instrument(p["symbol"])
            flat = [{"positionIdx": idx, "symbol": p["symbol"], "side": "", "size": "0", "avgPrice": "0",
                     "stopLoss": "0", "markPrice": num(self.engine.price(p["symbol"]))}
                    for idx in ((1, 2) if self.config.account.hedge_mode else (0,))]
            return self._reply({"category": "linear", "list": flat, "nextPageCursor": ""})
        rows = []
        for pos in await self.adapter.fetch_positions():
            if p.get("symbol") and pos.symbol != p["symbol"]:
                continue
            px = self.engine.price(pos.symbol)
            rows.append({
                "positionIdx": 0, "symbol": pos.symbol, "side": "Buy" if pos.side is Side.BUY else "Sell",
                "size": num(pos.qty), "avgPrice": num(pos.entry_price), "markPrice": num(px),
                "positionValue": num(pos.qty * pos.entry_price), "leverage": "10", "tradeMode": 0,
                "positionStatus": "Normal", "autoAddMargin": 0, "tpslMode": "Full", "riskId": 1,
                "stopLoss": num(pos.stop_price) or "0", "takeProfit": num(pos.take_profit) or "0",
                "trailingStop": num(pos.trail) or "0",
                "unrealisedPnl": "0", "cumRealisedPnl": "0", "liqPrice": "", "bustPrice": "",
                "positionIM": "0", "positionMM": "0", "createdTime": "0", "updatedTime": "0", "seq": 0})
        return self._reply({"category": "linear", "list": rows, "nextPageCursor": ""})

    @staticmethod
    def _order_json(o: OrderReport) -> dict[str, Any]:
        status = {OrderStatus.NEW: "New", OrderStatus.PARTIALLY_FILLED: "PartiallyFilled",
                  OrderStatus.FILLED: "Filled", OrderStatus.CANCELLED: "Cancelled",
                  OrderStatus.REJECTED: "Rejected"}[o.status]
        by_stop = o.client_order_id.startswith(("stop-", "trail-"))   # the engine's own stop-loss execution
        by_tp = o.client_order_id.startswith("tp-")        # its take-profit's
        by_liq = o.client_order_id.startswith("liq-")      # the liquidation engine's
        by_adl = o.client_order_id.startswith("adl-")      # auto-deleveraging
        create = ("CreateByStopLoss" if by_stop else "CreateByTakeProfit" if by_tp else "CreateByLiq" if by_liq
                  else "CreateByAdl_PassThrough" if by_adl else "CreateByUser")
        by_stop = by_stop or by_tp                         # a venue-placed closing order either way
        return {
            "orderId": o.venue_order_id, "orderLinkId": "" if by_stop or by_liq or by_adl else o.client_order_id,
            "symbol": o.symbol, "side": "Buy" if o.side is Side.BUY else "Sell", "orderType": "Market",
            "price": "0", "qty": num(o.qty), "cumExecQty": num(o.filled_qty),
            "leavesQty": num(max(o.qty - o.filled_qty, 0.0) if not o.status.is_final else 0.0),
            "avgPrice": num(o.avg_price), "cumExecValue": num(o.filled_qty * (o.avg_price or 0.0)),
            "cumExecFee": "0", "orderStatus": status, "timeInForce": "IOC", "positionIdx": 0,
            "reduceOnly": o.reduce_only, "closeOnTrigger": by_stop,
            "stopOrderType": "TakeProfit" if by_tp else "StopLoss" if by_stop else "",
            "createType": create,
            "stopLoss": num(o.stop_price), "takeProfit": num(o.take_profit), "triggerPrice": "",
            "slTriggerBy": "LastPrice" if o.stop_price else "", "tpslMode": "Full" if o.stop_price else "",
            "rejectReason": "EC_NoError",
            "createdTime": str(order_time(o)), "updatedTime": str(order_time(o)), "isLeverage": "",
            "orderIv": "", "lastPriceOnCreated": "", "cancelType": "UNKNOWN", "triggerDirection": 0}
