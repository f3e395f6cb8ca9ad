"""A deployment on an actor system of this process (`Deployment`, `Deployments`,
`actor_system`), ended by whoever started it."""


from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from supervisor.actor_system.start import free_port


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
    from supervisor.actor_system.start import forget_system, start_system

    asys = start_system(free_port())
    try:
        yield asys
    finally:
        asys.shutdown()
        forget_system()
