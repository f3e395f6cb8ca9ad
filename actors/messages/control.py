"""The operator's plane: status, waits, the local API's configuration and the stop request."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from actors.messages.base import ts_field
from actors.messages.commands import PositionSnapshot
from actors.messages.streams import StreamStatus
from actors.position.states import State


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Admin: every PositionActor's last snapshot."""

    request_id: str = ""


@dataclass(frozen=True, slots=True)
class WaitForState:
    """Admin/tests: answer with the symbol's snapshot once it is in one of `states` (and, if
    given, was published after `newer_than`, a wall-clock time)."""

    symbol: str
    states: tuple[State, ...]
    newer_than: float = 0.0

    def matches(self, snap: PositionSnapshot) -> bool:
        return snap.symbol == self.symbol and snap.state in self.states and snap.updated_at > self.newer_than


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Admin reply: snapshots by symbol, as last published by the PositionActors."""

    positions: tuple[PositionSnapshot, ...]
    venue: str = ""
    started_at: float = 0.0
    safe_mode: bool = False
    safe_reason: str = ""
    restarts: int = 0                    # restarts within the intensity window
    children: tuple[tuple[str, int | None, bool], ...] = ()   # (id, pid, up)
    reconciliation: str = ""             # what the start-up reconciliation found and did
    at: float = ts_field()
    supervisor_pid: int = field(default_factory=os.getpid)   # made in the supervisor's process
    request_id: str = ""
    watcher_pid: int | None = None       # the `posguard run` watching this deployment, if any
    stopping: str = ""                   # why the deployment is stopping ("" while it runs)
    exchange_dumpable: bool | None = None  # False: the process holding the keys is closed to others
    journal_error: str = ""              # the journal cannot write (and why): closes go out regardless
    venue_status: str = ""               # "" when the venue adapter runs; else why it is not ready yet
    venue_warnings: tuple[str, ...] = ()
    streams: tuple[StreamStatus, ...] = ()   # the venue's private streams, as their owner sees them
    phase: str = "starting"              # starting | ready | safe_mode | stopping (supervisor/status.py)
    phase_detail: str = ""               # what a starting deployment waits for; why safe mode; ...
    waiting_for: tuple[str, ...] = ()    # starting: journal, venue, preflight, recovery, protection, stream
    recovered: tuple[int, int] = (0, 0)  # symbols reconciled from the journal and the venue, of all


@dataclass(frozen=True, slots=True)
class ConfigureApi:
    """Serve the operator API on this socket for this deployment."""

    socket_path: str
    supervisor: Any                      # ActorAddress
    journal: Any                         # ActorAddress
    symbols: tuple[str, ...]
    hello: dict[str, Any] = field(default_factory=dict)   # identity every client is shown first
    dashboard_port: int | None = None    # serve the live page on 127.0.0.1:port (None: off)
    token_path: str = ""                 # ... behind the token in this file (0600)
    page_required: bool = True           # False once deployed: a page that cannot serve is logged, not fatal


@dataclass(frozen=True, slots=True)
class ApiReady:
    """The operator API is listening."""

    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class StopRequest:
    """Operator: end the deployment (positions keep their stops), closing every position
    reduce-only first with `flatten`. Answered by StopReply before the deployment goes."""

    flatten: bool = False
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class StopReply:
    """Reply to StopRequest: ok means the deployment is going now; else why it stays."""

    request_id: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class WatcherChanged:
    """A `posguard run` took over watching this deployment (after adopting it)."""

    pid: int
    request_id: str = ""
