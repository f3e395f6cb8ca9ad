"""The protection scan: what it finds (pure), and on the TCP base that it protects a foreign
position fast and never touches a position its PositionActor is handling under the REST lag."""

from __future__ import annotations

import functools
import json
import sqlite3
import time

from actors.messages import (
    AdoptPosition,
    ConfigureProtection,
    OpenPosition,
    PositionSnapshot,
    ProtectionReady,
    StreamTrust,
    StreamView,
)
from actors.protection import ProtectionActor, findings
from actors.settings import PositionSettings, ProtectionSettings
from adapters.base import OrderRequest, PositionReport, Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from tests.support import kit

SYMBOLS = ("BTCUSDT", "ETHUSDT")
NOW = 1_000.0


def snap(symbol: str, state: str, stop: float | None = None, age: float = 60.0,
         intent: str | None = "i1") -> PositionSnapshot:
    return PositionSnapshot(symbol, state, Side.BUY, 1.0, 1.0, 100.0, stop, intent, updated_at=NOW - age)


def pos(symbol: str, stop: float | None) -> PositionReport:
    return PositionReport(symbol, Side.BUY, 1.0, 100.0, stop)


def kinds(view, snaps) -> list[tuple[str, str]]:
    return [(f.symbol, f.kind) for f in findings(view, {s.symbol: s for s in snaps}, NOW, 30.0, SYMBOLS)]


def test_findings_name_foreign_drift_missing_and_undeployed_positions():
    assert kinds([pos("BTCUSDT", None)], [snap("BTCUSDT", "IDLE")]) == [("BTCUSDT", "foreign")]
    assert kinds([pos("BTCUSDT", None)], [snap("BTCUSDT", "PROTECTED", 95.0)]) == [("BTCUSDT", "drift")]
    assert kinds([pos("BTCUSDT", 90.0)], [snap("BTCUSDT", "PROTECTED", 95.0)]) == [("BTCUSDT", "drift")]
    assert kinds([], [snap("BTCUSDT", "PROTECTED", 95.0)]) == [("BTCUSDT", "missing")]
    assert kinds([pos("XRPUSDT", None)], []) == [("XRPUSDT", "undeployed")]


def test_findings_leave_alone_what_an_actor_is_handling_or_just_changed():
    assert kinds([pos("BTCUSDT", 95.0)], [snap("BTCUSDT", "PROTECTED", 95.0)]) == []          # all good
    assert kinds([pos("BTCUSDT", None)], [snap("BTCUSDT", "PROTECTING")]) == []               # in flight
    assert kinds([pos("BTCUSDT", None)], [snap("BTCUSDT", "IDLE", age=5.0)]) == []           # just closed
    assert kinds([pos("BTCUSDT", None)], [snap("BTCUSDT", "IDLE", age=5.0, intent=None)]) == [
        ("BTCUSDT", "foreign")]                          # never opened anything: no grace needed
    assert kinds([], [snap("BTCUSDT", "PROTECTED", 95.0, age=5.0)]) == []                    # not visible yet
    assert kinds([pos("BTCUSDT", None)], []) == []                                           # actor not heard yet


class VenueWithForeignETH(SimulatedAdapter):
    """ETHUSDT already holds a position someone opened by hand, with no stop."""

    async def start(self) -> None:
        await self.create_order(OrderRequest("ETHUSDT", Side.BUY, 3.0, "manual-1"))


SETTINGS = PositionSettings(naked_deadline_s=5.0, entry_unknown_window_s=1.0, poll_s=0.05, retry_s=0.05)


def deploy(asys, tmp_path, venue: SimVenueConfig, adapter=SimulatedAdapter, **start) -> kit.Deployment:
    return kit.Deployment(asys, SYMBOLS, str(tmp_path / "j.sqlite"), functools.partial(adapter, venue),
                          settings=SETTINGS, timeout=10, **start)


def test_a_foreign_position_is_protected_by_the_scan(tcp_system, tmp_path):
    # How fast (scan interval + about a second) is a figure: bench/orphan.py measures it.
    venue = SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0, "ETHUSDT": 10.0}, volatility=0.0),
                           latency_s=0.01, recv_window_s=0.5)
    d = deploy(tcp_system, tmp_path, venue, VenueWithForeignETH,
               protection=ProtectionSettings(scan_s=0.5, grace_s=0.0))
    d.wait("ETHUSDT", "PROTECTED")
    d.sync("ETHUSDT")
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        found = [json.loads(data) for (data,) in db.execute(
            "SELECT data FROM events WHERE symbol='ETHUSDT' AND kind='orphan' ORDER BY seq")]
    assert [(e["finding"], e["action"], e["stop_price"]) for e in found] == [("foreign", "protect", 9.8)]
    truth = d.truth()
    eth = truth.open_positions()["ETHUSDT"]
    assert eth.qty == 3.0 and eth.stop_price == 9.8              # 2 % below its entry
    assert [o.client_order_id for o in truth.orders if not o.reduce_only] == ["manual-1"]   # nothing added
    d.stop(10)


def test_no_second_stop_nor_close_on_a_position_being_protected_under_the_lag(tcp_system, tmp_path):
    # 2.4 s REST lag (the incident's 24 s scaled), a scan every 0.1 s, the stop slow to confirm.
    lag = 2.4
    venue = SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0, "ETHUSDT": 10.0}, position_lag_s=lag,
                                               volatility=0.0),
                           attached_stops=False, latency_s=0.01, recv_window_s=0.5,
                           faults=(Fault("set_stop", FaultKind.DELAY, delay_s=0.4),))
    d = deploy(tcp_system, tmp_path, venue, protection=ProtectionSettings(scan_s=0.1, grace_s=lag + 0.5))
    d.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0))
    d.wait("BTCUSDT", "PROTECTED")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:                   # until the lagging view has shown it for a while
        truth = d.truth()
        if truth.now > lag + 1.0:
            break
    d.sync("BTCUSDT")
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        triggers = [r[0] for r in db.execute("SELECT trigger FROM transitions WHERE symbol='BTCUSDT'")]
    assert "adopt_protect" not in triggers and "reprotect" not in triggers and "close_requested" not in triggers
    assert truth.call_count("set_stop") == 1 and truth.call_count("fetch_positions") >= 10   # the scans ran
    d.stop(10)


def test_metrics_are_scraped_on_loopback(tcp_system, tmp_path):
    import urllib.request

    from supervisor.host.procfs import listening_sockets

    port = kit.free_port()
    venue = SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0, "ETHUSDT": 10.0}, volatility=0.0),
                           attached_stops=False, latency_s=0.01, recv_window_s=0.5,
                           faults=(Fault("create_order", FaultKind.TIMEOUT_AFTER, symbol="ETHUSDT"),))
    d = deploy(tcp_system, tmp_path, venue, protection=None, metrics_port=port)
    d.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0))
    d.ask(OpenPosition("ETHUSDT", Side.BUY, 1.0, 9.5))
    d.wait("BTCUSDT", "PROTECTED")
    d.wait("ETHUSDT", "PROTECTED")
    assert all(addr == "127.0.0.1" for addr, p in listening_sockets().values() if p == port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()   # noqa: S310
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['posguard_naked_seconds{symbol="BTCUSDT"}'] > 0          # one round trip, set directly
    assert samples["posguard_fill_to_protected_seconds_count"] == 2.0
    assert samples['posguard_ambiguous_outcomes_total{symbol="ETHUSDT"}'] == 1.0
    assert samples["posguard_safe_mode"] == 0.0
    assert samples["posguard_ready"] == samples['posguard_phase{phase="ready"}'] == samples["posguard_venue_up"] == 1.0
    assert samples['posguard_phase{phase="starting"}'] == 0.0
    assert samples["posguard_naked_deadline_seconds"] == SETTINGS.naked_deadline_s
    d.stop(10)


class VenueWithForeignXRP(SimulatedAdapter):
    """XRPUSDT, a symbol this deployment does not run, holds a position opened by hand."""

    async def start(self) -> None:
        await self.create_order(OrderRequest("XRPUSDT", Side.SELL, 50.0, "manual-xrp"))


def test_a_foreign_position_on_an_undeployed_symbol_gets_an_actor_and_a_stop(tcp_system, tmp_path):
    venue = SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0, "ETHUSDT": 10.0, "XRPUSDT": 2.0},
                                               volatility=0.0), latency_s=0.01, recv_window_s=0.5)
    d = deploy(tcp_system, tmp_path, venue, VenueWithForeignXRP, protection=ProtectionSettings(scan_s=0.3, grace_s=0.0))
    assert d.wait("XRPUSDT", "PROTECTED").filled_qty == 50.0
    truth = d.truth()
    assert truth.open_positions()["XRPUSDT"].stop_price == 2.04               # 2 % above a short's entry
    d.stop(10)


def test_an_adopted_position_keeps_its_own_stop_and_gets_one_only_if_it_has_none():
    from actors.protection import adoption_stop

    assert adoption_stop(PositionReport("BTCUSDT", Side.BUY, 1.0, 100.0, 97.5), 2.0) == 97.5
    assert adoption_stop(PositionReport("BTCUSDT", Side.BUY, 1.0, 100.0, None), 2.0) == 98.0
    assert adoption_stop(PositionReport("BTCUSDT", Side.SELL, 1.0, 100.0, None), 2.0) == 102.0


def test_a_foreign_position_the_stream_showed_while_its_actor_was_busy_is_protected_once_it_settles(
        simple_system):
    # One stream observation, at a moment our actor was closing; nothing else would bring it up
    # before the next (lagging) REST scan. It is judged again when the actor settles.
    prot = simple_system.createActor(ProtectionActor)
    configure = ConfigureProtection("exchange-unused", SYMBOLS, ProtectionSettings(scan_s=600.0, grace_s=30.0),
                                    stream_grace_s=0.3)
    assert isinstance(simple_system.ask(prot, configure, 2), ProtectionReady)
    simple_system.tell(prot, StreamTrust(True))
    simple_system.tell(prot, PositionSnapshot("ETHUSDT", "CLOSING", Side.BUY, 1.0, 1.0, 100.0, None, "i1"))
    foreign = PositionReport("ETHUSDT", Side.SELL, 0.5, 3_000.0, None)
    simple_system.tell(prot, StreamView(positions=(("ETHUSDT", foreign),)))
    assert simple_system.listen(0.2) is None                     # busy: left to its actor
    simple_system.tell(prot, PositionSnapshot("ETHUSDT", "IDLE", intent_id="i1", updated_at=time.time()))
    adopt = simple_system.listen(5)                              # after the 0.3 s hands-off, by itself
    assert isinstance(adopt, AdoptPosition) and adopt.symbol == "ETHUSDT" and adopt.side is Side.SELL
    assert adopt.stop_price is not None and adopt.stop_price > 3_000.0
    assert simple_system.listen(0.5) is None                     # asked once
