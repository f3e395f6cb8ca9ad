"""`posguard run`: start (or adopt) a deployment, open the configured positions, watch it.

Before anything starts: the config is checked, the journal and runtime directories must be
ours alone (0700; refused, exit 2, when others can write to them), files are created 0600
(umask 077), the venue keys leave the environment (adapters/keys.py) and this process becomes
non-dumpable. Then one deployment per journal:

- another `posguard run` holds the journal -> exit 2, naming its pid;
- a deployment is still running on it, its watcher gone (`posguard run` was killed, even by
  kill -9) -> it is *adopted* when it proves to be this very deployment (same journal, same
  config, its API answering from its Supervisor), so protection is never interrupted; if it
  cannot prove that, it is ended by pid and a new one starts from the journal;
- else a new actor system starts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from actors.journal.lease import boottime
from actors.logs import configure_logging
from adapters import keys
from supervisor.actor_system import descriptors
from supervisor.cli.exits import EXIT_OK, EXIT_USAGE, UserError
from supervisor.cli.views import LiveView
from supervisor.client import ClientError
from supervisor.config.loader import DeploymentConfig, OpenSpec, load_config
from supervisor.host.procfs import alive, unix_peer_pid
from supervisor.host.runtime import DeploymentLock, LockHeld, UnsafePath, WatcherLock, held_by
from supervisor.host.standby import Standby
from supervisor.host.watcher import Watchdog
from supervisor.specs import symbols_per_process


def cmd_run(args: argparse.Namespace) -> int:
    if args.duration is not None and not (args.duration > 0):
        raise UserError("--duration must be a positive number of seconds", EXIT_USAGE)
    cfg = load_config(args.config)
    try:
        cfg.paths.check()
    except UnsafePath as exc:
        raise UserError(f"refusing to start: {exc}", EXIT_USAGE) from None
    _check_open_files(cfg)
    os.umask(0o077)
    if cfg.ccxt is not None:
        _hand_keys_over(cfg)                             # may re-execute this command without them
    keys.set_dumpable(False)                             # inherited by every process forked from here
    configure_logging(cfg.log)
    watcher = WatcherLock(cfg.paths.watcher_lock)
    try:
        watcher.acquire({"pid": os.getpid(), "config": cfg.path, "started_at": time.time()})
    except LockHeld as held:
        raise UserError(f"journal {cfg.journal_name} is in use: posguard run pid {held.holder.get('pid', '?')}"
                        f" runs this deployment (`posguard status` / `posguard stop --config {args.config}`)",
                        EXIT_USAGE) from None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    dog: Watchdog | None = None
    standby = Standby(cfg) if cfg.journal_url else None
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        with open(cfg.path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        venues: list[tuple[subprocess.Popen[str] | None, str | None]] = []

        def sim_server() -> str | None:
            """The simulated venue, started (or found) once, when a deployment is started here --
            never for one adopted (its venue may be gone while its journal is in use)."""
            if not venues:
                venues.append(_venue(cfg))
            return venues[0][1]

        while not stop.is_set():
            dog = Watchdog(cfg, digest)
            if not _deploy(dog, cfg, standby, stop, sim_server):
                break
            _watch(dog, cfg, stop, deadline, standby)
            if standby is None or standby.lost is None or stop.is_set() or dog.stopped_by_operator:
                break
            print(f"posguard: ALERT {standby.lost}: stopping this host's deployment (its stops stay on the venue)"
                  " and standing by", flush=True)
            dog.stop()
            dog = None
    finally:
        if dog is not None:
            dog.stop()
        if standby is not None:
            standby.close()                              # a clean stop releases the lease: a standby takes over now
        _stop_venue(venues[0][0] if venues else None, cfg)
        watcher.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if dog is not None and dog.stopped_by_operator:
        print("posguard: stopped by the operator (`posguard stop`)", flush=True)
    else:
        print("posguard: stopped cleanly", flush=True)
    return EXIT_OK


def _deploy(dog: Watchdog, cfg: DeploymentConfig, standby: Standby | None, stop: threading.Event,
            sim_server: Callable[[], str | None]) -> bool:
    """Adopt the deployment left running here, or start one (on a shared journal: once the
    account's lease is ours). False when stopped while standing by."""
    survivor = held_by(DeploymentLock, cfg.paths.deployment_lock)
    # On a shared journal a survivor renews a lease of a `posguard run` that is gone: ended, so
    # that the lease is taken (epoch + 1) by whoever is next, this host included.
    why_not = "the journal is shared: a new lease" if survivor is not None and standby is not None \
        else dog.adopt(survivor) if survivor is not None else "none"
    if survivor is not None and why_not is None:
        print(f"posguard: adopted the running deployment on {cfg.journal_name} (supervisor pid"
              f" {survivor.get('pid')}); its positions were protected all along; API on {cfg.paths.socket}",
              flush=True)
        return True
    if survivor is not None:
        print(f"posguard: a deployment left running on this journal cannot be adopted ({why_not});"
              " ending it by pid and starting again from the journal", flush=True)
        dog.end(survivor, why_not)
    if standby is not None:
        dog.lease = standby.wait(stop)
        if dog.lease is None:
            return False
    dog.sim_server = sim_server()
    reply = dog.start()
    how = "attached to entries" if reply.capabilities.attached_stop else "set after fills"
    print(f"posguard: {len(cfg.symbols)} symbols on {reply.capabilities.venue} venue (stops {how});"
          f" API on {cfg.paths.socket}", flush=True)
    for spec in cfg.opens:
        _open(dog, spec)
    return True


def _hand_keys_over(cfg: DeploymentConfig) -> None:
    """Move the venue keys from the environment into a sealed memfd and re-execute this command
    without them, so no process of the deployment but the exchange ever holds them."""
    from adapters.ccxt.settings import MissingKey

    assert cfg.ccxt is not None
    try:
        key, secret = cfg.ccxt.credentials()             # a missing key: one line, before anything starts
    except MissingKey as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    if keys.keys_fd() is not None:
        return                                           # this is the re-executed image already
    fd = keys.seal({cfg.ccxt.key_env: key, cfg.ccxt.secret_env: secret})
    env = {k: v for k, v in os.environ.items() if k not in (cfg.ccxt.key_env, cfg.ccxt.secret_env)}
    env[keys.KEYS_FD_ENV] = str(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "supervisor.cli", *sys.argv[1:]], env)


def _open(dog: Watchdog, spec: OpenSpec) -> None:
    assert dog.client is not None
    try:
        # Sent at every start, a crash's restart included: it opens an IDLE symbol, never adds
        # to the position an earlier run of it opened (that would double it after each crash).
        # A new holder of a shared account holds entries for a few seconds (the previous
        # holder's late orders): the API asks again until then, within this wait.
        wait = None if dog.lease is None else max(0.0, dog.lease.entries_after - boottime()) + 10.0
        result = dog.client.open(spec.symbol, str(spec.side), spec.qty, sl=spec.stop, sl_pct=spec.stop_pct, add=False,
                                 wait=wait)
    except ClientError as exc:
        print(f"posguard: not opened: {exc.message}", flush=True)
        return
    print(f"posguard: opening {spec.side} {spec.qty} {spec.symbol}, stop {result['stop_price']}", flush=True)


def _check_open_files(cfg: DeploymentConfig) -> None:
    """Before anything starts: a deployment the open-files limit cannot hold is refused, with
    what to change (an actor that hits EMFILE mid-run stalls instead)."""
    per_process = symbols_per_process(cfg.supervision.symbols_per_process, len(cfg.symbols))
    processes = descriptors.deployment_processes(len(cfg.symbols), per_process)
    try:
        descriptors.raise_open_files_limit(descriptors.files_needed(processes))
    except descriptors.OpenFilesLimit as exc:
        raise UserError(f"refusing to start: {exc} ({processes} actor processes, {per_process} symbols each):"
                        " raise the hard limit (`ulimit -Hn`, systemd LimitNOFILE=) or"
                        " [supervision] symbols_per_process", EXIT_USAGE) from None


def _watch(dog: Watchdog, cfg: DeploymentConfig, stop: threading.Event, deadline: float | None,
           standby: Standby | None) -> None:
    """The live table (supervisor/cli/views.py: redrawn in place on a terminal, else printed when it
    changes) until the duration is over, a signal, `posguard stop`, or the account's lease is lost."""
    generation = dog.generation
    with LiveView() as view:
        while True:
            status = dog.status(truth=True)
            if dog.stopped_by_operator or (standby is not None and standby.lost is not None):
                return
            if dog.generation != generation:             # a new system: show its table even if alike
                generation = dog.generation
                view.forget()
            if status is not None:
                view.show(status)
            remaining = cfg.refresh_s if deadline is None else min(cfg.refresh_s, deadline - time.monotonic())
            if remaining <= 0 or stop.wait(remaining):
                return


# -- the simulated venue's own process -----------------------------------------------------------


def _venue(cfg: DeploymentConfig) -> tuple[subprocess.Popen[str] | None, str | None]:
    """The simulated venue runs in its own process, so it outlives any crash or restart of any
    actor (and of `posguard run` itself), as a real venue would. One already serving the
    deployment's venue socket (left by a `posguard run` that died) is used as it is."""
    if cfg.simulated is None:
        return None, None
    if cfg.sim_server is not None:
        return None, cfg.sim_server                      # run elsewhere (`posguard venue`)
    path = cfg.paths.venue_socket
    if unix_peer_pid(path) is not None:
        return None, path
    _archive_journal(cfg)
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "venue", "--config", cfg.path,
                             "--socket", path], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        proc.wait()
        raise UserError(f"the simulated venue did not start: {line.strip() or 'no output'}")
    return proc, path


def _archive_journal(cfg: DeploymentConfig) -> None:
    """A venue started afresh knows none of an old journal's orders: reconciling against it
    would only wait out every order's receive window. Keep the old journal aside instead."""
    if not cfg.journal_path or not os.path.exists(cfg.journal_path):
        return
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(cfg.journal_path + suffix):
            os.replace(cfg.journal_path + suffix, cfg.journal_path + ".prev" + suffix)
    print(f"posguard: fresh simulated venue, so the previous journal was kept aside as {cfg.journal_path}.prev",
          flush=True)


def _stop_venue(proc: subprocess.Popen[str] | None, cfg: DeploymentConfig) -> None:
    """Our own venue ends with the deployment (one we found running, too: it was ours)."""
    if cfg.simulated is None or cfg.sim_server is not None:
        return
    if proc is None:
        pid = unix_peer_pid(cfg.paths.venue_socket)
        if pid is not None and alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
