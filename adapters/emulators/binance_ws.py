"""Binance USDⓈ-M user data stream of the Binance emulator, on the same aiohttp app and port as its REST.

REST, with the API-key header only (no signature), as on fapi: `POST/PUT/DELETE /fapi/v1/listenKey`.
POST returns the account's live key (extended) or a new one; PUT extends it or answers -1125 when
it is gone. A key lives `key_ttl_s` (60 min on the venue) from its last POST/PUT.

WS: `/private/ws?listenKey=K` (what ccxt.pro 4.5.90 dials for a base URL ending in `/ws`), and the
documented `/private/ws/K` and `/ws/K`. A dial with a dead key is refused (HTTP 400, -1125; an
emulator choice, the venue's answer is not documented). WS ping frames are answered with pongs.

Pushes, driven by the engine (the emulator's `on_engine_event` decides their order):
- ORDER_TRADE_UPDATE: an order as the REST emulator shows it, NEW and then, when it filled, TRADE
  (the execution rides in the same event, as on the venue); the engine's stop-loss execution is
  a MARKET order with origType STOP_MARKET, a liquidation a LIQUIDATION order named autoclose-;
- ACCOUNT_UPDATE: a position's signed amount and entry price (0 when flat) when they change
  (Binance positions carry no stop, so a stop change alone pushes nothing);
- ALGO_UPDATE: a conditional (algo) order placed, cancelled, or triggered and finished (a close-all
  stop outlives its position: nothing expires it);
- listenKeyExpired, by the `expire_listen_key` fault (the key is dead from then on; the socket
  stays open and silent, as on the venue).

Fault switches (see adapters/emulators/ws.py) plus, here: `reject_auth` makes listenKey calls
answer -2015; `expire_listen_key` (`silent`: the key dies without the event); `key_delay_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets as _secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from adapters.base import OrderReport, PositionReport, Side
from adapters.emulators.ws import Conn, StreamServer
from adapters.sim.engine import EngineEvent
from adapters.sim.stops import StopOrder

if TYPE_CHECKING:
    from adapters.emulators.binance import BinanceEmulator

USER = "user"
# Algo order ids live apart from plain order ids (as on the venue, where the two sequences are
# unrelated): ccxt caches both kinds of order by id, so a collision would overwrite one with the other.
ALGO_ID_BASE = 10**9


def algo_id(order: StopOrder) -> int:
    return ALGO_ID_BASE + order.seq


def _num(value: float | None) -> str:
    return "0" if value is None else format(value, ".10g")


@dataclass(eq=False)
class ListenKey:
    key: str
    api_key: str
    expires_ms: int
    valid: bool = True


class BinanceStreams(StreamServer):
    emulator: BinanceEmulator

    def __init__(self, emulator: BinanceEmulator, key_ttl_s: float = 3600.0) -> None:
        super().__init__(emulator)
        self.key_ttl_ms = int(key_ttl_s * 1000)
        self.keys: dict[str, ListenKey] = {}
        self.reject_keys = False
        self.key_delay_s = 0.0
        self.refused = 0                                      # WS dials refused (dead listen key)
        self._trade_seq = 0
        self._positions: dict[str, tuple[float, float]] = {}  # last pushed (signed amount, entry) per symbol

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/fapi/v1/listenKey", self._post_key)
        app.router.add_put("/fapi/v1/listenKey", self._put_key)
        app.router.add_delete("/fapi/v1/listenKey", self._delete_key)
        app.router.add_get("/private/ws", self._serve)
        app.router.add_get("/private/ws/{listen_key}", self._serve)
        app.router.add_get("/ws/{listen_key}", self._serve)

    async def set_reject_auth(self, on: bool) -> None:
        self.reject_keys = on

    # -- listen keys -------------------------------------------------------------------------

    @staticmethod
    def _error(code: int, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _api_key(self, request: web.Request) -> str | None:
        key = request.headers.get("X-MBX-APIKEY", "")
        return key if key in self.emulator.secrets and not self.reject_keys else None

    def _active(self, api_key: str) -> ListenKey | None:
        """The account's live key; one that outlived its validity dies here."""
        for k in self.keys.values():
            if k.api_key == api_key and k.valid:
                if k.expires_ms > self.emulator.now_ms():
                    return k
                k.valid = False
        return None

    def live_key(self) -> str | None:
        """The live listen key (tests)."""
        for k in self.keys.values():
            if k.valid and k.expires_ms > self.emulator.now_ms():
                return k.key
        return None

    async def _post_key(self, request: web.Request) -> web.Response:
        self.log.append(("rest", {"method": "POST", "path": request.path}))
        if self.key_delay_s:
            await asyncio.sleep(self.key_delay_s)
        api_key = self._api_key(request)
        if api_key is None:
            return self._error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        k = self._active(api_key)                   # a live key is returned again, extended
        if k is None:
            k = ListenKey(_secrets.token_urlsafe(48)[:64], api_key, 0)
            self.keys[k.key] = k
        k.expires_ms = self.emulator.now_ms() + self.key_ttl_ms
        return web.json_response({"listenKey": k.key})

    async def _put_key(self, request: web.Request) -> web.Response:
        self.log.append(("rest", {"method": "PUT", "path": request.path}))
        api_key = self._api_key(request)
        if api_key is None:
            return self._error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        k = self._active(api_key)
        if k is None:
            return self._error(-1125, "This listenKey does not exist.")
        k.expires_ms = self.emulator.now_ms() + self.key_ttl_ms
        return web.json_response({"listenKey": k.key})

    async def _delete_key(self, request: web.Request) -> web.Response:
        self.log.append(("rest", {"method": "DELETE", "path": request.path}))
        api_key = self._api_key(request)
        if api_key is None:
            return self._error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        k = self._active(api_key)
        if k is not None:
            k.valid = False
        return web.json_response({})

    async def expire_listen_key(self, silent: bool = False) -> int:
        """Every live key dies; its connections get listenKeyExpired (unless `silent`) and then
        nothing more, but stay open. Returns how many connections were told (keys, when silent)."""
        told = 0
        for k in [k for k in self.keys.values() if k.valid]:
            k.valid = False
            if silent:
                told += 1
                continue
            for conn in [c for c in self.conns if c.listen_key == k.key]:
                await self.send(conn, {"e": "listenKeyExpired", "E": str(self.emulator.now_ms()),
                                       "listenKey": k.key})
                told += 1
        return told

    # -- connections -------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        listen_key = request.match_info.get("listen_key") or request.query.get("listenKey", "")
        self.log.append(("ws", {"path": request.path}))
        k = self.keys.get(listen_key)
        if k is None or not k.valid or k.expires_ms <= self.emulator.now_ms():
            self.refused += 1
            return self._error(-1125, "This listenKey does not exist.")
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = Conn(ws, request, USER, api_key=k.api_key, listen_key=listen_key)
        self.conns.append(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    self.log.append((USER, {"frame": "ping"}))
                    if not self.stalled:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self.log.append((USER, {"text": msg.data}))
                    if not self.stalled:
                        with contextlib.suppress(ValueError, AttributeError):
                            await self.send(conn, {"result": None, "id": json.loads(msg.data).get("id")})
        finally:
            self.conns.remove(conn)
        return ws

    def _live(self, conn: Conn) -> bool:
        k = self.keys.get(conn.listen_key)
        return k is not None and k.valid

    def _push(self, event: dict[str, Any]) -> None:
        async def deliver() -> None:
            for conn in [c for c in self.conns if self._live(c)]:
                await self.send(conn, event)
        self.push_later(deliver)

    # -- pushes --------------------------------------------------------------------------------

    def on_event(self, event: EngineEvent) -> None:
        if event.order is not None:
            self.push_order(event.order)
        else:
            self.push_position(event.symbol, event.position)

    def push_order(self, o: OrderReport, stop_price: float | None = None) -> None:
        """NEW, then TRADE when it filled (the execution rides in the same event)."""
        if not self.conns:
            return
        r = self.emulator._order_json(o)
        now = self.emulator.now_ms()
        base = {
            "s": r["symbol"], "c": r["clientOrderId"], "S": r["side"], "o": r["type"], "f": "GTC",
            "q": r["origQty"], "p": "0", "ap": "0", "sp": _num(stop_price), "x": "NEW", "X": "NEW",
            "i": r["orderId"], "l": "0", "z": "0", "L": "0", "N": "USDT", "n": "0", "T": now, "t": 0, "b": "0",
            "a": "0", "m": False, "R": r["reduceOnly"], "wt": "CONTRACT_PRICE", "ot": r["origType"], "ps": "BOTH",
            "cp": r["closePosition"], "rp": "0", "pP": False, "si": 0, "ss": 0, "V": "NONE", "pm": "NONE",
            "gtd": 0}
        self._push({"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": base})
        if o.filled_qty > 0:
            self._trade_seq += 1
            fee = o.filled_qty * (o.avg_price or 0.0) * 0.0005
            trade = {**base, "x": "TRADE", "X": r["status"], "ap": r["avgPrice"], "l": r["executedQty"],
                     "z": r["executedQty"], "L": r["avgPrice"], "n": _num(fee), "t": self._trade_seq}
            self._push({"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": trade})

    def push_position(self, symbol: str, pos: PositionReport | None) -> None:
        signed = 0.0 if pos is None else pos.qty if pos.side is Side.BUY else -pos.qty
        entry = 0.0 if pos is None else pos.entry_price
        if self._positions.get(symbol) == (signed, entry):
            return                                  # a stop change: Binance positions carry none
        self._positions[symbol] = (signed, entry)
        if not self.conns:
            return
        now = self.emulator.now_ms()
        row = {"s": symbol, "pa": _num(signed), "ep": _num(entry), "bep": _num(entry), "cr": "0", "up": "0",
               "mt": "cross", "iw": "0", "ps": "BOTH"}
        self._push({"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {
            "m": "ORDER", "B": [{"a": "USDT", "wb": "10000", "cw": "10000", "bc": "0"}], "P": [row]}})

    def push_algo(self, a: StopOrder, status: str, order: OrderReport | None = None) -> None:
        """ALGO_UPDATE with `status` (NEW, CANCELED, TRIGGERED, FINISHED); `order`: the order a
        triggered one placed (ai/ap/aq)."""
        if not self.conns:
            return
        now = self.emulator.now_ms()
        ai = order.venue_order_id.removeprefix("sim-") if order is not None else ""
        self._push({"e": "ALGO_UPDATE", "T": now, "E": now, "o": {
            "caid": a.client_id, "aid": algo_id(a), "at": "CONDITIONAL", "o": "STOP_MARKET", "s": a.symbol,
            "S": a.side.value.upper(), "ps": "BOTH", "f": "GTC", "q": "0", "X": status, "ai": ai,
            "ap": _num(order.avg_price if order is not None else 0.0),
            "aq": _num(order.filled_qty if order is not None else 0.0), "act": "MARKET" if ai else "0",
            "tp": _num(a.trigger), "p": "0", "V": "EXPIRE_MAKER", "wt": "CONTRACT_PRICE", "pm": "NONE",
            "cp": True, "pP": False, "R": True, "tt": now if ai else 0, "gtd": 0, "rm": ""}})
