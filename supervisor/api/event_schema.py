"""The event stream's schema, as data: every kind of event, its fields and what they mean. It is
what `posguard events --json` prints and the API's `events` streams, one JSON object a line;
docs/events.md is this table, and tests/test_event_schema.py keeps the table, this module and
every place the code makes an event in step.

Stable means: within a schema version a field is never removed, renamed or given another
meaning, and a kind is never removed; new kinds and new fields may appear (a reader ignores what
it does not know). Anything else is a new version, said in every event's `schema` field.
Standard library only: the client may import it.
"""

from __future__ import annotations

EVENTS_SCHEMA_VERSION = 1

# Fields of every event, whatever its kind.
COMMON: dict[str, str] = {
    "schema": "this schema's version (1)",
    "seq": "increases by one per event, for good: resume with `since` = the last one seen",
    "at": "when it was journaled (Unix seconds, the deployment's clock)",
    "kind": "one of the kinds below",
    "symbol": "the symbol it is about, or null for the deployment as a whole",
}

# kind -> (meaning, {field: meaning}); a field may be absent where its meaning says so.
EVENTS: dict[str, tuple[str, dict[str, str]]] = {
    "transition": ("a position's state machine moved", {
        "from": "the state before", "to": "the state after", "trigger": "what moved it (a Trigger name)",
        "detail": "what happened, for a person", "intent_id": "the entry (episode) it belongs to, or null"}),
    "fill": ("one of our orders filled (more of it)", {
        "client_order_id": "our id of the order", "purpose": "entry, close, reduce or add",
        "filled_qty": "filled so far", "avg_price": "average fill price, or null", "status": "the order's status"}),
    "stop": ("the venue confirmed our stop loss", {
        "stop_price": "the stop's trigger price", "previous": "the stop confirmed before, or null",
        "change": "set (first, or again at the same price) or moved"}),
    "stop_moved": ("a stop move was taken by the venue", {
        "before": "the old trigger price", "after": "the new one", "by": "operator or breakeven"}),
    "stop_move_refused": ("a stop move was refused; the old stop stands", {
        "stop": "the stop that stands", "asked": "the price asked", "reason": "why"}),
    "tp_set": ("the venue holds the take-profit asked", {
        "before": "the take-profit before, or null", "after": "the take-profit now, or null when removed",
        "stop": "the stop beside it"}),
    "trail_set": ("the venue holds the trailing stop asked", {
        "before": "the callback before (% of the price), or null", "after": "the callback now, or null",
        "stop": "the stop beside it"}),
    "exit_asked": ("a take-profit or trail was journaled as asked, before it is sent", {
        "exit": "take_profit or trailing", "value": "the price (take-profit) or the callback in %"}),
    "exit_refused": ("a take-profit or trail was refused (by a check or the venue)", {
        "exit": "take_profit or trailing", "asked": "the value asked", "reason": "why"}),
    "reduced": ("a partial close filled; the stop covers what stays", {
        "before": "size before", "after": "size after", "qty": "the size closed", "avg_price": "fill price",
        "stop": "the stop on what stays"}),
    "added": ("an add filled; the stop covers the whole size", {
        "before": "size before", "after": "size after", "qty": "the size added", "avg_price": "fill price",
        "stop": "the stop on the whole"}),
    "reduce_refused": ("a partial close was refused; nothing changed", {
        "qty": "the size asked", "reason": "why"}),
    "add_refused": ("an add was refused; nothing changed", {"qty": "the size asked", "reason": "why"}),
    "closed": ("the position is flat, confirmed by the venue", {
        "reason": "ours: operator close, naked deadline, stop could not be set, ...; outside: stop_triggered,"
                  " take_profit, liquidated, adl, closed_outside", "detail": "what happened",
        "closed_qty": "the size closed", "source": "outside only: what told us (stream, rest, engine)",
        "outside": "true when it was closed outside posguard (absent otherwise)",
        "exit": "outside only: stop or take_profit when one of ours closed it, else empty"}),
    "outside": ("a change made to the position outside posguard, as judged", {
        "change": "closed, flipped, reduced, increased, stop_removed, stop_moved or left_after_close",
        "source": "stream, rest or engine", "detail": "what was seen", "reason": "closed: why, when known",
        "qty": "closed: the size that went", "before": "resized: size before", "after": "resized: size after",
        "ours": "stop changes: our stop", "seen": "stop changes: what the venue holds", "action": "what we did"}),
    "stops_cancelled": ("stop orders of ours that outlived their position were cancelled", {
        "orders": "their client order ids"}),
    "cancel_stops": ("a cancel of stop orders of ours was journaled before it is sent", {
        "reason": "why", "orders": "their client order ids, or \"every stop order of ours\""}),
    "ambiguous": ("an order's outcome is unknown (timeout, 5xx): it is queried by its id, never sent again", {
        "client_order_id": "our id of the order", "detail": "what happened"}),
    "orphan": ("the protection scan found something to fix", {
        "finding": "foreign, leftover_stops or drift", "reason": "what it saw", "action": "foreign: protect or close",
        "stop_price": "foreign: the stop it sets, or null", "orders": "leftover_stops: their client order ids",
        "position": "drift: whether the venue shows a position"}),
    "restart": ("a child actor was restarted", {
        "child": "its id", "why": "what failed", "delay_s": "back-off before the restart",
        "symbols": "a group's symbols (absent for one)"}),
    "safe_mode": ("safe mode was entered or left", {"on": "true: entries refused", "reason": "why"}),
    "stream": ("the venue's private stream changed state", {
        "stream": "its name", "state": "up, down or reconciling", "reason": "why", "gap_s": "how long it was down",
        "reconnects": "reconnections so far"}),
    "watcher_lost": ("the `posguard run` watching the deployment went away; it keeps protecting", {
        "pid": "the watcher's pid"}),
}


def markdown() -> str:
    """The table of docs/events.md."""
    lines = ["| kind | fields | meaning |", "|---|---|---|"]
    lines.append("| *(every event)* | " + "<br>".join(f"`{f}`: {m}" for f, m in COMMON.items()) + " | |")
    for kind, (meaning, fields) in EVENTS.items():
        cell = "<br>".join(f"`{f}`: {m}".replace("|", "\\|") for f, m in fields.items())
        lines.append(f"| `{kind}` | {cell} | {meaning} |")
    return "\n".join(lines) + "\n"
