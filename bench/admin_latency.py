"""What an operator's status costs, and what authenticating every actor frame costs.

    python bench/admin_latency.py [--symbols 20] [--asks 500] [--cold 20]
In one run: a bare thespian ask to a trivial actor with thespian's plain pickle frames, then the
same with posguard's HMAC-authenticated frames (the cost of item 1 of the control plane); a
status ask to the Supervisor over thespian; `status` through the deployment's Unix-socket API
with the positions open (goal p99 <= 2 ms); and the cold wall time of the `posguard status`
command, a new process each time (goal <= 0.15 s). Last line:
`admin_latency api_p99_ms=<x> auth_over_plain=<ratio> cold_status_s=<y>`.
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger
from thespian.actors import Actor

from actors.messages import DeploymentReady, OpenPosition, StartDeployment, StatusRequest, StopDeployment
from actors.settings import ControlPlane
from adapters.base import Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig
from supervisor.actor_system.start import bind_loopback_only, forget_system, free_port, start_system
from supervisor.client import Client
from supervisor.supervisor import Supervisor


class Echo(Actor):
    def receiveMessage(self, msg, sender):  # noqa: N802
        self.send(sender, msg)


def timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def line(name: str, values: list[float], unit: str = "ms") -> str:
    return f"{name:<38} p50 {statistics.median(values):7.3f} {unit}  p99 {pct(values, 0.99):7.3f} {unit}"


def plain_frames() -> None:
    """thespian as it ships: frames are bare pickles (what posguard replaces)."""
    from thespian.system.transport import TCPTransport
    from thespian.system.transport.streamBuffer import ackDataErrMsg, ackMsg

    TCPTransport.serializer, TCPTransport.ackMsg, TCPTransport.ackDataErrMsg = pickle, ackMsg, ackDataErrMsg


def bare_asks(n: int, authenticated: bool) -> list[float]:
    if authenticated:
        asys = start_system()
    else:
        from thespian.actors import ActorSystem

        plain_frames()
        bind_loopback_only()
        asys = ActorSystem("multiprocTCPBase", {"Admin Port": free_port()})
    try:
        echo = asys.createActor(Echo)
        timed(lambda: asys.ask(echo, 1, 5), 50)                  # warm the connections
        return timed(lambda: asys.ask(echo, 1, 5), n)
    finally:
        asys.shutdown()
        forget_system()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--asks", type=int, default=500)
    parser.add_argument("--cold", type=int, default=20)
    args = parser.parse_args()
    logger.remove()
    plain = bare_asks(args.asks, authenticated=False)
    auth = bare_asks(args.asks, authenticated=True)

    symbols = tuple(f"S{i:03d}USDT" for i in range(args.symbols))
    venue = SimVenueConfig(engine=EngineConfig(prices={s: 100.0 for s in symbols}, volatility=0.0),
                           latency_s=0.05, orders_per_second=100)
    asys = start_system()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        sock = f"{tmp}/posguard.sock"
        try:
            sup = asys.createActor(Supervisor)
            control = ControlPlane(sock, f"{tmp}/j.sqlite.lock")
            start = StartDeployment(symbols, f"{tmp}/j.sqlite", functools.partial(SimulatedAdapter, venue),
                                    control=control)
            assert isinstance(asys.ask(sup, start, 60), DeploymentReady)
            for s in symbols:
                asys.ask(sup, OpenPosition(s, Side.BUY, 1.0, 95.0), 5)
            supervisor = timed(lambda: asys.ask(sup, StatusRequest(), 5), args.asks)
            with Client(sock) as pg:
                timed(pg.status, 50)
                api = timed(pg.status, args.asks)
            config = Path(tmp) / "pg.toml"
            config.write_text(f'[journal]\npath = "{tmp}/j.sqlite"\n')
            script = Path(sys.executable).parent / "posguard"
            command = [str(script)] if script.exists() else [sys.executable, "-m", "supervisor.cli"]
            cold = []
            for _ in range(args.cold):
                t = time.perf_counter()
                done = subprocess.run([*command, "status", "--config", str(config), "--json"], capture_output=True)
                cold.append(time.perf_counter() - t)
                assert done.returncode == 0, done.stderr
            asys.ask(sup, StopDeployment(), 30)
        finally:
            asys.shutdown()
    ratio = statistics.median(auth) / statistics.median(plain)
    print(f"{args.symbols} symbols open, {args.asks} asks each")
    print(line("bare thespian ask, plain pickle frames", plain))
    print(line("bare thespian ask, HMAC-SHA256 frames", auth) + f"  ({ratio:.2f}x plain)")
    print(line("status ask to the Supervisor (thespian)", supervisor))
    print(line("status through the Unix-socket API", api) + "  (goal p99 <= 2 ms)")
    print(f"{'cold `posguard status --json` (new process)':<38} p50 {statistics.median(cold):7.3f} s   max"
          f" {max(cold):7.3f} s  (goal <= 0.15 s; {' '.join(command[:1])})")
    print(f"admin_latency api_p99_ms={pct(api, 0.99):.3f} auth_over_plain={ratio:.2f}"
          f" cold_status_s={statistics.median(cold):.3f}")


if __name__ == "__main__":
    main()
