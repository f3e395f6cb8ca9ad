"""The Supervisor's lifecycle handlers: the deployment started from its specs, each child once
what it needs is ready; the children's health (journal, venue, streams) as they report it; the
snapshots passed on; the stop of the whole deployment."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import ActorExitRequest

import actors.messages as m
from actors.journal.lease import boottime
from actors.stream import StreamActor
from supervisor.children import HEARTBEAT_SLICES
from supervisor.configure import deployment_specs
from supervisor.metrics import Metrics
from supervisor.shell.base import HEARTBEAT, RECONCILE, SupervisorBase
from supervisor.specs import ChildKind, ChildSpec, RestartIntensity


class Lifecycle(SupervisorBase):
    def receiveMsg_StartDeployment(self, msg: m.StartDeployment, sender: Any) -> None:  # noqa: N802
        if self.spec is not None:
            self.send(sender, m.DeploymentFailed("this supervisor already runs a deployment"))
            return
        self.spec, self.requester, self.started_at = msg, sender, time.time()
        self.children.intensity = RestartIntensity(msg.supervision.max_restarts, msg.supervision.within_s)
        if msg.lease is not None:
            self.commands.entries_after = msg.lease.entries_after
            # Until the journal's process reports its first renewal: what `posguard run` just renewed.
            self.commands.lease_deadline = boottime() + msg.lease.settings.ttl_s - msg.lease.settings.margin_s
        if msg.metrics_port is not None:
            try:
                self.metrics = Metrics(msg.metrics_port, lambda: self.snapshots, msg.settings.naked_deadline_s,
                                       account=msg.lease.account if msg.lease is not None else None)
            except OSError as exc:
                self.send(sender, m.DeploymentFailed(f"metrics port 127.0.0.1:{msg.metrics_port}: {exc.strerror}"))
                self.spec = None
                return
        if msg.control is not None:
            failure = self.owner.take(msg, self.started_at)
            if failure:
                self.send(sender, m.DeploymentFailed(failure))
                self.spec = None
                if self.metrics is not None:
                    self.metrics.close()
                    self.metrics = None
                return
        for spec in deployment_specs(msg):
            self.children.add(spec)
        self._start_due()

    def receiveMsg_JournalReady(self, msg: m.JournalReady, sender: Any) -> None:  # noqa: N802
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

    def receiveMsg_ExchangeReady(self, msg: m.ExchangeReady, sender: Any) -> None:  # noqa: N802
        self.capabilities = msg.capabilities
        self.health.on_exchange_ready(msg)
        if msg.problems and not self.deployed:
            # The account is not fit (hedge mode, a read-only key, a symbol not trading): say which
            # setting to change, before any entry.
            self.receiveMsg_ActorFailed(m.ActorFailed("venue preflight", "; ".join(msg.problems), usage=True), sender)
            return
        if msg.problems and not self.safe.on:
            logger.critical("ALERT venue preflight after a restart: {}", "; ".join(msg.problems))
            self.safe.enter(f"venue preflight: {'; '.join(msg.problems)}")
        if msg.capabilities.streams and ChildKind.STREAM not in self.children:
            self.children.add(ChildSpec(ChildKind.STREAM, ChildKind.STREAM, StreamActor, after=(ChildKind.EXCHANGE,)))
        self._ready(sender, msg.pid)
        if self.deployed:
            self._tell_positions_their_collaborators()

    def receiveMsg_ExchangePreflight(self, msg: m.ExchangePreflight, sender: Any) -> None:  # noqa: N802
        self.health.on_exchange_preflight()
        self._tell_api()

    def receiveMsg_ApiReady(self, msg: m.ApiReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)
        self._tell_api(snapshots=True)

    def receiveMsg_ProtectionReady(self, msg: m.ProtectionReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)

    def receiveMsg_StreamReady(self, msg: m.StreamReady, sender: Any) -> None:  # noqa: N802
        self._ready(sender, msg.pid)

    def receiveMsg_PositionReady(self, msg: m.PositionReady, sender: Any) -> None:  # noqa: N802
        child = self.children.by_symbol.get(msg.symbols[0]) if msg.symbols else None
        if child is not None and child.address is not None:
            child.symbols_ready.update(msg.symbols)
            if child.symbols_ready >= set(child.spec.symbols):     # every symbol it guards is reconciled
                self._ready(sender, msg.pid)
            elif not self.deployed:
                self._tell_api()                                   # recovery's progress, for `status`
        for symbol in msg.symbols:
            pending = self.commands.pending.pop(symbol, None)
            if pending is not None:
                self._route(*pending)

    def receiveMsg_StreamStatus(self, msg: m.StreamStatus, sender: Any) -> None:  # noqa: N802
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
        self.send(self.requester, m.DeploymentReady(self.spec.symbols, self.capabilities))
        self._tell_api()                                           # the phase is `ready` (or safe mode) now
        # The watchdog starts now: it judges only heartbeats it sent (a child busy starting
        # while others still start was never asked anything).
        self.wakeupAfter(timedelta(seconds=self.spec.supervision.heartbeat_s / HEARTBEAT_SLICES), HEARTBEAT)
        # Reconciliation itself used no position read; one read now only reports what else the
        # venue shows (positions opened outside posguard), for an operator to see.
        self.send(self.children.address(ChildKind.EXCHANGE), m.FetchPositions(request_id=RECONCILE))

    def receiveMsg_PositionsFetched(self, msg: m.PositionsFetched, sender: Any) -> None:  # noqa: N802
        if msg.request_id != RECONCILE:
            return
        self.health.on_reconciled(self.snapshots, msg)

    def receiveMsg_JournalHealth(self, msg: m.JournalHealth, sender: Any) -> None:  # noqa: N802
        self.health.on_journal(msg)
        if not msg.ok:
            if self.metrics is not None:
                self.metrics.journal_failures.inc()
            self.safe.enter_once(f"journal cannot write: {msg.error}")
        self._tell_api()

    def receiveMsg_LeaseDeadline(self, msg: m.LeaseDeadline, sender: Any) -> None:  # noqa: N802
        self.commands.lease_deadline = msg.not_after

    def receiveMsg_ExchangeStarting(self, msg: m.ExchangeStarting, sender: Any) -> None:  # noqa: N802
        self.health.on_exchange_starting(msg)
        if self.metrics is not None:
            self.metrics.venue_start_failures.labels(msg.kind).inc()
        child = self.children.by_address(sender)
        if child is not None:
            child.awaiting_since = None                  # alive, trying: not hung
        self._tell_api()

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:  # noqa: N802
        # The system is shutting down around us: children leaving now are not failures.
        self.stopping = self.stopping or []
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        super().receiveMsg_ActorExitRequest(msg, sender)

    def receiveMsg_StopDeployment(self, msg: m.StopDeployment, sender: Any) -> None:  # noqa: N802
        self.owner.mark("stopped")
        self._stop_all(sender)

    def receiveMsg_PositionSnapshot(self, msg: m.PositionSnapshot, sender: Any) -> None:  # noqa: N802
        self._snapshots((msg,), msg)

    def receiveMsg_PositionSnapshots(self, msg: m.PositionSnapshots, sender: Any) -> None:  # noqa: N802
        self._snapshots(msg.snapshots, msg)
