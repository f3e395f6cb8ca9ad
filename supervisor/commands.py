"""The operator's commands as the Supervisor routes them, as plain data: which PositionActor a
command goes to (or why none can take it), who asked what until it is answered or forgotten,
the askers waiting for a position to reach a state, commands for a symbol whose actor is being
started on demand, and an operator's stop (with --flatten: which positions were asked to close).

Relays and waiters expire: an asker that gave up (its own timeout) or a child that died with
the command must not leave an entry behind for ever."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.journal.lease import boottime
from actors.messages import (
    AdoptPosition,
    CancelLeftovers,
    ClosePosition,
    CommandDenied,
    EventRecord,
    GetTrueState,
    JournalSync,
    PositionObserved,
    PositionSnapshot,
    RecentEvents,
    Reprotect,
    ScanDone,
    ScanNow,
    TrueStateReport,
    WaitForState,
)
from actors.position.states import CLOSABLE, State
from supervisor.children import Children
from supervisor.specs import ChildKind

STOP_DEADLINE = "stop-deadline"
FLATTEN_DEADLINE_S = 100.0           # within the API's 120 s answer bound
TTL_S = 600.0                        # far beyond any ask's own timeout (the slowest: a flatten, 120 s)


class Relay:
    """key (a command or request id) -> who asked; popped by the answer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._askers: dict[str, tuple[Any, float]] = {}

    def put(self, key: str, asker: Any) -> None:
        self._askers[key] = (asker, self._clock() + TTL_S)

    def pop(self, key: str) -> Any:
        entry = self._askers.pop(key, None)
        return entry[0] if entry is not None else None

    def sweep(self) -> int:
        now = self._clock()
        stale = [k for k, (_, until) in self._askers.items() if until < now]
        for key in stale:
            del self._askers[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._askers)


class StateWaiters:
    """Askers waiting for a symbol's snapshot to match; answered by the first that does."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._waiting: dict[str, list[tuple[WaitForState, Any, float]]] = {}

    def add(self, wait: WaitForState, asker: Any) -> None:
        self._waiting.setdefault(wait.symbol, []).append((wait, asker, self._clock() + TTL_S))

    def matched(self, snapshot: PositionSnapshot) -> list[Any]:
        """The askers this snapshot answers (removed)."""
        waiting = self._waiting.get(snapshot.symbol)
        if not waiting:
            return []
        answered = [asker for wait, asker, _ in waiting if wait.matches(snapshot)]
        if answered:
            self._waiting[snapshot.symbol] = [w for w in waiting if not w[0].matches(snapshot)]
        return answered

    def sweep(self) -> int:
        now, dropped = self._clock(), 0
        for symbol, waiting in list(self._waiting.items()):
            kept = [w for w in waiting if w[2] >= now]
            dropped += len(waiting) - len(kept)
            if kept:
                self._waiting[symbol] = kept
            else:
                del self._waiting[symbol]
        return dropped

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiting.values())


@dataclass(slots=True)
class OperatorStop:
    """An operator's stop: who asked, and (flatten) which positions were asked to close."""

    flatten: bool
    request_id: str
    asker: Any
    asked: set[str] = field(default_factory=set)

    def closes(self, snapshots: dict[str, PositionSnapshot], children: Children) -> list[tuple[Any, ClosePosition]]:
        """Close whatever is filled and not asked yet: (address, command) to send."""
        out = []
        for symbol, snap in snapshots.items():
            if snap.state in CLOSABLE and symbol not in self.asked:
                target = children.of_symbol(symbol)
                if target is not None:
                    self.asked.add(symbol)
                    out.append((target, ClosePosition(symbol)))
        return out


def all_flat(snapshots: dict[str, PositionSnapshot]) -> bool:
    return all(snap.state == State.IDLE for snap in snapshots.values())


def not_flat(snapshots: dict[str, PositionSnapshot]) -> dict[str, str]:
    return {s: str(p.state) for s, p in snapshots.items() if p.state != State.IDLE}


def finding_event(msg: AdoptPosition | CancelLeftovers | Reprotect | PositionObserved) -> EventRecord | None:
    """The journaled event for what the protection scan found (its `orphan` kinds)."""
    if isinstance(msg, AdoptPosition):
        return EventRecord("orphan", msg.symbol, {"finding": "foreign", "reason": msg.reason,
                                                  "action": "close" if msg.stop_price is None else "protect",
                                                  "stop_price": msg.stop_price})
    if isinstance(msg, CancelLeftovers):
        return EventRecord("orphan", msg.symbol, {"finding": "leftover_stops", "orders": list(msg.client_order_ids)})
    if isinstance(msg, Reprotect):
        return EventRecord("orphan", msg.symbol, {"finding": "drift", "reason": msg.reason})
    if msg.finding == "drift":
        return EventRecord("orphan", msg.symbol, {"finding": "drift", "position": msg.position is not None})
    return None


class Commands:
    """Routing and relays of the operator's commands (the Supervisor sends what this decides)."""

    def __init__(self, children: Children, send: Callable[[Any, Any], None]) -> None:
        self.children, self.send = children, send
        self.relay = Relay()                     # command_id / request_id -> who asked
        self.waiters = StateWaiters()
        # symbol -> a command for a symbol outside the deployment, waiting for its actor (started on demand)
        self.pending: dict[str, tuple[AdoptPosition | CancelLeftovers, Any]] = {}
        self.stop: OperatorStop | None = None    # an operator's stop in progress
        # A new holder of the account's lease: until then (boot-time clock) an order the previous
        # holder signed before its deadline may still be accepted by the venue; only closes go.
        self.entries_after = 0.0
        # Past it (boot-time clock) the journal's process has not renewed the lease: this host is
        # fenced -- no entry, adoption, cancel or stop move; a close still goes. None: no lease.
        self.lease_deadline: float | None = None

    def target(self, msg: Any, sender: Any, deployed: bool) -> Any | CommandDenied:
        """Where a command for a symbol goes (its asker kept for the answer), or why it cannot go."""
        child = self.children.by_symbol.get(msg.symbol)
        # A close goes as soon as its symbol's actor has recovered, before the whole deployment
        # has (rule 9: closing is always possible); anything else waits for the deployment.
        recovered = child is not None and (child.ready or msg.symbol in child.symbols_ready)
        reachable = deployed or (isinstance(msg, ClosePosition) and recovered)
        target = child.address if child is not None and reachable else None
        exchange = self.children.by_id.get(ChildKind.EXCHANGE)
        if not isinstance(msg, ClosePosition) and self.lease_deadline is not None and boottime() >= self.lease_deadline:
            return CommandDenied(msg.command_id, msg.symbol, "this host's lease on the account is not renewed (fenced):"
                                 " only closes go until it is; try again", retry=True)
        if target is not None and not isinstance(msg, ClosePosition) and boottime() < self.entries_after:
            return CommandDenied(msg.command_id, msg.symbol, f"this host took the account over; the previous holder's"
                                 f" orders may reach the venue for {self.entries_after - boottime():.1f} s more;"
                                 " try again", retry=True)
        if target is not None and not isinstance(msg, ClosePosition) and exchange is not None and (
                not exchange.ready or exchange.replacing):
            # The exchange is being replaced: the actor would send to the one that died (its
            # order lost, then judged never arrived). A close still goes: the actor resyncs it.
            return CommandDenied(msg.command_id, msg.symbol, "the exchange is restarting; try again", retry=True)
        if target is None:
            why = ("deployment is not ready" if not deployed
                   else f"{msg.symbol} is restarting; try again" if child is not None
                   else f"unknown symbol {msg.symbol}")
            return CommandDenied(msg.command_id, msg.symbol, why, retry=child is not None)
        self.relay.put(msg.command_id, sender)
        return target

    def sweep(self) -> None:
        self.relay.sweep()
        self.waiters.sweep()

    # -- relays: to the child that answers, the answer back to who asked -------------------------

    def forward(self, kind: ChildKind, msg: Any, sender: Any, key: str) -> None:
        """To a singleton child, its answer (under `key`) relayed back; nothing while it is down
        (the asker's own timeout answers)."""
        target = self.children.address(kind)
        if target is not None:
            self.relay.put(key, sender)
            self.send(target, msg)

    def answer(self, key: str, msg: Any) -> None:
        asker = self.relay.pop(key)
        if asker is not None:
            self.send(asker, msg)

    def wait(self, msg: WaitForState, sender: Any, snap: PositionSnapshot | None) -> None:
        if snap is not None and msg.matches(snap):
            self.send(sender, snap)
        else:
            self.waiters.add(msg, sender)

    def matched(self, snap: PositionSnapshot) -> None:
        for asker in self.waiters.matched(snap):
            self.send(asker, snap)

    def truth(self, msg: GetTrueState, sender: Any) -> None:
        exchange = self.children.address(ChildKind.EXCHANGE)
        if exchange is not None:
            self.send(exchange, GetTrueState(reply_to=msg.reply_to or sender, request_id=msg.request_id))
        else:
            self.send(msg.reply_to or sender, TrueStateReport(None, msg.request_id))

    def recent_events(self, msg: RecentEvents, sender: Any) -> None:
        journal = self.children.address(ChildKind.JOURNAL)
        if journal is not None:
            self.send(journal, RecentEvents(msg.symbol, msg.limit, reply_to=msg.reply_to or sender,
                                            request_id=msg.request_id))

    def scan_now(self, msg: ScanNow, sender: Any) -> None:
        """A protection scan now (tests, operators): its ScanDone says whether the venue was read."""
        protection = self.children.address(ChildKind.PROTECTION)
        if protection is None:
            self.send(sender, ScanDone(msg.request_id, "protection is off"))
            return
        self.relay.put(f"scan:{msg.request_id}", sender)
        self.send(protection, msg)

    def journal_sync(self, msg: JournalSync, sender: Any) -> None:
        child = self.children.by_symbol.get(msg.symbol) if msg.symbol else self.children.by_id.get(ChildKind.JOURNAL)
        if child is not None and child.address is not None:
            self.send(child.address, JournalSync(reply_to=msg.reply_to or sender, symbol=msg.symbol))
