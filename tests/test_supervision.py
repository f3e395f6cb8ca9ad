"""Supervision on the multiprocess TCP base: kill -9, a failing handler, a hung process,
restart intensity and safe mode. Each case ends protected or flat with one entry per intent."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time

import pytest

from actors.messages import (
    ClosePosition,
    CommandAccepted,
    CommandDenied,
    DeploymentReady,
    GetTrueState,
    JournalSync,
    JournalSynced,
    OpenPosition,
    PositionSettings,
    SetSafeMode,
    StartDeployment,
    StatusReport,
    StatusRequest,
    StopDeployment,
    SupervisionSettings,
    WaitForState,
)
from adapters.base import OrderRequest, Side, TrueState
from adapters.faults import Fault, FaultKind
from adapters.sim_engine import EngineConfig
from adapters.simulated import SimulatedAdapter, SimVenueConfig
from supervisor.specs import RestartIntensity, backoff
from supervisor.supervisor import Supervisor

PRICES = {"BTCUSDT": 100.0, "ETHUSDT": 10.0}
SETTINGS = PositionSettings(naked_deadline_s=2.0, entry_unknown_window_s=0.5, poll_s=0.02, retry_s=0.02,
                            retry_cap_s=0.2, reply_timeout_s=1.0)


def policy(**kw) -> SupervisionSettings:
    base = dict(max_restarts=5, within_s=30.0, backoff_s=0.01, backoff_cap_s=0.1, jitter=0.2, heartbeat_s=0.05,
                heartbeat_timeout_s=5.0)          # generous: a loaded CI machine must not look hung
    base.update(kw)
    return SupervisionSettings(**base)


class System:
    def __init__(self, asys, journal: str, *faults: Fault, attached: bool = True, **supervision) -> None:
        venue = SimVenueConfig(engine=EngineConfig(seed=4, prices=PRICES, position_lag_s=2.4, volatility=0.0),
                               attached_stops=attached, latency_s=0.01, orders_per_second=500, faults=faults,
                               recv_window_s=0.35)    # scaled with the 0.5 s "never arrived" window
        self.asys = asys
        self.sup = asys.createActor(Supervisor)
        ready = asys.ask(self.sup, StartDeployment(tuple(PRICES), journal, functools.partial(SimulatedAdapter, venue),
                                                   SETTINGS, supervision=policy(**supervision),
                                                   protection=None), 10)
        assert isinstance(ready, DeploymentReady), ready

    def ask(self, msg, timeout: float = 5.0):
        return self.asys.ask(self.sup, msg, timeout)

    def status(self) -> StatusReport:
        report = self.ask(StatusRequest())
        assert isinstance(report, StatusReport)
        return report

    def pid(self, child: str) -> int:
        """The child's pid, once its ready message (which carries it) has reached the supervisor."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:                # each try is a round trip to the supervisor
            pid = dict((c, p) for c, p, _ in self.status().children)[child]
            if pid is not None:
                assert pid != os.getpid()
                return pid
        raise AssertionError(f"{child} never reported its pid")

    def wait(self, symbol: str, *states: str, within: float = 10.0, after: float = 0.0):
        snap = self.ask(WaitForState(symbol, states, newer_than=after), within)
        assert snap is not None, f"{symbol} never reached {states}: {self.status()}"
        return snap

    def truth(self) -> TrueState:
        return self.ask(GetTrueState()).state

    def entries(self, symbol: str) -> int:
        return sum(1 for o in self.truth().orders if o.symbol == symbol and not o.reduce_only)

    def stop(self) -> None:
        self.ask(StopDeployment(), 10)


@pytest.fixture
def system(tcp_system, tmp_path):
    made = []

    def start(*faults, **kw) -> System:
        s = System(tcp_system, str(tmp_path / f"j{len(made)}.sqlite"), *faults, **kw)
        made.append(s)
        return s

    yield start
    for s in made:
        s.stop()


def test_restart_intensity_counts_a_sliding_window():
    window = RestartIntensity(max_restarts=2, within_s=10.0)
    assert window.record(0.0) and window.record(1.0)
    assert not window.record(2.0)                         # third within 10 s
    assert window.record(20.0)                            # the old ones slid out


def test_backoff_doubles_to_its_cap_with_bounded_jitter():
    import random

    p = policy(backoff_s=0.1, backoff_cap_s=1.0, jitter=0.2)
    rng = random.Random(1)
    delays = [backoff(p, n, rng) for n in range(6)]
    assert 0.08 <= delays[0] <= 0.12 and 0.16 <= delays[1] <= 0.24
    assert all(0.8 <= d <= 1.2 for d in delays[4:])


def test_kill_9_of_a_position_actor_mid_entry_converges_with_one_entry(system):
    # The entry takes 0.3 s at the venue; the actor is killed while it waits for the reply.
    s = system(Fault("create_order", FaultKind.DELAY, symbol="BTCUSDT", delay_s=0.3), attached=False)
    pid = s.pid("position:BTCUSDT")
    assert isinstance(s.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0)), CommandAccepted)
    s.wait("BTCUSDT", "ENTERING")
    before = time.time()
    os.kill(pid, signal.SIGKILL)
    s.wait("BTCUSDT", "PROTECTED", after=s.wait("BTCUSDT", "RECOVERING", after=before).updated_at)
    assert s.pid("position:BTCUSDT") != pid
    assert s.entries("BTCUSDT") == 1
    pos = s.truth().open_positions()["BTCUSDT"]
    assert pos.stop_price == 95.0
    assert s.truth().call_count("fetch_positions") <= 1       # the start-up report only
    assert s.status().restarts == 1


def test_a_failing_handler_gets_its_actor_replaced_and_rebuilt(system):
    s = system()
    s.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0))
    s.wait("BTCUSDT", "PROTECTED")
    pid = s.pid("position:ETHUSDT")
    before = time.time()
    bad = s.ask(OpenPosition("ETHUSDT", Side.BUY, "lots", 9.0))    # type: ignore[arg-type] - a handler bug
    assert isinstance(bad, CommandDenied) and "internal error" in bad.reason
    s.wait("ETHUSDT", "IDLE", after=s.wait("ETHUSDT", "RECOVERING", after=before).updated_at)
    assert s.pid("position:ETHUSDT") != pid and s.status().restarts == 1
    assert isinstance(s.ask(OpenPosition("ETHUSDT", Side.BUY, 1.0, 9.0)), CommandAccepted)
    s.wait("ETHUSDT", "PROTECTED")
    assert s.wait("BTCUSDT", "PROTECTED").filled_qty == 1.0       # the other symbol never noticed


def test_a_hung_actor_is_killed_by_the_watchdog_and_replaced(system):
    s = system(heartbeat_timeout_s=1.0)
    s.ask(OpenPosition("ETHUSDT", Side.BUY, 2.0, 9.0))
    s.wait("ETHUSDT", "PROTECTED")
    pid = s.pid("position:ETHUSDT")
    before = time.time()
    os.kill(pid, signal.SIGSTOP)                          # it stops answering anything
    try:
        s.wait("ETHUSDT", "PROTECTED", after=s.wait("ETHUSDT", "RECOVERING", within=10, after=before).updated_at)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert s.pid("position:ETHUSDT") != pid
    assert s.entries("ETHUSDT") == 1


def test_too_many_restarts_enter_safe_mode_where_protection_still_works(system):
    s = system(max_restarts=1)
    s.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0))
    s.wait("BTCUSDT", "PROTECTED")
    for _ in range(2):
        pid = s.pid("position:BTCUSDT")
        before = time.time()
        os.kill(pid, signal.SIGKILL)
        s.wait("BTCUSDT", "PROTECTED", after=s.wait("BTCUSDT", "RECOVERING", after=before).updated_at)
    report = s.status()
    assert report.safe_mode and "restarts" in report.safe_reason
    denied = s.ask(OpenPosition("ETHUSDT", Side.BUY, 1.0, 9.0))
    assert isinstance(denied, CommandDenied) and "safe mode" in denied.reason
    assert isinstance(s.ask(ClosePosition("BTCUSDT")), CommandAccepted)   # protection path works
    s.wait("BTCUSDT", "IDLE")
    assert "BTCUSDT" not in s.truth().open_positions()
    left = s.ask(SetSafeMode(False, "test operator"))
    assert isinstance(left, StatusReport) and not left.safe_mode
    assert isinstance(s.ask(OpenPosition("ETHUSDT", Side.BUY, 1.0, 9.0)), CommandAccepted)
    s.wait("ETHUSDT", "PROTECTED")


class VenueWithForeignPosition(SimulatedAdapter):
    """A venue that already holds an ETHUSDT position nobody journaled (opened by hand)."""

    async def start(self) -> None:
        await self.create_order(OrderRequest("ETHUSDT", Side.SELL, 3.0, "manual-1"))


def test_startup_reconciliation_reports_foreign_positions(tcp_system, tmp_path):
    venue = SimVenueConfig(engine=EngineConfig(seed=4, prices=PRICES, position_lag_s=0.0, volatility=0.0),
                           attached_stops=True, latency_s=0.0, orders_per_second=500)
    sup = tcp_system.createActor(Supervisor)
    ready = tcp_system.ask(sup, StartDeployment(tuple(PRICES), str(tmp_path / "j.sqlite"),
                                                functools.partial(VenueWithForeignPosition, venue), SETTINGS,
                                                supervision=policy()), 10)
    assert isinstance(ready, DeploymentReady)
    report, deadline = None, time.monotonic() + 5
    while time.monotonic() < deadline:                    # each ask is a round trip to the supervisor
        report = tcp_system.ask(sup, StatusRequest(), 5)
        if report.reconciliation:
            break
    assert "FOREIGN ETHUSDT sell 3" in report.reconciliation and "BTCUSDT IDLE" in report.reconciliation
    tcp_system.ask(sup, StopDeployment(), 10)


def test_safe_mode_outlives_a_restart_of_the_whole_program_until_an_operator_resumes(tcp_system, tmp_path):
    journal = str(tmp_path / "j.sqlite")
    first = System(tcp_system, journal)
    assert first.ask(SetSafeMode(True, "operator pause")).safe_mode
    assert isinstance(first.ask(JournalSync()), JournalSynced)
    first.stop()

    second = System(tcp_system, journal)                  # a new program on the same journal
    report = second.status()
    assert report.safe_mode and report.safe_reason == "operator pause"
    denied = second.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0))
    assert isinstance(denied, CommandDenied) and "safe mode" in denied.reason
    assert not second.ask(SetSafeMode(False, "operator resume")).safe_mode
    assert isinstance(second.ask(JournalSync()), JournalSynced)
    second.stop()

    third = System(tcp_system, journal)
    try:
        assert not third.status().safe_mode
        assert isinstance(third.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0)), CommandAccepted)
        third.wait("BTCUSDT", "PROTECTED")
    finally:
        third.stop()


class VenueDownWhileFlagged(SimulatedAdapter):
    """Cannot be reached while the flag file exists (a venue outage seen at start-up)."""

    def __init__(self, config: SimVenueConfig, flag: str) -> None:
        super().__init__(config)
        self.flag = flag

    async def start(self) -> None:
        if os.path.exists(self.flag):
            from adapters.base import VenueTimeout
            raise VenueTimeout("venue unreachable (test outage)")


def test_an_exchange_that_cannot_start_after_a_crash_is_retried_until_the_venue_is_back(tcp_system, tmp_path):
    venue = SimVenueConfig(engine=EngineConfig(seed=4, prices=PRICES, volatility=0.0), latency_s=0.0,
                           orders_per_second=500, recv_window_s=0.35)
    flag = str(tmp_path / "venue-down")
    sup = tcp_system.createActor(Supervisor)
    ready = tcp_system.ask(sup, StartDeployment(tuple(PRICES), str(tmp_path / "j.sqlite"),
                                                functools.partial(VenueDownWhileFlagged, venue, flag), SETTINGS,
                                                supervision=policy(max_restarts=100), protection=None), 10)
    assert isinstance(ready, DeploymentReady)
    try:
        children = dict((c, p) for c, p, _ in tcp_system.ask(sup, StatusRequest(), 5).children)
        open(flag, "w").close()
        os.kill(children["exchange"], signal.SIGKILL)     # crash; the restarted one cannot start the venue
        deadline = time.monotonic() + 15
        while "attempt 2," not in tcp_system.ask(sup, StatusRequest(), 5).venue_status:
            assert time.monotonic() < deadline, "the exchange did not try again"   # each ask: a round trip
        report = tcp_system.ask(sup, StatusRequest(), 5)
        # It kept trying in its own process, with a back-off, said in status: not through restarts.
        assert report.venue_status.startswith("venue not ready (unreachable)") and report.restarts == 1
        os.remove(flag)                                   # the venue is back
        deadline = time.monotonic() + 15                  # ready again: the status says nothing of the venue
        while (report := tcp_system.ask(sup, StatusRequest(), 5)).venue_status or dict(
                (c, p) for c, p, _ in report.children)["exchange"] in (None, children["exchange"]):
            assert time.monotonic() < deadline, "the exchange never came back"
        assert isinstance(tcp_system.ask(sup, OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0), 5), CommandAccepted)
        snap = tcp_system.ask(sup, WaitForState("BTCUSDT", ("PROTECTED",)), 10)
        assert snap is not None and snap.state == "PROTECTED"
    finally:
        tcp_system.ask(sup, StopDeployment(), 10)
