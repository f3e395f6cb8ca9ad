"""What the shared journal's database says of the accounts (a journal on PostgreSQL only):

- `posguard fleet status`: every account of the database -- who holds it, its epoch, whether the
  lease is live, since when, and how many positions its journal has in each state;
- `posguard status` on a host standing by (nothing serves its socket): who holds its account.

Read-only: one plain SELECT per account, no lock taken, nothing written (a fleet view must never
fence or slow a holder's writes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tomllib
from typing import Any

from supervisor.cli.exits import EXIT_OK, EXIT_USAGE, UserError

LEASES = """
SELECT account, holder, epoch, expires_at > clock_timestamp() AS live, acquired_at, renewed_at
FROM posguard.leases ORDER BY account
"""
# Each symbol's last journaled state (as JournalStore.last_states), counted by state.
STATES = """
SELECT to_state AS state, count(*) AS n FROM {schema}.transitions
WHERE id IN (SELECT MAX(id) FROM {schema}.transitions GROUP BY symbol) GROUP BY to_state ORDER BY to_state
"""
SAFE_MODE = "SELECT value FROM {schema}.meta WHERE key = 'safe_mode'"


def shared_journal(config: str) -> tuple[str, str, str | None] | None:
    """(url, account, password_file) when the config's journal is on PostgreSQL, else None."""
    try:
        with open(config, "rb") as fh:
            journal = tomllib.load(fh).get("journal") or {}
    except (OSError, tomllib.TOMLDecodeError):
        return None
    url = journal.get("url") if isinstance(journal, dict) else None
    if not isinstance(url, str) or not url:
        return None
    password_file = journal.get("password_file")
    if isinstance(password_file, str) and not os.path.isabs(password_file):
        password_file = os.path.join(os.path.dirname(os.path.abspath(config)), password_file)
    return url, str(journal.get("account", "default")), password_file if isinstance(password_file, str) else None


async def _accounts(url: str, account: str, password_file: str | None) -> list[dict[str, Any]]:
    from actors.journal.postgres import PostgresBackend, schema_of

    conn = await PostgresBackend(url, account, password_file).connect()
    try:
        if await conn.fetchval("SELECT to_regclass('posguard.leases')") is None:
            return []
        out = []
        for row in await conn.fetch(LEASES):
            entry = dict(row)
            schema = schema_of(entry["account"])
            entry["positions"], entry["safe_mode"] = {}, None
            if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.transitions") is not None:
                entry["positions"] = {r["state"]: r["n"] for r in await conn.fetch(STATES.format(schema=schema))}
                value = await conn.fetchval(SAFE_MODE.format(schema=schema))
                state = json.loads(value) if value else {}
                entry["safe_mode"] = state.get("reason") if state.get("on") else None
            out.append(entry)
        return out
    finally:
        await conn.close(timeout=2)


def accounts(config: str) -> list[dict[str, Any]]:
    shared = shared_journal(config)
    if shared is None:
        raise UserError(f"{config}: the journal is a file of this host; a fleet needs [journal] url"
                        " (PostgreSQL)", EXIT_USAGE)
    from actors.journal.postgres import CredentialError, safe_url

    try:
        return asyncio.run(asyncio.wait_for(_accounts(*shared), 15.0))
    except CredentialError as exc:
        raise UserError(f"journal.password_file: {exc}", EXIT_USAGE) from None
    except (OSError, TimeoutError, ValueError) as exc:
        raise UserError(f"the journal's database {safe_url(shared[0])} does not answer"
                        f" ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - asyncpg's own errors: one line, never a traceback
        raise UserError(f"the journal's database {safe_url(shared[0])}: {type(exc).__name__}: {exc}") from None


def _phase(entry: dict[str, Any]) -> str:
    if not entry["live"]:
        return "lapsed (a standby takes it)"
    return f"safe mode: {entry['safe_mode']}" if entry["safe_mode"] else "running"


def cmd_fleet_status(args: argparse.Namespace) -> int:
    rows = accounts(args.config)
    if args.json:
        print(json.dumps([{**r, "acquired_at": r["acquired_at"].isoformat(), "renewed_at": r["renewed_at"].isoformat(),
                           "phase": _phase(r)} for r in rows]))
        return EXIT_OK
    if not rows:
        print("no account has been held yet")
        return EXIT_OK
    print(f"{'ACCOUNT':<16} {'HOLDER':<34} {'EPOCH':>5}  {'SINCE':<20} {'PHASE':<28} POSITIONS")
    for r in rows:
        counts = ", ".join(f"{state} {n}" for state, n in r["positions"].items()) or "-"
        print(f"{r['account']:<16} {r['holder']:<34} {r['epoch']:>5}  {r['acquired_at']:%Y-%m-%d %H:%M:%S}"
              f"  {_phase(r):<28} {counts}")
    return EXIT_OK


def standby_line(config: str) -> str | None:
    """On a host whose deployment does not run here: who holds its account, if it is shared."""
    shared = shared_journal(config)
    if shared is None:
        return None
    try:
        rows = accounts(config)
    except UserError as exc:
        return f"account {shared[1]}: {exc}"
    mine = next((r for r in rows if r["account"] == shared[1]), None)
    if mine is None:
        return f"account {shared[1]}: held by nobody yet"
    state = "held" if mine["live"] else "lapsed, last held"
    return (f"account {shared[1]}: {state} by {mine['holder']} (epoch {mine['epoch']}) since"
            f" {mine['acquired_at']:%Y-%m-%d %H:%M:%S%z}")


def standing_by(config: str) -> str | None:
    """`posguard status` where nothing serves the socket: a `posguard run` standing by here for a
    shared account says so (who holds it), else None."""
    if shared_journal(config) is None:
        return None
    from supervisor.client import socket_path_of
    from supervisor.host.runtime import WatcherLock, held_by

    try:
        run = held_by(WatcherLock, os.path.join(os.path.dirname(socket_path_of(config)), "run.lock"))
    except ValueError:
        return None
    if run is None:
        return None
    return f"standby: posguard run pid {run.get('pid', '?')} waits to take it over; {standby_line(config)}"


def add_fleet(sub: Any, config: str) -> None:
    fleet = sub.add_parser("fleet", help="the accounts of a shared journal (PostgreSQL): holders, epochs, positions")
    what = fleet.add_subparsers(dest="fleet_command", required=True)
    status = what.add_parser("status", help="every account of the database: holder, epoch, phase, position counts")
    status.add_argument("--config", default=config, help=f"TOML config naming the database (default {config})")
    status.add_argument("--json", action="store_true", help="one JSON array")
    status.set_defaults(handler=cmd_fleet_status)
