"""The simulated venue as its own process, so it outlives any crash of ours — like a real one.

`SimVenueServer` serves a SimulatedAdapter over newline-delimited JSON (never pickle: nothing
that arrives on a socket is executed) on a Unix socket in the deployment's private runtime
directory, and answers only processes of its own user (the kernel's peer credentials).
`RemoteSimAdapter` (adapters/sim/remote.py) is the VenueAdapter the ExchangeActor uses to reach it; requests are
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
from typing import Any

from adapters.base import (
    ExitKind,
    OrderRequest,
    Side,
    VenueError,
    VenueTimeout,
)
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.faults import Fault, FaultKind
from adapters.sim.outside import outside
from adapters.sim.stream import SimStream, serve_subscription
from adapters.sim.wire import encode, stop_order_report


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
        # Cancelled again until done (bounded): Python 3.11's wait_for may swallow a cancel that
        # lands as the awaited item arrives (the stream's loop then goes on, and a plain gather
        # waited for it forever -- seen once in a full run on a loaded host).
        for _ in range(20):
            pending = [t for t in self._connections if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.5)
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
            case "set_exit":
                return await ad.set_exit(a["symbol"], ExitKind(a["kind"]), a["value"], Side(a["position_side"]),
                                         a["qty"], a.get("reference_price"))
            case "fetch_stop_orders":
                return await ad.fetch_stop_orders(a.get("symbol"))
            case "cancel_stop_order":
                return await ad.cancel_stop_order(a["symbol"], stop_order_report(a["order"]))
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


def _same_user(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return bool(uid == os.geteuid())
