"""The operator API's wire format: JSON lines over a Unix socket, one request, one reply.

    server, on connect:  {"posguard": "api", "version": 1, "deployment": {...}}
    client:              {"id": 7, "op": "open", "args": {"symbol": "BTCUSDT", "side": "buy", "qty": 0.01, "sl_pct": 2}}
    server:              {"id": 7, "ok": true, "result": {...}}
                         {"id": 7, "ok": false, "error": {"code": "refused", "message": "..."}}
    `events` streams:    {"id": 8, "event": {"seq": 41, "at": ..., "kind": "transition", "symbol": ..., ...}}

Everything here is pure (no I/O): requests are checked against a table of ops and their
arguments, and every refusal names what was wrong and what would be accepted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from adapters.ccxt.settings import venue_symbol
from supervisor.api.event_schema import COMMON, EVENTS_SCHEMA_VERSION
from supervisor.api.limits import COMMAND_WAIT_S, MAX_DIGITS, MAX_ID, MAX_LINE, MAX_NUMBER, MAX_PCT, MAX_WAIT_S


class ApiError(Exception):
    """A refusal with a machine-readable code: bad_request, unknown_op, unknown_symbol, refused,
    not_ready, forbidden, gone, timeout, unavailable, internal."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


@dataclass(frozen=True, slots=True)
class Request:
    id: int | str | None
    op: str
    args: dict[str, Any] = field(default_factory=dict)


# -- argument checks ---------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ApiError("bad_request", f"args.{name} must be true or false, got {json.dumps(value)}")
    return value


def _number(lo: float, hi: float, lo_open: bool = True) -> Check:
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError("bad_request", f"args.{name} must be a number, got {json.dumps(value)[:40]}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or not (number > lo if lo_open else number >= lo) or number > hi:
            raise ApiError("bad_request", f"args.{name} must be a finite number {'>' if lo_open else '>='} {lo:g}"
                                          f" and <= {hi:g}, got {json.dumps(value)[:40]}")
        return number
    return check


def _integer(lo: int, hi: int) -> Check:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ApiError("bad_request", f"args.{name} must be a whole number from {lo} to {hi},"
                                          f" got {json.dumps(value)[:40]}")
        return value
    return check


# A position's fields, as `status` shows them (PositionSnapshot's, and naked_now computed at the answer).
POSITION_FIELDS = ("symbol", "state", "side", "requested_qty", "filled_qty", "entry_price", "stop_price",
                   "intent_id", "take_profit", "trail_pct", "naked_seconds", "naked_since", "protect_latency_s",
                   "guarded_latency_s", "trigger", "last_event", "updated_at", "naked_now")


def _fields(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(f, str) for f in value) \
            or len(value) > len(POSITION_FIELDS):
        raise ApiError("bad_request", f"args.{name} must be a list of position fields, like [\"symbol\", \"state\"]")
    unknown = [f for f in value if f not in POSITION_FIELDS]
    if unknown:
        raise ApiError("bad_request", f"args.{name}: unknown field {json.dumps(unknown[0])[:40]}"
                                      f" (known: {', '.join(POSITION_FIELDS)})")
    return tuple(dict.fromkeys(value))


def _symbol(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 40:
        raise ApiError("bad_request", f"args.{name} must be a symbol like BTCUSDT or BTC/USDT:USDT")
    try:
        return venue_symbol(value)
    except ValueError as exc:
        raise ApiError("bad_request", f"args.{name}: {exc}") from None


def _side(name: str, value: Any) -> str:
    sides = {"buy": "buy", "long": "buy", "sell": "sell", "short": "sell"}
    if not isinstance(value, str) or value.lower() not in sides:
        raise ApiError("bad_request", f"args.{name} must be buy or sell (long/short), got {json.dumps(value)[:40]}")
    return sides[value.lower()]


QTY = _number(0.0, MAX_NUMBER)
PRICE = _number(0.0, MAX_NUMBER)
PCT = _number(0.0, MAX_PCT)
WAIT = _number(0.0, MAX_WAIT_S, lo_open=False)

# op -> {argument: (check, required, default)}
OPS: dict[str, dict[str, tuple[Check, bool, Any]]] = {
    "status": {"truth": (_bool, False, False), "columns": (_bool, False, False), "fields": (_fields, False, None)},
    "inspect": {"symbol": (_symbol, True, None), "events": (_integer(0, 1000), False, 20)},
    "open": {"symbol": (_symbol, True, None), "side": (_side, True, None), "qty": (QTY, True, None),
             "sl": (PRICE, False, None), "sl_pct": (PCT, False, None), "tp": (PRICE, False, None),
             "tp_pct": (PCT, False, None), "trail_pct": (PCT, False, None), "wait": (WAIT, False, COMMAND_WAIT_S),
             "add": (_bool, False, True)},
    "close": {"symbol": (_symbol, True, None), "qty": (QTY, False, None), "wait": (WAIT, False, COMMAND_WAIT_S)},
    "wait": {"timeout": (WAIT, False, 30.0)},
    "amend": {"symbol": (_symbol, True, None), "sl": (PRICE, False, None), "breakeven": (_bool, False, False),
              "tp": (PRICE, False, None), "trail_pct": (PCT, False, None)},
    "pause": {},
    "resume": {},
    "panic": {},
    "stop": {"flatten": (_bool, False, False)},
    "events": {"since": (_integer(0, 2**63 - 1), False, None), "follow": (_bool, False, True)},
    "watch": {"pid": (_integer(1, 2**22), True, None)},
}


def _no_constants(name: str) -> Any:
    raise ApiError("bad_request", f"{name} is not a JSON number; send a finite number")


def _whole(text: str) -> int | float:
    """A JSON whole number. One longer than any argument allows is an infinity, which the checks
    refuse naming its argument (Python itself refuses past 4300 digits, saying something else)."""
    if len(text) > MAX_DIGITS:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def parse_request(line: bytes) -> Request:
    """One request line -> Request. Raises ApiError naming the problem (the id, when it could be
    read, is in `extra['id']` so the reply can carry it)."""
    if len(line) > MAX_LINE:
        raise ApiError("bad_request", f"request longer than {MAX_LINE} bytes")
    try:
        data = json.loads(line, parse_constant=_no_constants, parse_int=_whole)
    except ApiError:
        raise
    except (ValueError, RecursionError):
        raise ApiError("bad_request", "not a JSON object: send one JSON object per line") from None
    if not isinstance(data, dict):
        raise ApiError("bad_request", "not a JSON object: send one JSON object per line")
    rid = data.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int | str) or len(str(rid)) > MAX_ID):
        raise ApiError("bad_request", f"id must be a number or a string of at most {MAX_ID} characters")
    unknown = set(data) - {"id", "op", "args"}
    if unknown:
        raise ApiError("bad_request", f"unknown field {sorted(unknown)[0]!r} (a request has id, op, args)", id=rid)
    op = data.get("op")
    if op not in OPS:
        raise ApiError("unknown_op", f"unknown op {json.dumps(op)[:40]}; ops: {', '.join(OPS)}", id=rid)
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ApiError("bad_request", "args must be a JSON object", id=rid)
    spec = OPS[op]
    extra = set(args) - set(spec)
    if extra:
        allowed = ", ".join(spec) or "none"
        raise ApiError("bad_request", f"{op}: unknown argument {sorted(extra)[0]!r} (allowed: {allowed})", id=rid)
    checked: dict[str, Any] = {}
    try:
        for name, (check, required, default) in spec.items():
            if name in args:
                checked[name] = check(name, args[name])
            elif required:
                raise ApiError("bad_request", f"{op}: args.{name} is required")
            else:
                checked[name] = default
    except ApiError as exc:
        raise ApiError(exc.code, exc.message, id=rid) from None
    if op == "open" and (checked["sl"] is None) == (checked["sl_pct"] is None):
        raise ApiError("bad_request", "open: give exactly one of args.sl (a price) or args.sl_pct (percent"
                                      " from the current price)", id=rid)
    if op == "open" and checked["tp"] is not None and checked["tp_pct"] is not None:
        raise ApiError("bad_request", "open: give at most one of args.tp (a price) or args.tp_pct (percent"
                                      " from the current price)", id=rid)
    if op == "amend" and sum((checked["sl"] is not None, checked["breakeven"], checked["tp"] is not None,
                              checked["trail_pct"] is not None)) != 1:
        raise ApiError("bad_request", "amend changes one thing: args.sl (a price), args.breakeven, args.tp (a"
                                      " price) or args.trail_pct (the venue's trailing stop, % of the price)", id=rid)
    return Request(rid, op, checked)


# -- replies -----------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """Dataclasses, enums and tuples to JSON values."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _default(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return str(value)


def encode(obj: Any) -> bytes:
    """One JSON line. Fast for what replies hold (str enums and tuples are JSON already);
    a value JSON cannot carry (NaN, infinity) becomes null rather than invalid JSON."""
    try:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_default)
    except ValueError:
        text = json.dumps(plain(obj), separators=(",", ":"), allow_nan=False)
    return text.encode() + b"\n"


class Encoded(str):
    """A result already encoded as JSON text (a large status, built from cached rows)."""


def ok(rid: Any, result: Any) -> bytes:
    if isinstance(result, Encoded):
        return f'{{"id":{json.dumps(rid)},"ok":true,"result":{result}}}\n'.encode()
    return encode({"id": rid, "ok": True, "result": result})


def error(rid: Any, exc: ApiError) -> bytes:
    return encode({"id": rid, "ok": False, "error": plain(exc.as_json())})


def event_line(rid: Any, event: Any) -> bytes:
    return encode({"id": rid, "event": event_json(event)})


def event_json(event: Any) -> dict[str, Any]:
    """An Event as the stream shows it: its schema version, seq, at, kind, symbol, then its data
    (supervisor/api/event_schema.py says what each kind holds)."""
    data = {k: plain(v) for k, v in event.data.items() if k not in COMMON}
    return {"schema": EVENTS_SCHEMA_VERSION, "seq": event.seq, "at": event.at, "kind": event.kind,
            "symbol": event.symbol, **data}
