"""The Supervisor actor, a shell over plain objects: its children (supervisor/children.py: the
table, start-when-ready, restarts with back-off and intensity, heartbeats), the operator's
commands (supervisor/commands.py: routing, relays, waiters, stop/flatten) and its reports
(supervisor/status.py). Children come from specs (supervisor/specs.py), each started once what
it needs is ready, and stopped in reverse; past the restart intensity the system enters safe
mode (no new entries; protection keeps running).

Failures are learned three ways: thespian's ChildActorExited (a crash, kill -9), a child's
own ChildFailed (a handler raised: its state may be half-changed), and a heartbeat it was sent
and did not answer in time. A replaced child never overlaps its successor: the old one is gone
before the new one starts.
"""


from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import ActorExitRequest, ChildActorExited, PoisonMessage, WakeupMessage

from actors.async_bridge import BridgedActor
from actors.messages import (
    Ack,
    ActorFailed,
    AdoptPosition,
    AmendPosition,
    ApiReady,
    CancelLeftovers,
    ChildFailed,
    ClosePosition,
    Collaborators,
    CommandAccepted,
    CommandDenied,
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
    JournalSync,
    JournalSynced,
    OpenPosition,
    PositionObserved,
    PositionReady,
    PositionsFetched,
    PositionSnapshot,
    PositionSnapshots,
    ProtectionReady,
    RecentEvents,
    Reprotect,
    RestartChild,
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
    WaitForState,
    WatcherChanged,
)
from actors.stream import StreamActor
from adapters.base import Capabilities
from supervisor.children import HEARTBEAT_SLICES, ROUTED, Child, Children
from supervisor.commands import (
    FLATTEN_DEADLINE_S,
    STOP_DEADLINE,
    Commands,
    OperatorStop,
    all_flat,
    finding_event,
    not_flat,
)
from supervisor.configure import Context, configure, deployment_specs, on_demand_spec
from supervisor.host.procfs import child_listening_on
from supervisor.metrics import Metrics
from supervisor.ownership import Ownership
from supervisor.safe_mode import SafeMode
from supervisor.specs import (
    ChildKind,
    ChildSpec,
    Restart,
    RestartIntensity,
)
from supervisor.status import Health, status_report

HEARTBEAT = "heartbeat"
RECONCILE = "startup-reconciliation"


class Supervisor(BridgedActor):
    holds_keys = True                            # passes the keys' descriptor on to each exchange it starts

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.spec: StartDeployment | None = None
        self.requester: Any = None
        self.children = Children()
        self.commands = Commands(self.children, self.send)
        self.capabilities: Capabilities | None = None
        self.deployed = False
        self.snapshots: dict[str, PositionSnapshot] = {}
        self.stopping: list[Child] | None = None
        self.stop_requester: Any = None
        self.started_at = 0.0
        self.safe = SafeMode(self.children, self.send, self._tell_api, lambda: self.metrics)
        self.metrics: Metrics | None = None
        self.owner = Ownership()
        self.health = Health()

    # -- start-up: the specs, each started once what it needs is ready ------------------------

    def receiveMsg_StartDeployment(self, msg: StartDeployment, sender: Any) -> None:  # noqa: N802
        if self.spec is not None:
            self.send(sender, DeploymentFailed("this supervisor already runs a deployment"))
            return
        self.spec, self.requester, self.started_at = msg, sender, time.time()
        self.children.intensity = RestartIntensity(msg.supervision.max_restarts, msg.supervision.within_s)
        if msg.metrics_port is not None:
            try:
                self.metrics = Metrics(msg.metrics_port, lambda: self.snapshots)
            except OSError as exc:
                self.send(sender, DeploymentFailed(f"metrics port 127.0.0.1:{msg.metrics_port}: {exc.strerror}"))
                self.spec = None
                return
        if msg.control is not None:
            failure = self.owner.take(msg, self.started_at)
            if failure:
                self.send(sender, DeploymentFailed(failure))
                self.spec = None
                if self.metrics is not None:
                    self.metrics.close()
                    self.metrics = None
                return
        for spec in deployment_specs(msg):
            self.children.add(spec)
        self._start_due()

    def _start_due(self) -> None:
        for child in self.children.due():
            self._start(child)

    def _start(self, child: Child) -> None:
        assert self.spec is not None
        child.started_as(self.createActor(child.spec.actor))
        self.send(child.address, configure(child, Context(
            self.spec, self.capabilities, self.children.address, self.children.routes(), self.myAddress, self.deployed,
            self.safe.why, tuple(self.snapshots.values()),
            self.owner.holder("running") if self.spec.control is not None else None)))
        if child.kind is ChildKind.POSITIONS:
            # Stream news goes to the new process now: it takes what it can (symbols it has
            # loaded) while the others recover, rather than news going to the dead one meanwhile.
            self._tell_stream_routes()

    # -- children ready ----------------------------------------------------------------------

    def receiveMsg_JournalReady(self, msg: JournalReady, sender: Any) -> None:  # noqa: N802
        if msg.safe_mode_reason is not None and not self.safe.on and not self.deployed:
            # Safe mode outlives the program: only an operator's resume ends it.
            self.safe.enter(msg.safe_mode_reason, carried=True)
        self._ready(sender, msg.pid)
        if self.deployed:
            # A restarted journal may have missed a change while it was down: write the state again.
            self.safe.rewrite()
            self._tell_positions_their_collaborators()
        else:
            logger.info("journal ready (schema {})", msg.schema_version)

    def receiveMsg_ExchangeReady(self, msg: ExchangeReady, sender: Any) -> None:  # noqa: N802
        self.capabilities = msg.capabilities
        self.health.on_exchange_ready(msg)
        if msg.problems and not self.deployed:
            # The account is not fit (hedge mode, a read-only key, a symbol not trading): say which
            # setting to change, before any entry.
            self.receiveMsg_ActorFailed(ActorFailed("venue preflight", "; ".join(msg.problems), usage=True), sender)
            return
        if msg.problems and not self.safe.on:
            logger.critical("ALERT venue preflight after a restart: {}", "; ".join(msg.problems))
            self.safe.enter(f"venue preflight: {'; '.join(msg.problems)}")
        if msg.capabilities.streams and ChildKind.STREAM not in self.children:
            self.children.add(ChildSpec(ChildKind.STREAM, ChildKind.STREAM, StreamActor, after=(ChildKind.EXCHANGE,)))
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
        child = self.children.by_symbol.get(msg.symbols[0]) if msg.symbols else None
        if child is not None and child.address is not None:
            child.symbols_ready.update(msg.symbols)
            if child.symbols_ready >= set(child.spec.symbols):     # every symbol it guards is reconciled
                self._ready(sender, msg.pid)
        for symbol in msg.symbols:
            pending = self.commands.pending.pop(symbol, None)
            if pending is not None:
                self._route(*pending)

    def _ready(self, sender: Any, pid: int) -> None:
        child = self.children.by_address(sender)
        if child is not None:
            child.ready, child.pid, child.awaiting_since = True, pid, None
            self._tell_api()
            if child.kind in ROUTED:
                self._tell_stream_routes()
        if not self.deployed:
            self._start_due()
            self._maybe_deployed()

    def _tell_stream_routes(self) -> None:
        """Where stream evidence goes, whenever an address changes (a restart, an actor on demand)."""
        stream = self.children.address(ChildKind.STREAM)
        if stream is not None:
            at = self.children.address
            self.send(stream, StreamRoutes(at(ChildKind.EXCHANGE), at(ChildKind.PROTECTION),
                                           self.children.routes()))

    def receiveMsg_StreamStatus(self, msg: StreamStatus, sender: Any) -> None:  # noqa: N802
        before, event = self.health.on_stream(msg)
        if self.metrics is not None:
            self.metrics.on_stream(msg, before)
        if event is not None:
            self._event(event)
        self._tell_api()

    def _maybe_deployed(self) -> None:
        if self.deployed or self.spec is None or not self.children.all_ready():
            return
        self.deployed = True
        assert self.capabilities is not None
        logger.info("deployment ready: {} symbols on {} ({} processes)", len(self.spec.symbols),
                    self.capabilities.venue, len(self.children.all))
        self.send(self.requester, DeploymentReady(self.spec.symbols, self.capabilities))
        # The watchdog starts now: it judges only heartbeats it sent (a child busy starting
        # while others still start was never asked anything).
        self.wakeupAfter(timedelta(seconds=self.spec.supervision.heartbeat_s / HEARTBEAT_SLICES), HEARTBEAT)
        # Reconciliation itself used no position read; one read now only reports what else the
        # venue shows (positions opened outside posguard), for an operator to see.
        self.send(self.children.address(ChildKind.EXCHANGE), FetchPositions(request_id=RECONCILE))

    def receiveMsg_PositionsFetched(self, msg: PositionsFetched, sender: Any) -> None:  # noqa: N802
        if msg.request_id != RECONCILE:
            return
        self.health.on_reconciled(self.snapshots, msg)

    def receiveMsg_JournalHealth(self, msg: JournalHealth, sender: Any) -> None:  # noqa: N802
        self.health.on_journal(msg)
        if not msg.ok:
            if self.metrics is not None:
                self.metrics.journal_failures.inc()
            self.safe.enter_once(f"journal cannot write: {msg.error}")
        self._tell_api()

    def receiveMsg_JournalDiskFault(self, msg: JournalDiskFault, sender: Any) -> None:  # noqa: N802
        self.commands.forward(ChildKind.JOURNAL, msg, sender, "disk-fault")

    def receiveMsg_JournalSynced(self, msg: JournalSynced, sender: Any) -> None:  # noqa: N802
        self.commands.answer(msg.tag or "", msg)

    def receiveMsg_ExchangeStarting(self, msg: ExchangeStarting, sender: Any) -> None:  # noqa: N802
        self.health.on_exchange_starting(msg)
        if self.metrics is not None:
            self.metrics.venue_start_failures.labels(msg.kind).inc()
        child = self.children.by_address(sender)
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
        child = self.children.by_address(sender)
        if child is not None and not child.replacing and self.stopping is None:
            self._replace(child)

    def _tell_positions_their_collaborators(self) -> None:
        exchange, journal = self.children.address(ChildKind.EXCHANGE), self.children.address(ChildKind.JOURNAL)
        if exchange is None or journal is None:
            return                                   # the other one is still being replaced
        for child in self.children.all:
            if child.kind in (ChildKind.POSITIONS, ChildKind.PROTECTION, ChildKind.API) and child.address is not None:
                self.send(child.address, Collaborators(exchange, journal))

    # -- failures and restarts ---------------------------------------------------------------

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:  # noqa: N802
        # thespian may report one exit twice (exit request done, process gone): act on the first.
        child = self.children.by_address(msg.childAddress)
        if child is None:
            return
        if self.stopping is not None:
            self.children.forget_address(child)
            child.address = None
            self._stop_next()
            return
        why = "replaced after a failure" if child.replacing else "exited unexpectedly"
        self._down(child, why)

    def receiveMsg_ChildFailed(self, msg: ChildFailed, sender: Any) -> None:  # noqa: N802
        child = self.children.by_address(sender)
        if child is None or child.replacing or self.stopping is not None:
            return
        logger.error("{} reported a failed handler ({}); replacing it", child.id, msg.reason)
        self._replace(child)

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: Any) -> None:  # noqa: N802
        child = self.children.by_address(sender)
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
        self.children.down(child)
        self._tell_api()
        if child.spec.restart is Restart.TEMPORARY:
            logger.warning("{} {}; temporary child, not restarted", child.id, why)
            return
        plan = self.children.plan_restart(child, self.spec.supervision, time.monotonic())
        delay = plan.delay_s
        if self.metrics is not None:
            self.metrics.restarts.labels(child.id).inc()
        logger.critical("ALERT {} {}; restarting in {:.2f}s ({} restarts in {:.0f}s)", child.id, why, delay,
                        self.children.intensity.recent, self.children.intensity.within_s)
        symbols = child.spec.symbols
        self._event(EventRecord("restart", symbols[0] if len(symbols) == 1 else None,
                                {"child": child.id, "why": why, "delay_s": round(delay, 3),
                                 **({"symbols": list(symbols)} if len(symbols) > 1 else {})}))
        if not plan.within_limit:
            intensity = self.children.intensity
            self.safe.enter_once(f"{intensity.recent} restarts within {intensity.within_s:.0f}s")
        self.wakeupAfter(timedelta(seconds=delay), RestartChild(child.id, child.generation))

    def _event(self, record: EventRecord) -> None:
        journal = self.children.address(ChildKind.JOURNAL) if self.spec is not None else None
        if journal is not None:
            self.send(journal, JournalEvent(record))

    def receiveMsg_SetSafeMode(self, msg: SetSafeMode, sender: Any) -> None:  # noqa: N802
        if msg.on:
            self.safe.enter(msg.reason)
        else:
            self.safe.leave(msg.reason)
        self.receiveMsg_StatusRequest(StatusRequest(msg.request_id), sender)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:  # noqa: N802
        payload = msg.payload
        if isinstance(payload, RestartChild) and self.stopping is None:
            child = self.children.by_id[payload.child_id]
            if child.address is None and child.generation == payload.generation:
                if not self.children.needs_up(child):
                    # what it needs (the exchange's address, say) is itself being replaced: soon
                    self.wakeupAfter(timedelta(seconds=0.05), payload)
                    return
                logger.info("restarting {}", child.id)
                self._start(child)
        elif payload == HEARTBEAT and self.stopping is None and self.spec is not None:
            self._heartbeat()
        elif payload == STOP_DEADLINE and self.commands.stop is not None and self.stopping is None:
            self._flatten_failed()

    def _heartbeat(self) -> None:
        """Ask this slice of the children whether they are alive (supervisor/children.py); one
        that has not answered a heartbeat it was sent within the timeout is hung: replaced."""
        assert self.spec is not None
        policy = self.spec.supervision
        now = time.monotonic()
        beat = self.children.heartbeat(now, policy.heartbeat_timeout_s)
        for child in beat.hung:
            logger.error("{} has not answered for {:.1f}s: hung; replacing it", child.id,
                         now - (child.awaiting_since or now))
            self._replace(child)
        for child in beat.ask:
            self.send(child.address, Heartbeat(self.children.heartbeat_seq))
        if beat.housekeeping:
            self.commands.sweep()
            self._tell_api()
            self._check_watcher()
        self.wakeupAfter(timedelta(seconds=policy.heartbeat_s / HEARTBEAT_SLICES), HEARTBEAT)

    def receiveMsg_HeartbeatAck(self, msg: HeartbeatAck, sender: Any) -> None:  # noqa: N802
        child = self.children.by_address(sender)
        if child is None:
            return
        self.children.answered(child, msg.pid)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:  # noqa: N802
        # The system is shutting down around us: children leaving now are not failures.
        self.stopping = self.stopping or []
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        super().receiveMsg_ActorExitRequest(msg, sender)

    # -- stopping, in reverse order ------------------------------------------------------------

    def receiveMsg_StopDeployment(self, msg: StopDeployment, sender: Any) -> None:  # noqa: N802
        self.owner.mark("stopped")
        self._stop_all(sender)

    def _stop_all(self, requester: Any) -> None:
        self.stop_requester = requester
        self.stopping = [c for c in reversed(self.children.all) if c.address is not None]
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

    # -- operator commands and admin (routed: supervisor/commands.py) ---------------------------

    def receiveMsg_OpenPosition(self, msg: OpenPosition, sender: Any) -> None:  # noqa: N802
        if self.safe.on:
            self.send(sender, CommandDenied(msg.command_id, msg.symbol,
                                            f"safe mode ({self.safe.reason}): new entries are refused"))
            return
        self._route(msg, sender)

    def receiveMsg_ClosePosition(self, msg: ClosePosition, sender: Any) -> None:  # noqa: N802
        self._route(msg, sender)

    def receiveMsg_AmendPosition(self, msg: AmendPosition, sender: Any) -> None:  # noqa: N802
        self._route(msg, sender)                         # in safe mode too: a stop move opens nothing

    def receiveMsg_AdoptPosition(self, msg: AdoptPosition, sender: Any) -> None:  # noqa: N802
        self._found(msg)
        self._route_or_start(msg, sender, "adopt a position found on the venue")   # allowed in safe mode

    def receiveMsg_CancelLeftovers(self, msg: CancelLeftovers, sender: Any) -> None:  # noqa: N802
        self._found(msg)
        self._route_or_start(msg, sender, "cancel stop orders of ours it found on a flat symbol")

    def _route_or_start(self, msg: AdoptPosition | CancelLeftovers, sender: Any, why: str) -> None:
        if self.deployed and self.capabilities and msg.symbol not in self.children.by_symbol:
            # A symbol outside the deployment: one writer for it is started on demand.
            logger.warning("starting a PositionActor for {} to {}", msg.symbol, why)
            child = self.children.add(on_demand_spec(msg.symbol))
            self.commands.pending[msg.symbol] = (msg, sender)
            self._start(child)
            return
        self._route(msg, sender)

    def receiveMsg_Reprotect(self, msg: Reprotect, sender: Any) -> None:  # noqa: N802
        self._found(msg)
        self._route(msg, sender)

    def receiveMsg_PositionObserved(self, msg: PositionObserved, sender: Any) -> None:  # noqa: N802
        self._found(msg)
        self._route(msg, sender)

    def _found(self, msg: AdoptPosition | CancelLeftovers | Reprotect | PositionObserved) -> None:
        """What the protection scan found: counted and journaled before it is routed."""
        if self.metrics is not None and not isinstance(msg, CancelLeftovers):
            self.metrics.on_finding(msg)
        if (event := finding_event(msg)) is not None:
            self._event(event)

    def _route(self, msg: Any, sender: Any) -> None:
        target = self.commands.target(msg, sender, self.deployed)
        if isinstance(target, CommandDenied):
            self.send(sender, target)
        else:
            self.send(target, msg)

    def receiveMsg_CommandAccepted(self, msg: CommandAccepted, sender: Any) -> None:  # noqa: N802
        self.commands.answer(msg.command_id, msg)

    def receiveMsg_CommandDenied(self, msg: CommandDenied, sender: Any) -> None:  # noqa: N802
        self.commands.answer(msg.command_id, msg)

    def receiveMsg_PriceFetched(self, msg: Any, sender: Any) -> None:  # noqa: N802
        self.commands.answer(msg.request_id, msg)

    def receiveMsg_PositionSnapshot(self, msg: PositionSnapshot, sender: Any) -> None:  # noqa: N802
        self._snapshots((msg,), msg)

    def receiveMsg_PositionSnapshots(self, msg: PositionSnapshots, sender: Any) -> None:  # noqa: N802
        self._snapshots(msg.snapshots, msg)

    def _snapshots(self, snaps: tuple[PositionSnapshot, ...], as_sent: Any) -> None:
        for snap in snaps:
            if not snap.supersedes(self.snapshots.get(snap.symbol)):
                continue                                     # overtaken in transit by a newer one
            self.snapshots[snap.symbol] = snap
            if self.metrics is not None:
                self.metrics.on_snapshot(snap)
            self.commands.matched(snap)
        for follower in (self.children.address(ChildKind.PROTECTION), self.children.address(ChildKind.API)):
            if follower is not None:
                self.send(follower, as_sent)                 # one message, as many snapshots as it holds
        if self.commands.stop is not None and self.commands.stop.flatten:
            self._flatten_step()

    def receiveMsg_WaitForState(self, msg: WaitForState, sender: Any) -> None:  # noqa: N802
        self.commands.wait(msg, sender, self.snapshots.get(msg.symbol))

    def receiveMsg_StatusRequest(self, msg: StatusRequest, sender: Any) -> None:  # noqa: N802
        self.send(sender, self._status(msg.request_id, tuple(self.snapshots[s] for s in sorted(self.snapshots))))

    def _tell_api(self, snapshots: bool = False) -> None:
        """The operator API answers status from what we tell it: everything but the positions
        now (also every heartbeat: how it knows we are alive), the positions as they change."""
        api = self.children.address(ChildKind.API)
        if api is None:
            return
        self.send(api, self._status("", ()))
        if snapshots:
            for snap in self.snapshots.values():
                self.send(api, snap)

    def _status(self, request_id: str, positions: tuple[PositionSnapshot, ...]) -> StatusReport:
        stop = self.commands.stop
        return status_report(
            request_id, positions, venue=self.capabilities.venue if self.capabilities else "",
            started_at=self.started_at, safe_mode=self.safe.on, safe_reason=self.safe.reason,
            children=self.children, health=self.health, watcher_pid=self.owner.watcher_pid,
            stopping=("flattening, then stopping" if stop is not None and self.stopping is None
                      else "stopping" if self.stopping is not None else ""))

    def receiveMsg_GetTrueState(self, msg: GetTrueState, sender: Any) -> None:  # noqa: N802
        self.commands.truth(msg, sender)

    def receiveMsg_FetchPrice(self, msg: FetchPrice, sender: Any) -> None:  # noqa: N802
        self.commands.forward(ChildKind.EXCHANGE, msg, sender, msg.request_id)

    def receiveMsg_RecentEvents(self, msg: RecentEvents, sender: Any) -> None:  # noqa: N802
        self.commands.recent_events(msg, sender)

    def receiveMsg_ScanNow(self, msg: ScanNow, sender: Any) -> None:  # noqa: N802
        self.commands.scan_now(msg, sender)

    def receiveMsg_ScanDone(self, msg: ScanDone, sender: Any) -> None:  # noqa: N802
        self.commands.answer(f"scan:{msg.request_id}", msg)

    def receiveMsg_JournalSync(self, msg: JournalSync, sender: Any) -> None:  # noqa: N802
        self.commands.journal_sync(msg, sender)

    # -- the watcher and an operator's stop ---------------------------------------------------

    def receiveMsg_WatcherChanged(self, msg: WatcherChanged, sender: Any) -> None:  # noqa: N802
        self.owner.watcher_changed(msg.pid)
        self._tell_api()
        self.send(sender, Ack(msg.request_id))

    def _check_watcher(self) -> None:
        if self.owner.watcher_lost():
            self._event(EventRecord("watcher_lost", None, {"pid": self.owner.watcher_pid}))

    def receiveMsg_StopRequest(self, msg: StopRequest, sender: Any) -> None:  # noqa: N802
        if self.commands.stop is not None or self.stopping is not None:
            self.send(sender, StopReply(msg.request_id, False, "a stop is already in progress"))
            return
        assert self.spec is not None
        self.commands.stop = OperatorStop(msg.flatten, msg.request_id, sender)
        if not msg.flatten:
            self._stop_now("stopping: positions stay on the venue with their stops")
            return
        self.safe.enter_once("stopping with --flatten")
        logger.warning("operator stop with flatten: closing every position reduce-only before stopping")
        self.wakeupAfter(timedelta(seconds=FLATTEN_DEADLINE_S), STOP_DEADLINE)
        self._flatten_step()

    def _flatten_step(self) -> None:
        """Close whatever is filled; stop once every symbol is flat (IDLE)."""
        stop = self.commands.stop
        assert stop is not None
        for target, close in stop.closes(self.snapshots, self.children):
            self.send(target, close)
        if all_flat(self.snapshots):
            self._stop_now(f"flattened {len(stop.asked)} position(s); stopping")

    def _flatten_failed(self) -> None:
        stop = self.commands.stop
        assert stop is not None
        detail = (f"not flat within {FLATTEN_DEADLINE_S:.0f}s: {not_flat(self.snapshots)}; the deployment keeps"
                  " running in safe mode (stops and closes keep working)")
        logger.critical("ALERT stop --flatten: {}", detail)
        self.send(stop.asker, StopReply(stop.request_id, False, detail))
        self.commands.stop = None

    def _stop_now(self, detail: str) -> None:
        assert self.commands.stop is not None
        logger.warning("operator stop: {}", detail)
        self.owner.mark("stopped")
        self.send(self.commands.stop.asker, StopReply(self.commands.stop.request_id, True, detail))
        self._stop_all(self.myAddress)
        self._tell_api()

    def receiveMsg_DeploymentStopped(self, msg: DeploymentStopped, sender: Any) -> None:  # noqa: N802
        """Our own stop (an operator's, through the API) is done: end the whole actor system."""
        self.owner.release()
        logger.warning("deployment stopped by the operator; ending the actor system")
        os.killpg(os.getpgrp(), signal.SIGKILL)          # the admin, its logger and us: nothing else is left

