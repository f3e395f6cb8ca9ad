"""Readiness, as the operator API answers it: the deployment's phase (from what the Supervisor
tells the API at every step), `wait` until it is ready, and an open or close sent while it
starts waiting for it up to a bound -- a mixin of ApiActor, its coroutines run on the API's loop.

`told` is an asyncio.Event set (and replaced) each time the Supervisor tells the API more; a
waiter takes it *before* it looks, so news arriving between the look and the wait is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.messages import ClosePosition, CommandAccepted, CommandDenied, OpenPosition, StatusRequest, new_id
from supervisor.api.protocol import ApiError


class Readiness:
    # Of ApiActor: what the Supervisor last told it, the news event, and its two ways of asking.
    header: Any
    told: asyncio.Event
    ask: Callable[..., Awaitable[Any]]
    _command: Callable[[Any], Awaitable[CommandAccepted | CommandDenied]]

    async def _phase(self) -> dict[str, Any]:
        """The deployment's phase as `status` shows it (asked of the Supervisor until it has told us)."""
        header = self.header
        if header is None:
            rid = new_id()
            header = await self.ask(False, StatusRequest(rid), rid)
        return phase_json(header)

    async def _wait_ready(self, timeout: float) -> dict[str, Any]:
        """Wait while the deployment starts (the Supervisor tells us each step); then its phase,
        `ready` true only when entries are taken. A deployment in safe mode or stopping answers
        at once: it will not become ready by itself."""
        deadline = time.monotonic() + timeout
        while True:
            told = self.told                                  # before looking: no news falls between
            phase = await self._phase()
            left = deadline - time.monotonic()
            if phase["phase"] != "starting" or left <= 0:
                return {**phase, "ready": phase["phase"] == "ready"}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(told.wait(), left)

    async def _command_when_ready(self, msg: OpenPosition | ClosePosition,
                                  wait_s: float) -> CommandAccepted | CommandDenied:
        """A command sent while the deployment (or its symbol's actor) still starts waits for it,
        up to `wait_s`; then it is refused with the phase and what it still waits for. It is
        asked again only before the deadline: the client's own timeout (COMMAND_MARGIN_S beyond
        the wait) never ends before the last ask, so a client never gives up on an entry that
        is still to be sent (and sends it again)."""
        deadline = time.monotonic() + wait_s
        while True:
            told = self.told
            reply = await self._command(msg)
            if not (isinstance(reply, CommandDenied) and reply.retry):
                return reply
            left = deadline - time.monotonic()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(told.wait(), left)
            if time.monotonic() >= deadline:
                raise not_ready(msg.symbol, reply.reason, await self._phase(), wait_s)
            msg = dataclasses.replace(msg, command_id=new_id())     # a new ask: the denied one is answered


def phase_json(report: Any) -> dict[str, Any]:
    """A StatusReport's phase fields, as `status` and `wait` show them."""
    return {"phase": report.phase, "phase_detail": report.phase_detail, "waiting_for": list(report.waiting_for),
            "recovery": {"done": report.recovered[0], "of": report.recovered[1]}}


def not_ready(symbol: str, why: str, phase: dict[str, Any], waited_s: float) -> ApiError:
    return ApiError("not_ready", f"{symbol}: {why} (phase {phase['phase']}: {phase['phase_detail'] or 'restarting'};"
                                 f" waited {waited_s:g} s)", symbol=symbol, **phase)
