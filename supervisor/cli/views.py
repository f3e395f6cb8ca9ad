"""What an operator sees: the status table of `posguard status` and of `posguard run`'s live view,
drawn with rich from the API's JSON (the same data `--json` prints).

On a terminal: a colour per state (PROTECTED green, IDLE dim, on the way yellow, STUCK or naked
red), NAKED_S red when not zero, and the venue's own truth beside ours where the venue can tell
it (the simulated one). Anywhere else (a pipe, a file, a test reading the output) the same table
in plain text, no escape codes, rows never wrapped.

rich is imported here only, and only once something is drawn: `--json` and the commands that
draw nothing never load it (`posguard status` answers in a blink).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TextIO

from actors.position.states import RESTING  # the states with no command of ours in progress

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

PLAIN_WIDTH = 200                    # columns of a table printed where no terminal says its width
LIVE_ROWS = 40                       # the live view's rows at most: 1 000 of them took 0.8 s of CPU a redraw
# What the table shows of a position: what to ask `status` for (`fields`) to draw it.
TABLE_FIELDS = ("symbol", "state", "side", "requested_qty", "filled_qty", "entry_price", "stop_price",
                "take_profit", "trail_pct", "naked_since", "naked_now", "last_event")
STATE_STYLES = {"PROTECTED": "green", "MOVING_STOP": "green", "SETTING_EXIT": "green", "REDUCING": "green",
                "ADDING": "green", "IDLE": "dim", "RECOVERING": "yellow",
                "ENTERING": "yellow", "CONFIRMING_ENTRY": "yellow", "PROTECTING": "yellow", "VERIFYING": "yellow",
                "FLATTENING": "yellow", "STUCK": "bold red"}
NAKED = "bold red"                   # a position without a stop, or seconds spent so


def console(file: TextIO | None = None) -> Console:
    """A console on `file` (stdout): a terminal's width and colours, else plain text, wide enough
    that no row wraps."""
    from rich.console import Console

    out = Console(file=file, highlight=False)
    return out if out.is_terminal else Console(file=file, highlight=False, width=PLAIN_WIDTH)


def print_status(status: dict[str, Any], file: TextIO | None = None) -> None:
    """`posguard status`: the banners, then the table."""
    out = console(file)
    if out.is_terminal:
        out.print(status_view(status))
    else:
        out.file.write(plain(out, status_view(status, fit=False)))
        out.file.flush()


def plain(out: Console, view: RenderableType) -> str:
    """The view as plain text lines (no trailing blanks): what a pipe or a file gets."""
    with out.capture() as captured:
        out.print(view)
    return "".join(line.rstrip() + "\n" for line in captured.get().splitlines())


def status_view(status: dict[str, Any], header: bool = False, fit: bool = True,
                limit: int | None = None) -> RenderableType:
    """Banners (safe mode, journal, streams, venue, stopping; `header`: the live view's first line)
    above the table of positions (`fit`: as wide as the terminal; `limit`: at most that many rows,
    what needs attention first, and a line counting the rest by state)."""
    from rich.console import Group
    from rich.text import Text

    lines: list[Text] = []
    if header:
        up = time.time() - status["started_at"]
        lines.append(Text(f"posguard  venue={status['venue']}  up {up:.0f}s  (Ctrl-C to stop)", style="bold"))
    if status.get("stopping"):
        lines.append(Text(status["stopping"].upper(), style="bold yellow"))
    elif status.get("phase") == "starting":
        lines.append(Text(f"STARTING: waiting for {status.get('phase_detail') or 'its children'}"
                          " -- entries wait for it (`posguard wait`)", style="bold yellow"))
    for name, stream in reversed(list((status.get("streams") or {}).items())):
        if stream["state"] != "up":
            lines.append(Text(f"STREAM {name} {stream['state'].upper()}: {stream['reason']} -- REST polling"
                              f" meanwhile ({stream['reconnects']} reconnects)", style="yellow"))
    if status.get("safe_mode"):
        lines.append(Text(f"SAFE MODE: {status['safe_reason']} -- new entries refused; `posguard resume` to leave",
                          style="bold red"))
    if status.get("journal_error"):
        lines.append(Text(f"JOURNAL CANNOT WRITE: {status['journal_error']} -- closes still go out", style="bold red"))
    for warning in reversed(status.get("venue_warnings") or ()):
        lines.append(Text(f"WARNING: {warning}", style="yellow"))
    if status.get("venue_status"):
        lines.append(Text(f"VENUE: {status['venue_status']}", style="bold red"))
    positions = status["positions"]
    if limit is not None and len(positions) > limit:
        shown = sorted(positions, key=lambda p: (_attention(p, status), p["symbol"]))[:limit]
        counts: dict[str, int] = {}
        for p in positions:
            counts[p["state"]] = counts.get(p["state"], 0) + 1
        rest = len(positions) - limit
        naked = sum(1 for p in positions if _attention(p, status) == 0 and p["state"] != "STUCK")
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        summary += f"; {naked} NAKED" if naked else ""
        table = positions_table(dict(status, positions=shown), fit)
        more = Text(f"{len(positions)} symbols: {summary}. {rest} more not shown (settled first to go);"
                    " `posguard status` lists every one", style="dim")
        return Group(*lines, table, more)
    return Group(*lines, positions_table(status, fit))


def _attention(p: dict[str, Any], status: dict[str, Any]) -> int:
    """0: naked now (by our measure or the venue's) or STUCK; 1: on its way somewhere; 2: settled."""
    venue = (status.get("truth") or {}).get(p["symbol"])
    naked_now = p["naked_since"] is not None or (venue is not None and venue["open"] and venue["stop_price"] is None)
    if naked_now or p["state"] == "STUCK":
        return 0
    return 1 if p["state"] not in RESTING else 2


def positions_table(status: dict[str, Any], fit: bool = True) -> RenderableType:
    """One row per symbol. NAKED_S is the venue's truth where the venue can know it (simulated),
    otherwise the actor's own measure (fill to confirmed stop). VENUE QTY and VENUE STOP, where
    the venue can tell, are what it holds: red where that is not what we hold."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    truth = status.get("truth")
    # `fit`: as wide as the terminal, every column as wide as its content, LAST EVENT what is left
    # (cut short with an ellipsis on a narrow one). A row is one line, always.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", expand=fit)
    for name in ("SYMBOL", "STATE", "SIDE", "QTY", "ENTRY", "STOP", "TP", "TRAIL", "NAKED_S"):
        table.add_column(name, no_wrap=True, justify="left" if name in ("SYMBOL", "STATE", "SIDE") else "right")
    if truth is not None:
        table.add_column("VENUE QTY", no_wrap=True, justify="right")
        table.add_column("VENUE STOP", no_wrap=True, justify="right")
    table.add_column("LAST EVENT", no_wrap=True, overflow="ellipsis", ratio=1, min_width=10)
    for p in status["positions"]:
        venue = (truth or {}).get(p["symbol"])
        naked = venue["naked_seconds"] if venue is not None else p["naked_now"]
        held = p["filled_qty"] if p["state"] != "IDLE" else 0.0
        venue_qty = abs(venue["qty"]) if venue is not None and venue["open"] else 0.0
        unprotected = p["naked_since"] is not None or (venue_qty > 0 and venue["stop_price"] is None)
        state_style = NAKED if unprotected else STATE_STYLES.get(p["state"], "")
        row = [Text(p["symbol"], style="bold"), Text(p["state"], style=state_style), p["side"] or "-",
               _num(p["filled_qty"] or p["requested_qty"]), _num(p["entry_price"]), _num(p["stop_price"]),
               _num(p.get("take_profit")), f"{p['trail_pct']:g}%" if p.get("trail_pct") else "-",
               Text(f"{naked:.2f}", style=NAKED if naked > 0 else "")]
        if truth is not None:
            row += _venue_cells(venue, venue_qty, held, p["stop_price"])
        row.append(p["last_event"] or "")
        table.add_row(*row)
    return table


def _venue_cells(venue: dict[str, Any] | None, qty: float, held: float, stop: float | None) -> list[Any]:
    from rich.text import Text

    if venue is None:
        return ["-", "-"]
    qty_style = NAKED if abs(qty - held) > 1e-12 else ""
    if qty == 0:
        return [Text("flat", style=qty_style), "-"]
    venue_stop = venue["stop_price"]
    stop_style = NAKED if venue_stop is None or (stop is not None and abs(venue_stop - stop) > 1e-9 * stop) else ""
    shown = "NONE" if venue_stop is None else _num(venue_stop)
    return [Text(_num(qty), style=qty_style), Text(shown, style=stop_style)]


class LiveView:
    """`posguard run`'s table. On a terminal it is redrawn in place (rich Live), with a header
    line; what else is printed meanwhile (alerts) appears above it. Anywhere else it is printed,
    plain, each time it changes, so a log or a test reads every state it went through (of the
    rows shown: at most LIVE_ROWS, what needs attention first)."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.console = console(file)
        self.live: Live | None = None
        self.last = ""

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, auto_refresh=False, transient=False)
            self.live.start()
        return self

    def show(self, status: dict[str, Any]) -> None:
        if self.live is not None:
            rows = max(5, min(LIVE_ROWS, self.console.height - 12))      # banners, header, summary
            self.live.update(status_view(status, header=True, limit=rows), refresh=True)
            return
        text = plain(self.console, status_view(status, fit=False, limit=LIVE_ROWS))
        if text != self.last:
            self.console.file.write(text + "\n")
            self.console.file.flush()
            self.last = text

    def forget(self) -> None:
        """Show the next table even if it is like the last (a new actor system behind it)."""
        self.last = ""

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


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
