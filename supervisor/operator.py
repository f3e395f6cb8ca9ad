"""What the Supervisor does for operators and strategies (through the API actor): commands
routed to the PositionActor guarding their symbol, answers relayed back to who asked
(supervisor/routing.py keeps them, and forgets them), status, waits for a state, and an
operator's stop -- with --flatten, every position closed reduce-only first.

A mixin of the Supervisor: the children, snapshots and safe mode it reads are the Supervisor's.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from actors.messages import (
    Ack,
    AdoptPosition,
    CancelLeftovers,
    ClosePosition,
    CommandAccepted,
    CommandDenied,
    DeploymentStopped,
    EventRecord,
    FetchPrice,
    GetTrueState,
    JournalSync,
    OpenPosition,
    PositionObserved,
    PositionSnapshot,
    PositionSnapshots,
    RecentEvents,
    Reprotect,
    ScanDone,
    ScanNow,
    StatusReport,
    StatusRequest,
    StopReply,
    StopRequest,
    TrueStateReport,
    WaitForState,
    WatcherChanged,
)
from actors.position import PositionActor
from actors.position_states import CLOSABLE, State
from supervisor.processes import alive
from supervisor.specs import ChildKind, ChildSpec

if TYPE_CHECKING:
    from supervisor.supervisor import Supervisor

STOP_DEADLINE = "stop-deadline"
FLATTEN_DEADLINE_S = 100.0           # within the API's 120 s answer bound


@dataclass(slots=True)
class OperatorStop:
    """An operator's stop: who asked, and (flatten) which positions were asked to close."""

    flatten: bool
    request_id: str
    asker: Any
    asked: set[str] = field(default_factory=set)


class OperatorMixin:
    # -- operator commands and admin ---------------------------------------------------------

    def receiveMsg_OpenPosition(self: Supervisor, msg: OpenPosition, sender: Any) -> None:  # noqa: N802
        if self.safe_mode:
            self.send(sender, CommandDenied(msg.command_id, msg.symbol,
                                            f"safe mode ({self.safe_reason}): new entries are refused"))
            return
        self._route(msg, sender)

    def receiveMsg_ClosePosition(self: Supervisor, msg: ClosePosition, sender: Any) -> None:  # noqa: N802
        self._route(msg, sender)

    def receiveMsg_AdoptPosition(self: Supervisor, msg: AdoptPosition, sender: Any) -> None:  # noqa: N802
        if self.metrics is not None:
            self.metrics.orphans.labels("foreign").inc()
        self._event(EventRecord("orphan", msg.symbol, {"kind": "foreign", "reason": msg.reason,
                                                       "action": "close" if msg.stop_price is None else "protect",
                                                       "stop_price": msg.stop_price}))
        self._route_or_start(msg, sender, "adopt a position found on the venue")   # allowed in safe mode

    def receiveMsg_CancelLeftovers(self: Supervisor, msg: CancelLeftovers, sender: Any) -> None:  # noqa: N802
        self._event(EventRecord("orphan", msg.symbol, {"kind": "leftover_stops", "orders": list(msg.client_order_ids)}))
        self._route_or_start(msg, sender, "cancel stop orders of ours it found on a flat symbol")

    def _route_or_start(self: Supervisor, msg: AdoptPosition | CancelLeftovers, sender: Any, why: str) -> None:
        if self.deployed and self.capabilities and msg.symbol not in self.by_symbol:
            # A symbol outside the deployment: one writer for it is started on demand.
            logger.warning("starting a PositionActor for {} to {}", msg.symbol, why)
            child = self._add(ChildSpec(f"position:{msg.symbol}", ChildKind.POSITIONS, PositionActor,
                                        after=(ChildKind.JOURNAL, ChildKind.EXCHANGE), symbols=(msg.symbol,)))
            self.pending_commands[msg.symbol] = (msg, sender)
            self._start(child)
            return
        self._route(msg, sender)

    def receiveMsg_Reprotect(self: Supervisor, msg: Reprotect, sender: Any) -> None:  # noqa: N802
        if self.metrics is not None:
            self.metrics.orphans.labels("drift").inc()
        self._event(EventRecord("orphan", msg.symbol, {"kind": "drift", "reason": msg.reason}))
        self._route(msg, sender)

    def receiveMsg_PositionObserved(self: Supervisor, msg: PositionObserved, sender: Any) -> None:  # noqa: N802
        if self.metrics is not None:
            self.metrics.orphans.labels(msg.finding).inc()
            if msg.finding == "missing":                 # a list read that left out a position we hold
                self.metrics.list_omissions.labels(msg.symbol).inc()
        if msg.finding == "drift":
            self._event(EventRecord("orphan", msg.symbol, {"kind": "drift", "position": msg.position is not None}))
        self._route(msg, sender)

    def _route(self: Supervisor, msg: Any, sender: Any) -> None:
        child = self.by_symbol.get(msg.symbol)
        target = child.address if child is not None and self.deployed else None
        if target is None:
            why = ("deployment is not ready" if not self.deployed
                   else f"{msg.symbol} is restarting; try again" if child is not None
                   else f"unknown symbol {msg.symbol}")
            self.send(sender, CommandDenied(msg.command_id, msg.symbol, why))
            return
        self.relay.put(msg.command_id, sender)
        self.send(target, msg)

    def receiveMsg_CommandAccepted(self: Supervisor, msg: CommandAccepted, sender: Any) -> None:  # noqa: N802
        self._relay_back(msg.command_id, msg)

    def receiveMsg_CommandDenied(self: Supervisor, msg: CommandDenied, sender: Any) -> None:  # noqa: N802
        self._relay_back(msg.command_id, msg)

    def receiveMsg_PriceFetched(self: Supervisor, msg: Any, sender: Any) -> None:  # noqa: N802
        self._relay_back(msg.request_id, msg)

    def _relay_back(self: Supervisor, key: str, msg: Any) -> None:
        asker = self.relay.pop(key)
        if asker is not None:
            self.send(asker, msg)

    def receiveMsg_PositionSnapshot(self: Supervisor, msg: PositionSnapshot, sender: Any) -> None:  # noqa: N802
        self._snapshots((msg,), msg)

    def receiveMsg_PositionSnapshots(self: Supervisor, msg: PositionSnapshots, sender: Any) -> None:  # noqa: N802
        self._snapshots(msg.snapshots, msg)

    def _snapshots(self: Supervisor, snaps: tuple[PositionSnapshot, ...], as_sent: Any) -> None:
        for snap in snaps:
            if not snap.supersedes(self.snapshots.get(snap.symbol)):
                continue                                     # overtaken in transit by a newer one
            self.snapshots[snap.symbol] = snap
            if self.metrics is not None:
                self.metrics.on_snapshot(snap)
            for asker in self.waiters.matched(snap):
                self.send(asker, snap)
        for follower in (self._address(ChildKind.PROTECTION), self._address(ChildKind.API)):
            if follower is not None:
                self.send(follower, as_sent)                 # one message, as many snapshots as it holds
        if self.stop is not None and self.stop.flatten:
            self._flatten_step()

    def receiveMsg_WaitForState(self: Supervisor, msg: WaitForState, sender: Any) -> None:  # noqa: N802
        snap = self.snapshots.get(msg.symbol)
        if snap is not None and msg.matches(snap):
            self.send(sender, snap)
        else:
            self.waiters.add(msg, sender)

    def receiveMsg_StatusRequest(self: Supervisor, msg: StatusRequest, sender: Any) -> None:  # noqa: N802
        self.send(sender, self._status(msg.request_id, tuple(self.snapshots[s] for s in sorted(self.snapshots))))

    def _tell_api(self: Supervisor, snapshots: bool = False) -> None:
        """The operator API answers status from what we tell it: everything but the positions
        now (also every heartbeat: how it knows we are alive), the positions as they change."""
        api = self._address(ChildKind.API)
        if api is None:
            return
        self.send(api, self._status("", ()))
        if snapshots:
            for snap in self.snapshots.values():
                self.send(api, snap)

    def _status(self: Supervisor, request_id: str, positions: tuple[PositionSnapshot, ...]) -> StatusReport:
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

    def receiveMsg_GetTrueState(self: Supervisor, msg: GetTrueState, sender: Any) -> None:  # noqa: N802
        exchange = self._address(ChildKind.EXCHANGE)
        if exchange is not None:
            self.send(exchange, GetTrueState(reply_to=msg.reply_to or sender, request_id=msg.request_id))
        else:
            self.send(msg.reply_to or sender, TrueStateReport(None, msg.request_id))

    def receiveMsg_FetchPrice(self: Supervisor, msg: FetchPrice, sender: Any) -> None:  # noqa: N802
        exchange = self._address(ChildKind.EXCHANGE)
        if exchange is not None:
            self.relay.put(msg.request_id, sender)
            self.send(exchange, msg)

    def receiveMsg_RecentEvents(self: Supervisor, msg: RecentEvents, sender: Any) -> None:  # noqa: N802
        journal = self._address(ChildKind.JOURNAL)
        if journal is not None:
            self.send(journal, RecentEvents(msg.symbol, msg.limit, reply_to=msg.reply_to or sender,
                                            request_id=msg.request_id))

    def receiveMsg_ScanNow(self: Supervisor, msg: ScanNow, sender: Any) -> None:  # noqa: N802
        """A protection scan now (tests, operators): its ScanDone says whether the venue was read."""
        protection = self._address(ChildKind.PROTECTION)
        if protection is None:
            self.send(sender, ScanDone(msg.request_id, "protection is off"))
            return
        self.relay.put(f"scan:{msg.request_id}", sender)
        self.send(protection, msg)

    def receiveMsg_ScanDone(self: Supervisor, msg: ScanDone, sender: Any) -> None:  # noqa: N802
        self._relay_back(f"scan:{msg.request_id}", msg)

    def receiveMsg_JournalSync(self: Supervisor, msg: JournalSync, sender: Any) -> None:  # noqa: N802
        child = self.by_symbol.get(msg.symbol) if msg.symbol else self.by_id.get(ChildKind.JOURNAL)
        if child is not None and child.address is not None:
            self.send(child.address, JournalSync(reply_to=msg.reply_to or sender, symbol=msg.symbol))

    # -- the watcher and an operator's stop ---------------------------------------------------

    def receiveMsg_WatcherChanged(self: Supervisor, msg: WatcherChanged, sender: Any) -> None:  # noqa: N802
        logger.warning("posguard run pid {} now watches this deployment (was: {})", msg.pid, self.watcher_pid)
        self.watcher_pid, self.watcher_alerted = msg.pid, False
        if self.lock is not None:
            self.lock.update(self._holder("running"))
        self._tell_api()
        self.send(sender, Ack(msg.request_id))

    def _check_watcher(self: Supervisor) -> None:
        if self.watcher_pid is None or self.watcher_alerted or alive(self.watcher_pid):
            return
        self.watcher_alerted = True
        logger.critical("ALERT posguard run (pid {}) is gone: this deployment keeps protecting its positions,"
                        " unwatched. `posguard run` with the same config adopts it; `posguard stop` ends it.",
                        self.watcher_pid)
        self._event(EventRecord("watcher_lost", None, {"pid": self.watcher_pid}))

    def receiveMsg_StopRequest(self: Supervisor, msg: StopRequest, sender: Any) -> None:  # noqa: N802
        if self.stop is not None or self.stopping is not None:
            self.send(sender, StopReply(msg.request_id, False, "a stop is already in progress"))
            return
        assert self.spec is not None
        self.stop = OperatorStop(msg.flatten, msg.request_id, sender)
        if not msg.flatten:
            self._stop_now("stopping: positions stay on the venue with their stops")
            return
        if not self.safe_mode:
            self._enter_safe_mode("stopping with --flatten")
        logger.warning("operator stop with flatten: closing every position reduce-only before stopping")
        self.wakeupAfter(timedelta(seconds=FLATTEN_DEADLINE_S), STOP_DEADLINE)
        self._flatten_step()

    def _flatten_step(self: Supervisor) -> None:
        """Close whatever is filled; stop once every symbol is flat (IDLE)."""
        assert self.stop is not None
        for symbol, snap in self.snapshots.items():
            if snap.state in CLOSABLE and symbol not in self.stop.asked:
                child = self.by_symbol.get(symbol)
                target = child.address if child is not None else None
                if target is not None:
                    self.stop.asked.add(symbol)
                    self.send(target, ClosePosition(symbol))
        if all(snap.state == State.IDLE for snap in self.snapshots.values()):
            self._stop_now(f"flattened {len(self.stop.asked)} position(s); stopping")

    def _flatten_failed(self: Supervisor) -> None:
        assert self.stop is not None
        open_ = {s: str(p.state) for s, p in self.snapshots.items() if p.state != State.IDLE}
        detail = (f"not flat within {FLATTEN_DEADLINE_S:.0f}s: {open_}; the deployment keeps running in safe mode"
                  " (stops and closes keep working)")
        logger.critical("ALERT stop --flatten: {}", detail)
        self.send(self.stop.asker, StopReply(self.stop.request_id, False, detail))
        self.stop = None

    def _stop_now(self: Supervisor, detail: str) -> None:
        assert self.stop is not None
        logger.warning("operator stop: {}", detail)
        if self.lock is not None:
            self.lock.update(self._holder("stopped"))   # a watcher seeing us go must not restart us
        self.send(self.stop.asker, StopReply(self.stop.request_id, True, detail))
        self._stop_all(self.myAddress)
        self._tell_api()

    def receiveMsg_DeploymentStopped(self: Supervisor, msg: DeploymentStopped, sender: Any) -> None:  # noqa: N802
        """Our own stop (an operator's, through the API) is done: end the whole actor system."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        logger.warning("deployment stopped by the operator; ending the actor system")
        os.killpg(os.getpgrp(), signal.SIGKILL)          # the admin, its logger and us: nothing else is left

