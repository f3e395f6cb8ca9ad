"""What an operator sees: the live view stays readable and cheap at a whole venue's size, what
needs attention first; `posguard status` lists every symbol."""

from __future__ import annotations

import io
import time
from typing import Any

from supervisor.cli.views import LIVE_ROWS, LiveView, print_status


def status(n: int, odd: dict[int, dict[str, Any]]) -> dict[str, Any]:
    positions = []
    for i in range(n):
        p = {"symbol": f"S{i:04d}USDT", "state": "PROTECTED", "side": "buy", "requested_qty": 1.0, "filled_qty": 1.0,
             "entry_price": 100.0, "stop_price": 95.0, "naked_since": None, "naked_now": 0.0, "naked_seconds": 0.0,
             "last_event": "entry filled"}
        positions.append(p | odd.get(i, {}))
    return {"positions": positions, "started_at": time.time(), "venue": "simulated", "streams": {},
            "safe_mode": False, "journal_error": "", "venue_warnings": [], "venue_status": "", "stopping": None}


def test_the_live_view_of_1000_symbols_shows_what_needs_attention_first_and_counts_the_rest():
    odd = {700: {"state": "ENTERING"}, 900: {"naked_since": time.time() - 2, "naked_now": 2.0},
           950: {"state": "STUCK"}}
    out = io.StringIO()
    with LiveView(out) as view:                       # not a terminal: plain text
        view.show(status(1000, odd))
    lines = out.getvalue().splitlines()
    rows = [line for line in lines if line.startswith("S0")]
    assert len(rows) == LIVE_ROWS
    # Naked and STUCK first, then on its way, then settled.
    assert [r.split()[0] for r in rows[:3]] == ["S0900USDT", "S0950USDT", "S0700USDT"]
    assert "2.00" in rows[0]                                                             # naked seconds
    summary = next(line for line in lines if "symbols:" in line)
    assert "1000 symbols: 1 ENTERING, 998 PROTECTED, 1 STUCK; 1 NAKED" in summary
    assert f"{1000 - LIVE_ROWS} more" in summary
    assert "\x1b[" not in out.getvalue()


def test_a_small_deployment_and_posguard_status_show_every_symbol():
    out = io.StringIO()
    with LiveView(out) as view:
        view.show(status(LIVE_ROWS, {}))
    assert len([line for line in out.getvalue().splitlines() if line.startswith("S0")]) == LIVE_ROWS
    assert "more not shown" not in out.getvalue()
    full = io.StringIO()
    print_status(status(1000, {}), full)
    assert len([line for line in full.getvalue().splitlines() if line.startswith("S0")]) == 1000
