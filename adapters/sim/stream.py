"""The simulated venue's private stream: the engine's live changes (no REST lag), pushed after the
venue's return trip, with the faults a real stream has -- a drop, a stall, an auth refusal, late
events. The same path serves an in-process venue (`SimStream`) and the venue's own process
(the sim server's `subscribe`, read by `RemoteSimStream`), so the actors are tested the same way
on every venue.

A heartbeat (a venue ping answered, in effect) arrives every `HEARTBEAT_S` unless the stream
stalls; nothing at all within `STALL_S` is a stall, and a stall is a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from adapters.base import OrderReport, OrderStatus, PositionReport, Side, StopOrderReport
from adapters.sim.engine import EngineEvent, SimEngine
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

HEARTBEAT_S = 0.1
# Tolerant of a loaded host: a 2-core machine running the whole suite held the venue's thread or
# the exchange process past 1 s now and then, and the stream read as stalled (a false drop).
STALL_S = 2.5


@dataclass(slots=True)
class StreamControl:
    """The stream's faults, switched by a test (or the sim server's `stream_fault` op)."""

    reject_auth: bool = False
    stalled: bool = False
    delay_s: float = 0.0                              # extra, on every push
    generation: int = 0                               # a drop: every open stream of an older one ends
    opens: int = 0

    def drop(self) -> None:
        self.generation += 1

    def apply(self, kind: str, value: Any = None) -> None:
        match kind:
            case "drop":
                self.drop()
            case "stall":
                self.stalled = True
            case "resume":
                self.stalled = False
            case "reject_auth":
                self.reject_auth = bool(value if value is not None else True)
            case "delay":
                self.delay_s = float(value or 0.0)
            case _:
                raise ValueError(f"unknown stream fault {kind!r}")


ENDED = {"cancelled": "cancelled", "finished": "triggered"}    # an engine stop order's end, as streams say it


def items_of(event: EngineEvent) -> list[StreamItem]:
    """An engine change as the stream says it: an order (with its fill), a stop order, or a position."""
    if event.stop_order is not None:
        return [StreamStopOrder(event.stop_order, event.stop_status == "new", ENDED.get(event.stop_status, ""))]
    if event.order is not None:
        items: list[StreamItem] = [StreamOrder(event.order, event.closed_by)]
        o = event.order
        if o.filled_qty > 0:
            items.append(StreamFill(o.symbol, o.client_order_id, o.venue_order_id, o.filled_qty,
                                    o.avg_price or 0.0))
        return items
    return [StreamPosition(event.symbol, event.position)]


@dataclass(slots=True)
class _Feed:
    """Pushes on their way to one subscriber: each leaves after the return trip (and any delay)."""

    queue: asyncio.Queue[list[StreamItem]] = field(default_factory=asyncio.Queue)
    handles: list[asyncio.TimerHandle] = field(default_factory=list)


class SimStream(VenueStream):
    """The private stream of a venue in this process."""

    def __init__(self, engine: SimEngine, control: StreamControl, latency_s: float) -> None:
        self.engine, self.control, self.latency_s = engine, control, latency_s
        self._feed: _Feed | None = None
        self._generation = -1
        self._beat: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await asyncio.sleep(self.latency_s)              # connect and authenticate: a round trip
        if self.control.reject_auth:
            raise StreamAuthFailed("simulated venue refused the stream's signature")
        self._feed = _Feed()
        self._generation = self.control.generation
        self.control.opens += 1
        self.engine.listeners.append(self._on_event)
        self._beat = asyncio.create_task(self._heartbeat())

    def _on_event(self, event: EngineEvent) -> None:
        feed = self._feed
        if feed is None or self.control.stalled:
            return                                       # a stalled stream pushes nothing
        loop = asyncio.get_running_loop()
        delay = self.latency_s / 2 + self.control.delay_s
        feed.handles.append(loop.call_later(delay, feed.queue.put_nowait, items_of(event)))

    async def _heartbeat(self) -> None:
        # The venue's pings answered; also lets stops trigger on time (the engine advances lazily).
        while self._feed is not None:
            await asyncio.sleep(HEARTBEAT_S)
            if not self.control.stalled and self._feed is not None:
                self.engine.advance()
                self._feed.queue.put_nowait([])

    async def next(self) -> list[StreamItem]:
        while True:
            if self._feed is None:
                raise StreamDown("stream not open")
            if self.control.generation != self._generation:
                raise StreamDown("the venue dropped the stream")
            try:
                items = await asyncio.wait_for(self._feed.queue.get(), STALL_S)
            except TimeoutError:
                raise StreamDown(f"stalled: nothing from the venue for {STALL_S:g}s") from None
            if self.control.generation != self._generation:
                raise StreamDown("the venue dropped the stream")
            if items:
                return items

    async def close(self) -> None:
        feed, self._feed = self._feed, None
        with contextlib.suppress(ValueError):
            self.engine.listeners.remove(self._on_event)
        if feed is not None:
            for handle in feed.handles:
                handle.cancel()
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._beat
            self._beat = None


# -- over the simulated venue's own socket --------------------------------------------------------


def encode_item(item: StreamItem) -> dict[str, Any]:
    from adapters.sim.wire import encode

    kind = {StreamOrder: "order", StreamFill: "fill", StreamPosition: "position",
            StreamStopOrder: "stop_order"}[type(item)]
    return {"kind": kind, "item": encode(item)}


def decode_item(data: dict[str, Any]) -> StreamItem:
    item = data["item"]
    match data["kind"]:
        case "order":
            r = item["report"]
            report = OrderReport(**{**r, "side": Side(r["side"]), "status": OrderStatus(r["status"])})
            return StreamOrder(report, item["closed_by"])
        case "fill":
            return StreamFill(**item)
        case "position":
            p = item["position"]
            position = None if p is None else PositionReport(**{**p, "side": Side(p["side"]),
                                                                 "stop_prices": tuple(p.get("stop_prices") or ())})
            return StreamPosition(item["symbol"], position, item.get("stop_known", True))
        case "stop_order":
            o = item["order"]
            return StreamStopOrder(StopOrderReport(**{**o, "side": Side(o["side"])}), item["open"], item["ended"])
    raise ValueError(f"unknown stream item {data.get('kind')!r}")


async def serve_subscription(stream: SimStream, writer: asyncio.StreamWriter) -> None:
    """The sim server's side of `subscribe`: the stream's items (and heartbeats) as JSON lines."""
    try:
        try:
            await stream.open()
        except StreamAuthFailed as exc:
            writer.write(json.dumps({"down": "auth", "why": str(exc)}).encode() + b"\n")
            await writer.drain()
            return
        writer.write(b'{"up": true}\n')
        while True:
            try:
                items = await asyncio.wait_for(stream.next(), STALL_S / 2)
            except TimeoutError:
                items = []
            if stream.control.stalled:
                await asyncio.sleep(HEARTBEAT_S)
                continue                                 # silent, socket open
            lines = [json.dumps(encode_item(i)).encode() + b"\n" for i in items] or [b'{"beat": true}\n']
            writer.writelines(lines)
            await writer.drain()
    except (StreamDown, ConnectionError):
        pass
    finally:
        await stream.close()
        writer.close()


class RemoteSimStream(VenueStream):
    """The private stream of the simulated venue in its own process (a second connection)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=1 << 24), STALL_S * 5)
            self._writer.write(b'{"id": 0, "op": "subscribe"}\n')
            first = json.loads(await asyncio.wait_for(self._reader.readline(), STALL_S * 5) or b"{}")
        except (OSError, TimeoutError, ValueError) as exc:
            await self.close()
            raise StreamDown(f"the simulated venue's stream is unreachable: {exc}") from None
        if first.get("down") == "auth":
            await self.close()
            raise StreamAuthFailed(str(first.get("why", "refused")))
        if not first.get("up"):
            await self.close()
            raise StreamDown("the simulated venue did not open the stream")

    async def next(self) -> list[StreamItem]:
        if self._reader is None:
            raise StreamDown("stream not open")
        while True:
            try:
                line = await asyncio.wait_for(self._reader.readline(), STALL_S)
            except TimeoutError:
                raise StreamDown(f"stalled: nothing from the venue for {STALL_S:g}s") from None
            except (OSError, ValueError) as exc:
                raise StreamDown(f"stream read failed: {exc}") from None
            if not line:
                raise StreamDown("the venue dropped the stream")
            try:
                data = json.loads(line)
                if "kind" in data:
                    return [decode_item(data)]
            except (ValueError, KeyError, TypeError):
                continue                                 # a line we cannot read is skipped, not fatal

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
