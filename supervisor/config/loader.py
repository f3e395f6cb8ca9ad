"""The deployment config (TOML): parsed once, checked fully, every problem named by its key.

Checked by pydantic v2 schemas built from the settings dataclasses (supervisor/config/schema.py):
each default and each bound lives once, beside its field. Then the rules between fields (a
grace at least the venue's lag, ports that differ, ...). Every problem is one line naming its
dotted key and what would be accepted; all of them are reported together.

Relative paths are resolved against the config file's folder, so `posguard run` and
`posguard status` agree on the journal and runtime files whatever the working directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, create_model

from actors.logs import LogSettings
from actors.settings import (
    LeaseSettings,
    PositionSettings,
    ProtectionSettings,
    RiskLimits,
    StreamSettings,
    SupervisionSettings,
)
from adapters.base import Side
from adapters.bounds import Percent, Price, Quantity, Text
from adapters.ccxt.settings import CcxtVenueSettings, venue_symbol
from adapters.emulators.account import EmulatorAccount
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault
from adapters.venues import VENUES, adapter_factory
from supervisor.config.schema import STRICT, build, model_of, strict
from supervisor.config.sections import (
    DeploymentSection,
    JournalSection,
    PortSection,
    RuntimeSection,
    VenueSection,
    check_journal,
)
from supervisor.host.runtime import RuntimePaths

WINDOW_MARGIN_S = 1.0                # "never arrived" window beyond the venue's recv window
MAX_SYMBOLS = 2000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HTTP_URL = re.compile(r"^https?://[^\s/]+(:\d+)?/?$")
_WS_URL = re.compile(r"^wss?://[^\s/]+(:\d+)?/?$")


class ConfigError(Exception):
    """User mistakes in the config: one line per problem, each naming its key."""

    def __init__(self, problems: list[str] | str, problem: str | None = None) -> None:
        if isinstance(problems, str):                    # ConfigError(key, problem)
            problems = [f"{problems}: {problem}" if problem is not None else problems]
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class OpenSpec:
    """A position the run opens at start-up."""

    symbol: Text
    side: Literal["buy", "sell"]
    qty: Quantity
    stop: Price | None = None                    # absolute stop price, or
    stop_pct: Percent[50.0] | None = None        # distance from the current price, in percent


def _merged(name: str, *models: type[BaseModel], **extra: Any) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for model in models:
        for key, info in model.model_fields.items():
            fields[key] = (info.annotation if not info.metadata else _annotated(info), info.default)
    fields.update(extra)
    return create_model(name, __config__=STRICT, **fields)


def _annotated(info: Any) -> Any:
    from typing import Annotated

    return Annotated[(info.annotation, *info.metadata)]


SIMULATED = _merged("SimulatedVenue", model_of(EngineConfig), model_of(SimVenueConfig, skip=("engine", "faults")),
                    faults=(tuple[model_of(Fault), ...], ()), server=(strict(Text | None), None))
CCXT = _merged("CcxtVenue", model_of(VenueSection), model_of(CcxtVenueSettings, skip=("name",)))
PROTECTION = _merged("Protection", model_of(ProtectionSettings), enabled=(strict(bool), True))
RISK_OVERRIDE = model_of(RiskLimits)
RISK = _merged("Risk", model_of(RiskLimits), symbols=(dict[str, RISK_OVERRIDE], {}))
SECTIONS: dict[str, type[BaseModel]] = {
    "deployment": model_of(DeploymentSection), "position": model_of(PositionSettings),
    "supervision": model_of(SupervisionSettings), "protection": PROTECTION, "stream": model_of(StreamSettings),
    "journal": model_of(JournalSection), "runtime": model_of(RuntimeSection), "admin": model_of(PortSection),
    "metrics": model_of(PortSection), "dashboard": model_of(PortSection), "logging": model_of(LogSettings),
    "risk": RISK, "lease": model_of(LeaseSettings),
    "emulator": _merged("Emulator", SIMULATED, model_of(EmulatorAccount)),
}


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
    dashboard_port: int | None = None            # the live page on 127.0.0.1 (behind a token); None: off
    ccxt: CcxtVenueSettings | None = None        # a real venue (or a compatible emulator)
    emulator: SimVenueConfig | None = None       # `posguard emulator` serves this market at venue.api_url
    emulator_account: EmulatorAccount = field(default_factory=EmulatorAccount)   # ... and plays this account
    stream: StreamSettings = field(default_factory=StreamSettings)
    risk: tuple[tuple[str, RiskLimits], ...] = (("*", RiskLimits()),)   # per symbol; "*": every other
    journal_url: str = ""                        # the journal on PostgreSQL (then journal_path is "")
    account: str = "default"
    password_file: str | None = None
    lease: LeaseSettings = field(default_factory=LeaseSettings)

    @property
    def paths(self) -> RuntimePaths:
        return RuntimePaths(self.journal_path, self.runtime_dir or os.path.dirname(self.journal_path))

    @property
    def journal(self) -> str:
        """What the journal actor opens: the SQLite file, or the PostgreSQL URL."""
        return self.journal_url or self.journal_path

    @property
    def journal_name(self) -> str:
        """The journal as a person (and a log line) may see it: never a password."""
        if not self.journal_url:
            return self.journal_path
        from actors.journal.postgres import safe_url

        return f"{safe_url(self.journal_url)} (account {self.account})"

    def adapter_factory(self, sim_server: str | None = None) -> Callable[[], Any]:
        """A picklable callable that builds the venue adapter inside the ExchangeActor's process."""
        return adapter_factory(self.venue, self.ccxt or self.simulated, sim_server or self.sim_server)

    def limits(self, symbol: str) -> RiskLimits:
        table = dict(self.risk)
        return table.get(symbol, table["*"])


# -- loading --------------------------------------------------------------------------------------


def load_config(path: str) -> DeploymentConfig:
    """Read and check the config; raises ConfigError listing every problem, one line each."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("--config", f"no such file: {path}") from None
    except OSError as exc:
        raise ConfigError("--config", f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    return _Loader(raw, os.path.dirname(os.path.abspath(path)), os.path.abspath(path)).load()


class _Loader:
    def __init__(self, raw: dict[str, Any], base: str, path: str) -> None:
        self.raw, self.base, self.path = raw, base, path
        self.problems: list[str] = []

    def fail(self, key: str, problem: str) -> None:
        self.problems.append(f"{key}: {problem}")

    def section(self, name: str, required: bool = False) -> Any:
        raw = self.raw.get(name)
        if raw is None:
            if required:
                self.fail(name, "missing")
            raw = {}
        if not isinstance(raw, dict):
            self.fail(name, "must be a table")
            return None
        return build(SECTIONS[name], raw, name, self.problems)

    def load(self) -> DeploymentConfig:
        allowed = {*SECTIONS, "venue", "open"}
        for key in self.raw:
            if key not in allowed:
                self.fail(key, f"unknown section (expected one of: {', '.join(sorted(allowed))})")
        sections = {name: self.section(name, required=name in ("deployment", "journal")) for name in SECTIONS
                    if name != "emulator" or name in self.raw}
        symbols = self._symbols(sections["deployment"])
        venue, simulated, ccxt, sim_server = self._venue(symbols)
        emulator = self._emulator(sections.get("emulator"), venue, ccxt, symbols)
        opens = self._opens(symbols)
        risk = self._risk(sections["risk"], symbols)
        if not self.problems:
            self._cross(sections, simulated, emulator, ccxt, opens, risk)
        if self.problems:
            raise ConfigError(self.problems)
        s = sections
        journal, runtime = s["journal"].path, s["runtime"].dir
        url, password_file = s["journal"].url, s["journal"].password_file
        log = LogSettings(**s["logging"].model_dump())
        if log.file:
            log = dataclasses.replace(log, file=_resolve(self.base, log.file))
        protection = s["protection"].model_dump()
        return DeploymentConfig(
            path=self.path, venue=venue, symbols=symbols, simulated=simulated, sim_server=sim_server, ccxt=ccxt,
            emulator=emulator, emulator_account=self._account(sections.get("emulator")),
            position=PositionSettings(**s["position"].model_dump()),
            journal_path=_resolve(self.base, journal) if journal else "", admin_port=s["admin"].port, log=log,
            opens=opens,
            refresh_s=s["deployment"].refresh_s, runtime_dir=_resolve(self.base, runtime) if runtime else "",
            supervision=SupervisionSettings(**s["supervision"].model_dump()),
            protection=ProtectionSettings(**{k: v for k, v in protection.items() if k != "enabled"})
            if protection["enabled"] else None,
            metrics_port=s["metrics"].port or None, dashboard_port=s["dashboard"].port or None,
            stream=StreamSettings(**s["stream"].model_dump()), risk=risk,
            journal_url=url, account=s["journal"].account, lease=LeaseSettings(**s["lease"].model_dump()),
            password_file=_resolve(self.base, password_file) if password_file else None)

    # -- pieces --------------------------------------------------------------------------------

    def _symbols(self, deployment: Any) -> tuple[str, ...]:
        if deployment is None:
            return ()
        out = []
        for i, text in enumerate(deployment.symbols):
            try:
                out.append(venue_symbol(text))
            except ValueError as exc:
                self.fail(f"deployment.symbols[{i}]", str(exc))
        if not deployment.symbols:
            self.fail("deployment.symbols", "list at least one symbol")
        elif len(out) > MAX_SYMBOLS:
            self.fail("deployment.symbols", f"at most {MAX_SYMBOLS} symbols, got {len(out)}")
        elif len(set(out)) != len(out):
            self.fail("deployment.symbols", "a symbol is listed twice")
        return tuple(out)

    def _venue(self, symbols: tuple[str, ...]) -> tuple[str, SimVenueConfig | None, CcxtVenueSettings | None,
                                                        str | None]:
        raw = self.raw.get("venue")
        if not isinstance(raw, dict):
            self.fail("venue", "missing" if raw is None else "must be a table")
            return "", None, None, None
        name = raw.get("name")
        if name not in VENUES:
            self.fail("venue.name", f"unknown venue {name!r}; this version supports: {', '.join(VENUES)}")
            return "", None, None, None
        if name == "simulated":
            extra = set(raw) - {"name", "simulated"}
            for key in sorted(extra):
                self.fail(f"venue.{key}", "unknown key for the simulated venue (expected: name, simulated)")
            sim = self._simulated(raw.get("simulated", {}), "venue.simulated", symbols)
            server = (sim.server if sim is not None else None) or None
            return name, self._sim_config(sim), None, _resolve(self.base, server) if server else None
        if "simulated" in raw:
            self.fail("venue.simulated", f"only for venue.name = \"simulated\", not {name!r}")
            return name, None, None, None
        model = build(CCXT, raw, "venue", self.problems)
        if model is None:
            return name, None, None, None
        settings = CcxtVenueSettings(**{k: v for k, v in model.model_dump().items()})
        for key in ("key_env", "secret_env"):
            if not _ENV_NAME.match(getattr(settings, key)):
                self.fail(f"venue.{key}", f"must name an environment variable (like BYBIT_API_KEY),"
                                          f" got {getattr(settings, key)!r}")
        if settings.api_url is not None and not _HTTP_URL.match(settings.api_url):
            self.fail("venue.api_url", f"must be a base URL like https://api.bybit.com, got {settings.api_url!r}")
        if settings.ws_url is not None and not _WS_URL.match(settings.ws_url):
            self.fail("venue.ws_url", f"must be a base URL like wss://stream.bybit.com, got {settings.ws_url!r}")
        if settings.testnet and settings.demo:
            self.fail("venue.demo", "choose testnet or demo trading, not both")
        attached = raw.get("attached_stop", VENUES[name].attached_stop)      # by default where the venue can
        if attached and not VENUES[name].attached_stop:
            self.fail("venue.attached_stop", f"{name} cannot attach a stop loss to a market entry")
        settings = dataclasses.replace(settings, attached_stop=bool(attached),
                                       api_url=settings.api_url.rstrip("/") if settings.api_url else None,
                                       ws_url=settings.ws_url.rstrip("/") if settings.ws_url else None)
        return name, None, settings, None

    def _simulated(self, raw: Any, key: str, symbols: tuple[str, ...]) -> Any:
        if not isinstance(raw, dict):
            self.fail(key, "must be a table")
            return None
        sim = build(SIMULATED, raw, key, self.problems)
        if sim is not None:
            for s in symbols:
                if s not in sim.prices:
                    self.fail(f"{key}.prices.{s}", "deployment symbol has no simulated price")
        return sim

    @staticmethod
    def _sim_config(sim: Any) -> SimVenueConfig | None:
        if sim is None:
            return None
        values = sim.model_dump()
        engine = EngineConfig(**{k: values[k] for k in model_of(EngineConfig).model_fields})
        venue = {k: values[k] for k in model_of(SimVenueConfig, skip=("engine", "faults")).model_fields}
        return SimVenueConfig(engine=engine, faults=tuple(Fault(**f) for f in values["faults"]), **venue)

    def _emulator(self, section: Any, venue: str, ccxt: CcxtVenueSettings | None,
                  symbols: tuple[str, ...]) -> SimVenueConfig | None:
        if "emulator" not in self.raw:
            return None
        if venue == "bybit" and ccxt is None:
            return None                                  # [venue] has its own problems, said already
        if venue != "bybit" or ccxt is None or not _is_loopback(ccxt.api_url):
            self.fail("emulator", "the Bybit emulator needs venue.name = \"bybit\" and a venue.api_url of"
                                  " http://127.0.0.1:PORT")
            return None
        if section is not None:
            for s in symbols:
                if s not in section.prices:
                    self.fail(f"emulator.prices.{s}", "deployment symbol has no emulated price")
        return self._sim_config(section)

    @staticmethod
    def _account(section: Any) -> EmulatorAccount:
        if section is None:
            return EmulatorAccount()
        values = section.model_dump()
        return EmulatorAccount(**{k: values[k] for k in model_of(EmulatorAccount).model_fields})

    def _opens(self, symbols: tuple[str, ...]) -> tuple[OpenSpec, ...]:
        raw = self.raw.get("open", [])
        if not isinstance(raw, list):
            self.fail("open", "must be an array of tables ([[open]])")
            return ()
        out = []
        for i, item in enumerate(raw):
            key = f"open[{i}]"
            spec = build(model_of(OpenSpec), item, key, self.problems) if isinstance(item, dict) else None
            if not isinstance(item, dict):
                self.fail(key, "must be a table")
            if spec is None:
                continue
            try:
                symbol = venue_symbol(spec.symbol)
            except ValueError as exc:
                self.fail(f"{key}.symbol", str(exc))
                continue
            if symbol not in symbols:
                self.fail(f"{key}.symbol", f"{symbol!r} is not in deployment.symbols")
            if (spec.stop is None) == (spec.stop_pct is None):
                self.fail(key, "give exactly one of stop (a price) or stop_pct (percent from the price)")
            out.append(OpenSpec(symbol, Side(spec.side), spec.qty, spec.stop, spec.stop_pct))
        return tuple(out)

    def _risk(self, section: Any, symbols: tuple[str, ...]) -> tuple[tuple[str, RiskLimits], ...]:
        if section is None:
            return (("*", RiskLimits()),)
        default = RiskLimits(**{k: v for k, v in section.model_dump().items() if k != "symbols"})
        out = [("*", default)]
        for text, override in section.symbols.items():
            try:
                symbol = venue_symbol(text)
            except ValueError as exc:
                self.fail(f"risk.symbols.{text}", str(exc))
                continue
            if symbol not in symbols:
                self.fail(f"risk.symbols.{text}", f"{symbol!r} is not in deployment.symbols")
            given = override.model_dump(include=override.model_fields_set)
            out.append((symbol, dataclasses.replace(default, **given)))   # what it does not say: the default's
        return tuple(out)

    def _cross(self, s: dict[str, Any], simulated: SimVenueConfig | None, emulator: SimVenueConfig | None,
               ccxt: CcxtVenueSettings | None, opens: tuple[OpenSpec, ...],
               risk: tuple[tuple[str, RiskLimits], ...]) -> None:
        """The rules between fields."""
        position, supervision, protection, stream = s["position"], s["supervision"], s["protection"], s["stream"]
        check_journal(self.fail, s["journal"], s["runtime"], s["lease"])
        lag = max((v.engine.position_lag_s for v in (simulated, emulator) if v is not None), default=0.0)
        if protection.enabled and protection.grace_s < lag:
            self.fail("protection.grace_s", f"must be >= the venue's REST position lag ({lag} s), or the scan would"
                                            " act on positions its actors are handling")
        recv = simulated.recv_window_s if simulated is not None else ccxt.recv_window_ms / 1000 if ccxt else 0.0
        if position.entry_unknown_window_s < recv + WINDOW_MARGIN_S:
            self.fail("position.entry_unknown_window_s", f"must be >= the venue's recv window ({recv}) plus a"
                                                         f" margin ({WINDOW_MARGIN_S}): {recv + WINDOW_MARGIN_S}")
        if supervision.heartbeat_timeout_s <= supervision.heartbeat_s:
            self.fail("supervision.heartbeat_timeout_s", f"must be more than supervision.heartbeat_s"
                                                         f" ({supervision.heartbeat_s}): a child needs time to answer")
        for name, section in (("supervision", supervision), ("stream", stream)):
            if section.backoff_cap_s < section.backoff_s:
                self.fail(f"{name}.backoff_cap_s", f"must be >= {name}.backoff_s ({section.backoff_s})")
        if position.retry_cap_s < position.retry_s:
            self.fail("position.retry_cap_s", f"must be >= position.retry_s ({position.retry_s})")
        if position.reply_timeout_s <= position.poll_s:
            self.fail("position.reply_timeout_s", f"must be more than position.poll_s ({position.poll_s})")
        ports = {"admin.port": s["admin"].port, "metrics.port": s["metrics"].port,
                 "dashboard.port": s["dashboard"].port}
        if ccxt is not None and emulator is not None and ccxt.api_url:
            ports["venue.api_url"] = int(ccxt.api_url.rsplit(":", 1)[1])
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port and port in seen:
                self.fail(key, f"port {port} is {seen[port]} already: each needs its own")
            elif port:
                seen[port] = key
            if port and port < 1024 and key != "venue.api_url":
                self.fail(key, f"must be 0 (any free port / off) or from 1024 to 65535, got {port}")
        limits = dict(risk)
        for i, spec in enumerate(opens):
            mine = limits.get(spec.symbol, limits["*"])
            if mine.max_qty is not None and spec.qty > mine.max_qty:
                self.fail(f"open[{i}].qty", f"{spec.qty:g} is above the risk limit max_qty {mine.max_qty:g}")
            if spec.stop_pct is not None and spec.stop_pct > mine.max_stop_distance_pct:
                self.fail(f"open[{i}].stop_pct", f"{spec.stop_pct:g}% is above the risk limit max_stop_distance_pct"
                                                 f" {mine.max_stop_distance_pct:g}%")


def _is_loopback(url: str | None) -> bool:
    return bool(url and re.match(r"^http://(127\.0\.0\.1|localhost):\d+$", url))


def emulator_port(cfg: DeploymentConfig) -> int:
    assert cfg.ccxt is not None and cfg.ccxt.api_url is not None
    return int(cfg.ccxt.api_url.rsplit(":", 1)[1])


def _resolve(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))
