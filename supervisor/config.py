"""The deployment config (TOML): parsed once, checked fully, every problem named by its key.

Relative paths are resolved against the config file's folder, so `posguard run` and
`posguard status` agree on the journal and runtime files whatever the working directory.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from actors.logs import LogSettings
from actors.messages import PositionSettings, ProtectionSettings, SupervisionSettings
from adapters.base import Side
from adapters.faults import Fault, FaultKind
from adapters.sim_engine import EngineConfig
from adapters.sim_server import RemoteSimAdapter
from adapters.simulated import SimulatedAdapter, SimVenueConfig
from adapters.venue_settings import CCXT_VENUES, CcxtVenueSettings, venue_symbol
from supervisor.runtime import RuntimePaths

DEFAULT_CONFIG = "conf/demo.toml"
VENUES = ("simulated", *CCXT_VENUES)
WINDOW_MARGIN_S = 1.0                # "never arrived" window beyond the venue's recv window


class ConfigError(Exception):
    """A user mistake in the config; the message names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class OpenSpec:
    """A position the run opens at start-up."""

    symbol: str
    side: Side
    qty: float
    stop: float | None = None        # absolute stop price, or
    stop_pct: float | None = None    # distance from the current price, in percent


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    path: str
    venue: str
    symbols: tuple[str, ...]
    simulated: SimVenueConfig | None
    position: PositionSettings
    journal_path: str
    admin_port: int                              # thespian's admin (127.0.0.1, frames authenticated); 0: any free
    log: LogSettings
    opens: tuple[OpenSpec, ...] = field(default=())
    refresh_s: float = 1.0
    sim_server: str | None = None                # the simulated venue's socket, when `posguard venue` serves it
    runtime_dir: str = ""                        # API socket and venue socket (0700); default: the journal's folder
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    protection: ProtectionSettings | None = field(default_factory=ProtectionSettings)   # None: scan off
    metrics_port: int | None = None              # Prometheus on 127.0.0.1; None: off
    ccxt: CcxtVenueSettings | None = None        # a real venue (or a compatible emulator)
    emulator: SimVenueConfig | None = None       # `posguard emulator` serves this market at venue.api_url

    @property
    def paths(self) -> RuntimePaths:
        return RuntimePaths(self.journal_path, self.runtime_dir or os.path.dirname(self.journal_path))

    def adapter_factory(self, sim_server: str | None = None) -> Callable[[], Any]:
        """A picklable callable that builds the venue adapter inside the ExchangeActor's process."""
        if self.ccxt is not None:
            # Imported here so the CLI's other commands never load the adapter modules' deps.
            from adapters.binance import BinanceAdapter
            from adapters.bybit import BybitAdapter

            adapter = BybitAdapter if self.ccxt.name == "bybit" else BinanceAdapter
            return functools.partial(adapter, self.ccxt)
        assert self.simulated is not None
        server = sim_server or self.sim_server
        if server is not None:
            return functools.partial(RemoteSimAdapter, server)
        return functools.partial(SimulatedAdapter, self.simulated)


def load_config(path: str) -> DeploymentConfig:
    """Read and check the config; raises ConfigError naming the first bad key."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("--config", f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    t = _Table(raw, "")
    t.only("venue", "deployment", "position", "supervision", "protection", "journal", "admin", "logging", "open",
           "metrics", "emulator", "runtime")

    venue_t = t.table("venue")
    venue = venue_t.str("name")
    if venue not in VENUES:
        raise ConfigError("venue.name", f"unknown venue {venue!r}; this version supports: {', '.join(VENUES)}")
    if venue == "simulated":
        venue_t.only("name", "simulated")
    else:
        venue_t.only("name", "api_url", "testnet", "demo", "key_env", "secret_env", "attached_stop",
                     "orders_per_second", "reads_per_second", "timeout_s", "recv_window_ms", "streams", "ws_url")

    dep = t.table("deployment")
    dep.only("symbols", "refresh_s")
    symbols = [_symbol(s, f"deployment.symbols[{i}]") for i, s in enumerate(dep.list_of_str("symbols"))]
    if not symbols:
        raise ConfigError("deployment.symbols", "list at least one symbol")
    if len(set(symbols)) != len(symbols):
        raise ConfigError("deployment.symbols", "a symbol is listed twice")

    simulated = _simulated(venue_t.table("simulated"), symbols) if venue == "simulated" else None
    sim_server = _sim_server(venue_t.table("simulated"), base) if venue == "simulated" else None
    ccxt_venue = _ccxt_venue(venue_t, venue) if venue in CCXT_VENUES else None
    emulator = None
    if "emulator" in t.raw:
        if venue != "bybit" or ccxt_venue is None or not _is_loopback(ccxt_venue.api_url):
            raise ConfigError("emulator", "the Bybit emulator needs venue.name = \"bybit\" and a venue.api_url of"
                                          " http://127.0.0.1:PORT")
        emulator = _simulated(t.table("emulator"), symbols)

    position = _settings(t.table("position", required=False), PositionSettings, skip=("failpoints",),
                         strictly=True)
    supervision = _settings(t.table("supervision", required=False), SupervisionSettings)
    prot_t = t.table("protection", required=False)
    prot_t.only("enabled", "scan_s", "grace_s", "foreign_policy", "foreign_stop_pct")
    defaults = ProtectionSettings()
    protection = ProtectionSettings(
        scan_s=prot_t.num("scan_s", defaults.scan_s, minimum=0.0, strictly=True),
        grace_s=prot_t.num("grace_s", defaults.grace_s, minimum=0.0),
        foreign_policy=prot_t.choice("foreign_policy", ("protect", "close", "alert"), defaults.foreign_policy),
        foreign_stop_pct=prot_t.num("foreign_stop_pct", defaults.foreign_stop_pct, minimum=0.0, strictly=True,
                                    maximum=50.0))
    protection_on = prot_t.bool("enabled", True)
    lag = max((v.engine.position_lag_s for v in (simulated, emulator) if v is not None), default=0.0)
    if protection_on and protection.grace_s < lag:
        raise ConfigError("protection.grace_s", f"must be >= the venue's REST position lag ({lag} s), or the scan"
                                                " would act on positions its actors are handling")
    recv_window_s = (simulated.recv_window_s if simulated is not None
                     else ccxt_venue.recv_window_ms / 1000 if ccxt_venue is not None else 0.0)
    if position.entry_unknown_window_s < recv_window_s + WINDOW_MARGIN_S:
        # Below this, "not found" could be concluded while the order may still execute.
        raise ConfigError("position.entry_unknown_window_s",
                          f"must be >= the venue's recv window ({recv_window_s}) plus a margin"
                          f" ({WINDOW_MARGIN_S}): {recv_window_s + WINDOW_MARGIN_S}")

    metrics_t = t.table("metrics", required=False)
    metrics_t.only("port")
    metrics_port = metrics_t.int("port", 0, minimum=0, maximum=65535) or None

    journal_t = t.table("journal")
    journal_t.only("path")
    admin_t = t.table("admin", required=False)
    admin_t.only("port")
    runtime_t = t.table("runtime", required=False)
    runtime_t.only("dir")
    runtime_dir = runtime_t.str("dir", "")
    log_t = t.table("logging", required=False)
    log_t.only("file", "level", "stderr_level", "json")
    levels = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
    log_file = log_t.str("file", "")
    log = LogSettings(
        file=_resolve(base, log_file) if log_file else None,
        level=log_t.choice("level", levels, "INFO"),
        stderr_level=log_t.choice("stderr_level", levels, "WARNING"),
        json=log_t.bool("json", False))

    opens = tuple(_open_spec(_Table(item, f"open[{i}]"), symbols) for i, item in enumerate(t.array("open")))
    return DeploymentConfig(
        path=os.path.abspath(path), venue=venue, symbols=tuple(symbols), simulated=simulated, sim_server=sim_server,
        ccxt=ccxt_venue, emulator=emulator,
        position=position,
        journal_path=_resolve(base, journal_t.str("path")),
        admin_port=admin_t.int("port", 0, minimum=0, maximum=65535) or 0,
        runtime_dir=_resolve(base, runtime_dir) if runtime_dir else "",
        log=log, opens=opens, refresh_s=dep.num("refresh_s", 1.0, minimum=0.05), supervision=supervision,
        protection=protection if protection_on else None, metrics_port=metrics_port)


def _simulated(t: _Table, symbols: list[str]) -> SimVenueConfig:
    t.only("seed", "position_lag_s", "latency_s", "attached_stops", "orders_per_second", "ack_only",
           "volatility", "tick_s", "prices", "faults", "server", "recv_window_s", "streams")
    prices_t = t.table("prices")
    prices = {s: prices_t.num(s, minimum=0.0, strictly=True) for s in prices_t.raw}
    for s in symbols:
        if s not in prices:
            raise ConfigError(f"venue.simulated.prices.{s}", "deployment symbol has no simulated price")
    faults = []
    for i, item in enumerate(t.array("faults")):
        f = _Table(item, f"venue.simulated.faults[{i}]")
        f.only("op", "kind", "times", "skip", "symbol", "code", "message", "delay_s")
        faults.append(Fault(
            op=f.choice("op", ("create_order", "set_stop", "fetch_order", "fetch_positions", "*")),
            kind=FaultKind(f.choice("kind", tuple(k.value for k in FaultKind))),
            times=f.int("times", 1, minimum=1), skip=f.int("skip", 0, minimum=0),
            symbol=f.str("symbol", "") or None, code=f.int("code", 10016), message=f.str("message", "Server Timeout"),
            delay_s=f.num("delay_s", 0.0, minimum=0.0)))
    engine = EngineConfig(
        seed=t.int("seed", 1), prices=prices, position_lag_s=t.num("position_lag_s", 0.0, minimum=0.0),
        tick_s=t.num("tick_s", 0.05, minimum=0.001), volatility=t.num("volatility", 0.0002, minimum=0.0))
    return SimVenueConfig(
        engine=engine, attached_stops=t.bool("attached_stops", True), latency_s=t.num("latency_s", 0.0, minimum=0.0),
        orders_per_second=t.num("orders_per_second", 10.0, minimum=0.0, strictly=True),
        ack_only=t.bool("ack_only", False), faults=tuple(faults),
        recv_window_s=t.num("recv_window_s", 5.0, minimum=0.0, strictly=True), streams=t.bool("streams", True))


def _is_loopback(url: str | None) -> bool:
    return bool(url and re.match(r"^http://(127\.0\.0\.1|localhost):\d+$", url))


def emulator_port(cfg: DeploymentConfig) -> int:
    assert cfg.ccxt is not None and cfg.ccxt.api_url is not None
    return int(cfg.ccxt.api_url.rsplit(":", 1)[1])


def _symbol(text: str, key: str) -> str:
    try:
        return venue_symbol(text)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _ccxt_venue(t: _Table, name: str) -> CcxtVenueSettings:
    """`[venue]` of a real venue. Only the *names* of the key variables live in the config."""
    api_url = t.str("api_url", "") or None
    if api_url is not None:
        if not re.match(r"^https?://[^\s/]+(:\d+)?/?$", api_url):
            raise ConfigError("venue.api_url", f"must be a base URL like https://api.bybit.com, got {api_url!r}")
        api_url = api_url.rstrip("/")
    testnet, demo = t.bool("testnet", False), t.bool("demo", False)
    if testnet and demo:
        raise ConfigError("venue.demo", "choose testnet or demo trading, not both")
    env_name = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
    names = {}
    for key in ("key_env", "secret_env"):
        value = t.str(key)
        if not env_name.match(value):
            raise ConfigError(f"venue.{key}", f"must name an environment variable (like BYBIT_API_KEY), got {value!r}")
        names[key] = value
    attached = t.bool("attached_stop", name == "bybit")
    if attached and name != "bybit":
        raise ConfigError("venue.attached_stop", f"{name} cannot attach a stop loss to a market entry")
    return CcxtVenueSettings(
        name=name, api_url=api_url, testnet=testnet, demo=demo, attached_stop=attached, **names,
        orders_per_second=t.num("orders_per_second", 10.0, minimum=0.0, strictly=True),
        reads_per_second=t.num("reads_per_second", 20.0, minimum=0.0, strictly=True),
        timeout_s=t.num("timeout_s", 10.0, minimum=0.0, strictly=True, maximum=60.0),
        recv_window_ms=t.int("recv_window_ms", 5000, minimum=100, maximum=60000),
        streams=t.bool("streams", True), ws_url=_ws_url(t))


def _ws_url(t: _Table) -> str | None:
    url = t.str("ws_url", "") or None
    if url is not None and not re.match(r"^wss?://[^\s/]+(:\d+)?/?$", url):
        raise ConfigError("venue.ws_url", f"must be a base URL like wss://stream.bybit.com, got {url!r}")
    return url.rstrip("/") if url else None


def _settings(t: _Table, cls: type, skip: tuple[str, ...] = (), strictly: bool = False) -> Any:
    """A settings dataclass from a table: every key optional (defaults), numbers checked."""
    names = [f.name for f in fields(cls) if f.name not in skip]   # skipped: not for operators (crash tests)
    t.only(*names)
    defaults = cls()
    return cls(**{n: (t.int(n, getattr(defaults, n), minimum=1) if isinstance(getattr(defaults, n), int)
                      else t.num(n, getattr(defaults, n), minimum=0.0, strictly=strictly)) for n in names})


def _sim_server(t: _Table, base: str) -> str | None:
    """`server = "PATH"`: the simulated venue runs in its own process (`posguard venue`) and
    serves this Unix socket (relative to the config file)."""
    text = t.str("server", "")
    return _resolve(base, text) if text else None


def _open_spec(t: _Table, symbols: list[str]) -> OpenSpec:
    t.only("symbol", "side", "qty", "stop", "stop_pct")
    symbol = _symbol(t.str("symbol"), f"{t.path}.symbol")
    if symbol not in symbols:
        raise ConfigError(f"{t.path}.symbol", f"{symbol!r} is not in deployment.symbols")
    stop = t.num("stop", None, minimum=0.0, strictly=True)
    stop_pct = t.num("stop_pct", None, minimum=0.0, strictly=True, maximum=100.0)
    if (stop is None) == (stop_pct is None):
        raise ConfigError(f"{t.path}", "give exactly one of stop (a price) or stop_pct (percent from entry)")
    return OpenSpec(symbol, Side(t.choice("side", ("buy", "sell"))), t.num("qty", minimum=0.0, strictly=True),
                    stop, stop_pct)


def _resolve(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


_MISSING = object()


class _Table:
    """Typed access to one TOML table; every error names the full key."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(path or "config", "must be a table")
        self.raw, self.path = raw, path

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def only(self, *allowed: str) -> None:
        for key in self.raw:
            if key not in allowed:
                raise ConfigError(self._key(key), f"unknown key (expected one of: {', '.join(allowed)})")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.raw:
            return self.raw[key]
        if default is _MISSING:
            raise ConfigError(self._key(key), "missing")
        return default

    def table(self, key: str, required: bool = True) -> _Table:
        value = self._get(key, _MISSING if required else {})
        return _Table(value, self._key(key))

    def array(self, key: str) -> list[Any]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise ConfigError(self._key(key), "must be an array of tables ([[...]])")
        return value

    def str(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise ConfigError(self._key(key), f"must be a string, got {value!r}")
        return value

    def list_of_str(self, key: str) -> list[str]:
        value = self._get(key, _MISSING)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(self._key(key), "must be a list of non-empty strings")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.str(key, default)
        if value not in options:
            raise ConfigError(self._key(key), f"must be one of {', '.join(options)}; got {value!r}")
        return value

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self._key(key), f"must be true or false, got {value!r}")
        return value

    def num(self, key: str, default: Any = _MISSING, *, minimum: float | None = None, maximum: float | None = None,
            strictly: bool = False) -> Any:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(self._key(key), f"must be a number, got {value!r}")
        if minimum is not None and (value <= minimum if strictly else value < minimum):
            raise ConfigError(self._key(key), f"must be {'>' if strictly else '>='} {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(self._key(key), f"must be <= {maximum}, got {value}")
        return float(value)

    def int(self, key: str, default: Any = _MISSING, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self._key(key), f"must be a whole number, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(self._key(key), f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(self._key(key), f"must be <= {maximum}, got {value}")
        return value
