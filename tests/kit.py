"""The test kit: what tests and benchmarks share to build configs, run deployments and end them.

Importing it changes nothing (no environment variables, no processes): every fixture or
context manager here cleans up after itself, leaving no process, port or socket behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supervisor.client import Client, ClientError
from supervisor.processes import in_sessions, kill_sessions, kill_system, unix_peer_pid, wait_exited
from supervisor.runtime import read_holder

ROOT = Path(__file__).resolve().parent.parent
POSGUARD = [sys.executable, "-m", "supervisor.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(folder: Path, admin_port: int = 0, *, symbols: dict[str, float] | None = None, lag: float = 2.4,
                attached: bool = True, opens: bool = True, extra: str = "", name: str = "pg.toml") -> Path:
    """A simulated-venue config: BTCUSDT and ETHUSDT by default, both opened at start."""
    prices = symbols or {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0}
    price_lines = "\n".join(f"{s} = {p}" for s, p in prices.items())
    open_lines = ""
    if opens:
        first, *rest = prices
        open_lines = f'[[open]]\nsymbol = "{first}"\nside = "buy"\nqty = 0.01\nstop_pct = 2.0\n'
        if rest:
            stop = prices[rest[0]] * 1.0333
            open_lines += f'[[open]]\nsymbol = "{rest[0]}"\nside = "sell"\nqty = 0.5\nstop = {stop:.1f}\n'
    cfg = folder / name
    cfg.write_text(textwrap.dedent(f"""
        [venue]
        name = "simulated"
        [venue.simulated]
        seed = 3
        position_lag_s = {lag}
        latency_s = 0.01
        attached_stops = {str(attached).lower()}
        orders_per_second = 100
        [venue.simulated.prices]
        """) + price_lines + textwrap.dedent(f"""
        [deployment]
        symbols = {list(prices)!r}
        refresh_s = 0.2
        [risk]
        max_notional = 100000.0
        [journal]
        path = "var/journal.sqlite"
        [admin]
        port = {admin_port}
        [logging]
        file = "var/posguard.log"
        """).replace("'", '"') + open_lines + extra)
    return cfg


class PosguardRun:
    """`posguard run` in a subprocess, and everything it starts, ended whatever happens."""

    def __init__(self, config: Path, *, duration: float = 120, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.var = config.parent / "var"
        self.lock = self.var / "journal.sqlite.lock"
        self.socket = self.var / "posguard.sock"
        self.out: list[str] = []
        self.proc = subprocess.Popen([*POSGUARD, "run", "--config", str(config), "--duration", str(duration)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)

    def __enter__(self) -> PosguardRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def read_until(self, *needles: str) -> list[str]:
        """Lines of its output up to one holding every needle."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)
            if all(n in line for n in needles):
                return self.out
        raise AssertionError(f"never saw {needles}: {''.join(self.out)} {self.proc.stderr.read()}")  # type: ignore

    def client(self, timeout: float = 10.0) -> Client:
        return Client(str(self.socket), timeout)

    def status(self, **kw: Any) -> dict[str, Any]:
        with self.client() as pg:
            return pg.status(**kw)

    def wait_states(self, wanted: dict[str, str], within: float = 30.0) -> dict[str, Any]:
        """Ask the deployment until every symbol is in its wanted state (each ask a round trip)."""
        deadline = time.monotonic() + within
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(ClientError):
                status = self.status()
                if {p["symbol"]: p["state"] for p in status["positions"]} | wanted == \
                        {p["symbol"]: p["state"] for p in status["positions"]}:
                    return status
            time.sleep(0.05)                         # between round trips, not as synchronisation
        raise AssertionError(f"never reached {wanted}: {status.get('positions')}")

    def pids(self) -> set[int]:
        """Every live process of its actor system (the session its deployment lock names)."""
        holder = read_holder(str(self.lock))
        return in_sessions({str(holder["session"])}) if holder.get("session") else set()

    def interrupt(self, timeout: float = 30.0) -> tuple[str, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=timeout)
        return "".join(self.out) + out, err

    def end(self) -> None:
        """Whatever state it is in: run, its actor system, its venue -- all gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        end_deployment(self.var)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def end_deployment(var: Path, admin_port: int | None = None) -> None:
    """kill -9 whatever a deployment left behind: its actor system (by the session its lock
    names, or its admin port) and the simulated venue serving its socket."""
    holder = read_holder(str(var / "journal.sqlite.lock"))
    if holder.get("session"):
        kill_sessions({str(holder["session"])})
    if admin_port:
        kill_system(admin_port)
    venue = unix_peer_pid(str(var / "venue.sock"))
    if venue is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(venue, signal.SIGKILL)
        wait_exited({venue})


@contextlib.contextmanager
def running(config: Path, **kw: Any) -> Iterator[PosguardRun]:
    run = PosguardRun(config, **kw)
    try:
        yield run
    finally:
        run.end()


class SimVenueThread:
    """The simulated venue's own server on a loop thread of this process: the deployment reaches
    it through its socket as ever, and the test reaches its engine and faults directly."""

    def __init__(self, config: Any, folder: Path) -> None:
        import asyncio
        import threading

        from adapters.sim_server import SimVenueServer

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

        from adapters.sim_server import RemoteSimAdapter

        return functools.partial(RemoteSimAdapter, self.path)
