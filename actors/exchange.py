"""ExchangeActor: owns the venue adapter; one request message in, one reply out.

Calls run concurrently on the actor's event loop (actors/async_bridge.py), so a slow call for
one symbol never holds up another symbol's call. The adapter is built inside this process
(thespian forks actors and closes inherited descriptors: sockets must be opened here).
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from actors.async_bridge import AsyncBridge, BridgedActor
from actors.exchange_service import ExchangeService, failure_reply
from actors.logs import register_secret
from actors.messages import (
    ActorFailed,
    ConfigureExchange,
    ExchangeReady,
    FetchClosures,
    FetchPositions,
    FetchPrice,
    FetchStopOrders,
    FillStreamed,
    GetTrueState,
    OpenStream,
    OrderStreamed,
    PlaceOrder,
    QueryOrder,
    SetStop,
    StreamHealth,
    StreamUpdates,
    VenueFailure,
)
from actors.stream_runner import StreamRunner
from adapters import keys
from adapters.base import VenueError, VenueTimeout
from adapters.errors import Outcome
from adapters.streams import StreamFill, StreamOrder
from adapters.venue_settings import MissingKey

OWNERS_KEPT = 10_000                     # recent orders whose stream news goes straight to their owner


class ExchangeActor(BridgedActor):
    holds_keys = True                            # the one process that reads them

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.service: ExchangeService | None = None
        self.runner: StreamRunner | None = None
        self.stream_subscriber: Any = None
        self.order_owners: dict[str, Any] = {}   # client order id -> the PositionActor that placed it

    def receiveMsg_ConfigureExchange(self, msg: ConfigureExchange, sender: Any) -> None:  # noqa: N802
        self.supervisor = sender
        if self.service is None:
            keys.set_dumpable(False)                     # no core file, no ptrace, no /proc/<pid>/mem for others
            self.watch = msg.watch
            self.bridge = AsyncBridge()
            adapter = msg.adapter_factory()
            try:
                for value in adapter.load_credentials():
                    register_secret(value)               # before the first line that could show them
                self.bridge.call(adapter.start())
            except (VenueError, VenueTimeout, MissingKey, TimeoutError) as exc:
                # The venue unreachable, keys refused or missing: the operator's to fix, not a bug.
                logger.error("exchange: venue adapter failed to start: {}", exc)
                self.bridge.call(adapter.close())
                self.bridge.close()
                self.bridge = None
                self.send(sender, ActorFailed("exchange", f"venue adapter failed to start: {exc}"))
                return
            self.service = ExchangeService(adapter)
            logger.info("exchange ready: {}", adapter.capabilities)
        self.send(sender, ExchangeReady(self.service.capabilities, dumpable=keys.dumpable()))

    def _request(self, msg: Any, sender: Any) -> None:
        if self.service is None or self.bridge is None:
            self._fail(msg, sender, VenueFailure(Outcome.RETRY_LATER, "not_ready", "exchange not configured"))
            return
        reply_to = getattr(msg, "reply_to", None) or sender
        if isinstance(msg, PlaceOrder):                  # whose order it is, for the stream's news of it
            self.order_owners[msg.request.client_order_id] = reply_to
            while len(self.order_owners) > OWNERS_KEPT:
                self.order_owners.pop(next(iter(self.order_owners)))
        self.bridge.submit(self.service.handle(msg), lambda result: self._reply(msg, reply_to, result))

    receiveMsg_PlaceOrder = _request       # noqa: N815
    receiveMsg_QueryOrder = _request       # noqa: N815
    receiveMsg_SetStop = _request          # noqa: N815
    receiveMsg_FetchPositions = _request   # noqa: N815
    receiveMsg_FetchPrice = _request       # noqa: N815
    receiveMsg_FetchClosures = _request    # noqa: N815
    receiveMsg_GetTrueState = _request     # noqa: N815
    receiveMsg_FetchStopOrders = _request  # noqa: N815

    def receiveMsg_OpenStream(self, msg: OpenStream, sender: Any) -> None:  # noqa: N802
        """Keep the venue's private stream open here (the keys live in this process alone) and
        hand everything it says to the StreamActor."""
        if self.service is None or self.bridge is None:
            self.send(msg.subscriber, StreamHealth("private", False, "exchange not configured"))
            return
        self.stream_subscriber = msg.subscriber
        adapter = self.service.adapter
        if self.runner is not None or adapter.stream() is None:
            return
        bridge = self.bridge

        def deliver(items: list[Any]) -> None:          # on the loop: the actor's thread sends
            bridge.post(lambda: self._streamed(items))

        def health(report: StreamHealth) -> None:
            bridge.post(lambda: self.send(self.stream_subscriber, report))

        self.runner = StreamRunner(adapter.stream, msg.settings, deliver, health)
        bridge.loop.call_soon_threadsafe(self.runner.start)

    def _streamed(self, items: list[Any]) -> None:
        """News of one of our own orders goes straight to the PositionActor that placed it (one
        hop less on the entry path); everything else to the StreamActor, which fans it out."""
        rest = []
        for item in items:
            owner = None
            if isinstance(item, StreamOrder):
                owner = self.order_owners.get(item.report.client_order_id)
                msg: Any = OrderStreamed(item.report, item.closed_by)
            elif isinstance(item, StreamFill):
                owner = self.order_owners.get(item.client_order_id)
                msg = FillStreamed(item.symbol, item.client_order_id)
            if owner is not None:
                self.send(owner, msg)
            else:
                rest.append(item)
        if rest and self.stream_subscriber is not None:
            self.send(self.stream_subscriber, StreamUpdates(tuple(rest)))

    def _reply(self, msg: Any, reply_to: Any, result: Any) -> None:
        if isinstance(result, BaseException):
            # The service classifies venue failures itself; this is our own bug. An order may or
            # may not have gone out, so the caller must treat it as unknown and query.
            logger.opt(exception=result).error("exchange request {} crashed", type(msg).__name__)
            self._fail(msg, reply_to, VenueFailure(Outcome.BUG, type(result).__name__, str(result)))
            return
        self.send(reply_to, result)

    def _fail(self, msg: Any, to: Any, failure: VenueFailure) -> None:
        reply = failure_reply(msg, failure)
        if reply is not None:
            self.send(to, reply)

    def on_handler_error(self, message: Any, sender: Any, exc: Exception) -> None:
        if isinstance(message, ConfigureExchange):
            self.send(sender, ActorFailed("exchange", f"venue adapter failed to start: {exc}"))
            return
        if isinstance(message, PlaceOrder | QueryOrder | SetStop | FetchPositions | FetchPrice | FetchClosures
                      | GetTrueState | FetchStopOrders):
            self._fail(message, sender, VenueFailure(Outcome.BUG, type(exc).__name__, str(exc)))
        super().on_handler_error(message, sender, exc)

    def on_exit(self) -> None:
        if self.runner is not None and self.bridge is not None:
            try:
                self.bridge.call(self.runner.stop(), timeout=5)
            except Exception:  # noqa: BLE001 - shutting down anyway
                logger.exception("stream stop failed")
        if self.service is not None and self.bridge is not None:
            try:
                self.bridge.call(self.service.adapter.close(), timeout=5)
            except Exception:  # noqa: BLE001 - shutting down anyway
                logger.exception("adapter close failed")
        super().on_exit()
