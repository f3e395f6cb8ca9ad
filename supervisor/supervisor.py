"""The Supervisor actor: children from specs (supervisor/specs.py), each started once what it
needs is ready, and stopped in reverse; one-for-one restarts with exponential back-off and
jitter; restart intensity, past which the system enters safe mode (no new entries; protection
keeps running); a heartbeat watchdog that kills and replaces hung children. It also routes
operator commands (supervisor/routing.py keeps who asked) and answers admin status.

Failures are learned three ways: thespian's ChildActorExited (a crash, kill -9), a child's
own ChildFailed (a handler raised: its state may be half-changed), and a heartbeat it was sent
and did not answer in time. A replaced child never overlaps its successor: the old one is gone
before the new one starts.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import ActorExitRequest, ChildActorExited, PoisonMessage, WakeupMessage

from actors.async_bridge import BridgedActor
from actors.exchange import ExchangeActor
from actors.journal import JournalActor
from actors.messages import (
    ActorFailed,
    AdoptPosition,
    ApiReady,
    CancelLeftovers,
    ChildFailed,
    Collaborators,
    ConfigureApi,
    ConfigureExchange,
    ConfigureJournal,
    ConfigurePosition,
    ConfigureProtection,
    ConfigureStream,
    DeploymentFailed,
    DeploymentReady,
    DeploymentStopped,
    EventRecord,
    ExchangeReady,
    ExchangeStarting,
    FetchPositions,
    Heartbeat,
    HeartbeatAck,
    JournalDiskFault,
    JournalEvent,
    JournalHealth,
    JournalReady,
    JournalSafeMode,
    JournalSynced,
    PositionReady,
    PositionsFetched,
    PositionSnapshot,
    ProtectionReady,
    RestartChild,
    RiskLimits,
    SafeModeChanged,
    SetSafeMode,
    StartDeployment,
    StatusRequest,
    StopDeployment,
    StreamReady,
    StreamRoutes,
    StreamStatus,
)
from actors.position import PositionActor
from actors.position_states import State
from actors.protection import ProtectionActor
from actors.stream import StreamActor
from adapters.base import Capabilities
from supervisor.api import ApiActor
from supervisor.metrics import Metrics
from supervisor.operator import STOP_DEADLINE, OperatorMixin, OperatorStop
from supervisor.processes import child_listening_on
from supervisor.routing import Relay, StateWaiters
from supervisor.runtime import DeploymentLock, LockHeld
from supervisor.specs import (
    ChildKind,
    ChildSpec,
    Restart,
    RestartIntensity,
    backoff,
    position_specs,
    symbols_per_process,
)

HEARTBEAT = "heartbeat"
HEARTBEAT_SLICES = 10                # ticks per heartbeat period; each child is asked at one of them
RECONCILE = "startup-reconciliation"
ROUTED = (ChildKind.JOURNAL, ChildKind.EXCHANGE, ChildKind.POSITIONS, ChildKind.PROTECTION)   # in stream routes


@dataclass(slots=True)
class Child:
    spec: ChildSpec
    address: Any = None                      # None while down
    pid: int | None = None
    ready: bool = False
    started: bool = False                    # ever (restarts come from RestartChild)
    awaiting_since: float | None = None      # monotonic: the oldest heartbeat it has not answered
    consecutive: int = 0                     # restarts since it last stayed up a whole window
    generation: int = 0
    replacing: bool = False                  # we asked it to go, to replace it
    symbols_ready: set[str] = field(default_factory=set)   # POSITIONS: reconciled so far

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def kind(self) -> ChildKind:
        return self.spec.kind


class Supervisor(OperatorMixin, BridgedActor):
    holds_keys = True                            # passes the keys' descriptor on to each exchange it starts

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.spec: StartDeployment | None = None
        self.requester: Any = None
        self.children: list[Child] = []          # spec order (stopped in reverse)
        self.by_id: dict[str, Child] = {}
        self.by_symbol: dict[str, Child] = {}    # the PositionActor guarding each symbol
        self._addresses: dict[str, Child] = {}   # str(address) -> child: thespian addresses hash badly
        self.capabilities: Capabilities | None = None
        self.deployed = False
        self.snapshots: dict[str, PositionSnapshot] = {}
        self.relay = Relay()                     # command_id / request_id -> who asked
        self.waiters = StateWaiters()
        self.stopping: list[Child] | None = None
        self.stop_requester: Any = None
        self.started_at = 0.0
        self.safe_mode = False
        self.safe_reason = ""
        self.intensity = RestartIntensity(5, 60.0)
        self.rng = random.Random()
        self.heartbeat_seq = 0
        self.reconciliation = ""
        self.metrics: Metrics | None = None
        # symbol -> a command for a symbol outside the deployment, waiting for its actor (started on demand)
        self.pending_commands: dict[str, tuple[AdoptPosition | CancelLeftovers, Any]] = {}
        self.lock: DeploymentLock | None = None
        self.watcher_pid: int | None = None
        self.watcher_alerted = False
        self.stop: OperatorStop | None = None           # an operator's stop in progress
        self.exchange_dumpable: bool | None = None
        self.streams: dict[str, StreamStatus] = {}
        self.journal_error = ""
        self.venue_status = ""
        self.venue_warnings: tuple[str, ...] = ()
        self.configure: dict[ChildKind, Callable[[Child], Any]] = {
            ChildKind.JOURNAL: self._configure_journal, ChildKind.EXCHANGE: self._configure_exchange,
            ChildKind.API: self._configure_api, ChildKind.POSITIONS: self._configure_positions,
            ChildKind.PROTECTION: self._configure_protection, ChildKind.STREAM: self._configure_stream}

    # -- start-up: the specs, each started once what it needs is ready ------------------------

    def receiveMsg_StartDeployment(self, msg: StartDeployment, sender: Any) -> None:  # noqa: N802
        if self.spec is not None:
            self.send(sender, DeploymentFailed("this supervisor already runs a deployment"))
            return
        self.spec, self.requester, self.started_at = msg, sender, time.time()
        self.intensity = RestartIntensity(msg.supervision.max_restarts, msg.supervision.within_s)
        if msg.metrics_port is not None:
            try:
                self.metrics = Metrics(msg.metrics_port, lambda: self.snapshots)
            except OSError as exc:
                self.send(sender, DeploymentFailed(f"metrics port 127.0.0.1:{msg.metrics_port}: {exc.strerror}"))
                self.spec = None
                return
        if msg.control is not None:
            failure = self._lock(msg)
            if failure:
                self.send(sender, DeploymentFailed(failure))
                self.spec = None
                if self.metrics is not None:
                    self.metrics.close()
                    self.metrics = None
                return
        J, X = ChildKind.JOURNAL, ChildKind.EXCHANGE  # noqa: N806
        specs = [ChildSpec(J, J, JournalActor), ChildSpec(X, X, ExchangeActor, after=(J,))]
        if msg.control is not None:
            specs.append(ChildSpec(ChildKind.API, ChildKind.API, ApiActor, after=(J,)))
        per_process = symbols_per_process(msg.supervision.symbols_per_process, len(msg.symbols))
        specs += position_specs(msg.symbols, per_process, PositionActor, after=(J, X))
        if msg.protection is not None:
            specs.append(ChildSpec(ChildKind.PROTECTION, ChildKind.PROTECTION, ProtectionActor, after=(X,)))
        for spec in specs:
            self._add(spec)
        self._start_due()

    def _add(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        self.children.append(child)
        self.by_id[spec.id] = child
        for symbol in spec.symbols:
            self.by_symbol[symbol] = child
        return child

    def _start_due(self) -> None:
        """Start every child never started whose dependencies are all ready."""
        for child in self.children:
            if not child.started and self._ready_kinds(child.spec.after):
                self._start(child)

    def _ready_kinds(self, kinds: tuple[ChildKind, ...]) -> bool:
        return all(c.ready for c in self.children if c.kind in kinds)

    def _lock(self, msg: StartDeployment) -> str | None:
        """Take the deployment lock before the journal is opened: one deployment per journal.
        Every child started later inherits it, so it is held while any of them lives."""
        assert msg.control is not None
        self.watcher_pid = msg.control.watcher_pid
        lock = DeploymentLock(msg.control.lock_path)
        try:
            lock.acquire(self._holder("running"))
        except LockHeld as held:
            h = held.holder
            return (f"journal {msg.journal_path} is in use by another deployment (supervisor pid {h.get('pid', '?')},"
                    f" posguard run pid {h.get('watcher_pid') or 'none'})")
        except OSError as exc:
            return f"deployment lock {msg.control.lock_path}: {exc.strerror}"
        self.lock = lock
        return None

    def _holder(self, state: str) -> dict[str, Any]:
        """What the deployment lock says of us: how to find, prove and end this deployment."""
        assert self.spec is not None and self.spec.control is not None
        c = self.spec.control
        return {"pid": os.getpid(), "admin_pid": os.getppid(), "session": os.getsid(0), "pgid": os.getpgrp(),
                "journal": os.path.realpath(self.spec.journal_path), "socket": c.socket_path,
                "config": c.config_path, "config_digest": c.config_digest, "watcher_pid": self.watcher_pid,
                "started_at": self.started_at, "state": state}

    def _start(self, child: Child) -> None:
        assert self.spec is not None
        child.address = self.createActor(child.spec.actor)
        child.started, child.ready, child.replacing, child.pid = True, False, False, None
        child.awaiting_since, child.symbols_ready = None, set()
        self.send(child.address, self.configure[child.kind](child))
        if child.kind is ChildKind.POSITIONS:
            # Stream news goes to the new process now: it takes what it can (symbols it has
            # loaded) while the others recover, rather than news going to the dead one meanwhile.
            self._tell_stream_routes()

    # -- what each kind of child is told to start --------------------------------------------

    def _configure_journal(self, child: Child) -> Any:
        assert self.spec is not None
        return ConfigureJournal(self.spec.journal_path, watch=self.spec.watch)

    def _configure_exchange(self, child: Child) -> Any:
        assert self.spec is not None
        return ConfigureExchange(self.spec.adapter_factory, watch=self.spec.watch, symbols=self.spec.symbols,
                                 persist=self.deployed)

    def _configure_api(self, child: Child) -> Any:
        assert self.spec is not None and self.spec.control is not None
        return ConfigureApi(self.spec.control.socket_path, self.myAddress, self._address(ChildKind.JOURNAL),
                            self.spec.symbols, self._holder("running"))

    def _configure_positions(self, child: Child) -> Any:
        assert self.spec is not None and self.capabilities is not None
        symbols = child.spec.symbols
        risk = tuple((s, limits) for s in symbols if (limits := self._risk(s)) is not None)
        return ConfigurePosition(symbols, self._address(ChildKind.EXCHANGE), self._address(ChildKind.JOURNAL),
                                 self.capabilities, self.spec.settings, observer=self.myAddress,
                                 safe_mode=self.safe_reason if self.safe_mode else None, risk=risk)

    def _configure_protection(self, child: Child) -> Any:
        assert self.spec is not None and self.spec.protection is not None and self.capabilities is not None
        return ConfigureProtection(self._address(ChildKind.EXCHANGE), self.spec.symbols, self.spec.protection,
                                   tuple(self.snapshots.values()), stop_orders=self.capabilities.stop_orders,
                                   stream_grace_s=self.spec.stream.grace_s)

    def _configure_stream(self, child: Child) -> Any:
        assert self.spec is not None and self.capabilities is not None
        return ConfigureStream(self._address(ChildKind.EXCHANGE), self._address(ChildKind.PROTECTION), self._routes(),
                               self.spec.stream, name=f"{self.capabilities.venue} private")

    def _risk(self, symbol: str) -> RiskLimits | None:
        assert self.spec is not None
        if self.spec.risk is None:
            return None
        limits = dict(self.spec.risk)
        return limits.get(symbol, limits.get("*"))

    # -- children ready ----------------------------------------------------------------------

    def receiveMsg_JournalReady(self, msg: JournalReady, sender: Any) -> None:  # noqa: N802
        if msg.safe_mode_reason is not None and not self.safe_mode and not self.deployed:
            # Safe mode outlives the program: only an operator's resume ends it.
            self._enter_safe_mode(msg.safe_mode_reason, carried=True)
        self._ready(sender, msg.pid)
        if self.deployed:
            # A restarted journal may have missed a change while it was down: write the state again.
            self._persist_safe_mode(self.safe_mode, self.safe_reason or "resumed")
            self._tell_positions_their_collaborators()
        else:
            logger.info("journal ready (schema {})", msg.schema_version)

    def receiveMsg_ExchangeReady(self, msg: ExchangeReady, sender: Any) -> None:  # noqa: N802
        self.capabilities = msg.capabilities
        self.exchange_dumpable = msg.dumpable
        self.venue_status, self.venue_warnings = "", msg.warnings
        if msg.problems and not self.deployed:
            # The account is not fit (hedge mode, a read-only key, a symbol not trading): say which
            # setting to change, before any entry.
            self.receiveMsg_ActorFailed(ActorFailed("venue preflight", "; ".join(msg.problems), usage=True), sender)
            return
        if msg.problems and not self.safe_mode:
            logger.critical("ALERT venue preflight after a restart: {}", "; ".join(msg.problems))
            self._enter_safe_mode(f"venue preflight: {'; '.join(msg.problems)}")
        if msg.capabilities.streams and ChildKind.STREAM not in self.by_id:
            self._add(ChildSpec(ChildKind.STREAM, ChildKind.STREAM, StreamActor, after=(ChildKind.EXCHANGE,)))
        self._ready(sender, msg.pid)
        if self.deployed:
            self._tell_positions_their_collaborators()

    def receiveMsg_ApiReady(self, msg: ApiReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)
        self._tell_api(snapshots=True)

    def receiveMsg_ProtectionReady(self, msg: ProtectionReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)

    def receiveMsg_StreamReady(self, msg: StreamReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)

    def receiveMsg_PositionReady(self, msg: PositionReady, sender: Any) -> None:  # noqa: N802
        child = self.by_symbol.get(msg.symbols[0]) if msg.symbols else None
        if child is not None and child.address is not None:
            child.symbols_ready.update(msg.symbols)
            if child.symbols_ready >= set(child.spec.symbols):     # every symbol it guards is reconciled
                self._ready(sender, msg.pid)
        for symbol in msg.symbols:
            pending = self.pending_commands.pop(symbol, None)
            if pending is not None:
                self._route(*pending)

    def _ready(self, sender: Any, pid: int) -> None:
        child = self._by_address(sender)
        if child is not None:
            child.ready, child.pid, child.awaiting_since = True, pid, None
            self._tell_api()
            if child.kind in ROUTED:
                self._tell_stream_routes()
        if not self.deployed:
            self._start_due()
            self._maybe_deployed()

    def _routes(self) -> tuple[tuple[str, Any], ...]:
        return tuple((s, c.address) for c in self._positions() if c.address is not None for s in c.spec.symbols)

    def _tell_stream_routes(self) -> None:
        """Where stream evidence goes, whenever an address changes (a restart, an actor on demand)."""
        stream = self._address(ChildKind.STREAM)
        if stream is not None:
            self.send(stream, StreamRoutes(self._address(ChildKind.EXCHANGE), self._address(ChildKind.PROTECTION),
                                           self._routes()))

    def receiveMsg_StreamStatus(self, msg: StreamStatus, sender: Any) -> None:  # noqa: N802
        before = self.streams.get(msg.stream)
        self.streams[msg.stream] = msg
        if self.metrics is not None:
            self.metrics.on_stream(msg, before)
        if before is None or before.state != msg.state:
            self._event(EventRecord("stream", None, {"stream": msg.stream, "state": msg.state, "reason": msg.reason,
                                                     "gap_s": round(msg.gap_s, 3), "reconnects": msg.reconnects}))
        self._tell_api()

    def _maybe_deployed(self) -> None:
        if self.deployed or self.spec is None or not all(c.ready for c in self.children):
            return
        self.deployed = True
        assert self.capabilities is not None
        logger.info("deployment ready: {} symbols on {} ({} processes)", len(self.spec.symbols),
                    self.capabilities.venue, len(self.children))
        self.send(self.requester, DeploymentReady(self.spec.symbols, self.capabilities))
        # The watchdog starts now: it judges only heartbeats it sent (a child busy starting
        # while others still start was never asked anything).
        self.wakeupAfter(timedelta(seconds=self.spec.supervision.heartbeat_s / HEARTBEAT_SLICES), HEARTBEAT)
        # Reconciliation itself used no position read; one read now only reports what else the
        # venue shows (positions opened outside posguard), for an operator to see.
        self.send(self._address(ChildKind.EXCHANGE), FetchPositions(request_id=RECONCILE))

    def receiveMsg_PositionsFetched(self, msg: PositionsFetched, sender: Any) -> None:  # noqa: N802
        if msg.request_id != RECONCILE:
            return
        ours = {s: snap for s, snap in self.snapshots.items()}
        lines = [f"{s} {snap.state} ({snap.last_event})" for s, snap in sorted(ours.items())]
        if msg.failure is not None:
            lines.append(f"venue positions could not be read ({msg.failure.code}): foreign positions unknown")
        else:
            foreign = [p for p in msg.positions if p.symbol not in ours or ours[p.symbol].state == State.IDLE]
            lines += [f"FOREIGN {p.symbol} {p.side} {p.qty:g} stop {p.stop_price or 'NONE'}"
                      f" (not in our journal; the venue view may lag)" for p in foreign]
        self.reconciliation = "; ".join(lines)
        level = "WARNING" if "FOREIGN" in self.reconciliation else "INFO"
        logger.log(level, "startup reconciliation: {}", self.reconciliation)

    def receiveMsg_JournalHealth(self, msg: JournalHealth, sender: Any) -> None:  # noqa: N802
        if msg.ok:
            logger.warning("journal writes work again (was: {}); safe mode stays until `posguard resume`",
                           self.journal_error)
            self.journal_error = ""
        else:
            self.journal_error = msg.error
            logger.critical("ALERT journal cannot write ({}): closes go to the venue anyway, under ids derived from"
                            " what it holds; no new entry until it can", msg.error)
            if self.metrics is not None:
                self.metrics.journal_failures.inc()
            if not self.safe_mode:
                self._enter_safe_mode(f"journal cannot write: {msg.error}")
        self._tell_api()

    def receiveMsg_JournalDiskFault(self, msg: JournalDiskFault, sender: Any) -> None:  # noqa: N802
        journal = self._address(ChildKind.JOURNAL)
        if journal is not None:
            self.send(journal, msg)
            self.relay.put("disk-fault", sender)

    def receiveMsg_JournalSynced(self, msg: JournalSynced, sender: Any) -> None:  # noqa: N802
        self._relay_back(msg.tag or "", msg)

    def receiveMsg_ExchangeStarting(self, msg: ExchangeStarting, sender: Any) -> None:  # noqa: N802
        self.venue_status = (f"venue not ready ({msg.kind}): {msg.reason}; attempt {msg.attempt},"
                             f" next in {msg.retry_in_s:.0f}s")
        if self.metrics is not None:
            self.metrics.venue_start_failures.labels(msg.kind).inc()
        child = self._by_address(sender)
        if child is not None:
            child.awaiting_since = None                  # alive, trying: not hung
        self._tell_api()

    def receiveMsg_ActorFailed(self, msg: ActorFailed, sender: Any) -> None:  # noqa: N802
        # A setting to change is the operator's one line (exit 2), kept off stderr here: the log has it.
        logger.log("INFO" if msg.usage else "ERROR", "{} failed: {}", msg.who, msg.reason)
        if not self.deployed and self.requester is not None:
            self.send(self.requester, DeploymentFailed(f"{msg.who}: {msg.reason}", usage=msg.usage))
            self.requester = None
            self._stop_all(None)
            return
        # Deployed: a replacement that could not start (the venue unreachable for a moment, say)
        # is replaced again, with back-off, counted against the restart intensity.
        child = self._by_address(sender)
        if child is not None and not child.replacing and self.stopping is None:
            self._replace(child)

    def _tell_positions_their_collaborators(self) -> None:
        exchange, journal = self._address(ChildKind.EXCHANGE), self._address(ChildKind.JOURNAL)
        if exchange is None or journal is None:
            return                                   # the other one is still being replaced
        for child in self.children:
            if child.kind in (ChildKind.POSITIONS, ChildKind.PROTECTION, ChildKind.API) and child.address is not None:
                self.send(child.address, Collaborators(exchange, journal))

    # -- failures and restarts ---------------------------------------------------------------

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:  # noqa: N802
        # thespian may report one exit twice (exit request done, process gone): act on the first.
        child = self._by_address(msg.childAddress)
        if child is None:
            return
        if self.stopping is not None:
            self._forget_address(child)
            child.address = None
            self._stop_next()
            return
        why = "replaced after a failure" if child.replacing else "exited unexpectedly"
        self._down(child, why)

    def receiveMsg_ChildFailed(self, msg: ChildFailed, sender: Any) -> None:  # noqa: N802
        child = self._by_address(sender)
        if child is None or child.replacing or self.stopping is not None:
            return
        logger.error("{} reported a failed handler ({}); replacing it", child.id, msg.reason)
        self._replace(child)

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: Any) -> None:  # noqa: N802
        child = self._by_address(sender)
        logger.error("{} failed twice on {}", child.id if child else sender, type(msg.poisonMessage).__name__)
        if child is not None and not child.replacing:
            self._replace(child)

    def _replace(self, child: Child) -> None:
        """Make it go (kill -9 if we know its pid: it may be hung), then restart on its exit."""
        child.replacing = True
        pid = child.pid
        if pid is None and child.address is not None:
            # Hung before it ever answered (no pid yet): found by the port its address names,
            # among our own children, or it would stay "replacing" for ever, its symbols unguarded.
            port = getattr(child.address.addressDetails, "sockname", (None, None))[1]
            pid = child_listening_on(port) if isinstance(port, int) else None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                return
            except ProcessLookupError:
                pass
        self.send(child.address, ActorExitRequest())

    def _down(self, child: Child, why: str) -> None:
        assert self.spec is not None
        self._forget_address(child)
        child.address, child.ready, child.pid, child.awaiting_since = None, False, None, None
        self._tell_api()
        if child.spec.restart is Restart.TEMPORARY:
            logger.warning("{} {}; temporary child, not restarted", child.id, why)
            return
        within_limit = self.intensity.record(time.monotonic())
        if self.metrics is not None:
            self.metrics.restarts.labels(child.id).inc()
        delay = backoff(self.spec.supervision, child.consecutive, self.rng)
        child.consecutive += 1
        child.generation += 1
        logger.critical("ALERT {} {}; restarting in {:.2f}s ({} restarts in {:.0f}s)", child.id, why, delay,
                        self.intensity.recent, self.intensity.within_s)
        symbols = child.spec.symbols
        self._event(EventRecord("restart", symbols[0] if len(symbols) == 1 else None,
                                {"child": child.id, "why": why, "delay_s": round(delay, 3),
                                 **({"symbols": list(symbols)} if len(symbols) > 1 else {})}))
        if not within_limit and not self.safe_mode:
            self._enter_safe_mode(f"{self.intensity.recent} restarts within {self.intensity.within_s:.0f}s")
        self.wakeupAfter(timedelta(seconds=delay), RestartChild(child.id, child.generation))

    def _event(self, record: EventRecord) -> None:
        journal = self._address(ChildKind.JOURNAL) if self.spec is not None else None
        if journal is not None:
            self.send(journal, JournalEvent(record))

    def _tell_safe_mode(self) -> None:
        """Entries are refused where they are made: every PositionActor hears of it."""
        self._tell_api()
        for child in self._positions():
            if child.address is not None:
                self.send(child.address, SafeModeChanged(self.safe_mode, self.safe_reason))

    def _enter_safe_mode(self, reason: str, carried: bool = False) -> None:
        self.safe_mode, self.safe_reason = True, reason
        self._tell_safe_mode()
        if carried:
            logger.critical("ALERT SAFE MODE still on from an earlier run: {}. `posguard resume` leaves it.", reason)
        else:
            self._persist_safe_mode(True, reason)
        if self.metrics is not None:
            self.metrics.safe_mode.set(1)
        logger.critical("ALERT SAFE MODE: {}. New entries are refused; stops and closes keep working."
                        " An operator leaves safe mode explicitly.", reason)

    def _persist_safe_mode(self, on: bool, reason: str) -> None:
        journal = self._address(ChildKind.JOURNAL) if self.spec is not None else None
        if journal is None:
            return                        # written when the journal is (back) up: see JournalReady
        self.send(journal, JournalSafeMode(on, reason))

    def receiveMsg_SetSafeMode(self, msg: SetSafeMode, sender: Any) -> None:  # noqa: N802
        if msg.on:
            self._enter_safe_mode(msg.reason)
        elif self.safe_mode:
            logger.warning("safe mode left by {} (was: {})", msg.reason, self.safe_reason)
            self.safe_mode, self.safe_reason = False, ""
            self._persist_safe_mode(False, msg.reason)
            self._tell_safe_mode()
            if self.metrics is not None:
                self.metrics.safe_mode.set(0)
        self.receiveMsg_StatusRequest(StatusRequest(msg.request_id), sender)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:  # noqa: N802
        payload = msg.payload
        if isinstance(payload, RestartChild) and self.stopping is None:
            child = self.by_id[payload.child_id]
            if child.address is None and child.generation == payload.generation:
                if not all(c.address is not None for c in self.children if c.kind in child.spec.after):
                    # what it needs (the exchange's address, say) is itself being replaced: soon
                    self.wakeupAfter(timedelta(seconds=0.05), payload)
                    return
                logger.info("restarting {}", child.id)
                self._start(child)
        elif payload == HEARTBEAT and self.stopping is None and self.spec is not None:
            self._heartbeat()
        elif payload == STOP_DEADLINE and self.stop is not None and self.stopping is None:
            self._flatten_failed()

    def _heartbeat(self) -> None:
        """Ask children whether they are alive; one that has not answered a heartbeat it was sent
        within the timeout is hung: killed and replaced. Each child is asked once per
        `heartbeat_s`, the children spread over HEARTBEAT_SLICES ticks of it: 46 processes woken
        at once took a 2-core host from everyone for ~20 ms each second (status p99, 1 000 symbols)."""
        assert self.spec is not None
        policy = self.spec.supervision
        now = time.monotonic()
        self.heartbeat_seq += 1
        tick = self.heartbeat_seq % HEARTBEAT_SLICES
        for index, child in enumerate(self.children):
            if index % HEARTBEAT_SLICES != tick or child.address is None or child.replacing:
                continue
            if child.awaiting_since is not None and now - child.awaiting_since > policy.heartbeat_timeout_s:
                logger.error("{} has not answered for {:.1f}s: hung; replacing it", child.id,
                             now - child.awaiting_since)
                self._replace(child)
                continue
            if child.awaiting_since is None:
                child.awaiting_since = now
            self.send(child.address, Heartbeat(self.heartbeat_seq))
        if tick == 0:
            self.relay.sweep()
            self.waiters.sweep()
            self._tell_api()
            self._check_watcher()
        self.wakeupAfter(timedelta(seconds=policy.heartbeat_s / HEARTBEAT_SLICES), HEARTBEAT)

    def receiveMsg_HeartbeatAck(self, msg: HeartbeatAck, sender: Any) -> None:  # noqa: N802
        child = self._by_address(sender)
        if child is None:
            return
        child.pid, child.awaiting_since = msg.pid, None
        if child.consecutive and self.intensity.recent == 0:
            child.consecutive = 0                    # it stayed up a whole window: back-off resets

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:  # noqa: N802
        # The system is shutting down around us: children leaving now are not failures.
        self.stopping = self.stopping or []
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        super().receiveMsg_ActorExitRequest(msg, sender)

    # -- stopping, in reverse order ------------------------------------------------------------

    def receiveMsg_StopDeployment(self, msg: StopDeployment, sender: Any) -> None:  # noqa: N802
        if self.lock is not None:
            self.lock.update(self._holder("stopped"))
        self._stop_all(sender)

    def _stop_all(self, requester: Any) -> None:
        self.stop_requester = requester
        self.stopping = [c for c in reversed(self.children) if c.address is not None]
        self._stop_next()

    def _stop_next(self) -> None:
        assert self.stopping is not None
        while self.stopping and self.stopping[0].address is None:
            self.stopping.pop(0)                     # already gone
        if self.stopping:
            child = self.stopping[0]
            logger.info("stopping {}", child.id)
            self.send(child.address, ActorExitRequest())
            return
        if self.stop_requester is not None:
            self.send(self.stop_requester, DeploymentStopped())
            self.stop_requester = None

    # -- lookups -------------------------------------------------------------------------------

    def _find(self, child_id: str) -> Child | None:
        return self.by_id.get(child_id)

    def _positions(self) -> list[Child]:
        return [c for c in self.children if c.kind is ChildKind.POSITIONS]

    def _address(self, child_id: str) -> Any:
        """A child's address by id (a singleton's id is its kind), None while it is down."""
        child = self.by_id.get(child_id)
        return child.address if child is not None else None

    def _by_address(self, address: Any) -> Child | None:
        """The child behind a sender's address: a dict look-up once it has been seen (thespian
        addresses compare slowly and hash badly: a scan of 1 000 children per message costs ms)."""
        key = str(address)
        child = self._addresses.get(key)
        if child is not None and child.address is not None:
            return child
        child = next((c for c in self.children if c.address is not None and c.address == address), None)
        if child is not None:
            self._addresses[key] = child
        return child

    def _forget_address(self, child: Child) -> None:
        for key in [k for k, c in self._addresses.items() if c is child]:
            del self._addresses[key]
