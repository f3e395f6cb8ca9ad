"""What the emulators' private streams share: connections on the REST app's own port, pushes
driven by the matching engine, and the fault switches a test throws.

Each venue's stream (adapters/emulators/bybit_ws.py, adapters/emulators/binance_ws.py) turns an
`EngineEvent` into its own messages at the moment the engine emits it; the message leaves after
half the venue's `latency_s` (the return trip) plus `delay_s`, in the order the events happened,
to every connection that is subscribed when it leaves. A client that connects later never gets
it, and nothing is replayed after a reconnect -- as on the venues.

Fault switches (`fault(kind, **kw)`, also `POST /emulator/stream` with `{"kind": ..., ...}`):
- `drop` (mode "close": a close frame 1001; "abort": the TCP connection is cut) every connection;
- `stall`: sockets stay open, nothing is answered (no pong, no reply) and nothing is pushed
  (pushes due meanwhile are lost); `resume` ends it;
- `delay` (`seconds`): extra delay on every push from now on;
- `reject_auth` (`on`): refuse credentials (each venue in its own way);
- `expire_listen_key` (Binance, `silent`): the listen key dies.

`log` keeps what clients sent (auth, subscribe, pings, listen-key calls) for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from adapters.sim.engine import EngineEvent

if TYPE_CHECKING:
    from adapters.emulators.base import EmulatorBase

Delivery = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class Conn:
    """One stream connection as the server sees it."""

    ws: web.WebSocketResponse
    request: web.Request
    kind: str                                   # the endpoint ("private", "public", "trade", "user")
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex[:20])
    api_key: str | None = None                  # authenticated as (Bybit) / the key's owner (Binance)
    topics: set[str] = field(default_factory=set)
    listen_key: str = ""


class StreamServer(ABC):
    """The stream side of one emulator; attached to its aiohttp app by the emulator's `routes()`."""

    def __init__(self, emulator: EmulatorBase) -> None:
        self.emulator = emulator
        self.conns: list[Conn] = []
        self.log: list[tuple[str, dict[str, Any]]] = []      # (kind, message) as clients sent them
        self.stalled = False
        self.delay_s = 0.0
        self.suppressed = 0                                   # pushes lost to a stall
        self.pushed = 0                                       # messages sent (all connections)
        self._queue: asyncio.Queue[tuple[float, Delivery]] | None = None
        self._sender: asyncio.Task[None] | None = None

    # -- the dialect ---------------------------------------------------------------------------

    @abstractmethod
    def routes(self, app: web.Application) -> None:
        """The venue's stream endpoints."""

    @abstractmethod
    def on_event(self, event: EngineEvent) -> None:
        """Turn one engine event into pushes (`push_later`)."""

    async def set_reject_auth(self, on: bool) -> None:
        raise ValueError("reject_auth is not emulated on this venue")

    async def expire_listen_key(self, silent: bool = False) -> int:
        raise ValueError("this venue has no listen key")

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self, app: web.Application) -> None:
        self.routes(app)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)

    async def _startup(self, app: web.Application) -> None:
        self._queue = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_loop(), name="emulator-stream-pushes")

    async def _shutdown(self, app: web.Application) -> None:
        # Open websockets would hold the runner's cleanup for its shutdown timeout.
        for conn in list(self.conns):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def _cleanup(self, app: web.Application) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None

    # -- pushes --------------------------------------------------------------------------------

    def push_later(self, delivery: Delivery) -> None:
        """Send (by calling `delivery`) after half the round trip plus the extra delay, after every
        push queued before it. Not started (no app): nothing is sent."""
        if self._queue is None:
            return
        due = asyncio.get_running_loop().time() + self.emulator.config.venue.latency_s / 2 + self.delay_s
        self._queue.put_nowait((due, delivery))

    async def _send_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            due, delivery = await self._queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.stalled:
                self.suppressed += 1
                continue
            try:
                await delivery()
            except Exception as exc:  # noqa: BLE001 - one bad push must not end the stream server
                self.log.append(("push-error", {"error": f"{type(exc).__name__}: {exc}"}))

    async def send(self, conn: Conn, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):     # closing under our feet
            await conn.ws.send_str(json.dumps(message, separators=(",", ":")))
            self.pushed += 1

    # -- faults --------------------------------------------------------------------------------

    async def drop(self, mode: str = "close") -> int:
        """End every connection: "close" sends a close frame (1001), "abort" cuts TCP."""
        if mode not in ("close", "abort"):
            raise ValueError(f"drop mode must be close or abort, not {mode!r}")
        victims = list(self.conns)
        for conn in victims:
            if mode == "abort":
                if conn.request.transport is not None:
                    conn.request.transport.abort()
            else:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"going away")
        return len(victims)

    async def fault(self, kind: str, **kw: Any) -> dict[str, Any]:
        """Throw a fault switch; returns what it did (JSON-able)."""
        if kind == "drop":
            return {"dropped": await self.drop(str(kw.get("mode", "close")))}
        if kind == "stall":
            self.stalled = True
        elif kind == "resume":
            self.stalled = False
        elif kind == "delay":
            self.delay_s = max(0.0, float(kw.get("seconds", 0.0)))
        elif kind == "reject_auth":
            await self.set_reject_auth(bool(kw.get("on", True)))
        elif kind == "expire_listen_key":
            return {"told": await self.expire_listen_key(bool(kw.get("silent", False)))}
        else:
            raise ValueError(f"unknown stream fault {kind!r}")
        return {"ok": True, "connections": len(self.conns)}
