"""`posguard` in subprocesses: one command (`posguard`, `one_line_error`), a running
deployment (`PosguardRun`, `running`, `Served`) and its end (`end_deployment`)."""


from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supervisor.client import Client, ClientError
from supervisor.host.procfs import in_sessions, kill_sessions, kill_system, unix_peer_pid, wait_exited
from supervisor.host.runtime import read_holder

ROOT = Path(__file__).resolve().parents[2]          # the repository (tests/support/processes.py)


POSGUARD = [sys.executable, "-m", "supervisor.cli"]


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

    def __init__(self, config: Path, *, duration: float = 120, env: dict[str, str] | None = None,
                 lock: str = "journal.sqlite.lock") -> None:
        self.config = config
        self.var = config.parent / "var"
        self.lock = self.var / lock                  # "deployment.lock" with a journal on PostgreSQL
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
        end_deployment(self.var, lock=self.lock.name)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def end_deployment(var: Path, admin_port: int | None = None, lock: str = "journal.sqlite.lock") -> None:
    """kill -9 whatever a deployment left behind: its actor system (by the session its lock
    names, or its admin port) and the simulated venue serving its socket."""
    holder = read_holder(str(var / lock))
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


def venue_orders(socket: str) -> tuple[Any, ...]:
    """Every order a served simulated venue has taken, as its own log says (our client ids carry
    the writer's lease epoch on a shared journal)."""
    import asyncio

    from adapters.sim.remote import RemoteSimAdapter

    async def read() -> Any:
        venue = RemoteSimAdapter(socket)
        await venue.start()
        try:
            return (await venue.true_state()).orders
        finally:
            await venue.close()
    return asyncio.run(read())
