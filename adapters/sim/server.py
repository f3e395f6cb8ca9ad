"""The simulated venue as its own process, so it outlives any crash of ours — like a real one.

`SimVenueServer` serves a SimulatedAdapter over newline-delimited JSON (never pickle: nothing
that arrives on a socket is executed) on a Unix socket in the deployment's private runtime
directory, and answers only processes of its own user (the kernel's peer credentials).
`RemoteSimAdapter` is the VenueAdapter the ExchangeActor uses to reach it; requests are
concurrent (ids), so one slow call never holds up another. A lost reply surfaces as
VenueTimeout, exactly like a real venue's; a line it cannot read is skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import stat
import struct
import uuid
from dataclasses import asdict
from enum import Enum
from typing import Any

from loguru import logger

from adapters.base import (
    Capabilities,
    CloseKind,
    ClosureReport,
    OrderReport,
    OrderRequest,
    OrderStatus,
    PositionReport,
    Side,
    StopOrderReport,
    TruePosition,
    TrueState,
    VenueAdapter,
    VenueError,
    VenueTimeout,
)
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.faults import Fault, FaultKind
from adapters.sim.stream import RemoteSimStream, SimStream, serve_subscription

LOOPBACK = "127.0.0.1"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def encode(obj: Any) -> Any:
    """Dataclasses and enums to JSON-able data."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, list | tuple):
        return [encode(o) for o in obj]
    return _plain(asdict(obj))


def _order_report(d: dict[str, Any]) -> OrderReport:
    return OrderReport(**{**d, "side": Side(d["side"]), "status": OrderStatus(d["status"])})


def _position_report(d: dict[str, Any]) -> PositionReport:
    return PositionReport(**{**d, "side": Side(d["side"]), "stop_prices": tuple(d.get("stop_prices") or ())})


def _stop_order_report(d: dict[str, Any]) -> StopOrderReport:
    return StopOrderReport(**{**d, "side": Side(d["side"])})


def _true_state(d: dict[str, Any]) -> TrueState:
    return TrueState(now=d["now"], prices=d["prices"], positions=tuple(TruePosition(**p) for p in d["positions"]),
                     orders=tuple(_order_report(o) for o in d["orders"]),
                     calls=tuple((op, n) for op, n in d["calls"]))


class SimVenueServer:
    def __init__(self, config: SimVenueConfig, path: str) -> None:
        self.adapter = SimulatedAdapter(config)
        self.path = path
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise OSError(errno.EEXIST, f"{self.path} exists and is not a socket")
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=1 << 20)
        os.chmod(self.path, 0o600)
        return self.path

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self._connections.add(current)
        current.add_done_callback(self._connections.discard)
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()
        stopping = False
        if not _same_user(writer):
            writer.close()
            return
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except ValueError:
                    continue                             # not a request: ignored, the connection lives
                if not isinstance(request, dict):
                    continue
                if request.get("op") == "subscribe":         # this connection becomes the stream
                    await serve_subscription(SimStream(self.adapter.engine, self.adapter.stream_control,
                                                       self.adapter.config.latency_s), writer)
                    return
                task = asyncio.create_task(self._answer(request, writer, lock))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            stopping = True                              # the venue itself is shutting down
        finally:
            # A request the venue received executes even if its client has gone (kill -9):
            # let in-flight work finish; only its reply is lost.
            if tasks and not stopping:
                await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter, lock: asyncio.Lock) -> None:
        rid, op, args = request.get("id"), request.get("op"), request.get("args", {})
        try:
            reply: dict[str, Any] = {"id": rid, "ok": encode(await self._call(op, args))}
        except VenueError as exc:
            reply = {"id": rid, "error": [exc.code, exc.message]}
        except VenueTimeout:
            return                                           # the reply is lost: say nothing
        except Exception as exc:  # noqa: BLE001 - a bad request must not kill the venue
            reply = {"id": rid, "error": [400, f"bad request: {type(exc).__name__}: {exc}"]}
        async with lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()

    async def _call(self, op: str, a: dict[str, Any]) -> Any:
        ad = self.adapter
        match op:
            case "capabilities":
                return ad.capabilities
            case "create_order":
                r = a["request"]
                return await ad.create_order(OrderRequest(**{**r, "side": Side(r["side"])}))
            case "set_stop":
                side = a.get("position_side")
                return await ad.set_stop(a["symbol"], a["stop_price"], Side(side) if side else None)
            case "fetch_stop_orders":
                return await ad.fetch_stop_orders(a.get("symbol"))
            case "cancel_stop_order":
                return await ad.cancel_stop_order(a["symbol"], _stop_order_report(a["order"]))
            case "fetch_order":
                return await ad.fetch_order(a["symbol"], a["client_order_id"])
            case "fetch_price":
                return await ad.fetch_price(a["symbol"])
            case "fetch_positions":
                return await ad.fetch_positions()
            case "fetch_closures":
                return await ad.fetch_closures(a["symbol"])
            case "true_state":
                return await ad.true_state()
            case "stream_fault":
                ad.stream_control.apply(a["kind"], a.get("value"))
                return None
            case "add_fault":
                ad.faults.add(Fault(**{**a["fault"], "kind": FaultKind(a["fault"]["kind"])}))
                return None
            case "outside":
                outside(ad.engine, a["action"], **a.get("args", {}))
                return None
        raise ValueError(f"unknown op {op!r}")


# What someone does to the account outside posguard (tests and benchmarks), by name.
OUTSIDE_ACTIONS = ("order", "liquidate", "deleverage", "clear_stop", "move_stop", "trigger_stop")


def outside(engine: Any, action: str, symbol: str, side: str | None = None, qty: float | None = None,
            reduce_only: bool = False, price: float | None = None, client_order_id: str | None = None) -> None:
    """Play one outside action on the engine: an order by hand (a close, a partial close, an
    increase, a flip), a liquidation or an ADL (all of it or `qty`), a stop cancelled or moved by
    hand, a stop triggered now."""
    match action:
        case "order":
            if side is None or qty is None:
                raise ValueError("an order by hand needs a side and a qty")
            cid = client_order_id or f"hand-{uuid.uuid4().hex[:12]}"
            engine.create_order(OrderRequest(symbol, Side(side), float(qty), cid, reduce_only=reduce_only), True)
        case "liquidate":
            engine.liquidate(symbol, qty)
        case "deleverage":
            engine.deleverage(symbol, qty)
        case "clear_stop":
            engine.clear_stop(symbol)
        case "move_stop":
            if price is None:
                raise ValueError("a stop moved by hand needs a price")
            engine.move_stop(symbol, float(price))
        case "trigger_stop":
            engine.trigger_stop_now(symbol)
        case _:
            raise ValueError(f"unknown outside action {action!r}; one of {', '.join(OUTSIDE_ACTIONS)}")


def _same_user(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return bool(uid == os.geteuid())


class RemoteSimAdapter(VenueAdapter):
    """The simulated venue in another process. `timeout_s` bounds a call whose reply was lost."""

    def __init__(self, path: str, timeout_s: float = 5.0) -> None:
        self.path, self.timeout_s = path, timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()
        caps = await self._call("capabilities")
        self.capabilities = Capabilities(**caps)

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=1 << 24)
        except OSError as exc:
            raise VenueTimeout(f"the simulated venue at {self.path} is unreachable: {exc.strerror or exc}") from None
        self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self._writer is not None:
            self._writer.close()

    async def _listen(self) -> None:
        assert self._reader is not None
        try:
            while line := await self._reader.readline():
                try:
                    reply = json.loads(line)
                    future = self._pending.pop(reply.get("id"), None)
                except (ValueError, AttributeError, TypeError):
                    logger.warning("simulated venue: unreadable reply skipped ({!r})", line[:80])
                    continue                             # one bad line never stops the listener
                if future is not None and not future.done():
                    future.set_result(reply)
        except (ConnectionError, ValueError):
            pass
        finally:
            self._writer = None                          # later calls fail at once, as "not connected"
            for future in self._pending.values():        # the venue went away
                if not future.done():
                    future.set_exception(VenueTimeout("venue connection closed"))

    async def _call(self, op: str, **args: Any) -> Any:
        if self._writer is None:
            await self._connect()                        # the connection dropped: a new one (or VenueTimeout)
        assert self._writer is not None
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._writer.write(json.dumps({"id": rid, "op": op, "args": encode_args(args)}).encode() + b"\n")
        try:
            await self._writer.drain()
            reply = await asyncio.wait_for(future, self.timeout_s)
        except (TimeoutError, ConnectionError) as exc:
            raise VenueTimeout(f"{op}: no reply") from exc
        finally:
            self._pending.pop(rid, None)
        if isinstance(reply.get("error"), list) and len(reply["error"]) == 2:
            code, message = reply["error"]
            raise VenueError(code, str(message))
        if "ok" not in reply:
            raise VenueTimeout(f"{op}: unreadable reply")    # may have executed: the caller asks by id
        return reply["ok"]

    async def create_order(self, request: OrderRequest) -> OrderReport:
        return _order_report(await self._call("create_order", request=request))

    async def set_stop(self, symbol: str, stop_price: float, position_side: Side | None = None) -> float | None:
        await self._call("set_stop", symbol=symbol, stop_price=stop_price, position_side=position_side)
        return None

    async def fetch_stop_orders(self, symbol: str | None = None) -> list[StopOrderReport]:
        return [_stop_order_report(o) for o in await self._call("fetch_stop_orders", symbol=symbol)]

    async def cancel_stop_order(self, symbol: str, order: StopOrderReport) -> None:
        await self._call("cancel_stop_order", symbol=symbol, order=order)

    async def outside(self, action: str, **args: Any) -> None:
        """What someone does to the account outside posguard (tests and benchmarks): see `outside`."""
        await self._call("outside", action=action, args=args)

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderReport:
        return _order_report(await self._call("fetch_order", symbol=symbol, client_order_id=client_order_id))

    async def fetch_price(self, symbol: str) -> float:
        return float(await self._call("fetch_price", symbol=symbol))

    async def fetch_positions(self) -> list[PositionReport]:
        return [_position_report(p) for p in await self._call("fetch_positions")]

    async def fetch_closures(self, symbol: str) -> list[ClosureReport]:
        return [ClosureReport(**{**c, "kind": CloseKind(c["kind"]), "side": Side(c["side"])})
                for c in await self._call("fetch_closures", symbol=symbol)]

    async def true_state(self) -> TrueState:
        return _true_state(await self._call("true_state"))

    async def add_fault(self, fault: Fault) -> None:
        await self._call("add_fault", fault=fault)

    async def stream_fault(self, kind: str, value: Any = None) -> None:
        await self._call("stream_fault", kind=kind, value=value)

    def stream(self) -> RemoteSimStream | None:
        return RemoteSimStream(self.path) if getattr(self, "capabilities", None) and self.capabilities.streams else None


def encode_args(args: dict[str, Any]) -> dict[str, Any]:
    return {k: encode(v) for k, v in args.items()}
