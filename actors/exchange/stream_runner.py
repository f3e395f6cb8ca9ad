"""Keeping a venue's private stream open, in the process that holds the keys (the exchange's).

ccxt's WebSocket layer does not reconnect by itself, and a stream can fail in ways that never
raise (a stall, an expired key): this loop opens the stream, reads it, and when it ends for any
reason throws the client away and opens a new one, after a back-off that doubles to a cap with
jitter (a venue that is down is not hammered). It says every up and every down, with how long
the gap was: the StreamActor turns that into reconciliation through REST, status and metrics.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from loguru import logger

from actors.backoff import doubling_delay
from actors.messages import StreamHealth
from actors.settings import StreamSettings
from adapters.streams import StreamAuthFailed, StreamDown, StreamItem, VenueStream

OPEN_TIMEOUT_S = 20.0                # connect, authenticate, subscribe: past this, a failed attempt
STEADY_S = 10.0                      # a connection that held this long resets the back-off


def backoff(settings: StreamSettings, attempt: int, rng: random.Random) -> float:
    return doubling_delay(settings.backoff_s, settings.backoff_cap_s, attempt, settings.jitter, rng)


class StreamRunner:
    def __init__(self, make: Callable[[], VenueStream], settings: StreamSettings,
                 deliver: Callable[[list[StreamItem]], None], health: Callable[[StreamHealth], None],
                 rng: random.Random | None = None) -> None:
        self.make, self.settings, self.deliver, self.health = make, settings, deliver, health
        self.rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        attempt, reconnects = 0, 0
        down_since: float | None = time.monotonic()      # until the first open, nothing is known
        name = "private"
        while True:
            stream = self.make()
            name = stream.name
            try:
                await asyncio.wait_for(stream.open(), OPEN_TIMEOUT_S)
                gap = time.monotonic() - down_since if down_since is not None else 0.0
                self.health(StreamHealth(name, True, "connected", reconnects, gap))
                down_since, opened = None, time.monotonic()
                while True:
                    self.deliver(await stream.next())
                    if attempt and time.monotonic() - opened > STEADY_S:
                        attempt = 0                      # it held: the next drop starts the back-off over
            except asyncio.CancelledError:
                raise
            except StreamAuthFailed as exc:
                reason = f"authentication refused: {exc}"
            except (StreamDown, TimeoutError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - a bug in a stream is a drop, never the end of streams
                logger.exception("stream {} failed", name)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                try:
                    await asyncio.wait_for(stream.close(), 5.0)
                except Exception:  # noqa: BLE001 - the client is thrown away anyway
                    logger.debug("stream close failed")
            if down_since is None:
                down_since = time.monotonic()
            self.health(StreamHealth(name, False, reason, reconnects))   # every failed attempt says why
            reconnects += 1
            delay = backoff(self.settings, attempt, self.rng)
            attempt += 1
            logger.warning("stream {} down ({}); reconnecting in {:.2f}s", name, reason, delay)
            await asyncio.sleep(delay)
