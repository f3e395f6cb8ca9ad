"""What the Supervisor reports: the status an operator (and the API) reads, and the start-up
reconciliation line -- built from the Supervisor's state, as plain functions."""

from __future__ import annotations

from actors.messages import PositionsFetched, PositionSnapshot, StatusReport, StreamStatus
from actors.position.states import State
from supervisor.children import Children


def status_report(request_id: str, positions: tuple[PositionSnapshot, ...], *, venue: str, started_at: float,
                  safe_mode: bool, safe_reason: str, children: Children, reconciliation: str, watcher_pid: int | None,
                  exchange_dumpable: bool | None, streams: dict[str, StreamStatus], journal_error: str,
                  venue_status: str, venue_warnings: tuple[str, ...], stopping: str) -> StatusReport:
    return StatusReport(
        positions, venue=venue, started_at=started_at,
        safe_mode=safe_mode, safe_reason=safe_reason, restarts=children.intensity.recent,
        children=tuple((c.id, c.pid, c.address is not None) for c in children.all),
        reconciliation=reconciliation, request_id=request_id, watcher_pid=watcher_pid,
        exchange_dumpable=exchange_dumpable, streams=tuple(streams.values()),
        journal_error=journal_error, venue_status=venue_status, venue_warnings=venue_warnings, stopping=stopping)


def reconciliation(snapshots: dict[str, PositionSnapshot], msg: PositionsFetched) -> str:
    """Reconciliation itself reads no position; this one read at the end only reports what else
    the venue shows (positions opened outside posguard), for an operator to see."""
    lines = [f"{s} {snap.state} ({snap.last_event})" for s, snap in sorted(snapshots.items())]
    if msg.failure is not None:
        lines.append(f"venue positions could not be read ({msg.failure.code}): foreign positions unknown")
    else:
        foreign = [p for p in msg.positions if p.symbol not in snapshots or snapshots[p.symbol].state == State.IDLE]
        lines += [f"FOREIGN {p.symbol} {p.side} {p.qty:g} stop {p.stop_price or 'NONE'}"
                  f" (not in our journal; the venue view may lag)" for p in foreign]
    return "; ".join(lines)
