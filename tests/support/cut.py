"""A host's network path to the database, which a test can cut: a TCP relay on 127.0.0.1 in
front of the PostgreSQL server. `cut()` makes it a black hole -- bytes already on their way are
held, nothing is answered, new connections are taken and never served: what a host sees when a
switch or a firewall between it and the database drops its packets (its TCP does not learn for
a long time). `heal()` ends the held connections (as a peer's TCP finally would) and serves again.

The relay runs in a thread of the test process; `close()` stops it and every connection."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class CuttableLink:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cuttable-link", daemon=True)
        self.thread.start()
        self.open = asyncio.Event()              # the loop's own: set and cleared from it
        self.loop.call_soon_threadsafe(self.open.set)
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: Any = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop).result(10)
        self.port: int = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self.open.wait()                      # cut: taken, never served
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self.writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self.writers.discard(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.open.wait()                  # cut: held, as a dropped packet is retried
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set(False), self.loop).result(5)

    async def _set(self, open_: bool) -> None:
        if open_:
            for writer in list(self.writers):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
            self.writers.clear()
            self.open.set()
        else:
            self.open.clear()

    def heal(self) -> None:
        """End what was held (both ends see a reset), then serve new connections again."""
        asyncio.run_coroutine_threadsafe(self._set(True), self.loop).result(5)

    def close(self) -> None:
        self.heal()
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
