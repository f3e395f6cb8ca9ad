"""The test kit: what tests and benchmarks share to build configs, run deployments and end them.

Importing it changes nothing (no environment variable, no process, no thread): the emulators'
keys reach the environment only through `set_test_keys()` (tests/conftest.py calls it once per
session; a benchmark calls it before its first actor system forks). Every fixture or context
manager here cleans up after itself, leaving no process, port or socket behind.

- keys: `set_test_keys`, and the keys the emulators accept
- clocks: `ManualClock`
- configs: `demo_config` (simulated venue), `bybit_config` (a real-venue config for the emulator)
- a deployment on an actor system of this process: `Deployment`, `Deployments`, `actor_system`
- `posguard` in subprocesses: `posguard`, `one_line_error`, `PosguardRun`, `running`, `Served`,
  `end_deployment`
- the simulated venue: `SimVenueThread` (in this process), `venue_truth` (one served on a socket)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from supervisor.client import Client, ClientError
from supervisor.processes import in_sessions, kill_sessions, kill_system, unix_peer_pid, wait_exited
from supervisor.runtime import read_holder
from supervisor.system import free_port

ROOT = Path(__file__).resolve().parent.parent
POSGUARD = [sys.executable, "-m", "supervisor.cli"]

# -- keys ------------------------------------------------------------------------------------------

KEY, SECRET = "test-key-0123456789", "test-secret-abcdefghijklmnop"       # what the emulators accept
KEY_ENV, SECRET_ENV = "POSGUARD_TEST_BYBIT_KEY", "POSGUARD_TEST_BYBIT_SECRET"
BAD_SECRET_ENV = "POSGUARD_TEST_BYBIT_BAD_SECRET"     # a secret the emulator does not accept
TEST_KEYS = {KEY_ENV: KEY, SECRET_ENV: SECRET, BAD_SECRET_ENV: "a-wrong-secret-for-tests"}

E2E_KEY_ENV, E2E_SECRET_ENV = "PG_E2E_KEY", "PG_E2E_SECRET"        # the ones `bybit_config` names
E2E_KEY, E2E_SECRET = "PGKEY-e2e-7f3a9c", "PGSECRET-e2e-b81d44e0"


def set_test_keys() -> dict[str, str | None]:
    """Put the emulators' test keys in this process's environment. Call it before an actor system
    starts: its processes inherit the environment of the admin process, forked at start.
    Returns what the variables held before, for `restore_env`."""
    before = {name: os.environ.get(name) for name in TEST_KEYS}
    os.environ.update(TEST_KEYS)
    return before


def restore_env(before: dict[str, str | None]) -> None:
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# -- clocks ----------------------------------------------------------------------------------------


class ManualClock:
    """A clock that moves only when told: `clock()` is now, `clock.t` may be set, `advance` adds."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# -- configs ---------------------------------------------------------------------------------------

PRICES = {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0}


def toml_text(tables: dict[str, Any]) -> str:
    """TOML for {table: {key: value}}, in the order given; a list of tables is an array of tables."""
    lines: list[str] = []
    for name, body in tables.items():
        for table in body if isinstance(body, list) else [body]:
            lines.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def default_opens(names: list[str], prices: list[float]) -> list[dict[str, Any]]:
    """The first symbol long with a 2 % stop, the second (if any) short with a stop 1/30 above."""
    opens: list[dict[str, Any]] = [{"symbol": names[0], "side": "buy", "qty": 0.01, "stop_pct": 2.0}]
    if len(names) > 1:
        opens.append({"symbol": names[1], "side": "sell", "qty": 0.5, "stop": round(prices[1] * 31 / 30, 1)})
    return opens


def write_config(folder: Path, name: str, venue: dict[str, dict[str, Any]], prices: dict[str, float],
                 admin_port: int, *, names: list[str] | None = None,
                 opens: bool | list[dict[str, Any]] = True, tables: dict[str, Any] | None = None,
                 extra: str = "", logging: dict[str, Any] | None = None) -> Path:
    """`folder/name`: the venue's tables, then the deployment (`names`, by default the prices'
    symbols), risk, journal and logs under `var/`, the admin port, then `tables` (a dict merges
    into a table of the same name, a list is an array of tables), the `[[open]]`s, and `extra`
    (TOML text, appended as it is)."""
    names = list(names or prices)
    config: dict[str, Any] = {
        **venue,
        "deployment": {"symbols": names, "refresh_s": 0.2},
        "risk": {"max_notional": 100000.0},
        "journal": {"path": "var/journal.sqlite"},
        "admin": {"port": admin_port},
        "logging": {"file": "var/posguard.log", **(logging or {})},
    }
    for table, body in (tables or {}).items():
        config[table] = body if isinstance(body, list) else {**config.get(table, {}), **body}
    if opens:
        config["open"] = default_opens(names, list(prices.values())) if opens is True else opens
    path = folder / name
    path.write_text(toml_text(config) + extra)
    return path


def demo_config(folder: Path, admin_port: int = 0, *, symbols: dict[str, float] | None = None, lag: float = 2.4,
                attached: bool = True, opens: bool | list[dict[str, Any]] = True, tables: dict[str, Any] | None = None,
                extra: str = "", name: str = "pg.toml") -> Path:
    """A simulated-venue config: BTCUSDT and ETHUSDT (`symbols`: {symbol: price}) by default,
    both opened at start. `tables` adds to or overrides any table, [venue.simulated] included."""
    prices = symbols or PRICES
    venue = {"venue": {"name": "simulated"},
             "venue.simulated": {"seed": 3, "position_lag_s": lag, "latency_s": 0.01, "attached_stops": attached,
                                 "orders_per_second": 100},
             "venue.simulated.prices": dict(prices)}
    return write_config(folder, name, venue, prices, admin_port, opens=opens, tables=tables, extra=extra)


def bybit_config(folder: Path, admin_port: int, api_port: int) -> Path:
    """A Bybit config for the project's emulator (`posguard emulator`, [emulator] at api_port, the
    incident's 24 s lag); keys from $PG_E2E_KEY / $PG_E2E_SECRET; BTCUSDT named in ccxt's form."""
    prices = PRICES
    venue = {"venue": {"name": "bybit", "api_url": f"http://127.0.0.1:{api_port}", "key_env": E2E_KEY_ENV,
                       "secret_env": E2E_SECRET_ENV},
             "emulator": {"seed": 3, "position_lag_s": 24.0, "latency_s": 0.01, "orders_per_second": 100},
             "emulator.prices": dict(prices)}
    return write_config(folder, "bybit.toml", venue, prices, admin_port, names=["BTC/USDT:USDT", "ETHUSDT"],
                        logging={"level": "DEBUG"})


# -- a deployment on an actor system of this process -----------------------------------------------


class Deployment:
    """A Supervisor on `asys` running one deployment (StartDeployment's fields as keywords), and
    the asks tests and benchmarks make of it. Each ask is a round trip: waiting loops built on
    them poll the deployment, never sleep."""

    def __init__(self, asys: Any, symbols: tuple[str, ...] | list[str], journal: str, factory: Callable[[], Any],
                 *, timeout: float = 30.0, **start: Any) -> None:
        from actors.messages import DeploymentReady, StartDeployment
        from supervisor.supervisor import Supervisor

        self.asys = asys
        self.sup = asys.createActor(Supervisor)
        reply = asys.ask(self.sup, StartDeployment(tuple(symbols), journal, factory, **start), timeout)
        assert isinstance(reply, DeploymentReady), reply
        self.ready = reply

    def ask(self, msg: Any, timeout: float = 5.0) -> Any:
        return self.asys.ask(self.sup, msg, timeout)

    def status(self) -> Any:
        from actors.messages import StatusReport, StatusRequest

        report = self.ask(StatusRequest())
        assert isinstance(report, StatusReport), report
        return report

    def states(self) -> dict[str, str]:
        return {p.symbol: p.state for p in self.status().positions}

    def snapshot(self, symbol: str) -> Any:
        return {p.symbol: p for p in self.status().positions}[symbol]

    def pid(self, child: str, within: float = 5.0) -> int:
        """The child's pid, once its ready message (which carries it) has reached the supervisor."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pid = {c: p for c, p, _ in self.status().children}[child]
            if pid is not None:
                assert pid != os.getpid()
                return pid
        raise AssertionError(f"{child} never reported its pid")

    def stream(self) -> Any:
        """The venue's (first) private stream, as the deployment reports it."""
        report = self.status()
        assert report.streams, report
        return report.streams[0]

    def stream_state(self) -> str:
        streams = self.status().streams
        return streams[0].state if streams else "none"

    def open(self, symbol: str, side: Any, qty: float, stop: float | None) -> None:
        from actors.messages import CommandAccepted, OpenPosition

        reply = self.ask(OpenPosition(symbol, side, qty, stop))
        assert isinstance(reply, CommandAccepted), reply

    def wait(self, symbol: str, *states: str, within: float = 10.0, after: float = 0.0) -> Any:
        """The symbol's snapshot once it is in one of `states` (and newer than `after`): the
        supervisor answers when that snapshot arrives."""
        from actors.messages import WaitForState

        snap = self.ask(WaitForState(symbol, states, newer_than=after), within)
        assert snap is not None, f"{symbol} did not reach {states} within {within}s; now {self.status()}"
        return snap

    def until(self, check: Callable[[], Any], within: float, what: str, every: float = 0.0) -> Any:
        """`check()`'s first true result, asked until `within` seconds pass (`every` seconds apart:
        for long waits, between round trips, not as synchronisation)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(every)
        raise AssertionError(f"{what}: not within {within}s; status: {self.status()}")

    def status_until(self, check: Callable[[Any], Any], within: float, what: str, every: float = 0.0) -> Any:
        """The first status report that `check` accepts, asked until `within` seconds pass."""
        return self.until(lambda: next((r for r in [self.status()] if check(r)), None), within, what, every)

    def truth(self) -> Any:
        """The simulated venue's own truth, from the deployment's ExchangeActor."""
        from actors.messages import GetTrueState

        reply = self.ask(GetTrueState())
        assert reply is not None and reply.state is not None, reply
        return reply.state

    def scan(self) -> Any:
        from actors.messages import ScanDone, ScanNow

        done = self.ask(ScanNow(), 15)
        assert isinstance(done, ScanDone), done
        return done

    def sync(self, symbol: str | None = None, timeout: float = 5.0) -> Any:
        """Everything the symbol's actor (or the journal) sent so far is written."""
        from actors.messages import JournalSync

        return self.ask(JournalSync(symbol=symbol) if symbol else JournalSync(), timeout)

    def stop(self, timeout: float = 15.0) -> Any:
        from actors.messages import StopDeployment

        return self.ask(StopDeployment(), timeout)


class Deployments:
    """Deployments and the venues they run on, for one test: on exit every deployment is
    stopped (each reply DeploymentStopped when `expect_stopped`), then every venue ended."""

    def __init__(self, asys: Any, expect_stopped: bool = False) -> None:
        self.asys, self.expect_stopped = asys, expect_stopped
        self.made: list[Deployment] = []
        self._venues = contextlib.ExitStack()

    def __enter__(self) -> Deployments:
        return self

    def venue(self, venue: Any) -> Any:
        """Enter a venue (EmulatorThread, SimVenueThread); it is left once the deployments stopped."""
        return self._venues.enter_context(venue)

    def start(self, *args: Any, **kw: Any) -> Deployment:
        return self.add(Deployment(self.asys, *args, **kw))

    def add(self, d: Any) -> Any:
        """A deployment made elsewhere (a Deployment of a test's own kind), stopped on exit."""
        self.made.append(d)
        return d

    def __exit__(self, *exc: object) -> None:
        from actors.messages import DeploymentStopped

        with self._venues:                                # the venues end even if a stop goes wrong
            replies = [d.stop() for d in self.made]
        if self.expect_stopped:
            assert all(isinstance(r, DeploymentStopped) for r in replies), replies


@contextlib.contextmanager
def actor_system() -> Iterator[Any]:
    """A loopback-only multiprocess actor system (a benchmark's), shut down and forgotten -- the
    next one starts afresh -- whatever happens."""
    from supervisor.system import forget_system, start_system

    asys = start_system(free_port())
    try:
        yield asys
    finally:
        asys.shutdown()
        forget_system()


# -- `posguard` in subprocesses --------------------------------------------------------------------


def posguard(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POSGUARD, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """A command's only stderr line (no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


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
        """Ctrl-C; everything it printed (stdout, stderr) once it has ended."""
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


class Served:
    """`posguard venue` (the simulated venue on a Unix socket) or `posguard emulator` (a venue's
    HTTP emulator) for a config, in a process of its own -- it outlives whatever a test kills,
    as a real venue does -- ended on exit. `first_line` is what it said on start."""

    def __init__(self, command: str, config: Path, *args: str) -> None:
        self.proc = subprocess.Popen([*POSGUARD, command, "--config", str(config), *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)


def venue_truth(path: str | Path) -> Any:
    """The TrueState of the simulated venue serving the Unix socket `path`."""
    import asyncio

    from adapters.sim_server import RemoteSimAdapter

    async def ask() -> Any:
        venue = RemoteSimAdapter(str(path))
        await venue.start()
        try:
            return await venue.true_state()
        finally:
            await venue.close()

    return asyncio.run(ask())


# -- the simulated venue in this process -----------------------------------------------------------


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
