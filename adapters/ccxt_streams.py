"""The venues' private streams through ccxt.pro (4.5.90): Bybit v5 and Binance USDⓈ-M behind
`VenueStream` (adapters/streams.py).

Built from the same `CcxtVenueSettings` as the REST adapters and run in the same process (the
only one that holds keys). The streams go to `settings.ws_url`, else to `settings.api_url`'s host
and port (ws:// for http://, wss:// for https://) at each venue's own stream paths, else to the
real venue (testnet / demo respected). Raw ccxt dicts never leave this module: rows are turned
into the stream items by the REST adapters' own parsing (`_report`, `_position`, `_stop_orders`,
`_closed_by`), so a stream and a REST read of the same order say the same thing.

How ccxt.pro behaves, and why the code below is shaped as it is (measured, see the wsproto report
and ../shared/notes/bybit-ccxt.md):
- One long-lived task per watch (orders, executions, positions) keeps a watch pending at all
  times; ccxt's cache hands over every row that arrived meanwhile with the next resolution.
  These tasks are never cancelled while the client lives: cancelling a watch that is
  authenticating breaks the client for good. `open()` waits on events the tasks set, never on a
  watch itself; on any failure the whole client is thrown away (`close()`, a new exchange
  object at the next `open()`).
- A stall is found by ccxt's own ping/pong keep-alive (`options['ws']['keepAlive']`, from the
  constructor): the pending watches fail between 2x and 3x that after the last pong.
- Bybit answers a refused auth in the live v5 shape, which ccxt raises as a plain ExchangeError;
  the auth reply is seen here (a hook on the client's message handler), so the failure is
  classified by its context. `watch_positions` is told not to fetch a REST snapshot first
  (`fetchPositionsSnapshot = False`), so it subscribes at once.
- Binance: ccxt ignores `listenKeyExpired` and never renews the listen key more than once (a
  ccxt bug), so this module watches for the event itself and runs its own keep-alive PUT;
  -1125 means the key is gone. ccxt's own keep-alive timer is pushed out of the way and
  cancelled at `close()`, which also clears the key so no late timer reopens a session.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from loguru import logger

from adapters.base import PositionReport
from adapters.binance import BinanceAdapter
from adapters.bybit import BybitAdapter
from adapters.ccxt_base import CcxtAdapter, _json_in, _rebase
from adapters.streams import (
    StreamAuthFailed,
    StreamDown,
    StreamFill,
    StreamItem,
    StreamOrder,
    StreamPosition,
    StreamStopOrder,
    VenueStream,
)
from adapters.venue_settings import CcxtVenueSettings, MissingKey

DEFAULT_KEEP_ALIVE_S = 5.0           # a stall is found within 2-3x this (~15 s)
LISTEN_KEY_KEEPALIVE_S = 25 * 60.0   # Binance: a key dies 60 min after its last POST/PUT
_LISTEN_KEY = re.compile(r"(listenKey[=/:\"' ]+)[A-Za-z0-9_\-]{8,}")

Watch = Callable[[], Awaitable[list[dict[str, Any]]]]
Normalise = Callable[[dict[str, Any]], list[StreamItem]]


def stream_base(settings: CcxtVenueSettings) -> str | None:
    """The streams' base URL: `ws_url`, else `api_url` with ws(s)://, else None (the venue's own)."""
    if settings.ws_url:
        return settings.ws_url.rstrip("/")
    if settings.api_url:
        parts = urlsplit(settings.api_url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return None


_HOOKED: dict[str, type] = {}


def _hooked(ccxt_pro: Any, name: str) -> type:
    """ccxt.pro's exchange class `name` with three hooks: every message and every connection are
    shown to the stream first, and timers it sets (Binance's listen-key keep-alive) are kept so
    `close()` can cancel them."""
    if name not in _HOOKED:
        base = getattr(ccxt_pro, name)

        class Hooked(base):  # type: ignore[misc, valid-type]
            def handle_message(self, client: Any, message: Any) -> Any:
                hook = getattr(self, "posguard_on_message", None)
                if hook is not None:
                    hook(client, message)
                return super().handle_message(client, message)

            def on_connected(self, client: Any, message: Any = None) -> Any:
                result = super().on_connected(client, message)
                hook = getattr(self, "posguard_on_connected", None)
                if hook is not None:
                    hook(client)
                return result

            def handle_positions(self, client: Any, message: Any) -> Any:
                # ccxt.pro hands a position message to a waiting watch only: one that arrives
                # before the next watch call is dropped (a burst loses all but the first). The
                # stream takes every one here instead.
                result = super().handle_positions(client, message)
                hook = getattr(self, "posguard_on_positions", None)
                if hook is not None:
                    hook(message)
                return result

            def delay(self, timeout: Any, method: Any, *args: Any) -> Any:
                handle = super().delay(timeout, method, *args)
                timers = getattr(self, "posguard_timers", None)
                if timers is not None:
                    timers.append(handle)
                return handle

        Hooked.__name__ = Hooked.__qualname__ = f"Streaming{name}"
        _HOOKED[name] = Hooked
    return _HOOKED[name]


class _Classes:
    """What an adapter's `_client(module, ...)` reads from `ccxt.pro`: the hooked classes."""

    def __init__(self, ccxt_pro: Any) -> None:
        self._pro = ccxt_pro

    def __getattr__(self, name: str) -> type:
        return _hooked(self._pro, name)


class CcxtStream(VenueStream):
    """What both venues' streams share. Subclasses say how to configure the client, what to watch,
    and when the stream is ready."""

    parser_cls: type[CcxtAdapter]
    auth_codes: frozenset[int] = frozenset()

    def __init__(self, settings: CcxtVenueSettings, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
                 open_timeout_s: float | None = None, close_timeout_s: float = 5.0,
                 markets: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.name = f"{settings.name} private"
        self.keep_alive_s = keep_alive_s
        if keep_alive_s <= 0:
            raise ValueError("keep_alive_s must be positive: without pings a stalled stream is never found")
        self.open_timeout_s = open_timeout_s if open_timeout_s is not None else max(10.0, 2 * settings.timeout_s)
        self.close_timeout_s = close_timeout_s
        self.ex: Any = None
        # The REST adapter of the same venue, never started: its parsing and its scrubbing.
        self._parser = self.parser_cls(settings)
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[list[StreamItem] | StreamDown] = asyncio.Queue()
        self._failure: StreamDown | None = None
        self._ready = asyncio.Event()
        self._failed = asyncio.Event()
        self._open = False
        self._auth_refused = False
        self._markets: dict[str, Any] | None = markets     # the REST adapter's, when it has them

    # -- the venue ---------------------------------------------------------------------------

    def _configure(self, ex: Any, base: str | None) -> None:
        """Stream URLs, options and hooks of a new client."""

    def _watches(self, ex: Any) -> list[tuple[str, Watch, Normalise]]:
        return []

    def _extra_tasks(self) -> list[Callable[[], Awaitable[None]]]:
        return []

    def _before_close(self, ex: Any) -> None:
        return None

    # -- VenueStream ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self.close()
        self._queue, self._failure = asyncio.Queue(), None
        self._ready, self._failed = asyncio.Event(), asyncio.Event()
        self._auth_refused = False
        self._reset()
        try:
            self._parser.load_credentials()
        except MissingKey as exc:
            raise StreamAuthFailed(f"{self.name}: {exc}") from None
        assert self._parser._keys is not None
        key, secret = self._parser._keys
        import ccxt.pro  # here, not at import: only the exchange process needs it

        ex = self._parser._client(_Classes(ccxt.pro), key, secret)
        ex.posguard_timers = []
        ex.options["adjustForTimeDifference"] = False     # no clock read: stream auth is signed locally
        if self.settings.api_url:
            ex.urls["api"] = {k: _rebase(url, self.settings.api_url) for k, url in ex.urls["api"].items()}
        ex.options["ws"] = {**(ex.options.get("ws") or {}), "keepAlive": int(self.keep_alive_s * 1000)}
        self._configure(ex, stream_base(self.settings))
        self.ex = self._parser.ex = ex
        self._open = True
        try:
            await asyncio.wait_for(self._start(ex), self.open_timeout_s)
            return
        except TimeoutError:
            failure = self._failure or StreamDown(
                f"{self.name}: not connected, authenticated and subscribed within {self.open_timeout_s:g} s")
        except StreamDown as exc:
            failure = exc
        except asyncio.CancelledError:                # our caller gave up: let the client go with it
            await self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - loading markets (a REST call) failed
            failure = self._classify(exc)
        await self.close()
        raise failure

    async def _start(self, ex: Any) -> None:
        if self._markets is not None:
            ex.set_markets(self._markets)
        else:
            await ex.load_markets()
            self._markets = ex.markets
        self._tasks = [asyncio.create_task(self._pump(what, watch, normalise), name=f"{self.name} {what}")
                       for what, watch, normalise in self._watches(ex)]
        self._tasks += [asyncio.create_task(run(), name=f"{self.name} keep-alive") for run in self._extra_tasks()]
        ready = asyncio.create_task(self._ready.wait())
        failed = asyncio.create_task(self._failed.wait())
        try:
            await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            failed.cancel()
        if self._failure is not None:
            raise self._failure

    async def next(self) -> list[StreamItem]:
        if not self._open:
            raise self._failure or StreamDown(f"{self.name} is not open")
        if self._queue.empty() and self._failure is not None:
            raise self._failure
        first = await self._queue.get()
        if isinstance(first, StreamDown):
            raise first
        items = list(first)
        while not self._queue.empty():
            more = self._queue.get_nowait()
            if isinstance(more, StreamDown):          # raised by the next call (self._failure)
                break
            items.extend(more)
        return items

    async def close(self) -> None:
        was_open, self._open = self._open, False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.close_timeout_s)
        ex, self.ex = self.ex, None
        self._parser.ex = None
        if was_open:
            self._queue.put_nowait(StreamDown(f"{self.name} closed"))   # wakes a reader, if any
        if ex is None:
            return
        self._before_close(ex)
        for timer in ex.posguard_timers:
            timer.cancel()
        ex.posguard_on_message = ex.posguard_on_connected = ex.posguard_on_positions = None
        try:
            await asyncio.wait_for(ex.close(), self.close_timeout_s)
        except Exception as exc:  # noqa: BLE001 - closing must never fail the caller
            logger.warning("{}: closing the client: {}", self.name, self._scrub(f"{type(exc).__name__}: {exc}"))

    # -- the watches ---------------------------------------------------------------------------

    def _reset(self) -> None:
        """Per-connection state of a subclass."""

    async def _pump(self, what: str, watch: Watch, normalise: Normalise) -> None:
        try:
            while True:
                rows = await watch()
                items: list[StreamItem] = []
                for row in rows:
                    try:
                        items.extend(normalise(row))
                    except Exception as exc:  # noqa: BLE001 - one row we cannot read is not a dead stream
                        logger.error("{}: a {} row was not understood and is skipped: {}", self.name, what,
                                     self._scrub(f"{type(exc).__name__}: {exc}"))
                if items:
                    self._queue.put_nowait(items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of a watch ends the stream
            self._fail(self._classify(exc))

    def _fail(self, failure: StreamDown) -> None:
        if self._failure is None:
            self._failure = failure
            self._queue.put_nowait(failure)
            self._failed.set()

    def _classify(self, exc: BaseException) -> StreamDown:
        import ccxt

        text = self._scrub(f"{type(exc).__name__}: {exc}")
        body = _json_in(text)
        code = (body or {}).get(self._parser.code_key)
        refused = (self._auth_refused or str(code) in {str(c) for c in self.auth_codes}
                   or isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended))
        if refused:
            return StreamAuthFailed(f"{self.name}: credentials refused ({text})")
        if isinstance(exc, ccxt.NetworkError):
            return StreamDown(f"{self.name}: connection lost ({text})")
        return StreamDown(f"{self.name}: {text}")

    def _scrub(self, text: str) -> str:
        return _LISTEN_KEY.sub(r"\1***", self._parser._scrub(text))

    # -- rows -> items ---------------------------------------------------------------------------

    def _venue_id(self, row: dict[str, Any], key: str) -> str:
        info = row.get("info") or {}
        return str(info.get(key) or self.ex.market(row["symbol"])["id"])

    stop_on_position = True          # a position push carries its stop (Bybit); Binance's carry none
    position_key = "symbol"          # where a raw position row names its market

    def _position_item(self, row: dict[str, Any], key: str) -> list[StreamItem]:
        position: PositionReport | None = self._parser._position(row)
        return [StreamPosition(self._venue_id(row, key), position, self.stop_on_position)]

    def _raw_positions(self, ex: Any, message: dict[str, Any]) -> list[dict[str, Any]]:
        """A position message's rows, parsed by ccxt as its own handler parses them."""
        return []

    def _on_positions(self, message: Any) -> None:
        ex = self.ex
        if ex is None or not isinstance(message, dict):
            return
        items: list[StreamItem] = []
        for row in self._raw_positions(ex, message):
            try:
                items.extend(self._position_item(row, self.position_key))
            except Exception as exc:  # noqa: BLE001 - one row we cannot read is not a dead stream
                logger.error("{}: a position row was not understood and is skipped: {}", self.name,
                             self._scrub(f"{type(exc).__name__}: {exc}"))
        if items:
            self._queue.put_nowait(items)

    @staticmethod
    def _fill(symbol: str, client_order_id: Any, row: dict[str, Any]) -> StreamFill:
        return StreamFill(symbol=symbol, client_order_id=str(client_order_id or ""),
                          venue_order_id=str(row.get("order") or ""), qty=float(row.get("amount") or 0.0),
                          price=float(row.get("price") or 0.0))

    def _order_item(self, symbol: str, row: dict[str, Any], closed_by: str) -> StreamOrder:
        return StreamOrder(self._parser._report(symbol, row, ""), closed_by=closed_by)


class BybitStream(CcxtStream):
    """Bybit v5 `/v5/private`: topics order, execution, position."""

    parser_cls = BybitAdapter
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
                    for s in self._parser._stop_orders([row])]
        return [self._order_item(self._venue_id(row, "symbol"), row, self._parser._closed_by(row))]

    def _execution(self, row: dict[str, Any]) -> list[StreamItem]:
        info = row.get("info") or {}
        return [self._fill(self._venue_id(row, "symbol"), info.get("orderLinkId"), row)]


# ALGO_UPDATE's status of an algo order that stopped working, as StreamStopOrder.ended says it.
BINANCE_ALGO_ENDED = {"CANCELED": "cancelled", "TRIGGERING": "triggered", "TRIGGERED": "triggered",
                      "FINISHED": "triggered", "EXPIRED": "expired", "REJECTED": "expired"}


class BinanceStream(CcxtStream):
    """Binance USDⓈ-M user data stream: ORDER_TRADE_UPDATE, ALGO_UPDATE, ACCOUNT_UPDATE, through
    a listen key this stream keeps alive itself."""

    parser_cls = BinanceAdapter
    auth_codes = frozenset({-2014, -2015, -1022, -1125})
    stop_on_position = False
    position_key = "s"

    def __init__(self, settings: CcxtVenueSettings, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
                 open_timeout_s: float | None = None, close_timeout_s: float = 5.0,
                 listen_key_keepalive_s: float = LISTEN_KEY_KEEPALIVE_S, markets: dict[str, Any] | None = None) -> None:
        super().__init__(settings, keep_alive_s, open_timeout_s, close_timeout_s, markets)
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
                    for s in self._parser._stop_orders([view])]
        view = {**row, "info": {**info, "origType": info.get("ot"), "type": info.get("o")}}
        return [self._order_item(self._venue_id(row, "s"), row, self._parser._closed_by(view))]

    def _execution(self, row: dict[str, Any]) -> list[StreamItem]:
        info = row.get("info") or {}
        return [self._fill(self._venue_id(row, "s"), info.get("c"), row)]


__all__ = ["BinanceStream", "BybitStream", "CcxtStream", "stream_base"]
