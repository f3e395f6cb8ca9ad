"""Bybit v5's private stream through ccxt.pro: `/v5/private`, topics order, execution, position
(what every ccxt stream shares: adapters/ccxt/stream.py)."""

from __future__ import annotations

from typing import Any

from adapters.ccxt.stream import CcxtStream, Normalise, Watch
from adapters.streams import StreamItem, StreamStopOrder


class BybitStream(CcxtStream):
    """Bybit v5 `/v5/private`: topics order, execution, position."""

    auth_codes = frozenset({10003, 10004, 10005, 33004})
    TOPICS = 3                                       # order, execution, position
    CONDITIONAL = ("Untriggered", "Triggered", "Deactivated")

    def _reset(self) -> None:
        self._acks = 0

    def _configure(self, ex: Any, base: str | None) -> None:
        ex.options["watchPositions"] = {**(ex.options.get("watchPositions") or {}), "fetchPositionsSnapshot": False}
        if base is not None:
            ex.urls["api"]["ws"] = {
                "public": {t: f"{base}/v5/public/{t}" for t in ("spot", "linear", "inverse", "option")},
                "private": {"spot": {"unified": f"{base}/v5/private", "nonUnified": f"{base}/spot/private/v3"},
                            "contract": f"{base}/v5/private", "usdc": f"{base}/trade/option/usdc/private/v1",
                            "trade": f"{base}/v5/trade"}}
        ex.posguard_on_message = self._on_message
        ex.posguard_on_positions = self._on_positions

    def _on_message(self, client: Any, message: Any) -> None:
        if not isinstance(message, dict):
            return
        op = message.get("op")
        legacy = (message.get("request") or {}).get("op") if isinstance(message.get("request"), dict) else None
        if op == "auth" or legacy == "auth":
            if not (message.get("success") is True or str(message.get("retCode", "")) == "0"):
                self._auth_refused = True
        elif op == "subscribe" and message.get("success") is True:
            self._acks += 1
            if self._acks >= self.TOPICS:
                self._ready.set()

    def _watches(self, ex: Any) -> list[tuple[str, Watch, Normalise]]:
        # positions: the watch keeps the subscription; its rows are taken by the handler hook
        return [("orders", lambda: ex.watch_orders(), self._order),
                ("executions", lambda: ex.watch_my_trades(), self._execution),
                ("positions", lambda: ex.watch_positions(), lambda row: [])]

    def _raw_positions(self, ex: Any, message: dict[str, Any]) -> list[dict[str, Any]]:
        return [ex.parse_position(raw) for raw in message.get("data") or []]

    def _order(self, row: dict[str, Any]) -> list[StreamItem]:
        info = row.get("info") or {}
        if info.get("orderStatus") in self.CONDITIONAL:       # a conditional order not (yet) an execution
            status = info.get("orderStatus")
            ended = {"Triggered": "triggered", "Deactivated": "cancelled"}.get(str(status), "")
            return [StreamStopOrder(s, open=status == "Untriggered", ended=ended)
                    for s in self._parser.parse_stop_orders([row])]
        return [self._order_item(self._venue_id(row, "symbol"), row, self._parser.closed_by(row))]

    def _execution(self, row: dict[str, Any]) -> list[StreamItem]:
        info = row.get("info") or {}
        return [self._fill(self._venue_id(row, "symbol"), info.get("orderLinkId"), row)]
