"""Run asyncio work beside a thespian actor without blocking its mailbox.

A private event loop runs in a thread inside the actor's process; finished coroutines put
their results on a queue and write a byte to a socketpair. The actor returns
`ThespianWatch([fileno])` from every handler and drains the queue on `WatchMessage`, doing
all `self.send`s itself (the loop thread never touches thespian). On bases without
ThespianWatch (simpleSystemBase in unit tests) the actor polls with short wake-ups instead.

`BridgedActor` also keeps rule 5: a handler that raises is caught here, logged and reported,
so thespian never re-delivers a message whose handler had side effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import ActorTypeDispatcher, ThespianWatch, WakeupMessage, WatchMessage

from actors.logs import ensure_process_logging
from actors.messages import ChildFailed, Heartbeat, HeartbeatAck
from adapters import keys

POLL = timedelta(milliseconds=2)
TICK_S = 0.2                         # the loop says it turns this often
LOOP_STALE_S = 2.0                   # a loop silent this long is stuck: heartbeats go unanswered


class AsyncBridge:
    def __init__(self) -> None:
        self._rx, self._tx = socket.socketpair()
        self._rx.setblocking(False)
        self._done: queue.SimpleQueue[tuple[Callable[[Any], None], Any, bool]] = queue.SimpleQueue()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="async-bridge", daemon=True)
        self.ticked = time.monotonic()               # written by the loop, read by the actor's thread
        self.loop.call_soon_threadsafe(self._tick)
        self._thread.start()
        self.pending = 0

    def _tick(self) -> None:
        self.ticked = time.monotonic()
        self.loop.call_later(TICK_S, self._tick)

    @property
    def turning(self) -> bool:
        """The loop ran its ticker lately (busy or idle, it is not stuck)."""
        return time.monotonic() - self.ticked < LOOP_STALE_S

    @property
    def fileno(self) -> int:
        return self._rx.fileno()

    def submit(self, coro: Coroutine[Any, Any, Any], on_done: Callable[[Any], None]) -> None:
        """Run `coro` on the loop; `on_done(result or exception)` runs later in the actor's thread."""
        self.pending += 1
        asyncio.run_coroutine_threadsafe(self._run(coro, on_done), self.loop)

    async def _run(self, coro: Coroutine[Any, Any, Any], on_done: Callable[[Any], None]) -> None:
        try:
            result: Any = await coro
        except BaseException as exc:  # noqa: BLE001 - handed to the actor thread, which decides
            result = exc
        self._done.put((on_done, result, True))
        self._wake()

    def post(self, fn: Callable[[], None]) -> None:
        """From the loop thread: run `fn()` in the actor's thread, on its next drain (the loop
        never touches thespian itself)."""
        self._done.put((lambda _: fn(), None, False))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):                 # bridge closed while we finished
            self._tx.send(b"x")

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run `coro` to completion, blocking (start-up and shut-down only)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def drain(self) -> None:
        """Run the completion callbacks of everything finished so far (actor thread)."""
        try:
            while self._rx.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            try:
                on_done, result, submitted = self._done.get_nowait()
            except queue.Empty:
                return
            if submitted:
                self.pending -= 1
            on_done(result)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self._rx.close()
        self._tx.close()


_process_of: int | None = None


def _first_message_in_this_process(actor: BridgedActor) -> None:
    """Once per actor process, before anything else: a process that never talks to the venue
    lets go of the keys' descriptor (adapters/keys.py)."""
    global _process_of
    if _process_of != os.getpid():
        _process_of = os.getpid()
        if not actor.holds_keys:
            keys.drop_handle()


class BridgedActor(ActorTypeDispatcher):
    """An ActorTypeDispatcher whose handlers never raise into thespian, with an optional bridge."""

    holds_keys = False                           # True: this process passes on or reads the venue keys

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.bridge: AsyncBridge | None = None
        self.watch = True
        self._polling = False
        self.supervisor: Any = None              # who configured us; told when a handler fails

    def receiveMessage(self, message: Any, sender: Any) -> Any:  # noqa: N802 - thespian's name
        _first_message_in_this_process(self)
        ensure_process_logging()
        try:
            if isinstance(message, WatchMessage) or (isinstance(message, WakeupMessage)
                                                     and isinstance(message.payload, _PollToken)):
                self._polling = False
                if self.bridge is not None:
                    self.bridge.drain()
            else:
                super().receiveMessage(message, sender)
        except Exception as exc:  # noqa: BLE001 - rule 5: never let thespian re-run a handler
            logger.exception("{} failed handling {}: {}", type(self).__name__, type(message).__name__, exc)
            try:
                self.on_handler_error(message, sender, exc)
            except Exception:  # noqa: BLE001
                logger.exception("error report failed too")
        return self._after()

    def _after(self) -> Any:
        if self.bridge is None:
            return None
        if self.watch:
            return ThespianWatch([self.bridge.fileno])
        if self.bridge.pending and not self._polling:
            self._polling = True
            self.wakeupAfter(POLL, POLL_TOKEN)
        return None

    def on_handler_error(self, message: Any, sender: Any, exc: Exception) -> None:
        """Override to answer the sender; then call this to report the failure upwards."""
        if self.supervisor is not None:
            self.send(self.supervisor, ChildFailed(f"{type(message).__name__}: {type(exc).__name__}: {exc}"))

    def receiveMsg_Heartbeat(self, message: Heartbeat, sender: Any) -> None:  # noqa: N802
        # Answered now, from this thread (never queued behind a backlog of finished work that a
        # burst left to send), if the event loop turns too: a stuck loop leaves it unanswered.
        if self.bridge is None or self.bridge.turning:
            self.send(sender, HeartbeatAck(message.seq, os.getpid(), self.heartbeat_figures()))

    def heartbeat_figures(self) -> tuple[tuple[str, float], ...]:
        """Running totals for the metrics, carried by the heartbeat's answer (none by default)."""
        return ()

    def on_exit(self) -> None:
        """Release resources; called on ActorExitRequest."""
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None

    def receiveMsg_ActorExitRequest(self, message: Any, sender: Any) -> None:  # noqa: N802
        self.on_exit()

    def receiveMsg_ActorSystemMessage(self, message: Any, sender: Any) -> None:  # noqa: N802
        pass                                               # thespian housekeeping we do not act on

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:  # noqa: N802
        logger.warning("{} dropped unknown message {}", type(self).__name__, type(message).__name__)


class _PollToken:
    def __reduce__(self) -> str:
        return "POLL_TOKEN"


POLL_TOKEN = _PollToken()
