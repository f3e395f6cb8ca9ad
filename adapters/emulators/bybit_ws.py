"""Bybit v5 WebSocket endpoints of the Bybit emulator, on the same aiohttp app and port as its REST.

Paths as on stream.bybit.com: `/v5/private` (topics `order`, `execution`, `position`),
`/v5/public/linear` (ping/pong and subscriptions only), `/v5/trade` (`order.create` through the
same path as REST create). What ccxt.pro 4.5.90 sends and parses was measured against this code's
prototype: auth is `{"op":"auth","args":[key, expires, sign]}` with
sign = HMAC-SHA256(secret, "GET/realtime" + expires), checked against the emulator's keys and its
(possibly skewed) clock; `expires` must lie in the server's future.

Every engine event is pushed: an order as an `order` row (and an `execution` row when it filled;
the engine's own stop-loss and liquidation orders carry no orderLinkId and Bybit's createType /
stopOrderType), a position change as a `position` row (size 0 and side "" when flat, the
position's stopLoss otherwise).

Fault switches (see adapters/emulators/ws.py) plus, here: `reject_auth` answers auth with the live
v5 failure shape `{"success":false,"ret_msg":..,"op":"auth","conn_id":..}` (no `request` echo),
which ccxt turns into a plain ExchangeError; `auth_style = "legacy"` answers with the echo
instead; `close_after_auth_failure`, `auth_delay_s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from adapters.base import OrderReport, PositionReport, Side, VenueError, VenueTimeout
from adapters.emulators.ws import Conn, StreamServer
from adapters.sim.engine import EngineEvent

if TYPE_CHECKING:
    from adapters.emulators.bybit import BybitEmulator

PRIVATE, PUBLIC, TRADE = "private", "public", "trade"
FEE_RATE = 0.00055


def _num(value: float | None) -> str:
    return "" if value is None else format(value, ".10g")


class BybitStreams(StreamServer):
    emulator: BybitEmulator

    def __init__(self, emulator: BybitEmulator) -> None:
        super().__init__(emulator)
        self.reject_auth = False
        self.auth_style = "v5"                   # "v5": the live venue's shape; "legacy": with `request`
        self.close_after_auth_failure = False
        self.auth_delay_s = 0.0
        self._stops: dict[str, float | None] = {}   # the last stop each position carried

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v5/private", self._private)
        app.router.add_get("/v5/public/linear", self._public)
        app.router.add_get("/v5/trade", self._trade)

    async def set_reject_auth(self, on: bool) -> None:
        self.reject_auth = on

    # -- connections -------------------------------------------------------------------------

    async def _private(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, PRIVATE)

    async def _public(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, PUBLIC)

    async def _trade(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, TRADE)

    async def _serve(self, request: web.Request, kind: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)           # we answer (or, stalled, ignore) pings
        await ws.prepare(request)
        conn = Conn(ws, request, kind)
        self.conns.append(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    self.log.append((kind, {"frame": "ping"}))
                    if not self.stalled:
                        await ws.pong(msg.data)
        finally:
            self.conns.remove(conn)
        return ws

    async def _on_text(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            msg = {"raw": text}
        if not isinstance(msg, dict):
            msg = {"raw": msg}
        self.log.append((conn.kind, msg))
        if self.stalled:
            return
        op = msg.get("op")
        if op == "ping":
            await self.send(conn, self._pong(conn, msg))
        elif op == "auth":
            await self._auth(conn, msg)
        elif op in ("subscribe", "unsubscribe") and conn.kind != TRADE:
            await self._subscribe(conn, msg, op)
        elif op in ("order.create", "order.amend", "order.cancel") and conn.kind == TRADE:
            await self._order(conn, msg, op)
        else:
            await self.send(conn, {"success": False, "ret_msg": f"error:invalid op:{op}",
                                   "conn_id": conn.conn_id, "req_id": msg.get("req_id"), "op": op})

    def _pong(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        now = str(self.emulator.now_ms())
        if conn.kind == PRIVATE:
            return {"req_id": msg.get("req_id"), "op": "pong", "args": [now], "conn_id": conn.conn_id}
        if conn.kind == TRADE:
            return {"reqId": msg.get("req_id"), "retCode": 0, "retMsg": "OK", "op": "pong", "data": [now],
                    "connId": conn.conn_id}
        return {"success": True, "ret_msg": "pong", "conn_id": conn.conn_id, "req_id": msg.get("req_id"),
                "op": "ping"}

    # -- auth ----------------------------------------------------------------------------------

    def _check_auth(self, args: Any) -> str | None:
        """The error text, or None when the args authenticate a known key."""
        if self.reject_auth:
            return "Invalid sign"
        if not isinstance(args, list) or len(args) != 3:
            return "Params Error"
        key, expires, sign = (str(a) for a in args)
        secret = self.emulator.secrets.get(key)
        if secret is None:
            return "API key is invalid."
        if not expires.isdigit() or int(expires) <= self.emulator.now_ms():
            return "Params Error"                               # expired request
        expected = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        return None if hmac.compare_digest(expected, sign) else "Invalid sign"

    async def _auth(self, conn: Conn, msg: dict[str, Any]) -> None:
        if self.auth_delay_s:
            await asyncio.sleep(self.auth_delay_s)
        args = msg.get("args")
        error = self._check_auth(args)
        if error is None:
            conn.api_key = str(args[0])                         # type: ignore[index]
            if conn.kind == TRADE:
                reply: dict[str, Any] = {"retCode": 0, "retMsg": "OK", "op": "auth", "connId": conn.conn_id}
            else:
                reply = {"success": True, "ret_msg": "", "op": "auth", "conn_id": conn.conn_id}
        elif conn.kind == TRADE:
            reply = {"retCode": 10004, "retMsg": error, "op": "auth", "connId": conn.conn_id}
        elif self.auth_style == "legacy":
            reply = {"success": False, "ret_msg": error, "conn_id": conn.conn_id,
                     "request": {"op": "auth", "args": args}}
        else:
            reply = {"success": False, "ret_msg": error, "op": "auth", "conn_id": conn.conn_id}
        if "req_id" in msg:
            reply["req_id"] = msg["req_id"]
        await self.send(conn, reply)
        if error is not None and self.close_after_auth_failure:
            await conn.ws.close()

    async def _subscribe(self, conn: Conn, msg: dict[str, Any], op: str) -> None:
        topics = [str(t) for t in msg.get("args") or []]
        reply: dict[str, Any] = {"success": True, "ret_msg": "", "conn_id": conn.conn_id,
                                 "req_id": msg.get("req_id"), "op": op}
        if conn.kind == PRIVATE and conn.api_key is None:
            reply.update(success=False, ret_msg="Request not authorized")
        elif op == "subscribe":
            conn.topics.update(topics)
        else:
            conn.topics.difference_update(topics)
        await self.send(conn, reply)

    # -- /v5/trade -----------------------------------------------------------------------------

    async def _order(self, conn: Conn, msg: dict[str, Any], op: str) -> None:
        em = self.emulator
        now = em.now_ms()
        reply: dict[str, Any] = {"reqId": msg.get("reqId"), "retCode": 0, "retMsg": "OK", "op": op, "data": {},
                                 "header": {"X-Bapi-Limit": "10", "X-Bapi-Limit-Status": "9",
                                            "X-Bapi-Limit-Reset-Timestamp": str(now), "Traceid": uuid.uuid4().hex,
                                            "Timenow": str(now)},
                                 "connId": conn.conn_id}
        header = msg.get("header") or {}
        ts, recv = str(header.get("X-BAPI-TIMESTAMP", "")), str(header.get("X-BAPI-RECV-WINDOW", "5000"))
        args = (msg.get("args") or [{}])[0]
        em.requests.append(("WS", "/v5/trade", dict(args) if isinstance(args, dict) else {"args": args}))
        try:
            if conn.api_key is None:
                raise VenueError(10003, "Request not authorized")
            if not ts.isdigit() or not recv.isdigit() or not (now - int(recv) <= int(ts) < now + 1000):
                raise VenueError(10002, "invalid request, please check your server timestamp or recv_window param")
            if op != "order.create":
                raise VenueError(10001, f"{op} is not emulated")
            try:                                                # the REST create, its checks and faults
                body = json.loads((await em._create(dict(args))).body)
            except (ValueError, KeyError, TypeError) as exc:
                raise em.bad_params(f"{type(exc).__name__}: {exc}") from None
            reply["data"] = body["result"]
        except VenueError as exc:
            reply.update(retCode=exc.code, retMsg=exc.message)
        except VenueTimeout:
            return                                              # no reply from the engine: none on the wire
        await self.send(conn, reply)

    # -- pushes --------------------------------------------------------------------------------

    def on_event(self, event: EngineEvent) -> None:
        if event.stop_order is not None:                        # Bybit keeps stops on the position
            return
        if event.order is None:                                 # a position change
            pos = event.position
            self._stops[event.symbol] = pos.stop_price if pos is not None else None
            if self.conns:
                self._push("position", [self.position_row(event.symbol, pos)])
            return
        if not self.conns:
            return
        order = event.order
        trigger = self._stops.get(event.symbol) if event.closed_by == "stop" else None
        self._push("order", [self.order_row(order, event.closed_by, trigger)])
        if order.filled_qty > 0:
            self._push("execution", [self.execution_row(order, event.closed_by)])

    def _push(self, topic: str, data: list[dict[str, Any]]) -> None:
        message = {"id": uuid.uuid4().hex, "topic": topic, "creationTime": self.emulator.now_ms(), "data": data}

        async def deliver() -> None:
            for conn in [c for c in self.conns if c.kind == PRIVATE and c.api_key and topic in c.topics]:
                await self.send(conn, message)
        self.push_later(deliver)

    def order_row(self, o: OrderReport, closed_by: str, trigger: float | None) -> dict[str, Any]:
        """One `order` row: the REST emulator's order (the same ids and createType) plus the
        stream's own fields; a stop-loss execution carries the stop it fired at as triggerPrice."""
        row = {**self.emulator._order_json(o), "category": "linear", "blockTradeId": "", "leavesValue": "0",
               "closedPnl": "0", "feeCurrency": "", "tpTriggerBy": "", "tpLimitPrice": "", "slLimitPrice": "",
               "triggerBy": "", "placeType": "", "smpType": "None", "smpGroup": 0, "smpOrderId": "",
               "marketUnit": ""}
        if closed_by == "stop" and trigger is not None:
            row.update(triggerPrice=_num(trigger), triggerBy="LastPrice",
                       triggerDirection=2 if o.side is Side.SELL else 1)
        return row

    def execution_row(self, o: OrderReport, closed_by: str) -> dict[str, Any]:
        value = o.filled_qty * (o.avg_price or 0.0)
        row = self.emulator._order_json(o)
        return {
            "category": "linear", "symbol": o.symbol, "isLeverage": "", "orderId": o.venue_order_id,
            "orderLinkId": row["orderLinkId"], "side": row["side"], "orderPrice": _num(o.avg_price),
            "orderQty": _num(o.qty), "leavesQty": "0", "createType": row["createType"], "orderType": "Market",
            "stopOrderType": row["stopOrderType"] or "UNKNOWN", "execFee": _num(value * FEE_RATE),
            "execId": str(uuid.uuid4()), "execPrice": _num(o.avg_price), "execQty": _num(o.filled_qty),
            "execPnl": "0", "execType": {"liquidation": "BustTrade", "adl": "AdlTrade"}.get(closed_by, "Trade"),
            "execValue": _num(value), "execTime": str(self.emulator.now_ms()), "isMaker": False,
            "feeRate": _num(FEE_RATE), "tradeIv": "", "markIv": "", "markPrice": _num(o.avg_price),
            "indexPrice": "", "underlyingPrice": "", "blockTradeId": "", "closedSize": "0",
            "seq": int(time.time() * 1000)}

    def position_row(self, symbol: str, pos: PositionReport | None) -> dict[str, Any]:
        """One-way mode (positionIdx 0); flat: size 0, side "" (ccxt: side None)."""
        now = str(self.emulator.now_ms())
        size, entry = (pos.qty, pos.entry_price) if pos is not None else (0.0, 0.0)
        side = "" if pos is None else "Buy" if pos.side is Side.BUY else "Sell"
        stop = pos.stop_price if pos is not None else None
        return {
            "category": "linear", "symbol": symbol, "side": side, "size": _num(size), "positionIdx": 0,
            "tradeMode": 0, "positionValue": _num(size * entry), "riskId": 1, "riskLimitValue": "2000000",
            "entryPrice": _num(entry), "markPrice": _num(self.emulator.engine.price(symbol)), "leverage": "10",
            "positionBalance": "0", "autoAddMargin": 0, "positionIM": "0", "positionMM": "0", "liqPrice": "",
            "bustPrice": "", "tpslMode": "Full", "takeProfit": "0", "stopLoss": _num(stop) if stop else "0",
            "trailingStop": "0", "unrealisedPnl": "0", "curRealisedPnl": "0", "cumRealisedPnl": "0",
            "sessionAvgPrice": "", "createdTime": now, "updatedTime": now, "positionStatus": "Normal",
            "adlRankIndicator": 2 if size else 0, "isReduceOnly": False, "mmrSysUpdatedTime": "",
            "leverageSysUpdatedTime": "", "seq": int(time.time() * 1000)}
