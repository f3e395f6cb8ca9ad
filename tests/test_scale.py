"""Sized for a whole venue: descriptors per actor process that do not grow with the deployment,
several symbols per PositionActor process (each with its own core), and the thespian internals
the descriptor patches rely on still where they were (bench/scale.py measures the rest)."""

from __future__ import annotations

import functools
import os
import signal
import time
from typing import Any

import pytest
from thespian.actors import ActorTypeDispatcher

from actors.messages import (
    CommandAccepted,
    DeploymentReady,
    GetTrueState,
    OpenPosition,
    StartDeployment,
    StatusReport,
    StatusRequest,
    StopDeployment,
    WaitForState,
)
from actors.settings import PositionSettings, SupervisionSettings
from adapters.base import Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig
from supervisor.specs import AUTO_PROCESSES, symbols_per_process
from supervisor.supervisor import Supervisor
from tests.support import kit


def deploy(asys: Any, tmp: Any, symbols: int, per_process: int = 1) -> tuple[Any, tuple[str, ...]]:
    names = tuple(f"S{i:03d}USDT" for i in range(symbols))
    venue = SimVenueConfig(engine=EngineConfig(seed=1, prices=dict.fromkeys(names, 100.0), volatility=0.0),
                           latency_s=0.002, orders_per_second=1000)
    sup = asys.createActor(Supervisor)
    ready = asys.ask(sup, StartDeployment(names, str(tmp / f"journal{symbols}.sqlite"),
                                          functools.partial(SimulatedAdapter, venue), PositionSettings(),
                                          supervision=SupervisionSettings(symbols_per_process=per_process),
                                          protection=None), 60)
    assert isinstance(ready, DeploymentReady), ready
    return sup, names


def status(asys: Any, sup: Any) -> StatusReport:
    report = asys.ask(sup, StatusRequest(), 10)
    assert isinstance(report, StatusReport)
    return report


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_descriptors_of_an_actor_process_do_not_grow_with_the_deployment(tcp_system, tmp_path):
    # Before: the k-th PositionActor inherited the pipes of its k-1 elder siblings (2 each).
    counts = {}
    for n in (4, 24):
        sup, _ = deploy(tcp_system, tmp_path, n)
        pids = [pid for child, pid, up in status(tcp_system, sup).children if child.startswith("position:")]
        assert len(pids) == n and all(pids)
        counts[n] = max(descriptors(pid) for pid in pids)
        tcp_system.ask(sup, StopDeployment(), 30)
    # Before, the youngest of 24 held 2 x 20 more than the youngest of 4. A few either way are
    # thespian's connections (a transmit retried on a loaded machine opens another for a while).
    assert counts[24] <= counts[4] + 6, counts
    assert counts[4] <= 32, counts                        # a handful: stdio, log, lock, its loop, sockets


def test_a_process_guarding_several_symbols_keeps_each_apart_and_recovers_them_all(tcp_system, tmp_path):
    sup, names = deploy(tcp_system, tmp_path, 5, per_process=2)         # [0,1] [2,3] [4]
    report = status(tcp_system, sup)
    hosts = {child: pid for child, pid, _ in report.children if child.startswith("positions:")}
    assert sorted(hosts) == ["positions:0", "positions:1", "positions:2"]
    for symbol in names:
        assert isinstance(tcp_system.ask(sup, OpenPosition(symbol, Side.BUY, 1.0, 95.0), 5), CommandAccepted)
    for symbol in names:
        assert tcp_system.ask(sup, WaitForState(symbol, ("PROTECTED",)), 15) is not None
    before = {p.symbol: p.updated_at for p in status(tcp_system, sup).positions}
    os.kill(hosts["positions:0"], signal.SIGKILL)         # both of its symbols go down together ...
    deadline = time.monotonic() + 20
    while True:                                           # ... and come back, rebuilt from the journal
        report = status(tcp_system, sup)
        pid = dict((c, p) for c, p, _ in report.children)["positions:0"]
        states = {p.symbol: p.state for p in report.positions}
        if pid not in (None, hosts["positions:0"]) and all(s == "PROTECTED" for s in states.values()):
            break
        assert time.monotonic() < deadline, report
    after = {p.symbol: p.updated_at for p in report.positions}
    assert after[names[0]] > before[names[0]] and after[names[1]] > before[names[1]]
    assert all(after[s] == before[s] for s in names[2:])  # the other processes' symbols never moved
    truth = tcp_system.ask(sup, GetTrueState(), 5).state
    assert sorted(o.symbol for o in truth.orders if not o.reduce_only and o.client_order_id.startswith("pg")) \
        == sorted(names)                                  # one entry each, never a second
    assert all(p.stop_price == 95.0 for p in truth.open_positions().values())
    tcp_system.ask(sup, StopDeployment(), 30)


@pytest.mark.parametrize(("setting", "symbols", "per_process"), [
    (0, 3, 1), (0, AUTO_PROCESSES, 1), (0, AUTO_PROCESSES + 1, 2), (0, 1000, 25), (7, 3, 7), (1, 1000, 1)])
def test_symbols_per_process(setting, symbols, per_process):
    assert symbols_per_process(setting, symbols) == per_process


class Tally(ActorTypeDispatcher):
    """Counts what it receives; answers the count to "count"."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen = 0

    def receiveMsg_int(self, msg: int, sender: Any) -> None:  # noqa: N802
        self.seen += 1

    def receiveMsg_str(self, msg: str, sender: Any) -> None:  # noqa: N802
        self.send(sender, self.seen)


class Burst(ActorTypeDispatcher):
    """Given (tally, n): sends n messages to the tally from one handler."""

    def receiveMsg_tuple(self, msg: tuple[Any, int], sender: Any) -> None:  # noqa: N802
        tally, n = msg
        for i in range(n):
            self.send(tally, i)
        self.send(sender, "sent")


def test_a_burst_of_sends_from_one_handler_is_queued_never_dropped(tcp_system):
    # thespian's transport has a drop level (1 050 queued sends in one process): a panic over
    # 1 000 symbols sends that many closes from one handler. Measured: they are all delivered
    # (10 000 too), the transport drains as it goes.
    tally, burst = tcp_system.createActor(Tally), tcp_system.createActor(Burst)
    assert tcp_system.ask(burst, (tally, 3000), 60) == "sent"
    deadline, seen = time.monotonic() + 60, 0
    while seen < 3000 and time.monotonic() < deadline:   # bounded; each ask is a round trip
        seen = tcp_system.ask(tally, "count", 10) or seen
    assert seen == 3000


def test_the_thespian_internals_the_descriptor_patches_rely_on_are_there():
    # supervisor/actor_system/descriptors.py patches these; thespian is pinned, and a move fails here first.
    from thespian.system import multiprocCommon, transport, utilis

    assert hasattr(multiprocCommon.MultiProcReplicator, "_startChildActor")
    assert callable(multiprocCommon.startChild)
    assert hasattr(transport.TransmitIntent, "identify") and hasattr(transport.ReceiveEnvelope, "identify")
    assert isinstance(utilis._thesplog_control_settings[0], int)


def test_a_busy_actor_answers_heartbeats_at_once_and_a_stuck_loop_does_not():
    # A burst (1 000 entries journaled at once) leaves the journal a backlog of finished work to
    # send; its heartbeat is answered from the actor's thread at once, not behind that backlog --
    # while a loop that stopped turning leaves it unanswered (the watchdog then replaces it).
    import threading

    from actors.async_bridge import LOOP_STALE_S, AsyncBridge

    bridge = AsyncBridge()
    try:
        assert bridge.turning
        release = threading.Event()
        bridge.loop.call_soon_threadsafe(release.wait)   # the loop is stuck from now on
        deadline = time.monotonic() + LOOP_STALE_S + 5
        while bridge.turning:                            # bounded: the staleness bound, then some
            assert time.monotonic() < deadline, "a stuck loop still looks alive"
            time.sleep(0.05)
        release.set()
        deadline = time.monotonic() + 5
        while not bridge.turning:
            assert time.monotonic() < deadline, "the loop never came back"
            time.sleep(0.05)
    finally:
        release.set()
        bridge.close()


def _limited(soft: int, hard: int) -> Any:
    """A preexec_fn: the child starts under these open-files limits."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_system_start_raises_the_open_files_limit_to_the_hard_one():
    # A soft limit of 1 024 (a common default) would stop the Supervisor of a large deployment
    # with EMFILE; thespian's epoll selector itself has no ceiling.
    import subprocess
    import sys

    probe = ("import resource\nfrom supervisor.actor_system import descriptors\n"
             "print(descriptors.raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, cwd=kit.ROOT,
                         preexec_fn=_limited(256, 4096))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4096", "4096"]


def test_run_refuses_a_deployment_the_open_files_limit_cannot_hold(tmp_path):
    # 100 symbols, one per process: 106 actor processes need 680 descriptors in the Supervisor.
    import subprocess

    symbols = {f"S{i:03d}USDT": 10.0 + i for i in range(100)}
    cfg = kit.demo_config(tmp_path, symbols=symbols, opens=False, tables={"supervision": {"symbols_per_process": 1}})
    out = subprocess.run([*kit.POSGUARD, "run", "--config", str(cfg), "--duration", "1"], capture_output=True,
                         text=True, timeout=60, cwd=kit.ROOT, preexec_fn=_limited(300, 300))
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "open-files limit (300) is below the 680" in out.stderr and "symbols_per_process" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "var" / "posguard.sock").exists()         # refused before anything started


def test_a_child_that_never_answered_is_found_by_the_port_its_address_names(tmp_path):
    # A restarted group that hangs before its first heartbeat answer has no pid on record: the
    # Supervisor finds it among its own children by its listening port, and kills it.
    import subprocess
    import sys

    from supervisor.actor_system.start import free_port
    from supervisor.host.procfs import child_listening_on

    port = free_port()
    listener = ("import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(sys.argv[1])))\n"
                "s.listen()\nprint('up', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", listener, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        assert child_listening_on(port) == proc.pid
        assert child_listening_on(port, parent=1) is None                  # only our own children
        assert child_listening_on(free_port()) is None
    finally:
        proc.kill()
        proc.wait(timeout=10)
