"""What the Supervisor reports: the health its children tell it of (streams, the journal, the
venue while it starts, the start-up reconciliation), the deployment's phase (starting, and on
what it waits; ready; safe mode; stopping) and the status an operator and the API read, built
from them -- plain data and functions; the actor only feeds them messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from loguru import logger

from actors.messages import (
    EventRecord,
    ExchangeReady,
    ExchangeStarting,
    JournalHealth,
    PositionsFetched,
    PositionSnapshot,
    StatusReport,
    StreamStatus,
)
from actors.position.states import State
from supervisor.children import Children
from supervisor.specs import ChildKind


class PhaseName:
    STARTING = "starting"            # not every child is up and reconciled yet: entries wait or are refused
    READY = "ready"                  # entries are taken
    SAFE_MODE = "safe_mode"          # up, protecting and closing; entries refused until `posguard resume`
    STOPPING = "stopping"


PHASES = (PhaseName.STARTING, PhaseName.READY, PhaseName.SAFE_MODE, PhaseName.STOPPING)

@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    detail: str = ""
    waiting_for: tuple[str, ...] = ()
    recovered: tuple[int, int] = (0, 0)       # symbols reconciled, of all the deployment guards


# What a starting deployment waits for, named by the child that is not ready yet.
WAITING_NAMES = {ChildKind.JOURNAL: "journal", ChildKind.API: "api", ChildKind.PROTECTION: "protection",
                 ChildKind.STREAM: "stream"}


@dataclass(slots=True)
class Health:
    streams: dict[str, StreamStatus] = field(default_factory=dict)
    journal_error: str = ""
    venue_status: str = ""                   # while the venue cannot be reached: why, and the next try
    venue_warnings: tuple[str, ...] = ()
    exchange_dumpable: bool | None = None
    reconciliation: str = ""
    venue_stage: str = "connecting"          # connecting | preflight | "" (the adapter runs)

    def on_stream(self, msg: StreamStatus) -> tuple[StreamStatus | None, EventRecord | None]:
        """The previous status of that stream, and the event to journal when its state changed."""
        before = self.streams.get(msg.stream)
        self.streams[msg.stream] = msg
        if before is not None and before.state == msg.state:
            return before, None
        return before, EventRecord("stream", None, {"stream": msg.stream, "state": msg.state, "reason": msg.reason,
                                                    "gap_s": round(msg.gap_s, 3), "reconnects": msg.reconnects})

    def on_exchange_ready(self, msg: ExchangeReady) -> None:
        self.exchange_dumpable = msg.dumpable
        self.venue_status, self.venue_warnings, self.venue_stage = "", msg.warnings, ""

    @property
    def venue_up(self) -> bool:
        """The venue answered the adapter's start (its preflight reads count: the venue is up)."""
        return self.venue_stage != "connecting"

    def on_exchange_gone(self) -> None:
        self.venue_stage = "connecting"

    def on_exchange_preflight(self) -> None:
        self.venue_status, self.venue_stage = "", "preflight"

    def on_exchange_starting(self, msg: ExchangeStarting) -> None:
        self.venue_stage = "connecting"
        self.venue_status = (f"venue not ready ({msg.kind}): {msg.reason}; attempt {msg.attempt},"
                             f" next in {msg.retry_in_s:.0f}s")

    def on_journal(self, msg: JournalHealth) -> None:
        if msg.ok:
            logger.warning("journal writes work again (was: {}); safe mode stays until `posguard resume`",
                           self.journal_error)
            self.journal_error = ""
        else:
            self.journal_error = msg.error
            logger.critical("ALERT journal cannot write ({}): closes go to the venue anyway, under ids derived from"
                            " what it holds; no new entry until it can", msg.error)

    def on_reconciled(self, snapshots: dict[str, PositionSnapshot], msg: PositionsFetched) -> None:
        """Reconciliation itself reads no position; this one read at the end only reports what
        else the venue shows (positions opened outside posguard), for an operator to see."""
        lines = [f"{s} {snap.state} ({snap.last_event})" for s, snap in sorted(snapshots.items())]
        if msg.failure is not None:
            lines.append(f"venue positions could not be read ({msg.failure.code}): foreign positions unknown")
        else:
            foreign = [p for p in msg.positions if p.symbol not in snapshots or snapshots[p.symbol].state == State.IDLE]
            lines += [f"FOREIGN {p.symbol} {p.side} {p.qty:g} stop {p.stop_price or 'NONE'}"
                      f" (not in our journal; the venue view may lag)" for p in foreign]
        self.reconciliation = "; ".join(lines)
        level = "WARNING" if "FOREIGN" in self.reconciliation else "INFO"
        logger.log(level, "startup reconciliation: {}", self.reconciliation)


def phase_of(*, deployed: bool, stopping: str, safe_mode: bool, safe_reason: str, children: Children,
             health: Health) -> Phase:
    """The deployment's phase: what `posguard wait` waits for and what `status` leads with."""
    positions = children.positions()
    recovered = (sum(len(c.symbols_ready) if not c.ready else len(c.spec.symbols) for c in positions),
                 sum(len(c.spec.symbols) for c in positions))
    if stopping:
        return Phase(PhaseName.STOPPING, stopping, recovered=recovered)
    if not deployed:
        waiting, details = [], []
        for child in children.all:
            if child.ready:
                continue
            if child.kind is ChildKind.EXCHANGE:
                name = "preflight" if health.venue_stage == "preflight" else "venue"
                waiting.append(name)
                details.append(health.venue_status or ("venue preflight (account mode, key rights, symbols)"
                                                       if name == "preflight" else "venue: connecting"))
            elif child.kind is not ChildKind.POSITIONS and child.kind in WAITING_NAMES:
                waiting.append(WAITING_NAMES[child.kind])
                details.append(WAITING_NAMES[child.kind])
        done, of = recovered
        if done < of:
            waiting.append("recovery")
            details.append(f"recovery of {of - done} of {of} symbols (journal, then the venue by client id)")
        return Phase(PhaseName.STARTING, "; ".join(details) or "starting", tuple(dict.fromkeys(waiting)), recovered)
    if safe_mode:
        return Phase(PhaseName.SAFE_MODE, safe_reason, recovered=recovered)
    return Phase(PhaseName.READY, recovered=recovered)


def status_report(request_id: str, positions: tuple[PositionSnapshot, ...], *, venue: str, started_at: float,
                  safe_mode: bool, safe_reason: str, children: Children, health: Health, watcher_pid: int | None,
                  stopping: str, deployed: bool) -> StatusReport:
    phase = phase_of(deployed=deployed, stopping=stopping, safe_mode=safe_mode, safe_reason=safe_reason,
                     children=children, health=health)
    return StatusReport(
        positions, venue=venue, started_at=started_at,
        safe_mode=safe_mode, safe_reason=safe_reason, restarts=children.intensity.recent,
        children=tuple((c.id, c.pid, c.address is not None) for c in children.all),
        reconciliation=health.reconciliation, request_id=request_id, watcher_pid=watcher_pid,
        exchange_dumpable=health.exchange_dumpable, streams=tuple(health.streams.values()),
        journal_error=health.journal_error, venue_status=health.venue_status, venue_warnings=health.venue_warnings,
        stopping=stopping, phase=phase.name, phase_detail=phase.detail, waiting_for=phase.waiting_for,
        recovered=phase.recovered)
