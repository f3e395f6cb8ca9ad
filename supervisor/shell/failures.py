"""The Supervisor's failure handlers: a child that exited, reported a failed handler, failed twice
on one message, or missed its heartbeat is replaced, with back-off, counted against the
restart intensity (past it: safe mode); an operator's safe mode on or off."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import ChildActorExited, PoisonMessage, WakeupMessage

import actors.messages as m
from supervisor.children import HEARTBEAT_SLICES, Child
from supervisor.commands import STOP_DEADLINE
from supervisor.shell.base import HEARTBEAT, SupervisorBase
from supervisor.specs import ChildKind, Restart


class Failures(SupervisorBase):
    def receiveMsg_ActorFailed(self, msg: m.ActorFailed, sender: Any) -> None:  # noqa: N802
        # A setting to change is the operator's one line (exit 2), kept off stderr here: the log has it.
        logger.log("INFO" if msg.usage else "ERROR", "{} failed: {}", msg.who, msg.reason)
        if not self.deployed and self.requester is not None:
            self.send(self.requester, m.DeploymentFailed(f"{msg.who}: {msg.reason}", usage=msg.usage))
            self.requester = None
            self._stop_all(None)
            return
        # Deployed: a replacement that could not start (the venue unreachable for a moment, say)
        # is replaced again, with back-off, counted against the restart intensity.
        child = self.children.by_address(sender)
        if child is not None and not child.replacing and self.stopping is None:
            self._replace(child)

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

    def receiveMsg_ChildFailed(self, msg: m.ChildFailed, sender: Any) -> None:  # noqa: N802
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

    def _down(self, child: Child, why: str) -> None:
        assert self.spec is not None
        self.children.down(child)
        if child.kind is ChildKind.EXCHANGE:
            self.health.on_exchange_gone()               # venue_up 0 and `starting: venue` until it is back
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
        self._event(m.EventRecord("restart", symbols[0] if len(symbols) == 1 else None,
                                {"child": child.id, "why": why, "delay_s": round(delay, 3),
                                 **({"symbols": list(symbols)} if len(symbols) > 1 else {})}))
        if not plan.within_limit:
            intensity = self.children.intensity
            self.safe.enter_once(f"{intensity.recent} restarts within {intensity.within_s:.0f}s")
        self.wakeupAfter(timedelta(seconds=delay), m.RestartChild(child.id, child.generation))

    def receiveMsg_SetSafeMode(self, msg: m.SetSafeMode, sender: Any) -> None:  # noqa: N802
        if msg.on:
            self.safe.enter(msg.reason)
        else:
            self.safe.leave(msg.reason)
        self.receiveMsg_StatusRequest(m.StatusRequest(msg.request_id), sender)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:  # noqa: N802
        payload = msg.payload
        if isinstance(payload, m.RestartChild) and self.stopping is None:
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
            self.send(child.address, m.Heartbeat(self.children.heartbeat_seq))
        if beat.housekeeping:
            self.commands.sweep()
            self._tell_api()
            self._check_watcher()
        self.wakeupAfter(timedelta(seconds=policy.heartbeat_s / HEARTBEAT_SLICES), HEARTBEAT)

    def receiveMsg_HeartbeatAck(self, msg: m.HeartbeatAck, sender: Any) -> None:  # noqa: N802
        child = self.children.by_address(sender)
        if child is None:
            return
        self.children.answered(child, msg.pid)
        if msg.figures and self.metrics is not None:
            self.metrics.on_figures(msg.figures, msg.pid)
