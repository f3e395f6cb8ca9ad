"""A Binance-USDⓈ-M-compatible HTTP server on 127.0.0.1 (the fapi endpoints posguard uses),
over the same simulated venue as the Bybit emulator (see adapters.emulators.base).

Authenticated like fapi: `X-MBX-APIKEY` header, `timestamp` within `recvWindow` of the server's
clock, HMAC-SHA256 `signature` over the rest of the query string or form body.

Conditional orders live on the algo-order endpoint, as on Binance since December 2025. A
STOP_MARKET `closePosition` algo order is a stop order of the engine (adapters/sim/stops.py):
the position's stop is the working one that would trigger first. When the position goes away,
its close-all stops keep working, as they do on Binance (users of other bots meet them closing
the next position at the old trigger price): only a cancel, or their own trigger, ends them.
Emulator assumptions (documented, not verified against the venue): a close-all stop for a symbol
with no position it would close is refused with -2022 (checked before a duplicate id), and a
stop on the wrong side of the price with -2021.

Engine errors carry Bybit retCodes; they are answered here in Binance's codes.

The user data stream (listen key, ORDER_TRADE_UPDATE, ACCOUNT_UPDATE, ALGO_UPDATE) is served on the
same port: see adapters/emulators/binance_ws.py. Algo ids start above ALGO_ID_BASE; the stop that
fires is FINISHED (after TRIGGERED) as the engine executes it, visible to REST reads from then on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from adapters.base import ExitKind, OrderReport, OrderRequest, OrderStatus, Side, VenueError
from adapters.emulators.base import EmulatorBase, EmulatorConfig, Instrument, num, order_time
from adapters.emulators.binance_ws import BinanceStreams, algo_id
from adapters.sim.engine import ZERO_POSITION, EngineEvent
from adapters.sim.stops import StopBook, StopOrder, StopOrderStatus

# Engine (Bybit) code -> Binance code; 10001 is split by its text below.
_CODES = {110072: -4116, 110017: -2022, 110001: -2013, 10006: -1015, 10002: -1021, 10016: -1007,
          10000: -1007, 110094: -4164, 10003: -2015, 10004: -1022}
_MESSAGES = {-4116: "ClientOrderId is duplicated.", -2022: "ReduceOnly Order is rejected.",
             -2013: "Order does not exist.", -1015: "Too many new orders.", -2021: "Order would immediately trigger.",
             -1007: "Timeout waiting for response from backend server. Send status unknown; execution status"
                    " unknown."}
_STATUS = {OrderStatus.NEW: "NEW", OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED", OrderStatus.FILLED: "FILLED",
           OrderStatus.CANCELLED: "CANCELED", OrderStatus.REJECTED: "REJECTED"}


# An engine stop order's status, as the algo endpoint says it.
ALGO_STATUS = {StopOrderStatus.NEW: "NEW", StopOrderStatus.CANCELLED: "CANCELED", StopOrderStatus.FINISHED: "FINISHED"}
ALGO_KINDS = {"STOP_MARKET": None, "TAKE_PROFIT_MARKET": ExitKind.TAKE_PROFIT,
              "TRAILING_STOP_MARKET": ExitKind.TRAILING}
ORDER_TYPE = {"stop": "STOP_MARKET", "take_profit": "TAKE_PROFIT_MARKET", "trailing": "TRAILING_STOP_MARKET"}
# The engine's own closing orders (by client id prefix), as Binance's history types them.
ORIG_TYPE = {"stop-": "STOP_MARKET", "tp-": "TAKE_PROFIT_MARKET", "trail-": "TRAILING_STOP_MARKET"}


class BinanceEmulator(EmulatorBase):
    stop_orders = True

    def __init__(self, config: EmulatorConfig, port: int = 0) -> None:
        super().__init__(config, port)
        self.stream: BinanceStreams = BinanceStreams(self)

    def routes(self, app: web.Application) -> None:
        self.stream.attach(app)                        # /fapi/v1/listenKey and the user data stream
        app.router.add_get("/fapi/v1/time", self._time)
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/fapi/v1/ticker/24hr", self._ticker)
        app.router.add_get("/fapi/v1/ticker/price", self._ticker)
        app.router.add_post("/fapi/v1/order", self.private(self._new_order))
        app.router.add_get("/fapi/v1/order", self.private(self._query_order))
        app.router.add_get("/fapi/v1/allOrders", self.private(self._all_orders))
        app.router.add_post("/fapi/v1/algoOrder", self.private(self._new_algo))
        app.router.add_get("/fapi/v1/algoOrder", self.private(self._query_algo))
        app.router.add_delete("/fapi/v1/algoOrder", self.private(self._cancel_algo))
        app.router.add_get("/fapi/v1/openAlgoOrders", self.private(self._open_algo))
        app.router.add_get("/fapi/v1/leverageBracket", self.private(self._brackets))
        app.router.add_get("/fapi/v3/positionRisk", self.private(self._position_risk))
        app.router.add_get("/fapi/v1/positionSide/dual", self.private(self._position_mode))

    # -- envelope ------------------------------------------------------------------------

    def error(self, exc: VenueError) -> web.Response:
        code = exc.code
        if code == 503:
            return web.Response(status=503, text="<html>503 Service Unavailable</html>", content_type="text/html")
        if code == 10001:
            text = exc.message.lower()
            code = -2022 if ZERO_POSITION in text else -2021 if "stoploss" in text else -1102
        code = _CODES.get(code, code) if isinstance(code, int) and code > 0 else code
        status = 429 if code in (-1003, -1015) else 408 if code == -1007 else 400
        return web.json_response({"code": code, "msg": _MESSAGES.get(code, exc.message)}, status=status)

    def bad_params(self, message: str) -> VenueError:
        return VenueError(-1102, message)

    def min_notional(self, ins: Instrument) -> VenueError:
        return VenueError(-4164, f"Order's notional must be no smaller than {num(ins.min_notional)}")

    def params(self, request: web.Request, raw: str) -> dict[str, Any]:
        text = raw if request.method == "POST" else request.query_string
        return dict(parse_qsl(text, keep_blank_values=True))

    def authenticate(self, request: web.Request, raw: str) -> None:
        key = request.headers.get("X-MBX-APIKEY", "")
        secret = self.secrets.get(key)
        if secret is None:
            raise VenueError(-2015, "Invalid API-key, IP, or permissions for action.")
        text = raw if request.method == "POST" else request.query_string
        signed, _, signature = text.rpartition("&signature=")
        expected = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(expected, signature):
            raise VenueError(-1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(signed))
        ts, recv = int(params.get("timestamp", "0")), int(params.get("recvWindow", "5000"))
        server_ms = self.now_ms()
        if not (server_ms - recv <= ts < server_ms + 1000):
            raise VenueError(-1021, "Timestamp for this request is outside of the recvWindow.")

    # -- public ----------------------------------------------------------------------------

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.now_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        def symbol(i: Instrument) -> dict[str, Any]:
            base = i.symbol.removesuffix("USDT")
            return {
                "symbol": i.symbol, "pair": i.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000,
                "status": "BREAK" if i.symbol in self.config.account.halted else "TRADING",
                "baseAsset": base, "quoteAsset": "USDT",
                "marginAsset": "USDT", "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
                "quotePrecision": 8, "underlyingType": "COIN", "settlePlan": 0, "triggerProtect": "0.0500",
                "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                               "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": num(i.tick_size), "maxPrice": "4529764",
                     "tickSize": num(i.tick_size)},
                    {"filterType": "LOT_SIZE", "minQty": num(i.min_qty), "maxQty": num(i.max_qty),
                     "stepSize": num(i.qty_step)},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": num(i.min_qty), "maxQty": num(i.max_qty),
                     "stepSize": num(i.qty_step)},
                    {"filterType": "MIN_NOTIONAL", "notional": num(i.min_notional)},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                     "multiplierDecimal": "4"}]}
        return web.json_response({"timezone": "UTC", "serverTime": self.now_ms(), "rateLimits": [],
                                  "exchangeFilters": [], "assets": [],
                                  "symbols": [symbol(i) for i in self.instruments.values()]})

    async def _ticker(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        if symbol not in self.instruments:
            return self.error(VenueError(-1121, "Invalid symbol."))
        px = num(await self.adapter.fetch_price(symbol))
        return web.json_response({"symbol": symbol, "price": px, "lastPrice": px, "openPrice": px, "highPrice": px,
                                  "lowPrice": px, "volume": "0", "quoteVolume": "0", "time": self.now_ms(),
                                  "closeTime": self.now_ms()})

    # -- orders ----------------------------------------------------------------------------

    async def _new_order(self, p: dict[str, Any]) -> web.Response:
        ins = self.instrument(p.get("symbol"))
        if p.get("type") != "MARKET":
            raise VenueError(-1102, "this emulator takes MARKET orders here; stops go to /fapi/v1/algoOrder")
        if (p.get("positionSide", "BOTH") != "BOTH") != self.config.account.hedge_mode:
            raise VenueError(-4061, "Order's position side does not match user's setting.")
        qty = float(p["quantity"])
        reduce_only = p.get("reduceOnly", "false") == "true"
        self.check_qty(ins, qty, reduce_only)
        cid = p.get("newClientOrderId") or f"emu-{self.now_ms()}"
        report = await self.adapter.create_order(OrderRequest(
            symbol=ins.symbol, side=Side(p["side"].lower()), qty=qty, client_order_id=cid, reduce_only=reduce_only))
        return web.json_response(self._order_json(report))

    async def _query_order(self, p: dict[str, Any]) -> web.Response:
        ins = self.instrument(p.get("symbol"))
        cid = p.get("origClientOrderId")
        if not cid:
            raise VenueError(-1102, "origClientOrderId is required by this emulator")
        report = await self.adapter.fetch_order(ins.symbol, cid)
        return web.json_response(self._order_json(report))

    async def _all_orders(self, p: dict[str, Any]) -> web.Response:
        ins = self.instrument(p.get("symbol"))
        truth = await self.adapter.true_state()
        return web.json_response([self._order_json(o) for o in truth.orders if o.symbol == ins.symbol])

    @staticmethod
    def _order_json(o: OrderReport) -> dict[str, Any]:
        orig = next((t for prefix, t in ORIG_TYPE.items() if o.client_order_id.startswith(prefix)), "MARKET")
        by_stop, by_liq = orig != "MARKET", o.client_order_id.startswith("liq-")
        if by_liq:                                           # Binance names these itself
            o = dataclasses.replace(o, client_order_id=f"autoclose-{o.venue_order_id}")
        elif o.client_order_id.startswith("adl-"):
            o = dataclasses.replace(o, client_order_id=f"adl_autoclose-{o.venue_order_id}")
        return {
            "orderId": int(o.venue_order_id.removeprefix("sim-")), "symbol": o.symbol, "status": _STATUS[o.status],
            "clientOrderId": o.client_order_id, "price": "0", "avgPrice": num(o.avg_price or 0.0),
            "origQty": num(o.qty), "executedQty": num(o.filled_qty),
            "cumQuote": num(o.filled_qty * (o.avg_price or 0.0)), "timeInForce": "GTC",
            "type": "LIQUIDATION" if by_liq else "MARKET", "origType": orig,
            "reduceOnly": o.reduce_only, "closePosition": by_stop and orig != "TRAILING_STOP_MARKET",
            "side": o.side.value.upper(), "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "time": order_time(o), "updateTime": order_time(o), "priceMatch": "NONE", "selfTradePreventionMode": "NONE"}

    async def _position_mode(self, p: dict[str, Any]) -> web.Response:
        return web.json_response({"dualSidePosition": self.config.account.hedge_mode})

    # -- algo (conditional) orders ---------------------------------------------------------

    @property
    def book(self) -> StopBook:
        assert self.engine.stop_book is not None
        return self.engine.stop_book

    async def _new_algo(self, p: dict[str, Any]) -> web.Response:
        ins = self.instrument(p.get("symbol"))
        kind = p.get("type")
        if p.get("algoType") != "CONDITIONAL" or kind not in ALGO_KINDS:
            raise VenueError(-1102, f"this emulator takes CONDITIONAL {', '.join(ALGO_KINDS)} algo orders")
        if kind != "TRAILING_STOP_MARKET" and p.get("closePosition") != "true":
            raise VenueError(-1102, "this emulator takes closePosition=true stops and take-profits only")
        side = Side(p["side"].lower())
        cid = p.get("clientAlgoId") or f"emu-algo-{len(self.book.orders) + 1}"
        # no position to close -> -2022; duplicate among working ones -> -4116; wrong side -> -2021; faults
        if kind == "STOP_MARKET":
            report = await self.adapter.place_stop_order(ins.symbol, side, float(p["triggerPrice"]), cid)
        else:
            if kind == "TRAILING_STOP_MARKET" and (p.get("reduceOnly") != "true" or not p.get("quantity")):
                raise VenueError(-1102, "TRAILING_STOP_MARKET needs reduceOnly=true and a quantity here")
            activation = float(p["activatePrice"]) if p.get("activatePrice") else None
            report = await self.adapter.place_exit_order(
                ins.symbol, side, ALGO_KINDS[kind], cid, trigger=float(p["triggerPrice"]) if p.get("triggerPrice")
                else None, qty=float(p["quantity"]) if p.get("quantity") else None,
                callback_pct=float(p["callbackRate"]) if p.get("callbackRate") else None, activation=activation)
        order = self.book.find(report.client_order_id)
        assert order is not None
        return web.json_response(self._algo_json(order))

    def _algo(self, p: dict[str, Any], working: bool) -> StopOrder:
        for a in reversed(self.book.orders):             # the newest of a client id that was reused
            if (working and not a.working) or a.symbol != p.get("symbol", a.symbol):
                continue
            if p.get("clientAlgoId") == a.client_id or p.get("algoId") == str(algo_id(a)):
                return a
        raise VenueError(-2013 if not working else -2011, "Order does not exist." if not working
                         else "Unknown order sent.")

    async def _query_algo(self, p: dict[str, Any]) -> web.Response:
        self.engine.advance()
        return web.json_response(self._algo_json(self._algo(p, working=False)))

    async def _cancel_algo(self, p: dict[str, Any]) -> web.Response:
        self.engine.advance()
        a = self._algo(p, working=True)
        await self.adapter.cancel_stop_order(a.symbol, a.report())
        return web.json_response({"algoId": algo_id(a), "clientAlgoId": a.client_id, "code": "200", "msg": "success"})

    async def _open_algo(self, p: dict[str, Any]) -> web.Response:
        self.engine.advance()
        return web.json_response([self._algo_json(a) for a in self.book.working(p.get("symbol") or None)])

    def on_engine_event(self, event: EngineEvent) -> None:
        """Live, as the engine changes: the stop that fires is TRIGGERED then FINISHED around the
        order it placed (the engine says FINISHED right after that order); stop orders placed or
        cancelled; positions as ACCOUNT_UPDATE."""
        if event.stop_order is not None:
            vid = event.stop_order.venue_order_id
            order = next((o for o in reversed(self.book.orders) if f"sim-{o.seq}" == vid), None)
            if order is not None and event.stop_status != StopOrderStatus.FINISHED:   # FINISHED: said below
                self.stream.push_algo(order, ALGO_STATUS[order.status])
            return
        if event.order is not None:
            fired = self._firing(event)
            if fired is not None:
                self.stream.push_algo(fired, "TRIGGERED", event.order)
            self.stream.push_order(event.order, fired.trigger if fired is not None else None)
            if fired is not None:
                self.stream.push_algo(fired, "FINISHED", event.order)
            return
        self.stream.push_position(event.symbol, event.position)

    def _firing(self, event: EngineEvent) -> StopOrder | None:
        """The stop order whose trigger placed this order (the engine ends it right after)."""
        if event.closed_by not in ("stop", "take_profit") or event.order is None:
            return None
        if event.closed_by == "take_profit" or event.order.client_order_id.startswith("trail-"):
            kind = "take_profit" if event.closed_by == "take_profit" else "trailing"
            return next((o for o in self.book.working(event.symbol) if o.kind == kind
                         and o.side is event.order.side), None)
        return self.book.effective(event.symbol, event.order.side.opposite)   # a SELL closed a long

    @staticmethod
    def _algo_json(a: StopOrder) -> dict[str, Any]:
        trail = a.trail
        return {
            "algoId": algo_id(a), "clientAlgoId": a.client_id, "algoType": "CONDITIONAL",
            "orderType": ORDER_TYPE[a.kind], "symbol": a.symbol, "side": a.side.value.upper(), "positionSide": "BOTH",
            "timeInForce": "GTC", "quantity": num(a.qty) or "0", "algoStatus": ALGO_STATUS[a.status],
            "triggerPrice": num(a.trigger),
            "price": "0", "icebergQuantity": None, "selfTradePreventionMode": "NONE", "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE", "closePosition": a.qty is None, "priceProtect": False, "reduceOnly": True,
            "activatePrice": num(trail.activation) if trail else "",
            "callbackRate": num(trail.pct) if trail else "", "createTime": 1_700_000_000_000 + a.seq,
            "updateTime": 1_700_000_000_000 + a.seq,
            "triggerTime": 0, "goodTillDate": 0}

    # -- positions -------------------------------------------------------------------------

    async def _brackets(self, p: dict[str, Any]) -> web.Response:
        return web.json_response([{"symbol": s, "notionalCoef": 1.0, "brackets": [
            {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004,
             "cum": 0.0}]} for s in self.instruments])

    async def _position_risk(self, p: dict[str, Any]) -> web.Response:
        rows = []
        for pos in await self.adapter.fetch_positions():            # the lagging view; no stop in it
            px = self.engine.price(pos.symbol)
            signed = pos.qty if pos.side is Side.BUY else -pos.qty
            rows.append({
                "symbol": pos.symbol, "positionSide": "BOTH", "positionAmt": num(signed),
                "entryPrice": num(pos.entry_price), "breakEvenPrice": num(pos.entry_price), "markPrice": num(px),
                "unRealizedProfit": "0", "liquidationPrice": "0", "isolatedMargin": "0", "notional": num(signed * px),
                "marginAsset": "USDT", "isolatedWallet": "0", "initialMargin": "0", "maintMargin": "0",
                "positionInitialMargin": "0", "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0",
                "askNotional": "0", "updateTime": self.now_ms()})
        return web.json_response(rows)
