"""Bybit v5, linear USDT perpetuals, through ccxt's async client.

What our safety relies on (the retCode table: adapters/errors.py):
- the entry carries its stop (`stopLoss`, last price trigger, Full mode, one-way positionIdx 0);
- a stop is set directly on the position with /v5/position/trading-stop -- it acts on the
  matching engine, so it works while the position is still invisible to position reads;
- orders are queried by orderLinkId (our client order id), never by a position read.
"""

from __future__ import annotations

from typing import Any

from adapters.base import (
    ClosureReport,
    ExitKind,
    OrderReport,
    OrderRequest,
    OrderStatus,
    PositionReport,
    Preflight,
    Side,
    StopOrderReport,
    VenueError,
)
from adapters.bybit.stream import BybitStream
from adapters.ccxt.adapter import PREFLIGHT_SYMBOLS, CcxtAdapter
from adapters.ccxt.settings import unified_symbol

# posguard's bounds for Bybit's trailing distance, in % of the price (Bybit takes a distance; these
# keep it a trail, not a second stop far away nor one that triggers on noise), as Binance's.
TRAIL_BOUNDS_PCT = (0.1, 10.0)


class BybitAdapter(CcxtAdapter):
    dialect = "bybit"
    stream_class = BybitStream
    take_profit = True
    trail_bounds_pct = TRAIL_BOUNDS_PCT

    def make_client(self, ccxt_async: Any, key: str, secret: str) -> Any:
        s = self.settings
        ex = ccxt_async.bybit({
            "apiKey": key, "secret": secret,
            "enableRateLimit": False,                   # the ExchangeActor paces to the account's limits
            "timeout": int(s.timeout_s * 1000),
            "options": {
                "defaultType": "swap", "defaultSubType": "linear", "defaultSettle": "USDT",
                "fetchMarkets": {"types": ["linear"]},  # else spot, inverse and options load too
                "enableUnifiedAccount": True, "enableUnifiedMargin": False,  # else two account calls
                "adjustForTimeDifference": True,        # load_markets learns the venue's clock
                "recvWindow": s.recv_window_ms,
            }})
        ex.has["fetchCurrencies"] = False               # else /v5/asset/coin/query-info at load
        if s.testnet:
            ex.set_sandbox_mode(True)
        if s.demo:
            ex.enable_demo_trading(True)
        return ex

    async def create_order(self, request: OrderRequest) -> OrderReport:
        sym = unified_symbol(request.symbol)
        qty = self._amount(request.symbol, request.qty, request.reduce_only, request.stop_price)
        params: dict[str, Any] = {"clientOrderId": request.client_order_id, "positionIdx": 0}
        stop: float | None = None
        if request.reduce_only:
            params["reduceOnly"] = True
        if request.stop_price is not None:
            stop = float(self._price(request.symbol, request.stop_price))
            params.update(stopLoss=self._price(request.symbol, request.stop_price), slTriggerBy="LastPrice",
                          tpslMode="Full")
        tp = float(self._price(request.symbol, request.take_profit)) if request.take_profit is not None else None
        if tp is not None:                               # beside the stop, on the whole position too
            params.update(takeProfit=self._price(request.symbol, tp), tpTriggerBy="LastPrice", tpslMode="Full")
        order = await self._call(self.ex.create_order, sym, "market", request.side.value, qty, None, params)
        # v5 acknowledges with ids only; the fill is learnt by querying the orderLinkId.
        return OrderReport(
            symbol=request.symbol, client_order_id=request.client_order_id, venue_order_id=str(order.get("id") or ""),
            side=request.side, qty=qty, status=OrderStatus.NEW, reduce_only=request.reduce_only, stop_price=stop,
            fill_known=False, take_profit=tp)

    async def set_stop(self, symbol: str, stop_price: float, position_side: Side | None = None) -> float:
        market = self._market(symbol)
        price = self._price(symbol, stop_price)
        await self._call(self.ex.private_post_v5_position_trading_stop, {
            "category": "linear", "symbol": market["id"], "stopLoss": price,
            "tpslMode": "Full", "slTriggerBy": "LastPrice", "positionIdx": 0})
        return float(price)

    async def set_exit(self, symbol: str, kind: ExitKind, value: float, position_side: Side, qty: float,
                       reference_price: float | None = None) -> float:
        """trading-stop again, in place, on the whole position (Full mode): `takeProfit`, or
        `trailingStop` -- a price distance, so the % is taken of the reference price -- which
        Bybit holds and trails itself; the stop loss stays as it is (omitted fields are kept)."""
        market = self._market(symbol)
        body: dict[str, Any] = {"category": "linear", "symbol": market["id"], "tpslMode": "Full", "positionIdx": 0}
        if kind is ExitKind.TAKE_PROFIT:
            body.update(takeProfit=self._price(symbol, value), tpTriggerBy="LastPrice")
            held = float(body["takeProfit"])
        else:
            low, high = TRAIL_BOUNDS_PCT
            if not low <= value <= high:
                raise VenueError(10001, f"trailing stop {value:g}% outside [{low:g}, {high:g}]%")
            reference = reference_price or await self.fetch_price(symbol)
            body.update(trailingStop=self._price(symbol, reference * value / 100))
            held = value
        await self._call(self.ex.private_post_v5_position_trading_stop, body)
        return held

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderReport:
        # An id of None would be sent as orderId and win over orderLinkId (-> not found).
        try:
            order = await self._call(self.ex.fetch_order, "", unified_symbol(symbol),
                                     {"acknowledged": True, "orderLinkId": client_order_id})
        except VenueError as exc:
            if exc.code != self.not_found_code:
                raise
            # The realtime query sees only the account's latest 500 orders; after a long
            # downtime an entry may be older than that. Its final state is in the history.
            rows = await self._call(self.ex.fetch_canceled_and_closed_orders, unified_symbol(symbol), None, None,
                                    {"orderLinkId": client_order_id})
            if not rows:
                raise exc from None
            order = rows[0]
        return self.parse_order(symbol, order, client_order_id)

    def _is_stop(self, order: dict[str, Any]) -> bool:
        info = order.get("info") or {}
        kind = str(info.get("stopOrderType") or "")
        if kind in ("StopLoss", "PartialStopLoss"):
            return True
        # A plain conditional order protects when it triggers on the move against the position:
        # a sell on a falling price (triggerDirection 2), a buy on a rising one (1).
        direction = str(info.get("triggerDirection") or "")
        return kind == "Stop" and direction == ("2" if order.get("side") == "sell" else "1")

    def exit_kind(self, order: dict[str, Any]) -> str:
        kind = str((order.get("info") or {}).get("stopOrderType") or "")
        exits = {"TrailingStop": "trailing", "TakeProfit": "take_profit", "PartialTakeProfit": "take_profit"}
        return exits.get(kind, "")

    async def fetch_closures(self, symbol: str) -> list[ClosureReport]:
        rows = await self._call(self.ex.fetch_canceled_and_closed_orders, unified_symbol(symbol), None, 50)
        return self._closures(symbol, rows)

    def closed_by(self, order: dict[str, Any]) -> str:
        info = order.get("info") or {}
        create = str(info.get("createType") or "")
        if create == "CreateByAdl_PassThrough":
            return "adl"
        if create in ("CreateByLiq", "CreateByTakeOver_PassThrough"):
            return "liquidation"
        if create in ("CreateByTakeProfit", "CreateByPartialTakeProfit") or info.get("stopOrderType") == "TakeProfit":
            return "take_profit"
        if create in ("CreateByStopLoss", "CreateByTrailingStop") or info.get("stopOrderType") == "StopLoss":
            return "stop"
        return ""

    async def fetch_stop_orders(self, symbol: str | None = None) -> list[StopOrderReport]:
        rows = await self._call(self.ex.fetch_open_orders, unified_symbol(symbol) if symbol else None, None, None,
                                {"trigger": True, "settleCoin": "USDT"})
        return self.parse_stop_orders(rows)

    async def preflight(self, symbols: tuple[str, ...]) -> Preflight:
        problems, warnings = self._trading(symbols)
        hedged = []
        for symbol in symbols[:PREFLIGHT_SYMBOLS]:       # the mode is per symbol on Bybit: ask each (bounded)
            if symbol in self.ex.markets_by_id or unified_symbol(symbol) in self.ex.markets:
                reply = await self._call(self.ex.private_get_v5_position_list,
                                         {"category": "linear", "symbol": self._market(symbol)["id"]})
                rows = ((reply or {}).get("result") or {}).get("list") or []
                if any(str(r.get("positionIdx", "0")) != "0" for r in rows):
                    hedged.append(symbol)
        if hedged:
            problems.append(f"the bybit account is in hedge mode for {', '.join(hedged)}: posguard needs one-way"
                            " mode (Derivatives > Position mode > One-way, or POST /v5/position/switch-mode mode=0)")
        key = ((await self._call(self.ex.private_get_v5_user_query_api)) or {}).get("result") or {}
        permissions = key.get("permissions") or {}
        can_trade = "Order" in (permissions.get("ContractTrade") or []) or \
            "DerivativesTrade" in (permissions.get("Derivatives") or [])
        if str(key.get("readOnly", "0")) == "1" or not can_trade:
            problems.append("the bybit API key cannot trade contracts: give it Contract (Order and Position)"
                            " permission, read-write")
        if "Withdraw" in (permissions.get("Wallet") or []):
            warnings.append("the bybit API key may withdraw funds: posguard never needs that; use a key without it")
        return Preflight(tuple(problems), tuple(warnings))

    async def fetch_positions(self) -> list[PositionReport]:
        rows = await self._call(self.ex.fetch_positions, None, {"settleCoin": "USDT"})
        return [p for p in (self.parse_position(r) for r in rows) if p is not None]
