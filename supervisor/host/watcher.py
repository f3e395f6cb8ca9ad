"""The supervisor of the Supervisor: `posguard run`'s hold on its deployment.

The Supervisor supervises every actor; this watches the Supervisor, through the deployment's
own API (status each refresh) and its pid. If the Supervisor dies, or stops answering three
times in a row, the whole actor system is killed by pid (its session) and started again:
every PositionActor rebuilds from the journal and the venue -- the same path as a restart of
the whole program, which the tests prove safe. Never two writers per symbol: nothing of the old
system survives the sweep before the new one starts. Past the restart limit the new system
starts in safe mode.

A watchdog either starts its deployment or adopts one whose watcher died (see `adopt`); an
adopted deployment is watched, replaced and stopped exactly like one it started.
"""

from __future__ import annotations

import os
import time
from typing import Any

from loguru import logger

from actors.messages import DeploymentReady, SetSafeMode, StartDeployment, StopDeployment
from actors.settings import ControlPlane, LeaseGrant
from supervisor.actor_system.start import SystemAlreadyRunning, forget_system, start_system
from supervisor.cli.exits import EXIT_FAIL, EXIT_USAGE, UserError
from supervisor.client import Client, ClientError
from supervisor.config.loader import DeploymentConfig
from supervisor.host.procfs import alive, kill_sessions, kill_system, wait_exited
from supervisor.host.runtime import DeploymentLock, held_by, journal_identity, read_holder
from supervisor.specs import RestartIntensity

ASK_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 60.0


class Watchdog:
    HUNG_AFTER = 3                       # unanswered status asks of a live supervisor

    def __init__(self, cfg: DeploymentConfig, digest: str, sim_server: str | None = None) -> None:
        self.cfg, self.digest, self.sim_server = cfg, digest, sim_server
        self.paths = cfg.paths
        self.asys: Any = None            # the actor system, when this process started it
        self.supervisor: Any = None
        self.client: Client | None = None
        self.holder: dict[str, Any] = {}  # what the deployment lock says of the deployment we watch
        self.unanswered = 0
        self.replacements = RestartIntensity(cfg.supervision.max_restarts, cfg.supervision.within_s)
        self.generation = 0              # systems started or adopted so far; the live view redraws on a new one
        self.stopped_by_operator = False
        self.lease: LeaseGrant | None = None   # the account's lease, when the journal is shared

    # -- start, adopt ---------------------------------------------------------------------------

    def start(self) -> DeploymentReady:
        """A new actor system, owned by this process; returns once every actor is up."""
        from supervisor.supervisor import Supervisor

        try:
            self.asys = start_system(self.cfg.admin_port)
        except SystemAlreadyRunning as exc:
            raise UserError(f"cannot start the actor system: {exc}") from None
        self.generation += 1
        self.supervisor = self.asys.createActor(Supervisor)
        cfg = self.cfg
        control = ControlPlane(self.paths.socket, self.paths.deployment_lock, cfg.path, self.digest, os.getpid(),
                               dashboard_port=cfg.dashboard_port, token_path=self.paths.dashboard_token)
        reply = self.asys.ask(self.supervisor, StartDeployment(
            cfg.symbols, cfg.journal, cfg.adapter_factory(self.sim_server), cfg.position,
            supervision=cfg.supervision, protection=cfg.protection, metrics_port=cfg.metrics_port,
            control=control, stream=cfg.stream, risk=cfg.risk, account=cfg.account,
            password_file=cfg.password_file, lease=self.lease), READY_TIMEOUT_S)
        if not isinstance(reply, DeploymentReady):
            self._abandon()
            raise UserError(f"deployment failed to start: {getattr(reply, 'reason', 'no answer within 60 s')}",
                            EXIT_USAGE if getattr(reply, "usage", False) else EXIT_FAIL)
        self.holder = read_holder(self.paths.deployment_lock)
        self.unanswered = 0
        self._connect()
        return reply

    def adopt(self, holder: dict[str, Any]) -> str | None:
        """Take over watching a deployment whose `posguard run` died. Proves first that it is
        this very deployment: the same journal, the same config (digest), and its API answers
        from its Supervisor's pid. Returns why it could not be adopted, or None."""
        if holder.get("state") == "stopped":
            return "it is stopping"
        if holder.get("config_digest") != self.digest:
            return "it runs a different config"
        if holder.get("journal") != journal_identity(self.cfg.journal, self.cfg.account):
            return "it runs another journal"
        pid = holder.get("pid")
        if not isinstance(pid, int) or not alive(pid):
            return f"its supervisor (pid {pid}) is gone"
        try:
            client = Client(self.paths.socket, ASK_TIMEOUT_S)
        except ClientError as exc:
            return f"its API does not answer ({exc.message})"
        hello = client.hello.get("deployment") or client.hello
        if hello.get("pid") != pid or hello.get("config_digest") != self.digest:
            client.close()
            return "its API is not the one its lock names"
        try:
            client.request("watch", pid=os.getpid())
        except ClientError as exc:
            client.close()
            return f"it did not accept a new watcher ({exc.message})"
        self.client, self.holder = client, holder
        self.generation += 1
        logger.warning("adopted the running deployment (supervisor pid {}); protection was never interrupted", pid)
        return None

    def end(self, holder: dict[str, Any], why: str) -> None:
        """End a deployment by pid (every process of its session), before starting a new one."""
        logger.critical("ALERT ending the deployment left running (supervisor pid {}): {}", holder.get("pid"), why)
        sessions = {str(holder["session"])} if holder.get("session") else set()
        kill_sessions(sessions, {p for p in (holder.get("pid"), holder.get("admin_pid")) if isinstance(p, int)})
        if held_by(DeploymentLock, self.paths.deployment_lock) is not None:
            raise UserError(f"the deployment left running on {self.cfg.journal_name} could not be ended"
                            f" (its lock is still held); end it by hand: {holder}")

    # -- watching ---------------------------------------------------------------------------------

    def status(self, truth: bool = False) -> dict[str, Any] | None:
        """The status, through the API; replaces the system when its supervisor is dead or hung.
        None when there was no answer (or the operator stopped the deployment: see
        `stopped_by_operator`)."""
        try:
            if self.client is None:
                self._connect()
            assert self.client is not None
            report = self.client.status(truth=truth)
            silent = report.get("supervisor_heard_s_ago", 0.0)
            if silent <= self.cfg.supervision.heartbeat_timeout_s:
                self.unanswered = 0
                return report
            why = f"not heard from for {silent:.1f}s"     # the API answers, the Supervisor does not
        except ClientError as exc:
            self._drop_client()
            why = exc.message
        if read_holder(self.paths.deployment_lock).get("state") == "stopped":
            self.stopped_by_operator = True              # `posguard stop`: never restart what was stopped
            return None
        self.unanswered += 1
        pid = self.holder.get("pid")
        dead = isinstance(pid, int) and not alive(pid)
        if dead or self.unanswered >= self.HUNG_AFTER:
            self.replace(f"supervisor (pid {pid}) {'died' if dead else f'stopped answering ({why})'}")
        return None

    def replace(self, why: str) -> None:
        within_limit = self.replacements.record(time.monotonic())
        logger.critical("ALERT {}: killing its actor system and starting it again from the journal", why)
        print(f"posguard: ALERT {why}; restarting the actor system from the journal", flush=True)
        self._kill_old()
        self.start()
        if not within_limit:
            self.asys.ask(self.supervisor, SetSafeMode(True, f"supervisor replaced {self.replacements.recent} times"
                                                             f" within {self.replacements.within_s:.0f}s"),
                          ASK_TIMEOUT_S)

    # -- the end ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the deployment, positions staying with their stops (Ctrl-C, SIGTERM)."""
        if self.stopped_by_operator:
            self._abandon()
            return
        if self.asys is not None:
            if self.supervisor is not None:
                self.asys.ask(self.supervisor, StopDeployment(), 30)
            self._drop_client()
            self.asys.shutdown()
            self.asys = None
            return
        if self.client is not None:                      # adopted: the deployment ends itself
            try:
                self.client.stop()
            except ClientError as exc:
                logger.error("stop of the adopted deployment failed: {}", exc.message)
            self._drop_client()
            pids = {p for p in (self.holder.get("pid"), self.holder.get("admin_pid")) if isinstance(p, int)}
            if wait_exited(pids, timeout=30.0):
                self._kill_old()

    def _connect(self) -> None:
        self.client = Client(self.paths.socket, ASK_TIMEOUT_S)

    def _drop_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _kill_old(self) -> None:
        """Nothing of the old system survives: its session, by pid, then thespian forgets it."""
        self._drop_client()
        sessions = {str(self.holder["session"])} if self.holder.get("session") else set()
        kill_sessions(sessions, {p for p in (self.holder.get("pid"), self.holder.get("admin_pid"))
                                 if isinstance(p, int)})
        if self.asys is not None:
            kill_system(self.asys.posguard_port)
        forget_system()
        self.asys = self.supervisor = None

    def _abandon(self) -> None:
        """A system that failed to start, or that the operator stopped: let go of it."""
        self._drop_client()
        if self.asys is not None:
            kill_system(self.asys.posguard_port)
            forget_system()
            self.asys = self.supervisor = None
