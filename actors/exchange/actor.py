"""ExchangeActor: owns the venue adapter; one request message in, one reply out.

Calls run concurrently on the actor's event loop (actors/async_bridge.py), so a slow call for
one symbol never holds up another symbol's call. The adapter is built inside this process
(thespian forks actors and closes inherited descriptors: sockets must be opened here).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import WakeupMessage

from actors.async_bridge import AsyncBridge, BridgedActor
from actors.backoff import doubling_delay
from actors.exchange.core import ROUTES, ExchangeCore, failure_reply
from actors.exchange.stream_runner import StreamRunner
from actors.logs import register_secret
from actors.messages import (
    ActorFailed,
    ConfigureExchange,
    ExchangePreflight,
    ExchangeReady,
    ExchangeStarting,
    FillStreamed,
    OpenStream,
    OrderStreamed,
    PlaceOrder,
    PlaceOrders,
    StreamHealth,
    StreamUpdates,
    VenueFailure,
)
from adapters import keys
from adapters.base import Preflight, VenueError, VenueTimeout
from adapters.ccxt.settings import MissingKey
from adapters.errors import Outcome
from adapters.streams import StreamFill, StreamOrder

OWNERS_KEPT = 10_000                     # recent orders whose stream news goes straight to their owner
START_BACKOFF_S, START_BACKOFF_CAP_S = 1.0, 30.0
PREFLIGHT_S = 120.0                      # markets, clock, then the account's checks: each at most this
RETRY_START = "retry-start"
_KEY_CODES = {"auth", 10003, 10004, 10005, -2014, -2015, -1022}
_CLOCK_CODES = {10002, -1021}            # our clock is outside the venue's receive window


def start_backoff(attempt: int) -> float:
    """Seconds before start attempt `attempt` + 1: doubling from 1 s, never more than the cap."""
    return doubling_delay(START_BACKOFF_S, START_BACKOFF_CAP_S, attempt - 1)


def start_failure(exc: Exception) -> str:
    """What a start failure is, for status, logs and metrics: the network, the keys, the venue."""
    if isinstance(exc, MissingKey) or (isinstance(exc, VenueError) and exc.code in _KEY_CODES):
        return "keys"
    if isinstance(exc, VenueTimeout | TimeoutError) or (isinstance(exc, VenueError) and exc.code == 503):
        return "unreachable"                     # no connection, no answer, or a 5xx
    if isinstance(exc, VenueError) and exc.code in _CLOCK_CODES:
        return "clock"
    return "venue"


class ExchangeActor(BridgedActor):
    holds_keys = True                            # the one process that reads them

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.service: ExchangeCore | None = None
        self.runner: StreamRunner | None = None
        self.stream_subscriber: Any = None
        self.order_owners: dict[str, Any] = {}   # client order id -> the PositionActor that placed it
        self.configure: ConfigureExchange | None = None
        self.attempts = 0
        self.preflight = Preflight()

    def receiveMsg_ConfigureExchange(self, msg: ConfigureExchange, sender: Any) -> None:  # noqa: N802
        self.supervisor = sender
        if self.service is not None:
            self.send(sender, self._ready())
            return
        if self.bridge is None:
            keys.set_dumpable(False)                     # no core file, no ptrace, no /proc/<pid>/mem for others
            self.watch = msg.watch
            self.bridge = AsyncBridge()
        self.configure = msg
        self._start()

    def _start(self) -> None:
        """Start the adapter; a venue that cannot start yet is tried again after a bounded
        back-off (said to the supervisor each time), never by restarting this process. It runs
        on the loop: this actor keeps answering heartbeats while a venue takes its time."""
        msg, bridge = self.configure, self.bridge
        assert msg is not None and bridge is not None
        adapter = msg.adapter_factory()
        self.attempts += 1
        try:
            for value in adapter.load_credentials():
                register_secret(value)                   # before the first line that could show them
        except MissingKey as exc:
            self._not_started(exc)
            return

        async def start() -> Preflight:
            try:
                await asyncio.wait_for(adapter.start(), PREFLIGHT_S)
                if msg.stages:
                    bridge.post(lambda: self.send(self.supervisor, ExchangePreflight()))
                return await asyncio.wait_for(adapter.preflight(msg.symbols), PREFLIGHT_S)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(adapter.close(), 5)
                raise

        bridge.submit(start(), lambda result: self._started(adapter, result))

    def heartbeat_figures(self) -> tuple[tuple[str, float], ...]:
        return self.service.figures() if self.service is not None else ()

    def _started(self, adapter: Any, result: Any) -> None:
        if isinstance(result, VenueError | VenueTimeout | TimeoutError):
            self._not_started(result)
            return
        if isinstance(result, BaseException):            # our bug, not the venue's: no retry can help
            logger.opt(exception=result).error("exchange: the venue adapter failed to start")
            self.send(self.supervisor, ActorFailed("exchange", f"venue adapter failed to start: {result}"))
            return
        self.service = ExchangeCore(adapter)
        self.preflight = result
        for warning in result.warnings:
            logger.warning("venue: {}", warning)
        logger.info("exchange ready: {}", adapter.capabilities)
        self.send(self.supervisor, self._ready())

    def _not_started(self, exc: Exception) -> None:
        assert self.configure is not None
        kind = start_failure(exc)
        reason = f"venue adapter failed to start ({kind}): {exc}"
        logger.error("exchange: {}", reason)
        final = isinstance(exc, MissingKey) or (not self.configure.persist and (
            kind == "keys" or self.attempts >= self.configure.start_attempts))
        if final:
            self.send(self.supervisor, ActorFailed("exchange", reason, usage=isinstance(exc, MissingKey)))
            return
        delay = start_backoff(self.attempts)
        self.send(self.supervisor, ExchangeStarting(str(exc), kind, self.attempts, delay))
        self.wakeupAfter(timedelta(seconds=delay), RETRY_START)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:  # noqa: N802
        if msg.payload == RETRY_START and self.service is None and self.configure is not None:
            self._start()

    def _ready(self) -> ExchangeReady:
        assert self.service is not None
        return ExchangeReady(self.service.capabilities, dumpable=keys.dumpable(), problems=self.preflight.problems,
                             warnings=self.preflight.warnings)

    def _request(self, msg: Any, sender: Any) -> None:
        reply_to = getattr(msg, "reply_to", None) or sender     # a forwarded order answers its owner
        if self.service is None or self.bridge is None:
            self._fail(msg, reply_to, VenueFailure(Outcome.RETRY_LATER, "not_ready", "exchange not configured"))
            return
        if isinstance(msg, PlaceOrder):                  # whose order it is, for the stream's news of it
            self.order_owners[msg.request.client_order_id] = reply_to
            while len(self.order_owners) > OWNERS_KEPT:
                self.order_owners.pop(next(iter(self.order_owners)))
        self.bridge.submit(self.service.handle(msg), lambda result: self._reply(msg, reply_to, result))


    def receiveMsg_PlaceOrders(self, msg: PlaceOrders, sender: Any) -> None:  # noqa: N802
        for order in msg.orders:                     # each as if it came alone: one failing spoils no other
            try:
                self._request(order, sender)
            except Exception as exc:  # noqa: BLE001 - rule 5: answered, never re-run
                logger.exception("exchange failed taking order {}", order.request.client_order_id)
                self._fail(order, order.reply_to or sender, VenueFailure(Outcome.BUG, type(exc).__name__, str(exc)))

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
        rest, received = [], time.monotonic_ns()     # REST answers are compared with it (position/outside.py)
        for item in items:
            owner = None
            if isinstance(item, StreamOrder):
                owner = self.order_owners.get(item.report.client_order_id)
                msg: Any = OrderStreamed(item.report, item.closed_by, received)
            elif isinstance(item, StreamFill):
                owner = self.order_owners.get(item.client_order_id)
                msg = FillStreamed(item.symbol, item.client_order_id)
            if owner is not None:
                self.send(owner, msg)
            else:
                rest.append(item)
        if rest and self.stream_subscriber is not None:
            self.send(self.stream_subscriber, StreamUpdates(tuple(rest), received_ns=received))

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
        if type(message) in ROUTES:
            self._fail(message, getattr(message, "reply_to", None) or sender,
                       VenueFailure(Outcome.BUG, type(exc).__name__, str(exc)))
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


# Every venue request type of the one routing table (actors/exchange/core.ROUTES) is received
# by _request: a type added there is handled here too, never dropped.
for _kind in ROUTES:
    setattr(ExchangeActor, f"receiveMsg_{_kind.__name__}", ExchangeActor._request)
