"""Operator commands to a running system: admin messages over thespian's admin port
(127.0.0.1 only). Every command prints a line (or JSON with --json) and exits non-zero when
the system refused or did not answer. None of them ever starts an actor system.

    posguard open SYMBOL SIDE QTY --sl PRICE|PCT%     posguard close SYMBOL
    posguard inspect SYMBOL                           posguard pause | resume
    posguard panic [--yes]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from dataclasses import asdict
from typing import Any

from actors.messages import (
    ClosePosition,
    CommandAccepted,
    CommandDenied,
    EventsReport,
    FetchPrice,
    OpenPosition,
    PriceFetched,
    RecentEvents,
    SetSafeMode,
    StatusReport,
    StatusRequest,
)
from adapters.base import Side
from adapters.venue_settings import venue_symbol
from supervisor.config import DeploymentConfig, load_config
from supervisor.system import join_system, port_listening

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
ASK_TIMEOUT_S = 5.0


class UserError(Exception):
    """Reported as one line; exit code attached."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def normalise_symbol(text: str) -> str:
    """Accept the venue's form (BTCUSDT) and ccxt's unified form (BTC/USDT:USDT)."""
    try:
        return venue_symbol(text)
    except ValueError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None


def parse_stop(text: str) -> tuple[float | None, float | None]:
    """`--sl 58000` (a price) or `--sl 2%` (distance from the current price): (price, pct)."""
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 < pct < 100:
                raise ValueError
            return None, pct
        price = float(text)
        if not price > 0:
            raise ValueError
        return price, None
    except ValueError:
        raise UserError(f"--sl must be a positive price or a percentage like 2%, got {text!r}", EXIT_USAGE) from None


def connect(cfg: DeploymentConfig) -> tuple[Any, Any]:
    """Join the running system named by the config, or explain why not. Never starts one."""
    if not port_listening(cfg.admin_port):
        raise UserError(f"no posguard system is running on 127.0.0.1:{cfg.admin_port}"
                        f" (start one with `posguard run --config {os.path.relpath(cfg.path)}`)")
    try:
        with open(cfg.address_file, "rb") as fh:
            supervisor = pickle.load(fh)
    except (FileNotFoundError, EOFError, pickle.UnpicklingError):
        raise UserError(f"something listens on 127.0.0.1:{cfg.admin_port} but it is not a posguard run"
                        f" started with this config (no {cfg.address_file})") from None
    asys = join_system(cfg.admin_port)
    if asys is None:
        raise UserError(f"no posguard system is running on 127.0.0.1:{cfg.admin_port}")
    return asys, supervisor


def ask(asys: Any, to: Any, msg: Any, kind: type | tuple[type, ...], what: str) -> Any:
    reply = asys.ask(to, msg, ASK_TIMEOUT_S)
    if not isinstance(reply, kind):
        raise UserError(f"the system did not answer the {what} request")
    return reply


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, default=str) if args.json else text, flush=True)


def _command_result(args: argparse.Namespace, reply: CommandAccepted | CommandDenied, done: str) -> int:
    if isinstance(reply, CommandDenied):
        emit(args, {"ok": False, "symbol": reply.symbol, "reason": reply.reason},
             f"posguard: {reply.symbol}: refused: {reply.reason}")
        return EXIT_FAIL
    emit(args, {"ok": True, "symbol": reply.symbol, "intent_id": reply.intent_id}, f"posguard: {done}")
    return EXIT_OK


def cmd_open(args: argparse.Namespace) -> int:
    symbol = normalise_symbol(args.symbol)
    side_text = args.side.lower()
    if side_text not in ("buy", "sell", "long", "short"):
        raise UserError(f"SIDE must be buy or sell, got {args.side!r}", EXIT_USAGE)
    side = Side.BUY if side_text in ("buy", "long") else Side.SELL
    try:
        qty = float(args.qty)
    except ValueError:
        raise UserError(f"QTY must be a number, got {args.qty!r}", EXIT_USAGE) from None
    if not qty > 0:
        raise UserError(f"QTY must be positive, got {args.qty}", EXIT_USAGE)
    price, pct = parse_stop(args.sl)
    cfg = load_config(args.config)
    if symbol not in cfg.symbols:
        raise UserError(f"{symbol} is not in this deployment ({', '.join(cfg.symbols)})", EXIT_USAGE)
    asys, sup = connect(cfg)
    if price is None:
        assert pct is not None
        fetched = ask(asys, sup, FetchPrice(symbol), PriceFetched, "price")
        if fetched.price is None:
            raise UserError(f"no price for {symbol}: cannot place a {pct}% stop")
        price = round(fetched.price * (1 - pct / 100 if side is Side.BUY else 1 + pct / 100), 8)
    reply = ask(asys, sup, OpenPosition(symbol, side, qty, price), (CommandAccepted, CommandDenied), "open")
    return _command_result(args, reply, f"opening {side} {qty:g} {symbol}, stop {price:g}")


def cmd_close(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    symbol = normalise_symbol(args.symbol)
    asys, sup = connect(cfg)
    reply = ask(asys, sup, ClosePosition(symbol), (CommandAccepted, CommandDenied), "close")
    return _command_result(args, reply, f"closing {symbol} reduce-only")


def cmd_safe_mode(args: argparse.Namespace, on: bool) -> int:
    cfg = load_config(args.config)
    asys, sup = connect(cfg)
    who = "operator (posguard pause)" if on else "operator (posguard resume)"
    report = ask(asys, sup, SetSafeMode(on, who), StatusReport, "safe-mode")
    text = ("posguard: safe mode ON: new entries are refused; stops and closes keep working" if report.safe_mode
            else "posguard: safe mode is off; new entries are accepted")
    emit(args, {"safe_mode": report.safe_mode, "reason": report.safe_reason}, text)
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    symbol = normalise_symbol(args.symbol)
    asys, sup = connect(cfg)
    report = ask(asys, sup, StatusRequest(), StatusReport, "status")
    snap = next((p for p in report.positions if p.symbol == symbol), None)
    if snap is None:
        raise UserError(f"{symbol} is not managed by this deployment")
    events = ask(asys, sup, RecentEvents(symbol, args.events), EventsReport, "journal")
    if args.json:
        emit(args, {"position": asdict(snap) | {"naked_now": snap.naked_now()},
                    "events": [dict(zip(("at", "from", "to", "trigger", "detail"), e, strict=True))
                               for e in events.events]}, "")
        return EXIT_OK
    lines = [f"{k:<18} {v}" for k, v in asdict(snap).items()]
    lines.append(f"{'naked_now':<18} {snap.naked_now():.3f}")
    lines.append(f"last {len(events.events)} journal events:")
    lines += [f"  {_clock(at)}  {frm} -> {to}  ({trig})  {detail}" for at, frm, to, trig, detail in events.events]
    print("\n".join(lines), flush=True)
    return EXIT_OK


def cmd_panic(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    asys, sup = connect(cfg)
    report = ask(asys, sup, StatusRequest(), StatusReport, "status")
    held = [p for p in report.positions if p.state not in ("IDLE", "RECOVERING")]
    if not held:
        emit(args, {"closed": []}, "posguard: nothing to close")
        return EXIT_OK
    if not args.yes:
        names = ", ".join(f"{p.symbol} ({p.state})" for p in held)
        if not sys.stdin.isatty():
            raise UserError(f"panic would close {names}; confirm with --yes", EXIT_USAGE)
        answer = input(f"close every position reduce-only: {names}? type yes: ")
        if answer.strip().lower() != "yes":
            raise UserError("not confirmed; nothing closed", EXIT_FAIL)
    results = {p.symbol: ask(asys, sup, ClosePosition(p.symbol), (CommandAccepted, CommandDenied), "close")
               for p in held}
    refused = {s: r.reason for s, r in results.items() if isinstance(r, CommandDenied)}
    emit(args, {"closing": sorted(set(results) - set(refused)), "refused": refused},
         "posguard: closing " + ", ".join(sorted(set(results) - set(refused)))
         + (f"; refused: {refused}" if refused else ""))
    return EXIT_FAIL if refused else EXIT_OK


def _clock(at: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


def add_commands(sub: Any, default_config: str) -> None:
    def parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", default=default_config, help=f"TOML config (default {default_config})")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = parser("open", "open a position with a stop loss (PRICE or PCT%% from the current price)")
    p.add_argument("symbol")
    p.add_argument("side", help="buy | sell")
    p.add_argument("qty")
    p.add_argument("--sl", required=True, metavar="PRICE|PCT%")
    p.set_defaults(handler=cmd_open)
    p = parser("close", "close a symbol's position reduce-only")
    p.add_argument("symbol")
    p.set_defaults(handler=cmd_close)
    p = parser("inspect", "a symbol's full state and its last journal events")
    p.add_argument("symbol")
    p.add_argument("--events", type=int, default=20)
    p.set_defaults(handler=cmd_inspect)
    parser("pause", "enter safe mode: refuse new entries").set_defaults(handler=lambda a: cmd_safe_mode(a, True))
    parser("resume", "leave safe mode").set_defaults(handler=lambda a: cmd_safe_mode(a, False))
    p = parser("panic", "close every position reduce-only (asks unless --yes)")
    p.add_argument("--yes", action="store_true")
    p.set_defaults(handler=cmd_panic)

