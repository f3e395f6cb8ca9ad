"""`posguard` — run a supervised deployment, or ask a running one for its state.

User mistakes (bad config, nothing running, port taken) get one line on stderr and a
non-zero exit, never a traceback. `status` never starts an actor system.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

from loguru import logger

from actors.logs import configure_logging
from actors.messages import (
    CommandAccepted,
    DeploymentReady,
    FetchPrice,
    GetTrueState,
    OpenPosition,
    PositionSnapshot,
    PriceFetched,
    SetSafeMode,
    StartDeployment,
    StatusReport,
    StatusRequest,
    StopDeployment,
    TrueStateReport,
)
from adapters.base import Side, TrueState
from supervisor.admin import ASK_TIMEOUT_S, EXIT_OK, EXIT_USAGE, UserError, add_commands, connect
from supervisor.config import DEFAULT_CONFIG, ConfigError, DeploymentConfig, OpenSpec, emulator_port, load_config
from supervisor.processes import alive, kill_system
from supervisor.specs import RestartIntensity
from supervisor.system import forget_system, port_listening, start_system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    default_config = os.environ.get("POSGUARD_CONFIG", DEFAULT_CONFIG)

    run = sub.add_parser("run", help="start the actors, open the configured positions, show live status")
    run.add_argument("--config", default=default_config, help=f"TOML config (default {default_config})")
    run.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                     help="stop by itself after this many seconds (default: until Ctrl-C)")

    status = sub.add_parser("status", help="ask the running system for every position's state")
    status.add_argument("--config", default=default_config, help=f"TOML config (default {default_config})")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    venue = sub.add_parser("venue", help="serve the config's simulated venue in this process (127.0.0.1)")
    venue.add_argument("--config", default=default_config, help=f"TOML config (default {default_config})")
    venue.add_argument("--port", type=int, default=None, help="default: the config's venue.simulated.server port")

    emulator = sub.add_parser("emulator", help="serve the config's [emulator] market as a Bybit-v5-compatible"
                                               " HTTP API at venue.api_url (127.0.0.1; a test instrument)")
    emulator.add_argument("--config", default=default_config, help=f"TOML config (default {default_config})")

    add_commands(sub, default_config)

    args = parser.parse_args(argv)
    commands = {"run": cmd_run, "status": cmd_status, "venue": cmd_venue, "emulator": cmd_emulator}
    try:
        return commands[args.command](args) if args.command in commands else args.handler(args)
    except ConfigError as exc:
        print(f"posguard: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UserError as exc:
        print(f"posguard: {exc}", file=sys.stderr)
        return exc.code


# -- run ------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    if args.duration is not None and not (args.duration > 0):
        raise UserError("--duration must be a positive number of seconds", EXIT_USAGE)
    cfg = load_config(args.config)
    if cfg.ccxt is not None:
        _credentials(cfg)                                # a missing key: one line, before anything starts
    configure_logging(cfg.log)
    if port_listening(cfg.admin_port):
        raise UserError(f"a system already listens on 127.0.0.1:{cfg.admin_port}"
                        " (another posguard run? try `posguard status`)")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    venue_proc, sim_server = _start_venue(cfg)
    run = _Run(cfg, sim_server)
    try:
        reply = run.start()
        print(f"posguard: {len(cfg.symbols)} symbols on {reply.capabilities.venue} venue"
              f" (stops {'attached to entries' if reply.capabilities.attached_stop else 'set after fills'});"
              f" admin on 127.0.0.1:{cfg.admin_port}", flush=True)
        for spec in cfg.opens:
            _open(run.asys, run.supervisor, spec)
        _watch(run, cfg, stop, args.duration)
    finally:
        run.stop()
        _stop_venue(venue_proc)
        with contextlib.suppress(FileNotFoundError):
            os.remove(cfg.address_file)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("posguard: stopped cleanly", flush=True)
    return EXIT_OK


class _Run:
    """`posguard run`'s hold on its actor system. The Supervisor supervises every actor; this
    watches the Supervisor: if its process dies (or stops answering), the whole system is
    killed by pid and started afresh, and every PositionActor rebuilds from the journal and the
    venue -- the same path as a restart of the whole program, which the tests prove safe. Never
    two writers per symbol: nothing of the old system survives the sweep. Past the restart
    limit the new system starts in safe mode."""

    HUNG_AFTER = 3                       # unanswered status asks of a live supervisor

    def __init__(self, cfg: DeploymentConfig, sim_server: tuple[str, int] | None) -> None:
        self.cfg, self.sim_server = cfg, sim_server
        self.asys: Any = None
        self.supervisor: Any = None
        self.supervisor_pid: int | None = None
        self.unanswered = 0
        self.replacements = RestartIntensity(cfg.supervision.max_restarts, cfg.supervision.within_s)
        self.generation = 0                  # systems started so far; the live view redraws on a new one

    def start(self) -> DeploymentReady:
        from supervisor.supervisor import Supervisor

        self.asys = start_system(self.cfg.admin_port)
        self.generation += 1
        self.supervisor = self.asys.createActor(Supervisor)
        _write_address(self.cfg, self.supervisor)
        cfg = self.cfg
        reply = self.asys.ask(self.supervisor, StartDeployment(
            cfg.symbols, cfg.journal_path, cfg.adapter_factory(self.sim_server), cfg.position,
            supervision=cfg.supervision, protection=cfg.protection, metrics_port=cfg.metrics_port), 30)
        if not isinstance(reply, DeploymentReady):
            raise UserError(f"deployment failed to start: {getattr(reply, 'reason', 'no answer within 30 s')}")
        self.unanswered = 0
        return reply

    def status(self) -> StatusReport | None:
        """Ask for the status; replace the system when its supervisor is dead or hung."""
        report = self.asys.ask(self.supervisor, StatusRequest(), ASK_TIMEOUT_S)
        if isinstance(report, StatusReport):
            self.supervisor_pid, self.unanswered = report.supervisor_pid, 0
            return report
        self.unanswered += 1
        pid = self.supervisor_pid
        dead = pid is not None and not alive(pid)
        if dead or self.unanswered >= self.HUNG_AFTER:
            self.replace(f"supervisor (pid {pid}) {'died' if dead else 'stopped answering'}")
        return None

    def replace(self, why: str) -> None:
        within_limit = self.replacements.record(time.monotonic())
        logger.critical("ALERT {}: killing its actor system and starting it again from the journal", why)
        print(f"posguard: ALERT {why}; restarting the actor system from the journal", flush=True)
        kill_system(self.cfg.admin_port)
        forget_system()
        self.start()
        if not within_limit:
            self.asys.ask(self.supervisor, SetSafeMode(True, f"supervisor replaced {self.replacements.recent} times"
                                                             f" within {self.replacements.within_s:.0f}s"),
                          ASK_TIMEOUT_S)

    def stop(self) -> None:
        if self.asys is None:
            return
        if self.supervisor is not None:
            self.asys.ask(self.supervisor, StopDeployment(), 15)
        self.asys.shutdown()


def _start_venue(cfg: DeploymentConfig) -> tuple[subprocess.Popen[str] | None, tuple[str, int] | None]:
    """The simulated venue runs in its own process, so it outlives a crash or restart of any
    actor (as a real venue would). Configured with `server`, it is already running elsewhere."""
    if cfg.simulated is None or cfg.sim_server is not None:
        return None, None
    _archive_journal(cfg)
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "venue", "--config", cfg.path, "--port", "0"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on 127.0.0.1:" not in line:
        _stop_venue(proc)
        raise UserError(f"the simulated venue did not start: {line.strip() or 'no output'}")
    return proc, ("127.0.0.1", int(line.rsplit(":", 1)[1]))


def _archive_journal(cfg: DeploymentConfig) -> None:
    """A venue started afresh knows none of an old journal's orders: reconciling against it
    would only wait out every order's receive window. Keep the old journal aside instead."""
    if not os.path.exists(cfg.journal_path):
        return
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(cfg.journal_path + suffix):
            os.replace(cfg.journal_path + suffix, cfg.journal_path + ".prev" + suffix)
    print(f"posguard: fresh simulated venue, so the previous journal was kept aside as {cfg.journal_path}.prev",
          flush=True)


def _stop_venue(proc: subprocess.Popen[str] | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cmd_venue(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if cfg.simulated is None:
        raise UserError("venue.name is not \"simulated\": there is no simulated venue to serve", EXIT_USAGE)
    port = args.port if args.port is not None else (cfg.sim_server[1] if cfg.sim_server else 0)
    configure_logging(cfg.log)

    from adapters.sim_server import SimVenueServer

    return _serve(SimVenueServer(cfg.simulated, port), port, "posguard venue: listening on 127.0.0.1:{}")


def _serve(server: Any, port: int, banner: str) -> int:
    """Run a loopback server (`start()` -> bound port, `close()`) until SIGINT or SIGTERM."""
    async def serve() -> None:
        try:
            bound = await server.start()
        except OSError as exc:
            raise UserError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
        print(banner.format(bound), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    asyncio.run(serve())
    return EXIT_OK


def _credentials(cfg: DeploymentConfig) -> tuple[str, str]:
    from adapters.venue_settings import MissingKey

    assert cfg.ccxt is not None
    try:
        return cfg.ccxt.credentials()
    except MissingKey as exc:
        raise UserError(str(exc), EXIT_USAGE) from None


def cmd_emulator(args: argparse.Namespace) -> int:
    """The Bybit emulator in the foreground, accepting the keys the config's env vars hold."""
    cfg = load_config(args.config)
    if cfg.emulator is None:
        raise UserError("the config has no [emulator] section: nothing to serve", EXIT_USAGE)
    key, secret = _credentials(cfg)
    port = emulator_port(cfg)
    configure_logging(cfg.log)

    from adapters.bybit_emulator import BybitEmulator
    from adapters.emulator_base import EmulatorConfig

    emulator = BybitEmulator(EmulatorConfig(venue=cfg.emulator, keys=((key, secret),)), port)
    return _serve(emulator, port, "posguard emulator: Bybit v5 API listening on http://127.0.0.1:{}")


def _open(asys: Any, supervisor: Any, spec: OpenSpec) -> None:
    stop = spec.stop
    if stop is None:
        assert spec.stop_pct is not None
        reply = asys.ask(supervisor, FetchPrice(spec.symbol), ASK_TIMEOUT_S)
        if not isinstance(reply, PriceFetched) or reply.price is None:
            print(f"posguard: {spec.symbol}: no price to place the stop from; not opened", flush=True)
            return
        sign = -1 if spec.side is Side.BUY else 1
        stop = round(reply.price * (1 + sign * spec.stop_pct / 100), 8)
    reply = asys.ask(supervisor, OpenPosition(spec.symbol, spec.side, spec.qty, stop), ASK_TIMEOUT_S)
    if isinstance(reply, CommandAccepted):
        print(f"posguard: opening {spec.side} {spec.qty} {spec.symbol}, stop {stop}", flush=True)
    else:
        print(f"posguard: {spec.symbol} not opened: {getattr(reply, 'reason', 'no answer')}", flush=True)


def _watch(run: _Run, cfg: DeploymentConfig, stop: threading.Event, duration: float | None) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    tty = sys.stdout.isatty()
    drawn = 0
    last_body = ""
    generation = run.generation
    while True:
        report = run.status()
        if run.generation != generation:                 # a new system: show its table even if alike
            generation, last_body = run.generation, ""
        if isinstance(report, StatusReport):
            truth = run.asys.ask(run.supervisor, GetTrueState(), ASK_TIMEOUT_S)
            state = truth.state if isinstance(truth, TrueStateReport) else None
            body = render_table(report.positions, state)
            if report.safe_mode:
                body = f"SAFE MODE: {report.safe_reason} -- new entries refused\n{body}"
            if tty:
                up = time.time() - report.started_at
                text = f"posguard  venue={report.venue}  up {up:.0f}s  (Ctrl-C to stop)\n{body}"
                sys.stdout.write((f"\x1b[{drawn}F\x1b[J" if drawn else "") + text + "\n")
                drawn = text.count("\n") + 1
            elif body != last_body:
                sys.stdout.write(body + "\n\n")
            sys.stdout.flush()
            last_body = body
        remaining = cfg.refresh_s if deadline is None else min(cfg.refresh_s, deadline - time.monotonic())
        if remaining <= 0 or stop.wait(remaining):
            return


COLUMNS = ("SYMBOL", "STATE", "SIDE", "QTY", "ENTRY", "STOP", "NAKED_S", "LAST EVENT")


def render_table(positions: tuple[PositionSnapshot, ...], truth: TrueState | None = None) -> str:
    """One line per symbol. NAKED_S is the venue's truth where the venue can know it (simulated),
    otherwise the actor's own measure (fill to confirmed stop)."""
    rows = [COLUMNS]
    for p in positions:
        naked = p.naked_now()
        if truth is not None:
            episodes = [e for e in truth.positions if e.symbol == p.symbol]
            naked = episodes[-1].naked_seconds if episodes else 0.0
        rows.append((p.symbol, p.state, str(p.side or "-"), _num(p.filled_qty or p.requested_qty),
                     _num(p.entry_price), _num(p.stop_price), f"{naked:.2f}", p.last_event[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
                     for r in rows)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.8g}"


def _write_address(cfg: DeploymentConfig, address: Any) -> None:
    os.makedirs(cfg.runtime_dir, exist_ok=True)
    tmp = cfg.address_file + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(address, fh)
    os.replace(tmp, cfg.address_file)


# -- status ---------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    asys, supervisor = connect(cfg)
    reply = asys.ask(supervisor, StatusRequest(), ASK_TIMEOUT_S)
    if not isinstance(reply, StatusReport):
        raise UserError(f"the system on 127.0.0.1:{cfg.admin_port} did not answer a status request")
    if args.json:
        print(json.dumps({"venue": reply.venue, "started_at": reply.started_at, "safe_mode": reply.safe_mode,
                          "safe_reason": reply.safe_reason, "restarts": reply.restarts,
                          "supervisor_pid": reply.supervisor_pid,
                          "children": [{"id": c, "pid": pid, "up": up} for c, pid, up in reply.children],
                          "positions": [asdict(p) | {"naked_now": p.naked_now()} for p in reply.positions]},
                         default=str))
    else:
        if reply.safe_mode:
            print(f"SAFE MODE: {reply.safe_reason} -- new entries refused; `posguard resume` to leave")
        print(render_table(reply.positions))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
