"""Binance USDⓈ-M's user data stream through ccxt.pro, with a listen key it keeps alive itself
(what every ccxt stream shares: adapters/ccxt/stream.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from adapters.ccxt.adapter import CcxtAdapter
from adapters.ccxt.settings import CcxtVenueSettings
from adapters.ccxt.stream import DEFAULT_KEEP_ALIVE_S, CcxtStream, Normalise, Watch
from adapters.streams import StreamAuthFailed, StreamItem, StreamStopOrder

LISTEN_KEY_KEEPALIVE_S = 25 * 60.0   # Binance: a key dies 60 min after its last POST/PUT

# ALGO_UPDATE's status of an algo order that stopped working, as StreamStopOrder.ended says it.
BINANCE_ALGO_ENDED = {"CANCELED": "cancelled", "TRIGGERING": "triggered", "TRIGGERED": "triggered",
                      "FINISHED": "triggered", "EXPIRED": "expired", "REJECTED": "expired"}


class BinanceStream(CcxtStream):
    """Binance USDⓈ-M user data stream: ORDER_TRADE_UPDATE, ALGO_UPDATE, ACCOUNT_UPDATE, through
    a listen key this stream keeps alive itself."""

    auth_codes = frozenset({-2014, -2015, -1022, -1125})
    stop_on_position = False
    position_key = "s"

    def __init__(self, settings: CcxtVenueSettings, parser: CcxtAdapter, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
                 open_timeout_s: float | None = None, close_timeout_s: float = 5.0,
                 listen_key_keepalive_s: float = LISTEN_KEY_KEEPALIVE_S, markets: dict[str, Any] | None = None) -> None:
        super().__init__(settings, parser, keep_alive_s, open_timeout_s, close_timeout_s, markets)
        self.listen_key_keepalive_s = listen_key_keepalive_s

    def _configure(self, ex: Any, base: str | None) -> None:
        ex.options["watchPositions"] = {**(ex.options.get("watchPositions") or {}), "fetchPositionsSnapshot": False}
        # ccxt would renew the key once and then never again: ours does it (see _keep_listen_key).
        ex.options["listenKeyRefreshRate"] = 7 * 24 * 3600 * 1000
        if base is not None:
            ex.urls["api"]["ws"] = {**ex.urls["api"]["ws"], "linear": f"{base}/ws"}   # -> {base}/private/ws?listenKey=
        ex.posguard_on_message = self._on_message
        ex.posguard_on_connected = self._on_connected
        ex.posguard_on_positions = self._on_positions

    def _on_message(self, client: Any, message: Any) -> None:
        if isinstance(message, dict) and message.get("e") == "listenKeyExpired":
            self._expired("the venue says listenKeyExpired")

    def _on_connected(self, client: Any) -> None:
        if "listenKey=" in str(client.url):
            self._ready.set()

    def _expired(self, why: str) -> None:
        if self.ex is not None:
            self._forget_listen_key(self.ex)
        self._fail(StreamAuthFailed(f"{self.name}: listen key expired ({why})"))

    @staticmethod
    def _forget_listen_key(ex: Any) -> None:
        ex.options["linear"] = {**(ex.options.get("linear") or {}), "listenKey": None, "lastAuthenticatedTime": 0}

    def _before_close(self, ex: Any) -> None:
        self._forget_listen_key(ex)                   # a late ccxt keep-alive timer then does nothing

    def _extra_tasks(self) -> list[Callable[[], Awaitable[None]]]:
        return [self._keep_listen_key]

    async def _keep_listen_key(self) -> None:
        """PUT /fapi/v1/listenKey every `listen_key_keepalive_s` (<= 30 min); -1125: the key is gone."""
        while True:
            await asyncio.sleep(self.listen_key_keepalive_s)
            ex = self.ex
            if ex is None:
                return
            try:
                await asyncio.wait_for(ex.fapiPrivatePutListenKey(), self.settings.timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                failure = self._classify(exc)
                if isinstance(failure, StreamAuthFailed):
                    self._expired(f"keep-alive refused: {failure}")
                    return
                logger.warning("{}: listen key keep-alive failed, next try in {:g} s: {}", self.name,
                               self.listen_key_keepalive_s, failure)

    def _watches(self, ex: Any) -> list[tuple[str, Watch, Normalise]]:
        return [("orders", lambda: ex.watch_orders(), self._order),
                ("executions", lambda: ex.watch_my_trades(), self._execution),
                ("positions", lambda: ex.watch_positions(), lambda row: [])]    # rows: the handler hook

    def _raw_positions(self, ex: Any, message: dict[str, Any]) -> list[dict[str, Any]]:
        return [ex.parse_ws_position(raw) for raw in (message.get("a") or {}).get("P") or []]

    def _order(self, row: dict[str, Any]) -> list[StreamItem]:
        info = row.get("info") or {}
        if "aid" in info:                                     # ALGO_UPDATE: a conditional order
            # The REST names the adapter's rules read (`_is_stop`, `_stop_orders`).
            view = {**row, "info": {**info, "symbol": info.get("s"), "orderType": info.get("o"),
                                    "closePosition": info.get("cp")}}
            ended = BINANCE_ALGO_ENDED.get(str(info.get("X") or ""), "")
            return [StreamStopOrder(s, open=row.get("status") == "open" and not ended, ended=ended)
                    for s in self._parser.parse_stop_orders([view])]
        view = {**row, "info": {**info, "origType": info.get("ot"), "type": info.get("o")}}
        return [self._order_item(self._venue_id(row, "s"), row, self._parser.closed_by(view))]

    def _execution(self, row: dict[str, Any]) -> list[StreamItem]:
        info = row.get("info") or {}
        return [self._fill(self._venue_id(row, "s"), info.get("c"), row)]
