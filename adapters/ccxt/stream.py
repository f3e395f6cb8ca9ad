"""What every venue's private stream through ccxt.pro (4.5.90) shares, behind `VenueStream`
(adapters/streams.py); each venue's own stream is beside its adapter (adapters/bybit/stream.py,
adapters/binance/stream.py).

Built from the same `CcxtVenueSettings` as the REST adapters and run in the same process (the
only one that holds keys). The streams go to `settings.ws_url`, else to `settings.api_url`'s host
and port (ws:// for http://, wss:// for https://) at each venue's own stream paths, else to the
real venue (testnet / demo respected). Raw ccxt dicts never leave this module: rows are turned
into the stream items by the REST adapter's own parsing (`parse_order`, `parse_position`,
`parse_stop_orders`, `closed_by`), so a stream and a REST read of the same order say the same thing.

How ccxt.pro behaves, and why the code below is shaped as it is (measured against the
venues' emulators and ccxt's own source):
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
from adapters.ccxt.adapter import CcxtAdapter, json_in, rebase
from adapters.ccxt.settings import CcxtVenueSettings, MissingKey
from adapters.streams import (
    StreamAuthFailed,
    StreamDown,
    StreamFill,
    StreamItem,
    StreamOrder,
    StreamPosition,
    VenueStream,
)

DEFAULT_KEEP_ALIVE_S = 5.0           # a stall is found within 2-3x this (~15 s)
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
    """What an adapter's `make_client(module, ...)` reads from `ccxt.pro`: the hooked classes."""

    def __init__(self, ccxt_pro: Any) -> None:
        self._pro = ccxt_pro

    def __getattr__(self, name: str) -> type:
        return _hooked(self._pro, name)


class CcxtStream(VenueStream):
    """What both venues' streams share. Subclasses say how to configure the client, what to watch,
    and when the stream is ready."""

    auth_codes: frozenset[int] = frozenset()

    def __init__(self, settings: CcxtVenueSettings, parser: CcxtAdapter, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
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
        self._parser = parser
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
        import ccxt.pro  # here, not at import: only the exchange process needs it

        try:
            ex = self._parser.new_client(_Classes(ccxt.pro))
        except MissingKey as exc:
            raise StreamAuthFailed(f"{self.name}: {exc}") from None
        ex.posguard_timers = []
        ex.options["adjustForTimeDifference"] = False     # no clock read: stream auth is signed locally
        if self.settings.api_url:
            ex.urls["api"] = {k: rebase(url, self.settings.api_url) for k, url in ex.urls["api"].items()}
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
            logger.warning("{}: closing the client: {}", self.name, self.scrub(f"{type(exc).__name__}: {exc}"))

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
                                     self.scrub(f"{type(exc).__name__}: {exc}"))
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

        text = self.scrub(f"{type(exc).__name__}: {exc}")
        body = json_in(text)
        code = (body or {}).get(self._parser.code_key)
        refused = (self._auth_refused or str(code) in {str(c) for c in self.auth_codes}
                   or isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended))
        if refused:
            return StreamAuthFailed(f"{self.name}: credentials refused ({text})")
        if isinstance(exc, ccxt.NetworkError):
            return StreamDown(f"{self.name}: connection lost ({text})")
        return StreamDown(f"{self.name}: {text}")

    def scrub(self, text: str) -> str:
        return _LISTEN_KEY.sub(r"\1***", self._parser.scrub(text))

    # -- rows -> items ---------------------------------------------------------------------------

    def _venue_id(self, row: dict[str, Any], key: str) -> str:
        info = row.get("info") or {}
        return str(info.get(key) or self.ex.market(row["symbol"])["id"])

    stop_on_position = True          # a position push carries its stop (Bybit); Binance's carry none
    position_key = "symbol"          # where a raw position row names its market

    def _position_item(self, row: dict[str, Any], key: str) -> list[StreamItem]:
        position: PositionReport | None = self._parser.parse_position(row)
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
                             self.scrub(f"{type(exc).__name__}: {exc}"))
        if items:
            self._queue.put_nowait(items)

    @staticmethod
    def _fill(symbol: str, client_order_id: Any, row: dict[str, Any]) -> StreamFill:
        return StreamFill(symbol=symbol, client_order_id=str(client_order_id or ""),
                          venue_order_id=str(row.get("order") or ""), qty=float(row.get("amount") or 0.0),
                          price=float(row.get("price") or 0.0))

    def _order_item(self, symbol: str, row: dict[str, Any], closed_by: str) -> StreamOrder:
        return StreamOrder(self._parser.parse_order(symbol, row, ""), closed_by=closed_by)
