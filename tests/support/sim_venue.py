"""The simulated venue for tests: one in a thread of this process (`SimVenueThread`), or the
truth of one served on a socket (`venue_truth`)."""


from __future__ import annotations

from pathlib import Path
from typing import Any


def venue_truth(path: str | Path) -> Any:
    """The TrueState of the simulated venue serving the Unix socket `path`."""
    import asyncio

    from adapters.sim.remote import RemoteSimAdapter

    async def ask() -> Any:
        venue = RemoteSimAdapter(str(path))
        await venue.start()
        try:
            return await venue.true_state()
        finally:
            await venue.close()

    return asyncio.run(ask())


class SimVenueThread:
    """The simulated venue's own server on a loop thread of this process: the deployment reaches
    it through its socket as ever, and the test reaches its engine and faults directly."""

    def __init__(self, config: Any, folder: Path) -> None:
        import asyncio
        import threading

        from adapters.sim.server import SimVenueServer

        self.path = str(folder / "venue.sock")
        self.server = SimVenueServer(config, self.path)
        self.adapter = self.server.adapter
        self.engine = self.adapter.engine
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sim-venue", daemon=True)

    def __enter__(self) -> SimVenueThread:
        self._thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn: Any) -> Any:
        async def call() -> Any:
            return fn()
        return self.run(call())

    def truth(self) -> Any:
        return self.run(self.adapter.true_state())

    def stream_fault(self, kind: str, value: Any = None) -> None:
        self.on_loop(lambda: self.adapter.stream_control.apply(kind, value))

    def factory(self) -> Any:
        import functools

        from adapters.sim.remote import RemoteSimAdapter

        return functools.partial(RemoteSimAdapter, self.path)
