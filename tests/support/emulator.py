"""A venue emulator (Bybit or Binance: REST and private streams) on its own event loop in a
background thread, for tests and benchmarks: the venue keeps running whatever the code under
test does, and the test can still reach its engine (truth, faults, stream faults) directly.
Always used as a context manager, so it stops by itself."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from actors.settings import PositionSettings
from adapters.base import VenueError, VenueTimeout
from adapters.ccxt.settings import CcxtVenueSettings
from adapters.emulators.base import DROP, EmulatorBase, EmulatorConfig
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.bybit import BybitEmulator
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault
from adapters.sim.truth import TrueState
from tests.support.kit import KEY, KEY_ENV, PRICES, SECRET, SECRET_ENV

T = TypeVar("T")

# A deployment's position settings on an emulator: its windows above the venue's receive window.
SETTINGS = PositionSettings(naked_deadline_s=5.0, entry_unknown_window_s=6.0, poll_s=0.05, retry_s=0.05,
                            retry_cap_s=0.5)


def emulator_config(*faults: Fault, lag: float = 24.0, latency_s: float = 0.02, **venue: Any) -> EmulatorConfig:
    """An emulator over the simulated venue at kit.PRICES, with the incident's 24 s REST lag."""
    return EmulatorConfig(venue=SimVenueConfig(
        engine=EngineConfig(seed=5, prices=PRICES, position_lag_s=lag, volatility=0.0), latency_s=latency_s,
        orders_per_second=100, faults=faults, **venue))


class EmulatorThread:
    def __init__(self, config: EmulatorConfig, dialect: type[EmulatorBase] = BybitEmulator) -> None:
        if not config.keys:
            from dataclasses import replace
            config = replace(config, keys=((KEY, SECRET),))
        self.emulator = dialect(config)
        self.venue = "binanceusdm" if dialect is BinanceEmulator else "bybit"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bybit-emulator", daemon=True)

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        self.run(self.emulator.start())
        return self

    def __exit__(self, *exc: object) -> None:
        # What a test may still ask after the venue stopped: its last truth and requests.
        self._final = (self.truth(), list(self.emulator.requests),
                       list(self.emulator.stream.log) if self.emulator.stream else [])
        self.run(self.emulator.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()
        return self.run(call())

    @property
    def url(self) -> str:
        return self.emulator.url

    def truth(self) -> TrueState:
        if self.loop.is_closed():
            return self._final[0]
        return self.run(self.emulator.adapter.true_state())

    def mangle(self, path: str, key: str, value: Any = DROP, times: int = 1) -> None:
        """The next `times` replies on `path` lose `key` (or carry `value` there): a malformed venue."""
        self.on_loop(lambda: self.emulator.mangle(path, key, value, times))

    def add_fault(self, fault: Fault) -> None:
        self.on_loop(lambda: self.emulator.adapter.faults.add(fault))

    def requests_log(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(method, path, params) of every private request, oldest first."""
        if self.loop.is_closed():
            return list(self._final[1])
        return self.on_loop(lambda: list(self.emulator.requests))

    def requests(self, path: str) -> list[dict[str, Any]]:
        """The parameters of every request to `path` the emulator received, oldest first."""
        if self.loop.is_closed():
            return [params for _, p, params in self._final[1] if p == path]
        return self.on_loop(lambda: [params for _, p, params in self.emulator.requests if p == path])

    @property
    def ws_url(self) -> str:
        """The streams' base (same port as REST): ws://127.0.0.1:PORT."""
        return self.url.replace("http://", "ws://", 1)

    def stream_fault(self, kind: str, **kw: Any) -> dict[str, Any]:
        """Throw one of the streams' fault switches: drop (mode), stall, resume, delay (seconds),
        reject_auth (on), expire_listen_key (silent)."""
        return self.run(self.emulator.stream_fault(kind, **kw))

    def stream_log(self) -> list[tuple[str, dict[str, Any]]]:
        """What stream clients sent (auth, subscribe, pings, listen-key calls), oldest first."""
        if self.loop.is_closed():
            return list(self._final[2])
        return self.on_loop(lambda: list(self.emulator.stream.log) if self.emulator.stream else [])

    def settings(self, **overrides: Any) -> CcxtVenueSettings:
        return CcxtVenueSettings(**{"name": self.venue, "key_env": KEY_ENV, "secret_env": SECRET_ENV,
                                    "api_url": self.url, **overrides})

    def factory(self, **overrides: Any) -> Callable[[], Any]:
        """What a deployment builds its adapter from: this venue's own, through ccxt, at this emulator."""
        import functools

        from adapters.binance.adapter import BinanceAdapter
        from adapters.bybit.adapter import BybitAdapter

        adapter = BinanceAdapter if self.venue == "binanceusdm" else BybitAdapter
        return functools.partial(adapter, self.settings(**overrides))

    def posts(self, path: str) -> list[dict[str, Any]]:
        """The parameters of every request that changes something (POST) on `path`, oldest first."""
        return [params for method, p, params in self.requests_log() if p == path and method == "POST"]


def run_adapter(emu: EmulatorThread, adapter_cls: type, scenario: Callable[[Any], Any], **settings: Any) -> Any:
    """Run `scenario(adapter)` on a started adapter for this emulator, in a fresh event loop;
    the adapter is always closed."""
    async def main() -> Any:
        adapter = adapter_cls(emu.settings(**settings))
        await adapter.start()
        try:
            return await scenario(adapter)
        finally:
            await adapter.close()
    return asyncio.run(main())


async def failure(call: Any) -> Exception:
    """The VenueError / VenueTimeout a call ends in; a call that succeeds fails the test."""
    try:
        await call
    except (VenueError, VenueTimeout) as exc:
        return exc
    raise AssertionError("the call succeeded")
