"""Deployment configs for tests and benchmarks: the simulated venue (`demo_config`) and a
real-venue config pointed at an emulator (`bybit_config`)."""


from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.keys import E2E_KEY_ENV, E2E_SECRET_ENV

PRICES = {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0}


def toml_text(tables: dict[str, Any]) -> str:
    """TOML for {table: {key: value}}, in the order given; a list of tables is an array of tables."""
    lines: list[str] = []
    for name, body in tables.items():
        for table in body if isinstance(body, list) else [body]:
            lines.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def default_opens(names: list[str], prices: list[float]) -> list[dict[str, Any]]:
    """The first symbol long with a 2 % stop, the second (if any) short with a stop 1/30 above."""
    opens: list[dict[str, Any]] = [{"symbol": names[0], "side": "buy", "qty": 0.01, "stop_pct": 2.0}]
    if len(names) > 1:
        opens.append({"symbol": names[1], "side": "sell", "qty": 0.5, "stop": round(prices[1] * 31 / 30, 1)})
    return opens


def write_config(folder: Path, name: str, venue: dict[str, dict[str, Any]], prices: dict[str, float],
                 admin_port: int, *, names: list[str] | None = None,
                 opens: bool | list[dict[str, Any]] = True, tables: dict[str, Any] | None = None,
                 extra: str = "", logging: dict[str, Any] | None = None) -> Path:
    """`folder/name`: the venue's tables, then the deployment (`names`, by default the prices'
    symbols), risk, journal and logs under `var/`, the admin port, then `tables` (a dict merges
    into a table of the same name, a list is an array of tables), the `[[open]]`s, and `extra`
    (TOML text, appended as it is)."""
    names = list(names or prices)
    config: dict[str, Any] = {
        **venue,
        "deployment": {"symbols": names, "refresh_s": 0.2},
        "risk": {"max_notional": 100000.0},
        "journal": {"path": "var/journal.sqlite"},
        "admin": {"port": admin_port},
        "logging": {"file": "var/posguard.log", **(logging or {})},
    }
    for table, body in (tables or {}).items():
        config[table] = body if isinstance(body, list) else {**config.get(table, {}), **body}
    if "url" in config["journal"]:
        config["journal"].pop("path")                # a journal on PostgreSQL has no file
    if opens:
        config["open"] = default_opens(names, list(prices.values())) if opens is True else opens
    path = folder / name
    path.write_text(toml_text(config) + extra)
    return path


def demo_config(folder: Path, admin_port: int = 0, *, symbols: dict[str, float] | None = None, lag: float = 2.4,
                attached: bool = True, opens: bool | list[dict[str, Any]] = True, tables: dict[str, Any] | None = None,
                extra: str = "", name: str = "pg.toml") -> Path:
    """A simulated-venue config: BTCUSDT and ETHUSDT (`symbols`: {symbol: price}) by default,
    both opened at start. `tables` adds to or overrides any table, [venue.simulated] included."""
    prices = symbols or PRICES
    venue = {"venue": {"name": "simulated"},
             "venue.simulated": {"seed": 3, "position_lag_s": lag, "latency_s": 0.01, "attached_stops": attached,
                                 "orders_per_second": 100},
             "venue.simulated.prices": dict(prices)}
    return write_config(folder, name, venue, prices, admin_port, opens=opens, tables=tables, extra=extra)


def bybit_config(folder: Path, admin_port: int, api_port: int) -> Path:
    """A Bybit config for the project's emulator (`posguard emulator`, [emulator] at api_port, the
    incident's 24 s lag); keys from $PG_E2E_KEY / $PG_E2E_SECRET; BTCUSDT named in ccxt's form."""
    prices = PRICES
    venue = {"venue": {"name": "bybit", "api_url": f"http://127.0.0.1:{api_port}", "key_env": E2E_KEY_ENV,
                       "secret_env": E2E_SECRET_ENV},
             "emulator": {"seed": 3, "position_lag_s": 24.0, "latency_s": 0.01, "orders_per_second": 100},
             "emulator.prices": dict(prices)}
    return write_config(folder, "bybit.toml", venue, prices, admin_port, names=["BTC/USDT:USDT", "ETHUSDT"],
                        logging={"level": "DEBUG"})
