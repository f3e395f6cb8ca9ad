"""Starting, supervising and stopping the deployment's actors: configure, ready, heartbeat,
failed, restart, safe mode."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.messages.base import id_field, ts_field
from actors.messages.commands import PositionSnapshot
from actors.settings import (
    ControlPlane,
    LeaseGrant,
    PositionSettings,
    ProtectionSettings,
    RiskLimits,
    StreamSettings,
    SupervisionSettings,
)
from adapters.base import Capabilities


@dataclass(frozen=True, slots=True)
class ConfigureJournal:
    """Open (and migrate) the journal database."""

    path: str                            # a SQLite file, or a postgresql:// URL (no password in it)
    watch: bool = True                   # False on bases without ThespianWatch (tests): poll instead
    account: str = "default"             # on PostgreSQL: the account's schema and lease
    password_file: str | None = None     # on PostgreSQL: a 0600 file (else PGPASSWORD)
    lease: LeaseGrant | None = None      # on PostgreSQL: the lease every write is fenced on


@dataclass(frozen=True, slots=True)
class JournalReady:
    """The journal is open at this schema version."""

    schema_version: int
    pid: int = field(default_factory=os.getpid)
    safe_mode_reason: str | None = None  # safe mode the journal holds from an earlier run (None: off)


@dataclass(frozen=True, slots=True)
class JournalSafeMode:
    """Safe mode on or off, kept in the journal so that a restart of the whole program keeps it."""

    on: bool
    reason: str
    at: float = ts_field()


@dataclass(frozen=True, slots=True)
class ConfigureExchange:
    """Build the venue adapter inside the ExchangeActor's process and start it."""

    adapter_factory: Callable[[], Any]   # picklable callable returning a VenueAdapter
    watch: bool = True                   # False on bases without ThespianWatch (tests): poll instead
    symbols: tuple[str, ...] = ()        # what the preflight checks the venue for
    persist: bool = False                # True (a restart, once deployed): retry the start for as long as it takes
    start_attempts: int = 3              # before giving up, at a deployment's first start
    stages: bool = False                 # say when the preflight begins (ExchangePreflight), for the phase


@dataclass(frozen=True, slots=True)
class ExchangeStarting:
    """The venue adapter could not start yet (markets, clock, keys, network): what, and when next."""

    reason: str
    kind: str                            # unreachable | keys | clock | venue
    attempt: int
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class ExchangePreflight:
    """The venue adapter started; the account's preflight (mode, key rights, symbols) is under way."""


@dataclass(frozen=True, slots=True)
class ExchangeReady:
    """The adapter is started; these are its capabilities."""

    capabilities: Capabilities
    pid: int = field(default_factory=os.getpid)
    dumpable: bool = True                # False: no core file, no other process may read its memory
    problems: tuple[str, ...] = ()       # the venue's account is not fit to trade (hedge mode, read-only key...)
    warnings: tuple[str, ...] = ()       # fit, but an operator should know (a key that can withdraw...)


@dataclass(frozen=True, slots=True)
class ConfigurePosition:
    """Give a PositionActor its symbols (one PositionCore each, in this one process) and its
    collaborators."""

    symbols: tuple[str, ...]
    exchange: Any                        # ActorAddress
    journal: Any                         # ActorAddress
    capabilities: Capabilities
    settings: PositionSettings = field(default_factory=PositionSettings)
    observer: Any = None                 # ActorAddress told of every snapshot (the supervisor)
    safe_mode: str | None = None         # the reason, while new entries are refused
    risk: tuple[tuple[str, RiskLimits], ...] = ()   # per symbol; a symbol not listed: no limits (tests)
    epoch: int = 0                       # the account's lease epoch, in every client order id (0: no lease)


@dataclass(frozen=True, slots=True)
class PositionReady:
    """Symbols of a PositionActor are reconciled and accept commands."""

    symbols: tuple[str, ...]
    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class ActorFailed:
    """A child could not start or do its job; the reason is safe to show an operator."""

    who: str
    reason: str
    usage: bool = False                  # the operator's setting to change (exit 2), not a failure


@dataclass(frozen=True, slots=True)
class StartDeployment:
    """Start the journal, the exchange and one PositionActor per symbol."""

    symbols: tuple[str, ...]
    journal_path: str
    adapter_factory: Callable[[], Any]
    settings: PositionSettings = field(default_factory=PositionSettings)
    watch: bool = True
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    protection: ProtectionSettings | None = field(default_factory=ProtectionSettings)   # None: no scan
    metrics_port: int | None = None      # Prometheus endpoint on 127.0.0.1; None: off
    control: ControlPlane | None = None  # lock and operator API (None: tests that drive actors directly)
    risk: tuple[tuple[str, RiskLimits], ...] | None = None   # per symbol ("*": any other); None: none
    stream: StreamSettings = field(default_factory=lambda: StreamSettings())   # where the venue has streams
    account: str = "default"             # journal on PostgreSQL: the account (schema and lease)
    password_file: str | None = None
    lease: LeaseGrant | None = None      # journal on PostgreSQL: the lease `posguard run` holds


@dataclass(frozen=True, slots=True)
class ConfigureProtection:
    """Start the protection scan against this exchange, for these symbols."""

    exchange: Any
    symbols: tuple[str, ...]
    settings: ProtectionSettings = field(default_factory=ProtectionSettings)
    snapshots: tuple[PositionSnapshot, ...] = ()   # what the supervisor knows now (after a restart)
    stop_orders: bool = False            # the venue keeps stops as orders: ask for them before adopting
    stream_grace_s: float = 1.0          # stream evidence is live: a shorter hands-off period suffices


@dataclass(frozen=True, slots=True)
class ProtectionReady:
    """The protection scan is running."""

    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Supervisor to child: are you (and your event loop) alive?"""

    seq: int


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """Child to supervisor: alive, in this process; with running totals a child keeps for the
    metrics (the exchange's waits on its own rate limit: name -> value since it started)."""

    seq: int
    pid: int
    figures: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """Child to supervisor: a handler failed; my state may be inconsistent, replace me."""

    reason: str


@dataclass(frozen=True, slots=True)
class Collaborators:
    """Supervisor to PositionActors: the exchange or journal was replaced; use these addresses."""

    exchange: Any
    journal: Any


@dataclass(frozen=True, slots=True)
class RestartChild:
    """The supervisor's own wake-up: start this child again (stale generations are ignored)."""

    child_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class SetSafeMode:
    """Operator: enter (on) or leave (off) safe mode; answered by StatusReport."""

    on: bool
    reason: str = "operator"
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class SafeModeChanged:
    """Supervisor to PositionActors: refuse (on) or accept (off) new entries, whoever sends them."""

    on: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentReady:
    """Every child is up."""

    symbols: tuple[str, ...]
    capabilities: Capabilities


@dataclass(frozen=True, slots=True)
class DeploymentFailed:
    """Start-up failed; everything started so far was stopped."""

    reason: str
    usage: bool = False                  # a setting the operator must change (exit 2)


@dataclass(frozen=True, slots=True)
class StopDeployment:
    """Stop the children in reverse start order."""


@dataclass(frozen=True, slots=True)
class DeploymentStopped:
    """Every child has exited."""


@dataclass(frozen=True, slots=True)
class ScanNow:
    """Scan the venue through REST now; answered by ScanDone once its findings are acted on."""

    request_id: str = id_field()


@dataclass(frozen=True, slots=True)
class ScanDone:
    """Reply to ScanNow; failure says why the venue could not be read."""

    request_id: str
    failure: str | None = None
