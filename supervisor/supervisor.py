"""The Supervisor actor: children from specs, started in order (journal, exchange, one
PositionActor per symbol) and stopped in reverse; one-for-one restarts with exponential
back-off and jitter; restart intensity, past which the system enters safe mode (no new
entries; protection keeps running); a heartbeat watchdog that kills and replaces hung
children. It also routes operator commands and answers admin status.

Failures are learned three ways: thespian's ChildActorExited (a crash, kill -9), a child's
own ChildFailed (a handler raised: its state may be half-changed), and a missed heartbeat.
A replaced child never overlaps its successor: the old one is gone before the new one starts.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import ActorExitRequest, ChildActorExited, PoisonMessage, WakeupMessage

from actors.async_bridge import BridgedActor
from actors.exchange import ExchangeActor
from actors.journal import JournalActor
from actors.messages import (
    Ack,
    ActorFailed,
    AdoptPosition,
    ApiReady,
    ChildFailed,
    ClosePosition,
    Collaborators,
    CommandAccepted,
    CommandDenied,
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
    FetchPrice,
    GetTrueState,
    Heartbeat,
    HeartbeatAck,
    JournalDiskFault,
    JournalEvent,
    JournalHealth,
    JournalReady,
    JournalSafeMode,
    JournalSync,
    JournalSynced,
    OpenPosition,
    PositionReady,
    PositionsFetched,
    PositionSnapshot,
    ProtectionReady,
    RecentEvents,
    Reprotect,
    RestartChild,
    RiskLimits,
    SafeModeChanged,
    ScanDone,
    ScanNow,
    SetSafeMode,
    StartDeployment,
    StatusReport,
    StatusRequest,
    StopDeployment,
    StopReply,
    StopRequest,
    StreamReady,
    StreamRoutes,
    StreamStatus,
    TrueStateReport,
    WaitForState,
    WatcherChanged,
)
from actors.position import PositionActor
from actors.protection import ProtectionActor
from actors.stream import StreamActor
from adapters.base import Capabilities
from supervisor.api import ApiActor
from supervisor.metrics import Metrics
from supervisor.processes import alive
from supervisor.runtime import DeploymentLock, LockHeld
from supervisor.specs import ChildSpec, Restart, RestartIntensity, backoff

HEARTBEAT = "heartbeat"
RECONCILE = "startup-reconciliation"
STOP_DEADLINE = "stop-deadline"
FLATTEN_DEADLINE_S = 100.0           # within the API's 120 s answer bound


@dataclass(slots=True)
class _Stop:
    """An operator's stop: who asked, and (flatten) which positions were asked to close."""

    flatten: bool
    request_id: str
    asker: Any
    asked: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Child:
    spec: ChildSpec
    address: Any = None                      # None while down
    pid: int | None = None
    ready: bool = False
    last_ack: float = 0.0                    # monotonic
    consecutive: int = 0                     # restarts since it last stayed up a whole window
    generation: int = 0
    replacing: bool = False                  # we asked it to go, to replace it

    @property
    def id(self) -> str:
        return self.spec.id


class Supervisor(BridgedActor):
    holds_keys = True                            # passes the keys' descriptor on to each exchange it starts

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.spec: StartDeployment | None = None
        self.requester: Any = None
        self.children: list[Child] = []          # start order
        self.capabilities: Capabilities | None = None
        self.deployed = False
        self.snapshots: dict[str, PositionSnapshot] = {}
        self.relay: dict[str, Any] = {}          # command_id / request_id -> who asked
        self.state_waiters: list[tuple[WaitForState, Any]] = []
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
        self.pending_adoptions: dict[str, tuple[AdoptPosition, Any]] = {}   # symbol -> waiting for its actor
        self.lock: DeploymentLock | None = None
        self.watcher_pid: int | None = None
        self.watcher_alerted = False
        self.stop: _Stop | None = None           # an operator's stop in progress
        self.exchange_dumpable: bool | None = None
        self.streams: dict[str, StreamStatus] = {}
        self.journal_error = ""
        self.venue_status = ""
        self.venue_warnings: tuple[str, ...] = ()

    # -- start-up, in order ----------------------------------------------------------------

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
        specs = [ChildSpec("journal", JournalActor), ChildSpec("exchange", ExchangeActor)]
        if msg.control is not None:
            specs.append(ChildSpec("api", ApiActor))
        specs += [ChildSpec(f"position:{s}", PositionActor) for s in msg.symbols]
        if msg.protection is not None:
            specs.append(ChildSpec("protection", ProtectionActor))
        self.children = [Child(spec) for spec in specs]
        self._start(self._child("journal"))

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
        child.ready, child.replacing, child.pid = False, False, None
        child.last_ack = time.monotonic()
        self.send(child.address, self._configure(child))

    def _configure(self, child: Child) -> Any:
        assert self.spec is not None
        if child.id == "journal":
            return ConfigureJournal(self.spec.journal_path, watch=self.spec.watch)
        if child.id == "protection":
            assert self.spec.protection is not None and self.capabilities is not None
            return ConfigureProtection(self._address("exchange"), self.spec.symbols, self.spec.protection,
                                       tuple(self.snapshots.values()), stop_orders=self.capabilities.stop_orders,
                                       stream_grace_s=self.spec.stream.grace_s)
        if child.id == "stream":
            assert self.capabilities is not None
            return ConfigureStream(self._address("exchange"), self._address("protection"), self._routes(),
                                   self.spec.stream, name=f"{self.capabilities.venue} private")
        if child.id == "exchange":
            return ConfigureExchange(self.spec.adapter_factory, watch=self.spec.watch, symbols=self.spec.symbols,
                                     persist=self.deployed)
        if child.id == "api":
            assert self.spec.control is not None
            return ConfigureApi(self.spec.control.socket_path, self.myAddress, self._address("journal"),
                                self.spec.symbols, self._holder("running"))
        assert self.capabilities is not None
        symbol = child.id.split(":", 1)[1]
        return ConfigurePosition(symbol, self._address("exchange"), self._address("journal"),
                                 self.capabilities, self.spec.settings, observer=self.myAddress,
                                 safe_mode=self.safe_reason if self.safe_mode else None, risk=self._risk(symbol))

    def _risk(self, symbol: str) -> RiskLimits | None:
        assert self.spec is not None
        if self.spec.risk is None:
            return None
        limits = dict(self.spec.risk)
        return limits.get(symbol, limits.get("*"))

    def receiveMsg_JournalReady(self, msg: JournalReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)
        if msg.safe_mode_reason is not None and not self.safe_mode and not self.deployed:
            # Safe mode outlives the program: only an operator's resume ends it.
            self._enter_safe_mode(msg.safe_mode_reason, carried=True)
        elif self.deployed:
            # A restarted journal may have missed a change while it was down: write the state again.
            self._persist_safe_mode(self.safe_mode, self.safe_reason or "resumed")
        if self.deployed:
            self._tell_positions_their_collaborators()
        elif self._child("exchange").address is None:
            logger.info("journal ready (schema {})", msg.schema_version)
            self._start(self._child("exchange"))
            api = self._find("api")
            if api is not None and api.address is None:
                self._start(api)                         # the operator API serves from now on

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
        self._ready(sender, msg.pid)
        if self.deployed:
            self._tell_positions_their_collaborators()
            return
        if msg.capabilities.streams and self._find("stream") is None:
            self.children.append(Child(ChildSpec("stream", StreamActor)))   # after positions and protection
        for child in self.children:
            if (child.id.startswith("position:") or child.id in ("protection", "stream")) and child.address is None:
                self._start(child)
        self._maybe_deployed()

    def receiveMsg_ApiReady(self, msg: ApiReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)
        self._tell_api(snapshots=True)
        self._maybe_deployed()

    def receiveMsg_ProtectionReady(self, msg: ProtectionReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)
        if self.deployed:
            return
        self._maybe_deployed()

    def receiveMsg_PositionReady(self, msg: PositionReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)
        pending = self.pending_adoptions.pop(msg.symbol, None)
        if pending is not None:
            self._route(*pending)
        self._maybe_deployed()

    def _ready(self, sender: Any, pid: int) -> None:
        child = self._by_address(sender)
        if child is not None:
            child.ready, child.pid = True, pid
            child.last_ack = time.monotonic()
            self._tell_api()
            if child.id != "stream" and child.id != "api":
                self._tell_stream_routes()

    def _routes(self) -> tuple[tuple[str, Any], ...]:
        return tuple((c.id.split(":", 1)[1], c.address) for c in self._positions() if c.address is not None)

    def _tell_stream_routes(self) -> None:
        """Where stream evidence goes, whenever an address changes (a restart, an actor on demand)."""
        stream = self._address("stream")
        if stream is not None:
            self.send(stream, StreamRoutes(self._address("exchange"), self._address("protection"), self._routes()))

    def receiveMsg_StreamReady(self, msg: StreamReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)
        self._maybe_deployed()

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
        logger.info("deployment ready: {} symbols on {}", len(self.spec.symbols), self.capabilities.venue)
        self.send(self.requester, DeploymentReady(self.spec.symbols, self.capabilities))
        self.wakeupAfter(timedelta(seconds=self.spec.supervision.heartbeat_s), HEARTBEAT)
        # Reconciliation itself used no position read; one read now only reports what else the
        # venue shows (positions opened outside posguard), for an operator to see.
        self.send(self._address("exchange"), FetchPositions(request_id=RECONCILE))

    def receiveMsg_PositionsFetched(self, msg: PositionsFetched, sender: Any) -> None:  # noqa: N802
        if msg.request_id != RECONCILE:
            return
        ours = {s: snap for s, snap in self.snapshots.items()}
        lines = [f"{s} {snap.state} ({snap.last_event})" for s, snap in sorted(ours.items())]
        if msg.failure is not None:
            lines.append(f"venue positions could not be read ({msg.failure.code}): foreign positions unknown")
        else:
            foreign = [p for p in msg.positions if p.symbol not in ours or ours[p.symbol].state == "IDLE"]
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
        journal = self._address("journal")
        if journal is not None:
            self.send(journal, msg)
            self.relay["disk-fault"] = sender

    def receiveMsg_JournalSynced(self, msg: JournalSynced, sender: Any) -> None:  # noqa: N802
        self._relay_back(msg.tag or "", msg)

    def receiveMsg_ExchangeStarting(self, msg: ExchangeStarting, sender: Any) -> None:  # noqa: N802
        self.venue_status = (f"venue not ready ({msg.kind}): {msg.reason}; attempt {msg.attempt},"
                             f" next in {msg.retry_in_s:.0f}s")
        if self.metrics is not None:
            self.metrics.venue_start_failures.labels(msg.kind).inc()
        child = self._by_address(sender)
        if child is not None:
            child.last_ack = time.monotonic()            # alive, trying: not hung
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
        exchange, journal = self._address("exchange"), self._address("journal")
        if exchange is None or journal is None:
            return                                   # the other one is still being replaced
        for child in [*self._positions(), *[c for c in self.children if c.id in ("protection", "api")]]:
            if child.address is not None:
                self.send(child.address, Collaborators(exchange, journal))

    # -- failures and restarts ---------------------------------------------------------------

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:  # noqa: N802
        # thespian may report one exit twice (exit request done, process gone): act on the first.
        child = self._by_address(msg.childAddress)
        if child is None:
            return
        if self.stopping is not None:
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
        if child.pid is not None:
            try:
                os.kill(child.pid, signal.SIGKILL)
                return
            except ProcessLookupError:
                pass
        self.send(child.address, ActorExitRequest())

    def _down(self, child: Child, why: str) -> None:
        assert self.spec is not None
        child.address, child.ready, child.pid = None, False, None
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
        self._event(EventRecord("restart", child.id.split(":", 1)[1] if child.id.startswith("position:") else None,
                                {"child": child.id, "why": why, "delay_s": round(delay, 3)}))
        if not within_limit and not self.safe_mode:
            self._enter_safe_mode(f"{self.intensity.recent} restarts within {self.intensity.within_s:.0f}s")
        self.wakeupAfter(timedelta(seconds=delay), RestartChild(child.id, child.generation))

    def _event(self, record: EventRecord) -> None:
        journal = self._address("journal") if self.spec is not None else None
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
        journal = self._child("journal") if self.spec is not None else None
        if journal is None or journal.address is None:
            return                        # written when the journal is (back) up: see JournalReady
        self.send(journal.address, JournalSafeMode(on, reason))

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
            child = self._child(payload.child_id)
            if child.address is None and child.generation == payload.generation:
                logger.info("restarting {}", child.id)
                if child.id.startswith(("position:", "protection")) and self._address("exchange") is None:
                    # it needs the exchange's address: start it once the exchange is back
                    self.wakeupAfter(timedelta(seconds=0.05), payload)
                    return
                self._start(child)
        elif payload == HEARTBEAT and self.stopping is None and self.spec is not None:
            self._heartbeat()
            self._check_watcher()
        elif payload == STOP_DEADLINE and self.stop is not None and self.stopping is None:
            self._flatten_failed()

    def _heartbeat(self) -> None:
        assert self.spec is not None
        policy = self.spec.supervision
        now = time.monotonic()
        self.heartbeat_seq += 1
        for child in self.children:
            if child.address is None or child.replacing:
                continue
            if now - child.last_ack > policy.heartbeat_timeout_s:
                logger.error("{} has not answered for {:.1f}s: hung; replacing it", child.id, now - child.last_ack)
                self._replace(child)
                continue
            self.send(child.address, Heartbeat(self.heartbeat_seq))
        self._tell_api()
        self.wakeupAfter(timedelta(seconds=policy.heartbeat_s), HEARTBEAT)

    def receiveMsg_HeartbeatAck(self, msg: HeartbeatAck, sender: Any) -> None:  # noqa: N802
        child = self._by_address(sender)
        if child is None:
            return
        child.pid, child.last_ack = msg.pid, time.monotonic()
        if child.consecutive and self.intensity.recent == 0:
            child.consecutive = 0                    # it stayed up a whole window: back-off resets

    # -- operator commands and admin ---------------------------------------------------------

    def receiveMsg_OpenPosition(self, msg: OpenPosition, sender: Any) -> None:  # noqa: N802
        if self.safe_mode:
            self.send(sender, CommandDenied(msg.command_id, msg.symbol,
                                            f"safe mode ({self.safe_reason}): new entries are refused"))
            return
        self._route(msg, sender)

    def receiveMsg_ClosePosition(self, msg: ClosePosition, sender: Any) -> None:  # noqa: N802
        self._route(msg, sender)

    def receiveMsg_AdoptPosition(self, msg: AdoptPosition, sender: Any) -> None:  # noqa: N802
        if self.metrics is not None:
            self.metrics.orphans.labels("foreign").inc()
        self._event(EventRecord("orphan", msg.symbol, {"kind": "foreign", "reason": msg.reason,
                                                       "action": "close" if msg.stop_price is None else "protect",
                                                       "stop_price": msg.stop_price}))
        child_id = f"position:{msg.symbol}"
        if self.deployed and self.capabilities and not any(c.id == child_id for c in self.children):
            # A symbol outside the deployment: one writer for it is started on demand.
            logger.warning("starting a PositionActor for {} to adopt a position found on the venue", msg.symbol)
            child = Child(ChildSpec(child_id, PositionActor))
            self.children.append(child)
            self.pending_adoptions[msg.symbol] = (msg, sender)
            self._start(child)
            return
        self._route(msg, sender)                         # protection: allowed in safe mode

    def receiveMsg_Reprotect(self, msg: Reprotect, sender: Any) -> None:  # noqa: N802
        if self.metrics is not None:
            self.metrics.orphans.labels("drift").inc()
        self._event(EventRecord("orphan", msg.symbol, {"kind": "drift", "reason": msg.reason}))
        self._route(msg, sender)

    def _route(self, msg: OpenPosition | ClosePosition | AdoptPosition | Reprotect, sender: Any) -> None:
        target = self._address(f"position:{msg.symbol}") if self.deployed else None
        if target is None:
            known = any(c.id == f"position:{msg.symbol}" for c in self.children)
            why = ("deployment is not ready" if not self.deployed
                   else f"{msg.symbol} is restarting; try again" if known else f"unknown symbol {msg.symbol}")
            self.send(sender, CommandDenied(msg.command_id, msg.symbol, why))
            return
        self.relay[msg.command_id] = sender
        self.send(target, msg)

    def receiveMsg_CommandAccepted(self, msg: CommandAccepted, sender: Any) -> None:  # noqa: N802
        self._relay_back(msg.command_id, msg)

    def receiveMsg_CommandDenied(self, msg: CommandDenied, sender: Any) -> None:  # noqa: N802
        self._relay_back(msg.command_id, msg)

    def receiveMsg_PriceFetched(self, msg: Any, sender: Any) -> None:  # noqa: N802
        self._relay_back(msg.request_id, msg)

    def _relay_back(self, key: str, msg: Any) -> None:
        asker = self.relay.pop(key, None)
        if asker is not None:
            self.send(asker, msg)

    def receiveMsg_PositionSnapshot(self, msg: PositionSnapshot, sender: Any) -> None:  # noqa: N802
        self.snapshots[msg.symbol] = msg
        if self.metrics is not None:
            self.metrics.on_snapshot(msg)
        for follower in (self._address("protection"), self._address("api")):
            if follower is not None:
                self.send(follower, msg)
        for waiter in [w for w in self.state_waiters if w[0].matches(msg)]:
            self.state_waiters.remove(waiter)
            self.send(waiter[1], msg)
        if self.stop is not None and self.stop.flatten:
            self._flatten_step()

    def receiveMsg_WaitForState(self, msg: WaitForState, sender: Any) -> None:  # noqa: N802
        snap = self.snapshots.get(msg.symbol)
        if snap is not None and msg.matches(snap):
            self.send(sender, snap)
        else:
            self.state_waiters.append((msg, sender))

    def receiveMsg_StatusRequest(self, msg: StatusRequest, sender: Any) -> None:  # noqa: N802
        self.send(sender, self._status(msg.request_id, tuple(self.snapshots[s] for s in sorted(self.snapshots))))

    def _tell_api(self, snapshots: bool = False) -> None:
        """The operator API answers status from what we tell it: everything but the positions
        now (also every heartbeat: how it knows we are alive), the positions as they change."""
        api = self._address("api")
        if api is None:
            return
        self.send(api, self._status("", ()))
        if snapshots:
            for snap in self.snapshots.values():
                self.send(api, snap)

    def _status(self, request_id: str, positions: tuple[PositionSnapshot, ...]) -> StatusReport:
        venue = self.capabilities.venue if self.capabilities else ""
        return StatusReport(
            positions, venue=venue, started_at=self.started_at,
            safe_mode=self.safe_mode, safe_reason=self.safe_reason, restarts=self.intensity.recent,
            children=tuple((c.id, c.pid, c.address is not None) for c in self.children),
            reconciliation=self.reconciliation, request_id=request_id, watcher_pid=self.watcher_pid,
            exchange_dumpable=self.exchange_dumpable, streams=tuple(self.streams.values()),
            journal_error=self.journal_error, venue_status=self.venue_status, venue_warnings=self.venue_warnings,
            stopping=("flattening, then stopping" if self.stop is not None and self.stopping is None
                      else "stopping" if self.stopping is not None else ""))

    def receiveMsg_GetTrueState(self, msg: GetTrueState, sender: Any) -> None:  # noqa: N802
        exchange = self._address("exchange")
        if exchange is not None:
            self.send(exchange, GetTrueState(reply_to=msg.reply_to or sender, request_id=msg.request_id))
        else:
            self.send(msg.reply_to or sender, TrueStateReport(None, msg.request_id))

    def receiveMsg_FetchPrice(self, msg: FetchPrice, sender: Any) -> None:  # noqa: N802
        exchange = self._address("exchange")
        if exchange is not None:
            self.relay[msg.request_id] = sender
            self.send(exchange, msg)

    def receiveMsg_RecentEvents(self, msg: RecentEvents, sender: Any) -> None:  # noqa: N802
        journal = self._address("journal")
        if journal is not None:
            self.send(journal, RecentEvents(msg.symbol, msg.limit, reply_to=msg.reply_to or sender,
                                            request_id=msg.request_id))

    def receiveMsg_ScanNow(self, msg: ScanNow, sender: Any) -> None:  # noqa: N802
        """A protection scan now (tests, operators): its ScanDone says whether the venue was read."""
        protection = self._address("protection")
        if protection is None:
            self.send(sender, ScanDone(msg.request_id, "protection is off"))
            return
        self.relay[f"scan:{msg.request_id}"] = sender
        self.send(protection, msg)

    def receiveMsg_ScanDone(self, msg: ScanDone, sender: Any) -> None:  # noqa: N802
        self._relay_back(f"scan:{msg.request_id}", msg)

    def receiveMsg_JournalSync(self, msg: JournalSync, sender: Any) -> None:  # noqa: N802
        via = self._address(f"position:{msg.symbol}") if msg.symbol else self._address("journal")
        if via is not None:
            self.send(via, JournalSync(reply_to=msg.reply_to or sender, symbol=msg.symbol))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:  # noqa: N802
        # The system is shutting down around us: children leaving now are not failures.
        self.stopping = self.stopping or []
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        super().receiveMsg_ActorExitRequest(msg, sender)

    # -- the watcher and an operator's stop ---------------------------------------------------

    def receiveMsg_WatcherChanged(self, msg: WatcherChanged, sender: Any) -> None:  # noqa: N802
        logger.warning("posguard run pid {} now watches this deployment (was: {})", msg.pid, self.watcher_pid)
        self.watcher_pid, self.watcher_alerted = msg.pid, False
        if self.lock is not None:
            self.lock.update(self._holder("running"))
        self._tell_api()
        self.send(sender, Ack(msg.request_id))

    def _check_watcher(self) -> None:
        if self.watcher_pid is None or self.watcher_alerted or alive(self.watcher_pid):
            return
        self.watcher_alerted = True
        logger.critical("ALERT posguard run (pid {}) is gone: this deployment keeps protecting its positions,"
                        " unwatched. `posguard run` with the same config adopts it; `posguard stop` ends it.",
                        self.watcher_pid)
        self._event(EventRecord("watcher_lost", None, {"pid": self.watcher_pid}))

    def receiveMsg_StopRequest(self, msg: StopRequest, sender: Any) -> None:  # noqa: N802
        if self.stop is not None or self.stopping is not None:
            self.send(sender, StopReply(msg.request_id, False, "a stop is already in progress"))
            return
        assert self.spec is not None
        self.stop = _Stop(msg.flatten, msg.request_id, sender)
        if not msg.flatten:
            self._stop_now("stopping: positions stay on the venue with their stops")
            return
        if not self.safe_mode:
            self._enter_safe_mode("stopping with --flatten")
        logger.warning("operator stop with flatten: closing every position reduce-only before stopping")
        self.wakeupAfter(timedelta(seconds=FLATTEN_DEADLINE_S), STOP_DEADLINE)
        self._flatten_step()

    def _flatten_step(self) -> None:
        """Close whatever is filled; stop once every symbol is flat (IDLE)."""
        assert self.stop is not None
        for symbol, snap in self.snapshots.items():
            if snap.state in ("PROTECTING", "PROTECTED") and symbol not in self.stop.asked:
                target = self._address(f"position:{symbol}")
                if target is not None:
                    self.stop.asked.add(symbol)
                    self.send(target, ClosePosition(symbol))
        if all(snap.state == "IDLE" for snap in self.snapshots.values()):
            self._stop_now(f"flattened {len(self.stop.asked)} position(s); stopping")

    def _flatten_failed(self) -> None:
        assert self.stop is not None
        open_ = {s: p.state for s, p in self.snapshots.items() if p.state != "IDLE"}
        detail = (f"not flat within {FLATTEN_DEADLINE_S:.0f}s: {open_}; the deployment keeps running in safe mode"
                  " (stops and closes keep working)")
        logger.critical("ALERT stop --flatten: {}", detail)
        self.send(self.stop.asker, StopReply(self.stop.request_id, False, detail))
        self.stop = None

    def _stop_now(self, detail: str) -> None:
        assert self.stop is not None
        logger.warning("operator stop: {}", detail)
        if self.lock is not None:
            self.lock.update(self._holder("stopped"))   # a watcher seeing us go must not restart us
        self.send(self.stop.asker, StopReply(self.stop.request_id, True, detail))
        self._stop_all(self.myAddress)
        self._tell_api()

    def receiveMsg_DeploymentStopped(self, msg: DeploymentStopped, sender: Any) -> None:  # noqa: N802
        """Our own stop (an operator's, through the API) is done: end the whole actor system."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        logger.warning("deployment stopped by the operator; ending the actor system")
        os.killpg(os.getpgrp(), signal.SIGKILL)          # the admin, its logger and us: nothing else is left

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

    def _child(self, child_id: str) -> Child:
        return next(c for c in self.children if c.id == child_id)

    def _find(self, child_id: str) -> Child | None:
        return next((c for c in self.children if c.id == child_id), None)

    def _positions(self) -> list[Child]:
        return [c for c in self.children if c.id.startswith("position:")]

    def _address(self, child_id: str) -> Any:
        return next((c.address for c in self.children if c.id == child_id), None)

    def _by_address(self, address: Any) -> Child | None:
        return next((c for c in self.children if c.address is not None and c.address == address), None)
