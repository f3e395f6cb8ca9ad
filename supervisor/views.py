"""What an operator sees: the status table of `posguard status` and of `posguard run`'s live view,
drawn from the API's JSON (the same data `--json` prints)."""

from __future__ import annotations

import time
from typing import Any

COLUMNS = ("SYMBOL", "STATE", "SIDE", "QTY", "ENTRY", "STOP", "NAKED_S", "LAST EVENT")


def render_table(status: dict[str, Any]) -> str:
    """One line per symbol. NAKED_S is the venue's truth where the venue can know it (simulated),
    otherwise the actor's own measure (fill to confirmed stop)."""
    truth = status.get("truth") or {}
    rows = [COLUMNS]
    for p in status["positions"]:
        naked = p["naked_now"]
        if p["symbol"] in truth:
            naked = truth[p["symbol"]]["naked_seconds"]
        rows.append((p["symbol"], p["state"], p["side"] or "-", _num(p["filled_qty"] or p["requested_qty"]),
                     _num(p["entry_price"]), _num(p["stop_price"]), f"{naked:.2f}", (p["last_event"] or "")[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
                     for r in rows)


def render_status(status: dict[str, Any], header: bool = False) -> str:
    body = render_table(status)
    if status.get("venue_status"):
        body = f"VENUE: {status['venue_status']}\n{body}"
    for warning in status.get("venue_warnings") or ():
        body = f"WARNING: {warning}\n{body}"
    if status.get("journal_error"):
        body = f"JOURNAL CANNOT WRITE: {status['journal_error']} -- closes still go out\n{body}"
    if status.get("safe_mode"):
        body = f"SAFE MODE: {status['safe_reason']} -- new entries refused; `posguard resume` to leave\n{body}"
    for name, stream in (status.get("streams") or {}).items():
        if stream["state"] != "up":
            body = (f"STREAM {name} {stream['state'].upper()}: {stream['reason']} -- REST polling meanwhile"
                    f" ({stream['reconnects']} reconnects)\n{body}")
    if status.get("stopping"):
        body = f"{status['stopping'].upper()}\n{body}"
    if header:
        up = time.time() - status["started_at"]
        body = f"posguard  venue={status['venue']}  up {up:.0f}s  (Ctrl-C to stop)\n{body}"
    return body


def render_event(event: dict[str, Any]) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(event["at"])) + f".{int(event['at'] % 1 * 1000):03d}"
    rest = {k: v for k, v in event.items() if k not in ("seq", "at", "kind", "symbol")}
    if event["kind"] == "transition":
        detail = f"{rest['from']} -> {rest['to']} ({rest['trigger']}) {rest['detail']}"
    else:
        detail = " ".join(f"{k}={v}" for k, v in rest.items() if v not in (None, ""))
    return f"{event['seq']:>6}  {at}  {event['kind']:<10} {event['symbol'] or '-':<12} {detail}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.8g}"
