"""Prometheus metrics, served from the supervisor's process on 127.0.0.1 only.

Naked seconds are computed at scrape time from the latest snapshots, so a position that is
naked right now shows a growing number, not the value of its last state change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from actors.messages import AdoptPosition, PositionObserved, PositionSnapshot, Reprotect, StreamStatus
from actors.position.states import Trigger
from supervisor.status import PHASES, PhaseName

ROLLBACK_TRIGGERS = frozenset({Trigger.STOP_FAILED, Trigger.NAKED_DEADLINE})
PROTECTED_TRIGGERS = frozenset({Trigger.ENTRY_FILLED_WITH_STOP, Trigger.STOP_CONFIRMED})
OUTSIDE_TRIGGERS = {Trigger.OUTSIDE_SEEN: "suspected", Trigger.CLOSED_OUTSIDE: "closed",
                    Trigger.OUTSIDE_UNCONFIRMED: "refuted"}


class _NakedSeconds(Collector):
    def __init__(self, snapshots: Callable[[], dict[str, PositionSnapshot]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("posguard_naked_seconds",
                                   "Seconds the current position has been filled without a confirmed stop",
                                   labels=["symbol"])
        for symbol, snap in sorted(dict(self._snapshots()).items()):
            family.add_metric([symbol], snap.naked_now())
        yield family


class _Labelled(Collector):
    """Every series of `inner` with one more label (`account`): the hosts of a fleet each serve
    the account they hold, and one query sums or splits them by it."""

    def __init__(self, inner: CollectorRegistry, name: str, value: str) -> None:
        self.inner, self.name, self.value = inner, name, value

    def collect(self) -> Iterator[Any]:
        for family in self.inner.collect():
            family.samples = [s._replace(labels={**s.labels, self.name: self.value}) for s in family.samples]
            yield family


class Metrics:
    def __init__(self, port: int, snapshots: Callable[[], dict[str, PositionSnapshot]],
                 naked_deadline_s: float = 0.0, serve: bool = True, account: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_NakedSeconds(snapshots))
        self.fill_to_protected = Histogram(
            "posguard_fill_to_protected_seconds", "From taking the open command to the venue confirming the stop",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.orphans = Counter("posguard_orphans_found", "Positions the protection scan asked an actor to fix",
                               ["kind"], registry=self.registry)
        self.list_omissions = Counter(
            "posguard_position_list_suspect_reads", "REST position reads that left out a position we hold"
            " (each one suspect: only the matching engine's word closes anything)", ["symbol"], registry=self.registry)
        self.outside = Counter("posguard_outside_changes", "Changes made to a position outside posguard, as judged",
                               ["kind"], registry=self.registry)
        self.rollbacks = Counter("posguard_rollbacks", "Rollbacks (stop refused, or naked deadline reached)",
                                 ["symbol"], registry=self.registry)
        self.ambiguous = Counter("posguard_ambiguous_outcomes", "Entries whose outcome had to be queried by id",
                                 ["symbol"], registry=self.registry)
        self.restarts = Counter("posguard_restarts", "Child actors restarted", ["child"], registry=self.registry)
        self.safe_mode = Gauge("posguard_safe_mode", "1 while new entries are refused", registry=self.registry)
        self.venue_start_failures = Counter("posguard_venue_start_failures", "Venue adapter starts that failed",
                                            ["kind"], registry=self.registry)
        self.journal_failures = Counter("posguard_journal_failures", "Times the journal started failing to write",
                                        registry=self.registry)
        self.stream_up = Gauge("posguard_stream_up", "1 while the venue's private stream is up and reconciled",
                               ["stream"], registry=self.registry)
        self.stream_reconnects = Counter("posguard_stream_reconnects", "Private stream reconnections",
                                         ["stream"], registry=self.registry)
        self.stream_gap = Histogram("posguard_stream_gap_seconds", "How long the private stream was down",
                                    ["stream"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=self.registry)
        self.ready = Gauge("posguard_ready", "1 while the deployment takes entries (phase ready)",
                           registry=self.registry)
        self.phase = Gauge("posguard_phase", "1 for the deployment's current phase", ["phase"], registry=self.registry)
        self.venue_up = Gauge("posguard_venue_up", "1 while the venue adapter runs (0: it cannot start yet)",
                              registry=self.registry)
        self.naked_deadline = Gauge("posguard_naked_deadline_seconds", "The configured naked deadline: a position"
                                    " naked this long is flattened", registry=self.registry)
        self.naked_deadline.set(naked_deadline_s)
        self.rate_waits = Counter("posguard_rate_limit_waits", "Venue calls that waited for the account's rate"
                                  " limit (paced by the exchange process)", ["limit"], registry=self.registry)
        self.rate_waited = Counter("posguard_rate_limit_wait_seconds", "Seconds venue calls waited for the"
                                   " account's rate limit", ["limit"], registry=self.registry)
        self._figures: dict[str, float] = {}
        self._figures_pid = 0
        self._server = self._thread = None
        if serve:
            self._server, self._thread = start_http_server(port, addr="127.0.0.1", registry=self.served(account))

    def served(self, account: str | None) -> CollectorRegistry:
        """What the endpoint serves: the series as they are, or each with its account's label."""
        if account is None:
            return self.registry
        outer = CollectorRegistry()
        outer.register(_Labelled(self.registry, "account", account))
        return outer

    def on_phase(self, phase: str, venue_up: bool) -> None:
        self.ready.set(1 if phase == PhaseName.READY else 0)
        for name in PHASES:
            self.phase.labels(name).set(1 if name == phase else 0)
        self.venue_up.set(1 if venue_up else 0)

    def on_figures(self, figures: tuple[tuple[str, float], ...], pid: int) -> None:
        """The exchange's running totals (since its process `pid` started): what grew since the
        last heartbeat is added. A new process counts from 0 -- known by its pid, not by a total
        that went down (a restarted one can pass the old total before its first heartbeat)."""
        if pid != self._figures_pid:
            self._figures_pid, self._figures = pid, {}
        for name, value in figures:
            limit, _, what = name.partition("_")
            if what not in ("waits", "waited_s"):
                continue
            before = self._figures.get(name, 0.0)
            added = value - before if value >= before else value
            self._figures[name] = value
            if added > 0:
                (self.rate_waits if what == "waits" else self.rate_waited).labels(limit).inc(added)

    def on_finding(self, msg: AdoptPosition | Reprotect | PositionObserved) -> None:
        """What the protection scan asked an actor to fix, by kind."""
        if isinstance(msg, AdoptPosition):
            self.orphans.labels("foreign").inc()
        elif isinstance(msg, Reprotect):
            self.orphans.labels("drift").inc()
        else:
            self.orphans.labels(msg.finding).inc()
            if msg.finding == "missing":                 # a list read that left out a position we hold
                self.list_omissions.labels(msg.symbol).inc()

    def on_snapshot(self, snap: PositionSnapshot) -> None:
        if snap.trigger in OUTSIDE_TRIGGERS:
            self.outside.labels(OUTSIDE_TRIGGERS[snap.trigger]).inc()
        if snap.trigger in ROLLBACK_TRIGGERS:
            self.rollbacks.labels(snap.symbol).inc()
        elif snap.trigger == Trigger.ENTRY_AMBIGUOUS:
            self.ambiguous.labels(snap.symbol).inc()
        elif snap.trigger in PROTECTED_TRIGGERS and snap.protect_latency_s is not None:
            self.fill_to_protected.observe(snap.protect_latency_s)

    def on_stream(self, status: StreamStatus, before: StreamStatus | None) -> None:
        self.stream_up.labels(status.stream).set(1 if status.state == "up" else 0)
        added = status.reconnects - (before.reconnects if before is not None else 0)
        if added > 0:
            self.stream_reconnects.labels(status.stream).inc(added)
        if status.state == "reconciling" and (before is None or before.state == "down") and status.gap_s > 0:
            self.stream_gap.labels(status.stream).observe(status.gap_s)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
