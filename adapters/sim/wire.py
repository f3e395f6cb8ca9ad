"""The simulated venue's wire: one JSON object per line over a Unix socket, each value a
dataclass or enum made plain (`encode`) and read back (`order_report`, ...)."""

from __future__ import annotations

from dataclasses import asdict
from enum import Enum
from typing import Any

from adapters.base import OrderReport, OrderStatus, PositionReport, Side, StopOrderReport
from adapters.sim.truth import TruePosition, TrueState

LOOPBACK = "127.0.0.1"


def plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def encode(obj: Any) -> Any:
    """Dataclasses and enums to JSON-able data."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, list | tuple):
        return [encode(o) for o in obj]
    return plain(asdict(obj))


def order_report(d: dict[str, Any]) -> OrderReport:
    return OrderReport(**{**d, "side": Side(d["side"]), "status": OrderStatus(d["status"])})


def position_report(d: dict[str, Any]) -> PositionReport:
    return PositionReport(**{**d, "side": Side(d["side"]), "stop_prices": tuple(d.get("stop_prices") or ())})


def stop_order_report(d: dict[str, Any]) -> StopOrderReport:
    return StopOrderReport(**{**d, "side": Side(d["side"])})


def true_state_of(d: dict[str, Any]) -> TrueState:
    return TrueState(now=d["now"], prices=d["prices"], positions=tuple(TruePosition(**p) for p in d["positions"]),
                     orders=tuple(order_report(o) for o in d["orders"]),
                     calls=tuple((op, n) for op, n in d["calls"]))


def encode_args(args: dict[str, Any]) -> dict[str, Any]:
    return {k: encode(v) for k, v in args.items()}
