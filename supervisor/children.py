"""The Supervisor's children as plain data: the table (spec order, by id, by symbol, by
address), which are due to start, the heartbeat round that finds hung ones, and the restart
plan (back-off with jitter, counted against the restart intensity). The actor shell
(supervisor/supervisor.py) does what these decide: create, send, kill, wake up later."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from actors.settings import SupervisionSettings
from supervisor.specs import ChildKind, ChildSpec, RestartIntensity, backoff

HEARTBEAT_SLICES = 10                # ticks per heartbeat period; each child is asked at one of them
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

    def started_as(self, address: Any) -> None:
        self.address = address
        self.started, self.ready, self.replacing, self.pid = True, False, False, None
        self.awaiting_since, self.symbols_ready = None, set()

    def gone(self) -> None:
        self.address, self.ready, self.pid, self.awaiting_since = None, False, None, None


@dataclass(frozen=True, slots=True)
class RestartPlan:
    delay_s: float
    within_limit: bool                       # False: the intensity is exceeded (safe mode)


@dataclass(frozen=True, slots=True)
class HeartbeatRound:
    hung: tuple[Child, ...]                  # asked and silent past the timeout: replace them
    ask: tuple[Child, ...]                   # send each a Heartbeat
    housekeeping: bool                       # the first slice of the period: sweeps, API, watcher


class Children:
    def __init__(self) -> None:
        self.all: list[Child] = []               # spec order (stopped in reverse)
        self.by_id: dict[str, Child] = {}
        self.by_symbol: dict[str, Child] = {}    # the PositionActor guarding each symbol
        self._addresses: dict[str, Child] = {}   # str(address) -> child: thespian addresses hash badly
        self.intensity = RestartIntensity(5, 60.0)
        self.rng = random.Random()
        self.heartbeat_seq = 0

    def add(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        self.all.append(child)
        self.by_id[spec.id] = child
        for symbol in spec.symbols:
            self.by_symbol[symbol] = child
        return child

    def __contains__(self, child_id: str) -> bool:
        return child_id in self.by_id

    def due(self) -> list[Child]:
        """Every child never started whose dependencies are all ready."""
        return [c for c in self.all if not c.started and self.ready_kinds(c.spec.after)]

    def ready_kinds(self, kinds: tuple[ChildKind, ...]) -> bool:
        return all(c.ready for c in self.all if c.kind in kinds)

    def all_ready(self) -> bool:
        return all(c.ready for c in self.all)

    def needs_up(self, child: Child) -> bool:
        """What it needs (the exchange's address, say) is up: it can be started again."""
        return all(c.address is not None for c in self.all if c.kind in child.spec.after)

    def positions(self) -> list[Child]:
        return [c for c in self.all if c.kind is ChildKind.POSITIONS]

    def routes(self) -> tuple[tuple[str, Any], ...]:
        """symbol -> the address of its PositionActor, for the stream's evidence."""
        return tuple((s, c.address) for c in self.positions() if c.address is not None for s in c.spec.symbols)

    def address(self, child_id: str) -> Any:
        """A child's address by id (a singleton's id is its kind), None while it is down."""
        child = self.by_id.get(child_id)
        return child.address if child is not None else None

    def of_symbol(self, symbol: str) -> Any:
        child = self.by_symbol.get(symbol)
        return child.address if child is not None else None

    def by_address(self, address: Any) -> Child | None:
        """The child behind a sender's address: a dict look-up once it has been seen (thespian
        addresses compare slowly and hash badly: a scan of 1 000 children per message costs ms)."""
        key = str(address)
        child = self._addresses.get(key)
        if child is not None and child.address is not None:
            return child
        child = next((c for c in self.all if c.address is not None and c.address == address), None)
        if child is not None:
            self._addresses[key] = child
        return child

    def forget_address(self, child: Child) -> None:
        for key in [k for k, c in self._addresses.items() if c is child]:
            del self._addresses[key]

    def down(self, child: Child) -> None:
        self.forget_address(child)
        child.gone()

    # -- restarts -------------------------------------------------------------------------------

    def plan_restart(self, child: Child, policy: SupervisionSettings, now: float) -> RestartPlan:
        """A permanent child went down: when to start it again, and whether that is still within
        the restart intensity."""
        within_limit = self.intensity.record(now)
        delay = backoff(policy, child.consecutive, self.rng)
        child.consecutive += 1
        child.generation += 1
        return RestartPlan(delay, within_limit)

    def answered(self, child: Child, pid: int) -> None:
        child.pid, child.awaiting_since = pid, None
        if child.consecutive and self.intensity.recent == 0:
            child.consecutive = 0                    # it stayed up a whole window: back-off resets

    # -- heartbeats -----------------------------------------------------------------------------

    def heartbeat(self, now: float, timeout_s: float) -> HeartbeatRound:
        """This tick's slice of the children: the hung ones (asked, silent past the timeout) and
        the ones to ask. Each child is asked once per period, the children spread over
        HEARTBEAT_SLICES ticks of it: 46 processes woken at once took a 2-core host from everyone
        for ~20 ms each second (status p99, 1 000 symbols)."""
        self.heartbeat_seq += 1
        tick = self.heartbeat_seq % HEARTBEAT_SLICES
        hung: list[Child] = []
        ask: list[Child] = []
        for index, child in enumerate(self.all):
            if index % HEARTBEAT_SLICES != tick or child.address is None or child.replacing:
                continue
            if child.awaiting_since is not None and now - child.awaiting_since > timeout_s:
                hung.append(child)
                continue
            if child.awaiting_since is None:
                child.awaiting_since = now
            ask.append(child)
        return HeartbeatRound(tuple(hung), tuple(ask), tick == 0)
