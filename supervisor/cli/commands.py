"""Operator commands to a running deployment, through its Unix-socket API (supervisor/client.py).
Arguments are checked before anything is contacted (exit 2 with the reason); a refusal by the
running deployment exits 1 with its reason. None of them starts anything or joins the actor
system, and they import only what they use, so `posguard status` answers in a blink.

    posguard status | wait [--timeout S] | inspect SYMBOL | events [--since N] [--follow]
    posguard open SYMBOL SIDE QTY --sl PRICE|PCT% [--tp PRICE|PCT%] [--trail PCT%]
    posguard close SYMBOL [--qty Q]    posguard amend SYMBOL --sl PRICE|breakeven | --tp PRICE | --trail PCT%
    posguard pause | resume | panic [--yes] | stop [--flatten]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import tomllib
from collections.abc import Callable
from typing import Any

from actors.position.states import HELD
from supervisor.api.limits import COMMAND_WAIT_S, MAX_NUMBER, MAX_PCT, MAX_WAIT_S
from supervisor.cli.exits import EXIT_FAIL, EXIT_OK, EXIT_USAGE, UserError
from supervisor.client import Client, ClientError, NotRunning, socket_path_of

STOP_WAIT_S = 30.0


# -- arguments, before anything is contacted ----------------------------------------------------


def normalise_symbol(text: str) -> str:
    """Accept the venue's form (BTCUSDT) and ccxt's unified form (BTC/USDT:USDT)."""
    from adapters.ccxt.settings import venue_symbol

    try:
        return venue_symbol(text)
    except ValueError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None


def parse_qty(text: str) -> float:
    try:
        qty = float(text)
    except ValueError:
        raise UserError(f"QTY must be a number, got {text!r}", EXIT_USAGE) from None
    if not math.isfinite(qty) or not 0 < qty <= MAX_NUMBER:
        raise UserError(f"QTY must be a positive finite number (at most {MAX_NUMBER:g}), got {text}", EXIT_USAGE)
    return qty


def parse_stop(text: str, flag: str = "--sl") -> tuple[float | None, float | None]:
    """`--sl 58000` (a price) or `--sl 2%` (distance from the current price): (price, pct)."""
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not (math.isfinite(pct) and 0 < pct <= MAX_PCT):
                raise ValueError
            return None, pct
        price = float(text)
        if not (math.isfinite(price) and 0 < price <= MAX_NUMBER):
            raise ValueError
        return price, None
    except ValueError:
        raise UserError(f"{flag} must be a positive price (at most {MAX_NUMBER:g}) or a percentage above 0 and at"
                        f" most {MAX_PCT:g} like 2%, got {text!r}", EXIT_USAGE) from None


def parse_trail(text: str) -> float:
    """`--trail 1%` (or 1): the venue-held trailing stop's callback, percent of the price."""
    try:
        pct = float(text.strip().rstrip("%"))
        if not (math.isfinite(pct) and 0 < pct <= MAX_PCT):
            raise ValueError
        return pct
    except ValueError:
        raise UserError(f"--trail must be a percentage above 0 like 1%, got {text!r}", EXIT_USAGE) from None


def parse_side(text: str) -> str:
    side = {"buy": "buy", "long": "buy", "sell": "sell", "short": "sell"}.get(text.lower())
    if side is None:
        raise UserError(f"SIDE must be buy or sell, got {text!r}", EXIT_USAGE)
    return side


def deployment_symbols(config: str) -> tuple[str, ...]:
    """The config's symbols, read without the full check (that is `posguard run`'s job)."""
    raw = _toml(config)
    symbols = (raw.get("deployment") or {}).get("symbols")
    if not isinstance(symbols, list):
        raise UserError("config error: deployment.symbols: missing", EXIT_USAGE)
    return tuple(normalise_symbol(str(s)) for s in symbols)


def deployed(symbol: str, config: str) -> str:
    """The symbol, if the config's deployment manages it (checked before anything is contacted)."""
    symbols = deployment_symbols(config)
    if symbol not in symbols:
        raise UserError(f"{symbol} is not in this deployment ({', '.join(symbols)})", EXIT_USAGE)
    return symbol


def _toml(config: str) -> dict[str, Any]:
    try:
        with open(config, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config error: --config: no such file: {config}", EXIT_USAGE) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"config error: --config: {config} is not valid TOML: {exc}", EXIT_USAGE) from None


# -- the deployment -----------------------------------------------------------------------------


def connect(config: str, timeout: float = 10.0, wait_s: float = 0.0) -> Client:
    """The running deployment's API, or one line saying why not. Never starts anything;
    `wait_s`: while nothing serves its socket, keep trying that long (one just started)."""
    _toml(config)
    try:
        path = socket_path_of(config)
    except ValueError as exc:
        raise UserError(f"config error: {exc}", EXIT_USAGE) from None
    try:
        return Client.when_up(path, timeout, wait_s)
    except NotRunning:
        waited = f" within {wait_s:g} s" if wait_s else ""
        raise UserError(f"no posguard deployment is running for {config} (nothing serves {path}{waited});"
                        f" start one with `posguard run --config {config}`") from None
    except ClientError as exc:
        raise UserError(exc.message) from None


def _ask(client: Client, op: str, **args: Any) -> Any:
    try:
        return client.request(op, **args)
    except ClientError as exc:
        raise UserError(exc.message, EXIT_USAGE if exc.code in ("bad_request", "unknown_symbol") else EXIT_FAIL) \
            from None


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data) if args.json else text, flush=True)


def _refused(args: argparse.Namespace, symbol: str, exc: ClientError) -> int:
    """A refusal: the JSON answer on stdout (--json), else one line on stderr, like any error.
    Exit 2 for a request the deployment could not take (a bad argument, a symbol it does not
    manage), 1 for one it refused (a risk limit, safe mode, the position's state)."""
    code = EXIT_USAGE if exc.code in ("bad_request", "unknown_symbol") else EXIT_FAIL
    if not args.json:
        raise UserError(f"{symbol}: refused: {exc.message}", code)
    emit(args, {"ok": False, "symbol": symbol, "reason": exc.message}, "")
    return code


# -- commands -----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    try:
        pg = connect(args.config)
    except UserError:
        from supervisor.cli.fleet import standing_by  # a shared journal's standby host

        line = standing_by(args.config)
        if line is None:
            raise
        print(json.dumps({"phase": "standby", "standby": line}) if args.json else line)
        return EXIT_OK
    with pg:
        status = _ask(pg, "status", truth=not args.json)
    if args.json:
        print(json.dumps(status))
    else:
        from supervisor.cli.views import print_status  # rich, loaded only to draw

        print_status(status)
    return EXIT_OK


def parse_wait(text: str, flag: str) -> float:
    try:
        seconds = float(text)
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_WAIT_S):
            raise ValueError
        return seconds
    except ValueError:
        raise UserError(f"{flag} must be seconds from 0 to {MAX_WAIT_S:g}, got {text!r}", EXIT_USAGE) from None


def cmd_inspect(args: argparse.Namespace) -> int:
    symbol = normalise_symbol(args.symbol)
    if not 0 <= args.events <= 1000:
        raise UserError(f"--events must be from 0 to 1000, got {args.events}", EXIT_USAGE)
    deployed(symbol, args.config)
    with connect(args.config) as pg:
        report = _ask(pg, "inspect", symbol=symbol, events=args.events)
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    lines = [f"{k:<18} {v}" for k, v in report["position"].items()]
    lines.append(f"last {len(report['events'])} journal events:")
    lines += [f"  {_clock(e['at'])}  {e['from']} -> {e['to']}  ({e['trigger']})  {e['detail']}"
              for e in report["events"]]
    print("\n".join(lines), flush=True)
    return EXIT_OK


def cmd_open(args: argparse.Namespace) -> int:
    symbol = normalise_symbol(args.symbol)
    side = parse_side(args.side)
    qty = parse_qty(args.qty)
    price, pct = parse_stop(args.sl)
    tp, tp_pct = parse_stop(args.tp, "--tp") if args.tp is not None else (None, None)
    trail = parse_trail(args.trail) if args.trail is not None else None
    wait = parse_wait(args.wait, "--wait")
    deployed(symbol, args.config)
    deadline = time.monotonic() + wait                   # --wait bounds it all: the socket's wait too
    with connect(args.config, wait_s=wait) as pg:
        try:
            result = pg.open(symbol, side, qty, sl=price, sl_pct=pct, tp=tp, tp_pct=tp_pct, trail_pct=trail,
                             wait=max(0.0, deadline - time.monotonic()))
        except ClientError as exc:
            return _refused(args, symbol, exc)
    beside = "".join((f", take-profit {result['take_profit']:g}" if result.get("take_profit") else "",
                      f", trailing stop {trail:g}%" if trail is not None else ""))
    emit(args, {"ok": True, **result},
         f"posguard: opening {side} {qty:g} {symbol}, stop {result['stop_price']:g}{beside}"
         " (on an open symbol of that side: an add)")
    return EXIT_OK


def cmd_close(args: argparse.Namespace) -> int:
    qty = parse_qty(args.qty) if args.qty is not None else None
    wait = parse_wait(args.wait, "--wait")
    symbol = deployed(normalise_symbol(args.symbol), args.config)
    deadline = time.monotonic() + wait
    with connect(args.config, wait_s=wait) as pg:
        try:
            result = pg.close_position(symbol, qty=qty, wait=max(0.0, deadline - time.monotonic()))
        except ClientError as exc:
            return _refused(args, symbol, exc)
    what = f"{qty:g} of {symbol}" if qty is not None else symbol
    emit(args, {"ok": True, **result}, f"posguard: closing {what} reduce-only")
    return EXIT_OK


def cmd_amend(args: argparse.Namespace) -> int:
    given = [flag for flag, value in (("--sl", args.sl), ("--tp", args.tp), ("--trail", args.trail)) if value]
    if len(given) != 1:
        raise UserError("amend changes one thing: --sl PRICE|breakeven, --tp PRICE or --trail PCT%", EXIT_USAGE)
    breakeven = bool(args.sl) and args.sl.strip().lower() == "breakeven"
    price = tp = trail = None
    if args.sl and not breakeven:
        price, _ = parse_stop(args.sl)
        if price is None:
            raise UserError(f"--sl of amend is a price or breakeven (a percentage is for open), got {args.sl!r}",
                            EXIT_USAGE)
    if args.tp:
        tp, _ = parse_stop(args.tp, "--tp")
        if tp is None:
            raise UserError(f"--tp of amend is a price (a percentage is for open), got {args.tp!r}", EXIT_USAGE)
    if args.trail:
        trail = parse_trail(args.trail)
    symbol = deployed(normalise_symbol(args.symbol), args.config)
    with connect(args.config) as pg:
        try:
            result = pg.amend(symbol, sl=price, breakeven=breakeven, tp=tp, trail_pct=trail)
        except ClientError as exc:
            return _refused(args, symbol, exc)
    if tp is not None:
        text = f"posguard: setting {symbol}'s take-profit to {tp:g} beside its stop"
    elif trail is not None:
        text = f"posguard: setting {symbol}'s venue-held trailing stop to {trail:g}% (the stop stays under it)"
    else:
        where = "break-even" if breakeven else f"{price:g}"
        text = f"posguard: moving {symbol}'s stop to {where} (the old one stands until then)"
    emit(args, {"ok": True, **result}, text)
    return EXIT_OK


def cmd_safe_mode(args: argparse.Namespace, on: bool) -> int:
    with connect(args.config) as pg:
        result = _ask(pg, "pause" if on else "resume")
    text = ("posguard: safe mode ON: new entries are refused; stops and closes keep working" if result["safe_mode"]
            else "posguard: safe mode is off; new entries are accepted")
    emit(args, result, text)
    return EXIT_OK


def cmd_panic(args: argparse.Namespace) -> int:
    with connect(args.config) as pg:
        status = _ask(pg, "status")
        held = [p for p in status["positions"] if p["state"] in HELD]   # JSON strings: StrEnum members match
        if not held:
            emit(args, {"closing": [], "refused": {}}, "posguard: nothing to close")
            return EXIT_OK
        if not args.yes:
            names = ", ".join(f"{p['symbol']} ({p['state']})" for p in held)
            if not sys.stdin.isatty():
                raise UserError(f"panic would close {names}; confirm with --yes", EXIT_USAGE)
            answer = input(f"close every position reduce-only: {names}? type yes: ")
            if answer.strip().lower() != "yes":
                raise UserError("not confirmed; nothing closed", EXIT_FAIL)
        result = _ask(pg, "panic")
    text = "posguard: closing " + ", ".join(result["closing"]) + (f"; refused: {result['refused']}"
                                                                   if result["refused"] else "")
    emit(args, result, text)
    return EXIT_FAIL if result["refused"] else EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the deployment: positions stay with their stops, or are closed first (--flatten)."""
    with connect(args.config, timeout=130.0) as pg:
        try:
            result = pg.stop(flatten=args.flatten)
        except ClientError as exc:
            emit(args, {"stopped": False, "reason": exc.message}, f"posguard: not stopped: {exc.message}")
            return EXIT_FAIL
    gone = _wait_gone(socket_path_of(args.config), STOP_WAIT_S)
    emit(args, {"stopped": gone, "detail": result["detail"]},
         f"posguard: {result['detail']}; " + ("stopped" if gone else f"still answering after {STOP_WAIT_S:.0f}s"))
    return EXIT_OK if gone else EXIT_FAIL


def _wait_gone(path: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            Client(path, timeout=1.0).close()
        except NotRunning:
            return True
        except ClientError:
            pass
        time.sleep(0.1)                                  # polling a socket that is going away
    return False


def cmd_events(args: argparse.Namespace) -> int:
    """Print the event stream; with --follow, keep printing, and resume after a reconnect
    from the last event seen (each event exactly once)."""
    from supervisor.cli.views import render_event

    if args.since is not None and args.since < 0:
        raise UserError(f"--since must be 0 or more, got {args.since}", EXIT_USAGE)
    if not 0 <= args.last <= 100_000:
        raise UserError(f"--last must be from 0 to 100000, got {args.last}", EXIT_USAGE)
    since = args.since
    with connect(args.config) as pg:
        if since is None:
            since = max(0, _ask(pg, "status")["last_event"] - args.last)
    path = socket_path_of(args.config)
    reconnect_until = None
    while True:
        try:
            with Client(path) as pg:
                reconnect_until = None
                for event in pg.events(since=since, follow=args.follow):
                    print(json.dumps(event) if args.json else render_event(event), flush=True)
                    since = event["seq"]
            return EXIT_OK
        except ClientError as exc:
            if exc.code == "gone":
                raise UserError(exc.message) from None
            if not args.follow:
                raise UserError(exc.message) from None
            # The deployment restarted or is being replaced: resume where we were, for a while.
            reconnect_until = reconnect_until or time.monotonic() + STOP_WAIT_S
            if time.monotonic() > reconnect_until:
                raise UserError(f"the deployment is gone ({exc.message}); last event seen: {since}") from None
            time.sleep(0.2)                              # waiting for the API to come back


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


def command_parser(sub: Any, default_config: str) -> Callable[[str, str], argparse.ArgumentParser]:
    """A subcommand's parser, with the --config and --json every operator command takes."""
    def parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", default=default_config, help=f"TOML config (default {default_config})")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p
    return parser


def add_commands(sub: Any, default_config: str) -> None:
    parser = command_parser(sub, default_config)

    parser("status", "every position's state, from the running deployment").set_defaults(handler=cmd_status)
    p = parser("open", "open a position with a stop loss (PRICE or PCT%% from the current price); on a symbol"
                       " open on the same side, add to it")
    p.add_argument("symbol")
    p.add_argument("side", help="buy | sell")
    p.add_argument("qty")
    p.add_argument("--sl", required=True, metavar="PRICE|PCT%")
    p.add_argument("--tp", metavar="PRICE|PCT%", help="a take-profit beside the stop")
    p.add_argument("--trail", metavar="PCT%", help="a trailing stop held by the venue (its callback)")
    p.add_argument("--wait", default=str(COMMAND_WAIT_S), metavar="S",
                   help=f"while the deployment starts, wait this long for it (default {COMMAND_WAIT_S:g})")
    p.set_defaults(handler=cmd_open)
    p = parser("close", "close a symbol's position reduce-only (all of it, or --qty of it)")
    p.add_argument("symbol")
    p.add_argument("--qty", help="a partial close: the stop keeps covering what stays")
    p.add_argument("--wait", default=str(COMMAND_WAIT_S), metavar="S",
                   help=f"while the deployment starts, wait this long for the symbol (default {COMMAND_WAIT_S:g})")
    p.set_defaults(handler=cmd_close)
    p = parser("amend", "change one exit of a PROTECTED position: move its stop (the old one stands until the"
                        " venue takes the new), set its take-profit or its venue-held trailing stop")
    p.add_argument("symbol")
    p.add_argument("--sl", metavar="PRICE|breakeven")
    p.add_argument("--tp", metavar="PRICE")
    p.add_argument("--trail", metavar="PCT%")
    p.set_defaults(handler=cmd_amend)
    p = parser("inspect", "a symbol's full state and its last journal events")
    p.add_argument("symbol")
    p.add_argument("--events", type=int, default=20)
    p.set_defaults(handler=cmd_inspect)
    parser("pause", "enter safe mode: refuse new entries").set_defaults(handler=lambda a: cmd_safe_mode(a, True))
    parser("resume", "leave safe mode").set_defaults(handler=lambda a: cmd_safe_mode(a, False))
    p = parser("panic", "close every position reduce-only (asks unless --yes)")
    p.add_argument("--yes", action="store_true")
    p.set_defaults(handler=cmd_panic)
    p = parser("stop", "end the deployment; positions keep their stops (or are closed first with --flatten)")
    p.add_argument("--flatten", action="store_true", help="close every position reduce-only, then stop")
    p.set_defaults(handler=cmd_stop)
    p = parser("events", "the event stream: transitions, fills, stops, closes, orphans, restarts, safe mode")
    p.add_argument("--since", type=int, default=None, help="events after this sequence number")
    p.add_argument("--last", type=int, default=20, help="without --since: start this many events back")
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    p.set_defaults(handler=cmd_events)


def default_config() -> str:
    return os.environ.get("POSGUARD_CONFIG", "conf/demo.toml")
