"""The Supervisor's state and what its handlers share: starting a child with its configuration,
routing a command to its symbol's actor, telling the API, the journal's events, stopping in
reverse order. The handlers, by concern, are mixins over this one base (lifecycle, failures,
operations), joined in supervisor/supervisor.py; the decisions live in the plain objects they
call (supervisor/children.py, commands.py, configure.py, safe_mode.py, ownership.py, status.py)."""

from __future__ import annotations

import os
import signal
from typing import Any

from loguru import logger
from thespian.actors import ActorExitRequest

import actors.messages as m
from actors.async_bridge import BridgedActor
from adapters.base import Capabilities
from supervisor.children import ROUTED, Child, Children
from supervisor.commands import Commands, finding_event
from supervisor.configure import Context, configure
from supervisor.host.procfs import child_listening_on
from supervisor.metrics import Metrics
from supervisor.ownership import Ownership
from supervisor.safe_mode import SafeMode
from supervisor.specs import ChildKind
from supervisor.status import Health, status_report

HEARTBEAT = "heartbeat"
RECONCILE = "startup-reconciliation"


class SupervisorBase(BridgedActor):
    holds_keys = True                            # passes the keys' descriptor on to each exchange it starts

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.spec: m.StartDeployment | None = None
        self.requester: Any = None
        self.children = Children()
        self.commands = Commands(self.children, self.send)
        self.capabilities: Capabilities | None = None
        self.deployed = False
        self.snapshots: dict[str, m.PositionSnapshot] = {}
        self.stopping: list[Child] | None = None
        self.stop_requester: Any = None
        self.started_at = 0.0
        self.safe = SafeMode(self.children, self.send, self._tell_api, lambda: self.metrics)
        self.metrics: Metrics | None = None
        self.owner = Ownership()
        self.health = Health()

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
            self.send(stream, m.StreamRoutes(at(ChildKind.EXCHANGE), at(ChildKind.PROTECTION),
                                           self.children.routes()))

    def _tell_positions_their_collaborators(self) -> None:
        exchange, journal = self.children.address(ChildKind.EXCHANGE), self.children.address(ChildKind.JOURNAL)
        if exchange is None or journal is None:
            return                                   # the other one is still being replaced
        for child in self.children.all:
            if child.kind in (ChildKind.POSITIONS, ChildKind.PROTECTION, ChildKind.API) and child.address is not None:
                self.send(child.address, m.Collaborators(exchange, journal))

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

    def _event(self, record: m.EventRecord) -> None:
        journal = self.children.address(ChildKind.JOURNAL) if self.spec is not None else None
        if journal is not None:
            self.send(journal, m.JournalEvent(record))

    def _stop_all(self, requester: Any) -> None:
        self.stop_requester = requester
        self.stopping = [c for c in reversed(self.children.all) if c.address is not None]
        self._tell_api()                                           # the phase is `stopping` now
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
            self.send(self.stop_requester, m.DeploymentStopped())
            self.stop_requester = None

    def _found(self, msg: m.AdoptPosition | m.CancelLeftovers | m.Reprotect | m.PositionObserved) -> None:
        """What the protection scan found: counted and journaled before it is routed."""
        if self.metrics is not None and not isinstance(msg, m.CancelLeftovers):
            self.metrics.on_finding(msg)
        if (event := finding_event(msg)) is not None:
            self._event(event)

    def _route(self, msg: Any, sender: Any) -> None:
        target = self.commands.target(msg, sender, self.deployed)
        if isinstance(target, m.CommandDenied):
            self.send(sender, target)
        else:
            self.send(target, msg)

    def _snapshots(self, snaps: tuple[m.PositionSnapshot, ...], as_sent: Any) -> None:
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

    def _tell_api(self, snapshots: bool = False) -> None:
        """The operator API answers status from what we tell it: everything but the positions
        now (also every heartbeat: how it knows we are alive), the positions as they change."""
        report = self._status("", ())
        if self.metrics is not None:
            self.metrics.on_phase(report.phase, self.health.venue_up)
        api = self.children.address(ChildKind.API)
        if api is None:
            return
        self.send(api, report)
        if snapshots:
            for snap in self.snapshots.values():
                self.send(api, snap)

    def _status(self, request_id: str, positions: tuple[m.PositionSnapshot, ...]) -> m.StatusReport:
        stop = self.commands.stop
        return status_report(
            request_id, positions, venue=self.capabilities.venue if self.capabilities else "",
            started_at=self.started_at, safe_mode=self.safe.on, safe_reason=self.safe.reason,
            children=self.children, health=self.health, watcher_pid=self.owner.watcher_pid,
            stopping=("flattening, then stopping" if stop is not None and self.stopping is None
                      else "stopping" if self.stopping is not None else ""), deployed=self.deployed)
