"""What the venue emulators share: the simulated venue behind an HTTP surface on 127.0.0.1,
published trading rules, a request log, and the test rig's side door.

Each dialect (Bybit v5, Binance USDⓈ-M) says how requests are authenticated, how parameters
arrive, and how an error or a lost reply looks on the wire. Behind every dialect sits the same
`SimulatedAdapter` over `SimEngine`: REST position lag, stops, reduce-only, stop triggers,
duplicate client ids, recv window, rate limit and injected faults mean the same everywhere.

`/emulator/*` is the side door (truth, faults, and what happens to the account outside posguard:
`/emulator/outside` with `{"action": "order" | "liquidate" | "deleverage" | "clear_stop" |
"move_stop" | "trigger_stop", "symbol": ..., ...}`, see adapters/sim/outside.py); it needs no
signature and exists only because the server binds to loopback alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from adapters.base import OrderReport, OrderRequest, Side, VenueError, VenueTimeout
from adapters.emulators.account import EmulatorAccount
from adapters.emulators.ws import StreamServer
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineEvent
from adapters.sim.faults import Fault, FaultKind
from adapters.sim.outside import outside
from adapters.sim.wire import LOOPBACK, encode

MIN_NOTIONAL = 5.0                   # USDT, like both venues' linear perpetuals

Handler = Callable[[dict[str, Any]], Awaitable[web.Response]]


@dataclass(frozen=True, slots=True)
class Instrument:
    """Trading rules the emulator enforces and publishes."""

    symbol: str
    tick_size: float
    qty_step: float
    min_qty: float
    max_qty: float
    min_notional: float = MIN_NOTIONAL

    @classmethod
    def for_price(cls, symbol: str, price: float) -> Instrument:
        # Roughly the venues': ~6 significant digits of price, a lot worth ~60 USDT or less.
        tick = 10.0 ** (math.floor(math.log10(price)) - 5)
        step = 10.0 ** round(math.log10(60.0 / price))
        return cls(symbol, tick, step, step, step * 1_000_000)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    venue: SimVenueConfig = field(default_factory=SimVenueConfig)
    keys: tuple[tuple[str, str], ...] = ()      # (api key, secret) pairs the server accepts
    clock_offset_s: float = 0.0      # the server's clock minus ours (tests of clock skew)
    hang_s: float = 0.0              # how long a lost reply keeps the connection before the 504
    visibility_lag_s: float = 0.0    # a new order is "not found" by queries this long (Bybit: async)
    realtime_depth: int = 500        # Bybit's realtime query sees only the account's latest N orders
    account: EmulatorAccount = field(default_factory=EmulatorAccount)   # as the preflight asks about it


DROP = object()                      # Mangle.value: remove the key


@dataclass(slots=True)
class Mangle:
    path: str
    key: str
    value: Any
    times: int


def _mangle(body: Any, key: str, value: Any) -> Any:
    if isinstance(body, dict):
        return {k: (value if k == key else _mangle(v, key, value)) for k, v in body.items()
                if not (k == key and value is DROP)}
    if isinstance(body, list):
        return [_mangle(v, key, value) for v in body]
    return body


def num(value: float | None) -> str:
    return "" if value is None else format(value, ".10g")


def order_time(order: OrderReport) -> int:
    """A creation time in ms that orders by sequence (the engine numbers its orders)."""
    return 1_700_000_000_000 + int(order.venue_order_id.rsplit("-", 1)[-1])


class EmulatorBase(ABC):
    stop_orders = False              # the venue keeps stops as orders (Binance), not on the position (Bybit)

    def __init__(self, config: EmulatorConfig, port: int = 0) -> None:
        self.config = config
        self.adapter = SimulatedAdapter(dataclasses.replace(config.venue, stop_orders=self.stop_orders))
        self.engine = self.adapter.engine
        self.instruments = {s: Instrument.for_price(s, p) for s, p in config.venue.engine.prices.items()}
        self.port = port
        self.secrets = dict(config.keys)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.requests: list[tuple[str, str, dict[str, Any]]] = []   # (method, path, params) as received
        self.stream: StreamServer | None = None     # the private streams, attached by `routes()`
        self.mangles: list[Mangle] = []              # replies made malformed on purpose (tests)
        self.engine.listeners.append(self._engine_event)

    # -- the dialect -------------------------------------------------------------------------

    @abstractmethod
    def routes(self, app: web.Application) -> None:
        """Add the venue's endpoints (private ones wrapped by `private`)."""

    @abstractmethod
    def params(self, request: web.Request, raw: str) -> dict[str, Any]:
        """The request's parameters as the venue reads them."""

    @abstractmethod
    def authenticate(self, request: web.Request, raw: str) -> None:
        """Raise VenueError (in this dialect's codes) unless signed with a known key in time."""

    @abstractmethod
    def error(self, exc: VenueError) -> web.Response:
        """A definite error reply."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        app = web.Application()
        self.routes(app)
        app.router.add_post("/emulator/stream", self._stream_fault)
        app.router.add_get("/emulator/truth", self._truth)
        app.router.add_post("/emulator/fault", self._add_fault)
        app.router.add_post("/emulator/open", self._open_by_hand)
        app.router.add_post("/emulator/clear-stop", self._clear_stop)
        app.router.add_post("/emulator/trigger-stop", self._trigger_stop)
        app.router.add_post("/emulator/liquidate", self._liquidate)
        app.router.add_post("/emulator/outside", self._outside)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def now_ms(self) -> int:
        return int((time.time() + self.config.clock_offset_s) * 1000)

    def _engine_event(self, event: EngineEvent) -> None:
        """The engine changed something: the streams hear of it on the server's own loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:                  # a test drove the engine from its own thread
                loop.call_soon_threadsafe(self.on_engine_event, event)
                return
        self.on_engine_event(event)

    def on_engine_event(self, event: EngineEvent) -> None:
        if self.stream is not None:
            self.stream.on_event(event)

    async def stream_fault(self, kind: str, **kw: Any) -> dict[str, Any]:
        """Throw one of the streams' fault switches (adapters/emulators/ws.py)."""
        if self.stream is None:
            raise ValueError("this emulator serves no streams")
        return await self.stream.fault(kind, **kw)

    def private(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def wrapped(request: web.Request) -> web.Response:
            raw = await request.text()
            try:
                params = self.params(request, raw)
                self.requests.append((request.method, request.path, params))
                self.authenticate(request, raw)
                return self._mangled(request.path, await handler(params))
            except VenueError as exc:
                return self.error(exc)
            except VenueTimeout:
                return await self.lost()
            except (ValueError, KeyError, TypeError) as exc:
                return self.error(self.bad_params(f"{type(exc).__name__}: {exc}"))
        return wrapped

    def mangle(self, path: str, key: str, value: Any = DROP, times: int = 1) -> None:
        """The next `times` successful replies on `path` lose `key` (or carry `value` in it),
        wherever it appears: a venue whose reply lacks a field we rely on."""
        self.mangles.append(Mangle(path, key, value, times))

    def _mangled(self, path: str, response: web.Response) -> web.Response:
        due = [m for m in self.mangles if m.path == path and m.times > 0]
        if not due or response.status != 200 or not response.text:
            return response
        body = json.loads(response.text)
        for m in due:
            m.times -= 1
            body = _mangle(body, m.key, m.value)
        return web.json_response(body)

    def bad_params(self, message: str) -> VenueError:
        return VenueError(10001, f"params error: {message}")

    async def lost(self) -> web.Response:
        """No reply from the engine: a gateway's 504 after `hang_s`. Did it execute? Ask by id."""
        if self.config.hang_s:
            await asyncio.sleep(self.config.hang_s)
        return web.Response(status=504, text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
                            content_type="text/html")

    def instrument(self, symbol: Any) -> Instrument:
        instrument = self.instruments.get(str(symbol or ""))
        if instrument is None:
            raise self.bad_params(f"symbol invalid: {symbol}")
        return instrument

    def check_qty(self, ins: Instrument, qty: float, reduce_only: bool) -> None:
        """The venue's own checks (the adapters check first and never send these)."""
        steps = qty / ins.qty_step
        if abs(steps - round(steps)) > 1e-6:
            raise self.bad_params(f"qty {num(qty)} is not a multiple of the step {num(ins.qty_step)}")
        if qty < ins.min_qty - 1e-12:
            raise self.bad_params(f"qty {num(qty)} is below the minimum {num(ins.min_qty)}")
        if not reduce_only and qty * self.engine.price(ins.symbol) < ins.min_notional:
            raise self.min_notional(ins)

    def min_notional(self, ins: Instrument) -> VenueError:
        return VenueError(110094, f"Order does not meet minimum order value {num(ins.min_notional)}USDT")

    # -- the test rig's side door ------------------------------------------------------------

    async def _truth(self, request: web.Request) -> web.Response:
        truth = await self.adapter.true_state()
        return web.json_response({**encode(truth), "requests": len(self.requests)})

    async def _add_fault(self, request: web.Request) -> web.Response:
        f = await request.json()
        self.adapter.faults.add(Fault(**{**f, "kind": FaultKind(f["kind"])}))
        return web.json_response({"ok": True})

    async def _open_by_hand(self, request: web.Request) -> web.Response:
        """A position opened outside posguard (the web UI, another bot): no stop."""
        b = await request.json()
        report = self.engine.create_order(OrderRequest(b["symbol"], Side(b["side"]), float(b["qty"]),
                                                       b.get("client_order_id", f"hand-{time.time_ns()}")), True)
        return web.json_response(encode(report))

    async def _stream_fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            kind = str(body.pop("kind"))
            return web.json_response(await self.stream_fault(kind, **body))
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, status=400)

    async def _clear_stop(self, request: web.Request) -> web.Response:
        self.engine.clear_stop((await request.json())["symbol"])
        return web.json_response({"ok": True})

    async def _trigger_stop(self, request: web.Request) -> web.Response:
        self.engine.trigger_stop_now((await request.json())["symbol"])
        return web.json_response({"ok": True})

    async def _outside(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            outside(self.engine, str(body.pop("action")), **body)
        except (KeyError, ValueError, TypeError, VenueError) as exc:
            return web.json_response({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response({"ok": True})

    async def _liquidate(self, request: web.Request) -> web.Response:
        self.engine.liquidate((await request.json())["symbol"])
        return web.json_response({"ok": True})
