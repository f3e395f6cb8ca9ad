"""What the Supervisor starts and tells each child to start with: the deployment's child specs
(in start order), and each kind's Configure message, from the deployment's spec and the
addresses of the children already up. Plain functions; the actor sends what they build."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.exchange.actor import ExchangeActor
from actors.journal.actor import JournalActor
from actors.messages import (
    ConfigureApi,
    ConfigureExchange,
    ConfigureJournal,
    ConfigurePosition,
    ConfigureProtection,
    ConfigureStream,
    PositionSnapshot,
    StartDeployment,
)
from actors.position.actor import PositionActor
from actors.protection import ProtectionActor
from actors.settings import RiskLimits
from adapters.base import Capabilities
from supervisor.api.actor import ApiActor
from supervisor.children import Child
from supervisor.specs import ChildKind, ChildSpec, position_specs, symbols_per_process


def deployment_specs(msg: StartDeployment) -> list[ChildSpec]:
    """The journal first, then the exchange, the API, the positions and the protection scan;
    the stream is added once the exchange says the venue has one."""
    J, X = ChildKind.JOURNAL, ChildKind.EXCHANGE  # noqa: N806
    specs = [ChildSpec(J, J, JournalActor), ChildSpec(X, X, ExchangeActor, after=(J,))]
    if msg.control is not None:
        specs.append(ChildSpec(ChildKind.API, ChildKind.API, ApiActor, after=(J,)))
    per_process = symbols_per_process(msg.supervision.symbols_per_process, len(msg.symbols))
    specs += position_specs(msg.symbols, per_process, PositionActor, after=(J, X))
    if msg.protection is not None:
        specs.append(ChildSpec(ChildKind.PROTECTION, ChildKind.PROTECTION, ProtectionActor, after=(X,)))
    return specs


def on_demand_spec(symbol: str) -> ChildSpec:
    """A PositionActor for a symbol outside the deployment (a foreign position, leftover stops)."""
    return ChildSpec(f"position:{symbol}", ChildKind.POSITIONS, PositionActor,
                     after=(ChildKind.JOURNAL, ChildKind.EXCHANGE), symbols=(symbol,))


def risk_of(spec: StartDeployment, symbol: str) -> RiskLimits | None:
    if spec.risk is None:
        return None
    limits = dict(spec.risk)
    return limits.get(symbol, limits.get("*"))


@dataclass(frozen=True, slots=True)
class Context:
    """What a Configure message is built from beside the child itself."""

    spec: StartDeployment
    capabilities: Capabilities | None
    at: Callable[[str], Any]                 # a child's address by id (None while down)
    routes: tuple[tuple[str, Any], ...]
    supervisor: Any                          # our own address
    deployed: bool
    safe_mode: str | None                    # why, when on
    snapshots: tuple[PositionSnapshot, ...]
    holder: dict[str, Any] | None            # what the deployment lock says of us (with a control plane)


def configure(child: Child, c: Context) -> Any:
    return CONFIGURE[child.kind](child, c)


def _journal(child: Child, c: Context) -> Any:
    return ConfigureJournal(c.spec.journal_path, watch=c.spec.watch, account=c.spec.account,
                            password_file=c.spec.password_file, lease=c.spec.lease)


def _exchange(child: Child, c: Context) -> Any:
    return ConfigureExchange(c.spec.adapter_factory, watch=c.spec.watch, symbols=c.spec.symbols, persist=c.deployed,
                             stages=True)


def _api(child: Child, c: Context) -> Any:
    assert c.spec.control is not None and c.holder is not None
    control = c.spec.control
    return ConfigureApi(control.socket_path, c.supervisor, c.at(ChildKind.JOURNAL), c.spec.symbols, c.holder,
                        dashboard_port=control.dashboard_port, token_path=control.token_path,
                        page_required=not c.deployed)


def _positions(child: Child, c: Context) -> Any:
    assert c.capabilities is not None
    symbols = child.spec.symbols
    risk = tuple((s, limits) for s in symbols if (limits := risk_of(c.spec, s)) is not None)
    return ConfigurePosition(symbols, c.at(ChildKind.EXCHANGE), c.at(ChildKind.JOURNAL), c.capabilities,
                             c.spec.settings, observer=c.supervisor, safe_mode=c.safe_mode, risk=risk,
                             epoch=c.spec.lease.epoch if c.spec.lease is not None else 0)


def _protection(child: Child, c: Context) -> Any:
    assert c.spec.protection is not None and c.capabilities is not None
    return ConfigureProtection(c.at(ChildKind.EXCHANGE), c.spec.symbols, c.spec.protection, c.snapshots,
                               stop_orders=c.capabilities.stop_orders, stream_grace_s=c.spec.stream.grace_s)


def _stream(child: Child, c: Context) -> Any:
    assert c.capabilities is not None
    return ConfigureStream(c.at(ChildKind.EXCHANGE), c.at(ChildKind.PROTECTION), c.routes, c.spec.stream,
                           name=f"{c.capabilities.venue} private")


CONFIGURE: dict[ChildKind, Callable[[Child, Context], Any]] = {
    ChildKind.JOURNAL: _journal, ChildKind.EXCHANGE: _exchange, ChildKind.API: _api,
    ChildKind.POSITIONS: _positions, ChildKind.PROTECTION: _protection, ChildKind.STREAM: _stream,
}
