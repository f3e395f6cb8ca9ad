"""Binance USDⓈ-M perpetuals through ccxt's async client (`binanceusdm`).

Binance cannot attach a stop to a market entry, so the PositionActor uses its separate-stop
path: entry, then a STOP_MARKET `closePosition` order set directly (no position lookup). Since
December 2025 conditional orders live on the algo-order endpoint (/fapi/v1/algoOrder); ccxt
4.5.90 routes a swap order with `triggerPrice` there by itself, and reaches open algo orders
only with `params={"trigger": True}`. Position reads carry no stop, so the scan learns a
position's stop from those open stop orders (`fetch_stop_orders`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

from adapters.base import (
    ClosureReport,
    ExitKind,
    OrderReport,
    OrderRequest,
    PositionReport,
    Preflight,
    Side,
    StopOrderReport,
    VenueError,
)
from adapters.binance.stream import BinanceStream
from adapters.ccxt.adapter import CcxtAdapter
from adapters.ccxt.settings import unified_symbol
from adapters.stops import EXIT_ID_PREFIX, STOP_ID_PREFIX, exit_client_id, stop_client_id

DUPLICATE_ID = -4116


CANCEL_TRIES = 3                     # cancels of the stops a new one replaced, before the scan is left to it


TRAIL_BOUNDS_PCT = (0.1, 10.0)        # TRAILING_STOP_MARKET's callbackRate bounds
ALGO_TYPE = {ExitKind.TAKE_PROFIT: "TAKE_PROFIT_MARKET", ExitKind.TRAILING: "TRAILING_STOP_MARKET"}


class BinanceAdapter(CcxtAdapter):
    dialect = "binance"
    stream_class = BinanceStream
    take_profit = True
    trail_bounds_pct = TRAIL_BOUNDS_PCT
    trail_sized = True
    code_key = "code"
    message_key = "msg"
    not_found_code = -2013
    rate_limit_code = -1003
    clock_code = -1021

    def _attached_stop(self) -> bool:
        return False

    def make_client(self, ccxt_async: Any, key: str, secret: str) -> Any:
        s = self.settings
        ex = ccxt_async.binanceusdm({
            "apiKey": key, "secret": secret, "enableRateLimit": False, "timeout": int(s.timeout_s * 1000),
            "options": {"adjustForTimeDifference": True, "recvWindow": s.recv_window_ms,
                        "fetchCurrencies": False,                   # else the spot host at load
                        "warnOnFetchOpenOrdersWithoutSymbol": False,
                        "defaultType": "future"}})
        if s.testnet:
            ex.set_sandbox_mode(True)
        if s.demo:
            ex.enable_demo_trading(True)
        return ex

    async def start(self) -> None:
        await super().start()
        # ccxt picks its futures error table by the real host's URL; at any other base URL
        # (api_url) merge it in. We classify on the venue's code anyway.
        linear = (self.ex.exceptions or {}).get("linear") or {}
        for kind in ("exact", "broad"):
            self.ex.exceptions.setdefault(kind, {}).update(linear.get(kind, {}))

    async def create_order(self, request: OrderRequest) -> OrderReport:
        sym = unified_symbol(request.symbol)
        if request.stop_price is not None:
            raise VenueError(-1102, "binance cannot attach a stop loss to a market order")
        qty = self._amount(request.symbol, request.qty, request.reduce_only, None)
        params: dict[str, Any] = {"clientOrderId": request.client_order_id, "newOrderRespType": "RESULT"}
        if request.reduce_only:
            params["reduceOnly"] = True
        order = await self._call(self.ex.create_order, sym, "market", request.side.value, qty, None, params)
        return self.parse_order(request.symbol, order, request.client_order_id)

    async def set_stop(self, symbol: str, stop_price: float, position_side: Side | None = None) -> float:
        if position_side is None:
            raise VenueError(-1102, "binance needs the position's side to place its closing stop")
        market = self._market(symbol)
        price = self._price(symbol, stop_price)
        cid = stop_client_id(symbol, position_side, price)
        try:
            await self._call(self.ex.create_order, market["symbol"], "STOP_MARKET", position_side.opposite.value,
                             None, None, {"triggerPrice": price, "closePosition": True, "clientOrderId": cid,
                                          "workingType": "CONTRACT_PRICE"})
        except VenueError as exc:
            if exc.code != DUPLICATE_ID:
                raise
            # That exact stop is already open: what we wanted.
        await self._cancel_replaced(symbol, position_side, cid, STOP_ID_PREFIX)
        return float(price)

    def _is_stop(self, order: dict[str, Any]) -> bool:
        info = order.get("info") or {}
        return str(info.get("orderType") or info.get("type") or "").upper() in ("STOP_MARKET", "STOP")

    def exit_kind(self, order: dict[str, Any]) -> str:
        info = order.get("info") or {}
        kind = str(info.get("orderType") or info.get("type") or "").upper()
        return {"TAKE_PROFIT_MARKET": "take_profit", "TAKE_PROFIT": "take_profit",
                "TRAILING_STOP_MARKET": "trailing"}.get(kind, "")

    async def set_exit(self, symbol: str, kind: ExitKind, value: float, position_side: Side, qty: float,
                       reference_price: float | None = None) -> float:
        """A TAKE_PROFIT_MARKET closePosition algo order, or a reduce-only TRAILING_STOP_MARKET of
        the open quantity (Binance's trail cannot close all); the new one first, then the ones of
        ours of its kind it replaces (never before: a trail is replaced with the stop under it)."""
        market = self._market(symbol)
        params: dict[str, Any] = {"workingType": "CONTRACT_PRICE"}
        if kind is ExitKind.TAKE_PROFIT:
            price = self._price(symbol, value)
            cid = exit_client_id(symbol, position_side, str(kind), price)
            params.update(triggerPrice=price, closePosition=True, clientOrderId=cid)
            amount, held = None, float(price)
        else:
            low, high = TRAIL_BOUNDS_PCT
            if not low <= value <= high:
                raise VenueError(-1102, f"callbackRate {value:g} outside [{low:g}, {high:g}]")
            amount = self._amount(symbol, qty, True, None)
            cid = exit_client_id(symbol, position_side, str(kind), format(value, ".10g"), format(amount, ".10g"))
            params.update(callbackRate=format(value, ".10g"), reduceOnly=True, clientOrderId=cid)
            held = value
        try:
            await self._call(self.ex.create_order, market["symbol"], ALGO_TYPE[kind], position_side.opposite.value,
                             amount, None, params)
        except VenueError as exc:
            if exc.code != DUPLICATE_ID:
                raise
        await self._cancel_replaced(symbol, position_side, cid, EXIT_ID_PREFIX[kind])
        return held

    async def _cancel_replaced(self, symbol: str, position_side: Side, keep: str, prefix: str) -> None:
        """After the new stop (or exit) stands, remove the ones of ours it replaces (never before:
        never naked). One someone else placed is theirs to keep."""
        for attempt in range(CANCEL_TRIES):
            try:
                for stop in await self.fetch_stop_orders(symbol):
                    if (stop.client_order_id != keep and stop.client_order_id.startswith(prefix)
                            and stop.side is position_side.opposite):
                        await self.cancel_stop_order(symbol, stop)
                return
            except VenueError as exc:
                if attempt + 1 == CANCEL_TRIES:
                    logger.warning("{}: replaced stop orders not cancelled yet ({}); the scan will see them",
                                   symbol, exc)
                else:
                    await asyncio.sleep(0.2 * (attempt + 1))   # a replaced stop left working triggers first

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderReport:
        order = await self._call(self.ex.fetch_order, None, unified_symbol(symbol),
                                 {"origClientOrderId": client_order_id})
        return self.parse_order(symbol, order, client_order_id)

    async def fetch_closures(self, symbol: str) -> list[ClosureReport]:
        rows = await self._call(self.ex.fetch_closed_orders, unified_symbol(symbol), None, 50)
        return self._closures(symbol, rows)

    def closed_by(self, order: dict[str, Any]) -> str:
        info = order.get("info") or {}
        cid = str(order.get("clientOrderId") or "")
        if cid.startswith("adl_autoclose"):                  # Binance names its own closing orders
            return "adl"
        if cid.startswith("autoclose-") or info.get("type") == "LIQUIDATION":
            return "liquidation"
        if str(info.get("origType")) in ("TAKE_PROFIT_MARKET", "TAKE_PROFIT"):
            return "take_profit"
        return "stop" if str(info.get("origType")) in ("STOP_MARKET", "STOP", "TRAILING_STOP_MARKET") else ""

    async def preflight(self, symbols: tuple[str, ...]) -> Preflight:
        problems, warnings = self._trading(symbols)
        mode = await self._call(self.ex.fetch_position_mode)
        if (mode or {}).get("hedged"):
            problems.append("the binance account is in hedge mode (dualSidePosition): posguard needs one-way mode"
                            " (Futures > Preferences > Position Mode > One-way, or POST /fapi/v1/positionSide/dual"
                            " dualSidePosition=false)")
        return Preflight(tuple(problems), tuple(warnings))

    async def fetch_positions(self) -> list[PositionReport]:
        rows = await self._call(self.ex.fetch_positions)
        return [p for p in (self.parse_position(r) for r in rows) if p is not None]

    async def fetch_stop_orders(self, symbol: str | None = None) -> list[StopOrderReport]:
        rows = await self._call(self.ex.fetch_open_orders, unified_symbol(symbol) if symbol else None, None, None,
                                {"trigger": True})
        return self.parse_stop_orders(rows)
