"""The simulated venue in another process (`posguard venue`), as a VenueAdapter: calls over
its Unix socket, a call whose reply was lost bounded by `timeout_s`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from loguru import logger

from adapters.base import (
    Capabilities,
    CloseKind,
    ClosureReport,
    ExitKind,
    OrderReport,
    OrderRequest,
    PositionReport,
    Side,
    StopOrderReport,
    VenueAdapter,
    VenueError,
    VenueTimeout,
)
from adapters.sim.faults import Fault
from adapters.sim.stream import RemoteSimStream
from adapters.sim.truth import TrueState
from adapters.sim.wire import encode_args, order_report, position_report, stop_order_report, true_state_of


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
        bounds = caps.get("trail_bounds_pct")
        self.capabilities = Capabilities(**{**caps, "trail_bounds_pct": tuple(bounds) if bounds else None})

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
        return order_report(await self._call("create_order", request=request))

    async def set_stop(self, symbol: str, stop_price: float, position_side: Side | None = None) -> float | None:
        await self._call("set_stop", symbol=symbol, stop_price=stop_price, position_side=position_side)
        return None

    async def set_exit(self, symbol: str, kind: ExitKind, value: float, position_side: Side, qty: float,
                       reference_price: float | None = None) -> float:
        return float(await self._call("set_exit", symbol=symbol, kind=kind, value=value, position_side=position_side,
                                      qty=qty, reference_price=reference_price))

    async def fetch_stop_orders(self, symbol: str | None = None) -> list[StopOrderReport]:
        return [stop_order_report(o) for o in await self._call("fetch_stop_orders", symbol=symbol)]

    async def cancel_stop_order(self, symbol: str, order: StopOrderReport) -> None:
        await self._call("cancel_stop_order", symbol=symbol, order=order)

    async def outside(self, action: str, **args: Any) -> None:
        """What someone does to the account outside posguard (tests and benchmarks): see `outside`."""
        await self._call("outside", action=action, args=args)

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderReport:
        return order_report(await self._call("fetch_order", symbol=symbol, client_order_id=client_order_id))

    async def fetch_price(self, symbol: str) -> float:
        return float(await self._call("fetch_price", symbol=symbol))

    async def fetch_positions(self) -> list[PositionReport]:
        return [position_report(p) for p in await self._call("fetch_positions")]

    async def fetch_closures(self, symbol: str) -> list[ClosureReport]:
        return [ClosureReport(**{**c, "kind": CloseKind(c["kind"]), "side": Side(c["side"])})
                for c in await self._call("fetch_closures", symbol=symbol)]

    async def true_state(self) -> TrueState:
        return true_state_of(await self._call("true_state"))

    async def add_fault(self, fault: Fault) -> None:
        await self._call("add_fault", fault=fault)

    async def stream_fault(self, kind: str, value: Any = None) -> None:
        await self._call("stream_fault", kind=kind, value=value)

    def stream(self) -> RemoteSimStream | None:
        return RemoteSimStream(self.path) if getattr(self, "capabilities", None) and self.capabilities.streams else None
