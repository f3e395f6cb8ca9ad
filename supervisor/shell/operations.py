"""The Supervisor's handlers for operators and strategies (through the API actor): commands
routed to their symbol's PositionActor, answers relayed back to who asked, status, waits, the
watcher, and an operator's stop (with --flatten, every position closed reduce-only first)."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from typing import Any

from loguru import logger

import actors.messages as m
from supervisor.commands import FLATTEN_DEADLINE_S, STOP_DEADLINE, OperatorStop, all_flat, not_flat
from supervisor.configure import on_demand_spec
from supervisor.shell.base import SupervisorBase
from supervisor.specs import ChildKind


class Operations(SupervisorBase):
    def receiveMsg_JournalDiskFault(self, msg: m.JournalDiskFault, sender: Any) -> None:  # noqa: N802
        self.commands.forward(ChildKind.JOURNAL, msg, sender, "disk-fault")

    def receiveMsg_JournalSynced(self, msg: m.JournalSynced, sender: Any) -> None:  # noqa: N802
        self.commands.answer(msg.tag or "", msg)

    def receiveMsg_OpenPosition(self, msg: m.OpenPosition, sender: Any) -> None:  # noqa: N802
        if self.safe.on:
            self.send(sender, m.CommandDenied(msg.command_id, msg.symbol,
                                            f"safe mode ({self.safe.reason}): new entries are refused"))
            return
        self._route(msg, sender)

    def receiveMsg_ClosePosition(self, msg: m.ClosePosition, sender: Any) -> None:  # noqa: N802
        self._route(msg, sender)

    def receiveMsg_AmendPosition(self, msg: m.AmendPosition, sender: Any) -> None:  # noqa: N802
        self._route(msg, sender)                         # in safe mode too: a stop move opens nothing

    def receiveMsg_AdoptPosition(self, msg: m.AdoptPosition, sender: Any) -> None:  # noqa: N802
        self._found(msg)
        self._route_or_start(msg, sender, "adopt a position found on the venue")   # allowed in safe mode

    def receiveMsg_CancelLeftovers(self, msg: m.CancelLeftovers, sender: Any) -> None:  # noqa: N802
        self._found(msg)
        self._route_or_start(msg, sender, "cancel stop orders of ours it found on a flat symbol")

    def _route_or_start(self, msg: m.AdoptPosition | m.CancelLeftovers, sender: Any, why: str) -> None:
        if self.deployed and self.capabilities and msg.symbol not in self.children.by_symbol:
            # A symbol outside the deployment: one writer for it is started on demand.
            logger.warning("starting a PositionActor for {} to {}", msg.symbol, why)
            child = self.children.add(on_demand_spec(msg.symbol))
            self.commands.pending[msg.symbol] = (msg, sender)
            self._start(child)
            return
        self._route(msg, sender)

    def receiveMsg_Reprotect(self, msg: m.Reprotect, sender: Any) -> None:  # noqa: N802
        self._found(msg)
        self._route(msg, sender)

    def receiveMsg_PositionObserved(self, msg: m.PositionObserved, sender: Any) -> None:  # noqa: N802
        self._found(msg)
        self._route(msg, sender)

    def receiveMsg_CommandAccepted(self, msg: m.CommandAccepted, sender: Any) -> None:  # noqa: N802
        self.commands.answer(msg.command_id, msg)

    def receiveMsg_CommandDenied(self, msg: m.CommandDenied, sender: Any) -> None:  # noqa: N802
        self.commands.answer(msg.command_id, msg)

    def receiveMsg_PriceFetched(self, msg: Any, sender: Any) -> None:  # noqa: N802
        self.commands.answer(msg.request_id, msg)

    def receiveMsg_WaitForState(self, msg: m.WaitForState, sender: Any) -> None:  # noqa: N802
        self.commands.wait(msg, sender, self.snapshots.get(msg.symbol))

    def receiveMsg_StatusRequest(self, msg: m.StatusRequest, sender: Any) -> None:  # noqa: N802
        self.send(sender, self._status(msg.request_id, tuple(self.snapshots[s] for s in sorted(self.snapshots))))

    def receiveMsg_GetTrueState(self, msg: m.GetTrueState, sender: Any) -> None:  # noqa: N802
        self.commands.truth(msg, sender)

    def receiveMsg_FetchPrice(self, msg: m.FetchPrice, sender: Any) -> None:  # noqa: N802
        self.commands.forward(ChildKind.EXCHANGE, msg, sender, msg.request_id)

    def receiveMsg_RecentEvents(self, msg: m.RecentEvents, sender: Any) -> None:  # noqa: N802
        self.commands.recent_events(msg, sender)

    def receiveMsg_ScanNow(self, msg: m.ScanNow, sender: Any) -> None:  # noqa: N802
        self.commands.scan_now(msg, sender)

    def receiveMsg_ScanDone(self, msg: m.ScanDone, sender: Any) -> None:  # noqa: N802
        self.commands.answer(f"scan:{msg.request_id}", msg)

    def receiveMsg_JournalSync(self, msg: m.JournalSync, sender: Any) -> None:  # noqa: N802
        self.commands.journal_sync(msg, sender)

    def receiveMsg_WatcherChanged(self, msg: m.WatcherChanged, sender: Any) -> None:  # noqa: N802
        self.owner.watcher_changed(msg.pid)
        self._tell_api()
        self.send(sender, m.Ack(msg.request_id))

    def _check_watcher(self) -> None:
        if self.owner.watcher_lost():
            self._event(m.EventRecord("watcher_lost", None, {"pid": self.owner.watcher_pid}))

    def receiveMsg_StopRequest(self, msg: m.StopRequest, sender: Any) -> None:  # noqa: N802
        if self.commands.stop is not None or self.stopping is not None:
            self.send(sender, m.StopReply(msg.request_id, False, "a stop is already in progress"))
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
        self.send(stop.asker, m.StopReply(stop.request_id, False, detail))
        self.commands.stop = None

    def _stop_now(self, detail: str) -> None:
        assert self.commands.stop is not None
        logger.warning("operator stop: {}", detail)
        self.owner.mark("stopped")
        self.send(self.commands.stop.asker, m.StopReply(self.commands.stop.request_id, True, detail))
        self._stop_all(self.myAddress)
        self._tell_api()

    def receiveMsg_DeploymentStopped(self, msg: m.DeploymentStopped, sender: Any) -> None:  # noqa: N802
        """Our own stop (an operator's, through the API) is done: end the whole actor system."""
        self.owner.release()
        logger.warning("deployment stopped by the operator; ending the actor system")
        os.killpg(os.getpgrp(), signal.SIGKILL)          # the admin, its logger and us: nothing else is left
