"""The incident replayed through the real actors, real ccxt and HTTP, against the Bybit-v5
emulator with the incident's own 24 s REST position lag: nothing here waits on a position read,
so every case finishes well inside the lag. Then the same actors on the Binance emulator, where
the stop is a separate closePosition order."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any

import pytest

from actors.messages import DeploymentFailed, DeploymentStopped, StartDeployment, StopDeployment
from actors.settings import ProtectionSettings
from adapters.base import OrderRequest, Side
from adapters.emulators.base import EmulatorBase, EmulatorConfig
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.bybit import BybitEmulator
from adapters.sim.faults import Fault, FaultKind
from supervisor.supervisor import Supervisor
from tests.support import kit
from tests.support.emulator import SETTINGS, EmulatorThread
from tests.support.emulator import emulator_config as venue
from tests.support.kit import BAD_SECRET_ENV, KEY, PRICES, SECRET

LAG = 24.0


class Deployment(kit.Deployment):
    """A deployment on one emulator, through ccxt."""

    def __init__(self, asys: Any, emu: EmulatorThread, journal: str, attached: bool,
                 protection: ProtectionSettings | None, **overrides: Any) -> None:
        self.emu = emu
        if emu.venue == "bybit":
            overrides["attached_stop"] = attached
        super().__init__(asys, tuple(PRICES), journal, emu.factory(**overrides), settings=SETTINGS,
                         protection=protection)

    def wait_state(self, symbol: str, *states: str, within: float = 15.0) -> str:
        return self.wait(symbol, *states, within=within).state

    def position_reads(self) -> int:
        """Position reads beyond the one start-up report of foreign positions (asynchronous); the
        preflight's question per symbol (its position mode) is not a position read."""
        reads = [r for r in self.emu.requests("/v5/position/list") if "settleCoin" in r]
        return max(0, len(reads) - 1)


@pytest.fixture
def deploy(tcp_system, tmp_path):
    with kit.Deployments(tcp_system, expect_stopped=True) as made:
        def start(config: EmulatorConfig, attached: bool = True, protection: ProtectionSettings | None = None,
                  dialect: type[EmulatorBase] = BybitEmulator, **overrides: Any) -> Deployment:
            emu = made.venue(EmulatorThread(config, dialect))
            return made.add(Deployment(tcp_system, emu, str(tmp_path / f"journal{len(made.made)}.sqlite"), attached,
                                       protection, **overrides))

        yield start


def test_attached_stop_through_ccxt_leaves_no_naked_second_and_reads_no_position(deploy):
    d = deploy(venue())
    d.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    d.open("ETHUSDT", Side.SELL, 0.5, 3_060.0)
    d.wait_state("BTCUSDT", "PROTECTED")
    d.wait_state("ETHUSDT", "PROTECTED")
    truth = d.emu.truth()
    assert truth.max_naked_seconds() == 0.0
    assert {s: p.stop_price for s, p in truth.open_positions().items()} == {"BTCUSDT": 58_800.0, "ETHUSDT": 3_060.0}
    assert d.position_reads() == 0
    assert truth.now < LAG                                # all of it inside the REST lag
    sent = d.emu.requests("/v5/order/create")
    assert all(s["stopLoss"] and s["positionIdx"] == 0 and s["orderLinkId"] for s in sent)


def test_rollback_during_the_lag_closes_the_filled_qty_without_a_read(deploy):
    # The incident: the stop step fails (three times there); we roll back at the first refusal,
    # by a reduce-only order for the quantity known to be filled -- the read would show nothing.
    d = deploy(venue(Fault("set_stop", FaultKind.ERROR, times=3, code=10001, message="risk limit")),
               attached=False)
    d.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    d.wait_state("BTCUSDT", "IDLE")
    truth = d.emu.truth()
    (episode,) = truth.positions
    assert episode.closed_at is not None and episode.closed_at < LAG and truth.open_positions() == {}
    closes = [s for s in d.emu.requests("/v5/order/create") if s.get("reduceOnly")]
    assert [(c["side"], c["qty"]) for c in closes] == [("Sell", "0.01")]
    assert d.position_reads() == 0
    assert "closed" in d.snapshot("BTCUSDT").last_event


def test_an_ambiguous_entry_timeout_is_resolved_by_order_link_id_with_no_duplicate(deploy):
    # REST alone: with the stream on, its news of the order may answer before the query does.
    executed_then_504 = Fault("create_order", FaultKind.TIMEOUT_AFTER, symbol="BTCUSDT")
    d = deploy(venue(executed_then_504), streams=False)
    d.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    d.wait_state("BTCUSDT", "PROTECTED")
    truth = d.emu.truth()
    assert len(d.emu.requests("/v5/order/create")) == 1
    assert [o.symbol for o in truth.orders] == ["BTCUSDT"]
    (entry,) = d.emu.requests("/v5/order/create")
    queried = [q["orderLinkId"] for q in d.emu.requests("/v5/order/realtime") if q.get("orderLinkId")]
    assert queried and set(queried) == {entry["orderLinkId"]}
    assert truth.max_naked_seconds() == 0.0 and d.position_reads() == 0


def test_the_scan_through_ccxt_protects_a_position_opened_by_hand(deploy):
    d = deploy(venue(lag=0.0), protection=ProtectionSettings(scan_s=0.2, grace_s=0.0))
    d.emu.on_loop(lambda: d.emu.emulator.engine.create_order(OrderRequest("ETHUSDT", Side.BUY, 0.5, "web-ui-1"),
                                                             True))
    d.wait_state("ETHUSDT", "PROTECTED")
    truth = d.emu.truth()
    stop = truth.open_positions()["ETHUSDT"].stop_price
    assert stop is not None and stop == pytest.approx(3_000.0 * 0.98, rel=1e-3)
    assert d.emu.requests("/v5/order/realtime")[-1].get("orderFilter") == "StopOrder"   # stop orders read too


def test_binance_entry_then_its_close_all_stop_through_the_actors(deploy):
    d = deploy(venue(), dialect=BinanceEmulator)
    d.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    d.open("ETHUSDT", Side.SELL, 0.5, 3_060.0)
    d.wait_state("BTCUSDT", "PROTECTED")
    d.wait_state("ETHUSDT", "PROTECTED")
    truth = d.emu.truth()
    assert {s: p.stop_price for s, p in truth.open_positions().items()} == {"BTCUSDT": 58_800.0, "ETHUSDT": 3_060.0}
    assert len(truth.positions) == 2                        # protected, never flattened and reopened
    assert truth.max_naked_seconds() < SETTINGS.naked_deadline_s   # naked only from fill to stop
    algo = d.emu.requests("/fapi/v1/algoOrder")
    assert sorted((a["symbol"], a["side"], a["closePosition"]) for a in algo) == \
        [("BTCUSDT", "SELL", "true"), ("ETHUSDT", "BUY", "true")]
    assert len(d.emu.requests("/fapi/v3/positionRisk")) <= 1     # the start-up report only


def test_binance_stop_that_would_trigger_now_flattens_at_once(deploy):
    # -2021: the price is already through the stop, so it can never stand: flatten, no retry.
    d = deploy(venue(), dialect=BinanceEmulator)
    d.open("BTCUSDT", Side.BUY, 0.01, 61_000.0)            # above the price for a long
    d.wait_state("BTCUSDT", "IDLE")
    truth = d.emu.truth()
    (episode,) = truth.positions
    assert episode.closed_at is not None and truth.open_positions() == {}
    assert len(d.emu.requests("/fapi/v1/algoOrder")) == 1  # refused once, never re-sent
    closes = [o for o in d.emu.requests("/fapi/v1/order") if o.get("reduceOnly") == "true"]
    assert [(c["side"], c["quantity"]) for c in closes] == [("SELL", "0.01")]


@pytest.mark.parametrize(("how", "label"), [
    ("stop", "stop loss triggered"),
    ("liquidation", "liquidated"),
    ("by hand", "not ours"),
])
def test_a_vanished_position_is_confirmed_by_the_engine_and_closed_with_the_histories_reason(deploy, how, label):
    # The REST scan's path (with streams the stream tells at once: tests/test_streams_venues.py).
    d = deploy(venue(lag=0.0), protection=ProtectionSettings(scan_s=0.2, grace_s=0.0), streams=False)
    d.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    d.wait_state("BTCUSDT", "PROTECTED")
    engine = d.emu.emulator.engine
    act = {"stop": lambda: engine.trigger_stop_now("BTCUSDT"),
           "liquidation": lambda: engine.liquidate("BTCUSDT"),
           "by hand": lambda: engine.create_order(OrderRequest("BTCUSDT", Side.SELL, 0.01, "web-close-1",
                                                               reduce_only=True), True)}[how]
    d.emu.on_loop(act)
    d.wait_state("BTCUSDT", "IDLE")
    event = d.snapshot("BTCUSDT").last_event
    assert "closed outside posguard" in event and label in event, event
    assert d.emu.requests("/v5/order/history"), "the order history was asked (for the label only)"
    assert d.emu.requests("/v5/position/trading-stop"), "the engine was asked (our stop set again: zero position)"
    assert not [o for o in d.emu.requests("/v5/order/create") if o.get("reduceOnly")], "nothing closed by us"
    assert d.emu.truth().open_positions() == {}


def test_refused_keys_fail_the_start_as_keys_and_never_show_the_key(tcp_system, tmp_path):
    # Bybit echoes the signed string, key included, in "error sign!": it must stop at the adapter.
    # The preflight's signed call finds a refused key before any entry can be asked for.
    with EmulatorThread(venue(), BybitEmulator) as emu:
        sup = tcp_system.createActor(Supervisor)
        factory = emu.factory(secret_env=BAD_SECRET_ENV)
        reply = tcp_system.ask(sup, StartDeployment(tuple(PRICES), str(tmp_path / "j.sqlite"), factory, SETTINGS), 30)
        assert isinstance(reply, DeploymentFailed), reply
        assert "(keys)" in reply.reason and "10004" in reply.reason and KEY not in reply.reason, reply
        assert "\n" not in reply.reason
        assert emu.requests("/v5/order/create") == [] and emu.truth().orders == ()
        tcp_system.ask(sup, StopDeployment(), 15)


def test_keys_revoked_while_running_end_the_entry_as_auth_and_never_reach_the_journal(deploy, tmp_path):
    d = deploy(venue())
    d.emu.on_loop(lambda: d.emu.emulator.secrets.clear())          # the key is revoked at the venue
    d.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    d.wait_state("BTCUSDT", "IDLE")
    event = d.snapshot("BTCUSDT").last_event
    assert "auth" in event and KEY not in event, event
    assert d.sync("BTCUSDT") is not None
    with sqlite3.connect(tmp_path / "journal0.sqlite") as db:
        dump = "\n".join(db.iterdump())
    assert KEY not in dump and SECRET not in dump
    assert d.emu.truth().orders == ()


def test_an_acknowledged_entry_not_yet_visible_to_queries_is_awaited_not_resent(deploy):
    # Bybit places orders asynchronously: right after the ack a query may say "not found"
    # (110001). That is "not visible yet", never "never arrived" inside the receive window.
    d = deploy(dataclasses.replace(venue(), visibility_lag_s=0.5), streams=False)     # REST alone learns the fill
    d.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    d.wait_state("BTCUSDT", "PROTECTED")
    queries = [q for q in d.emu.requests("/v5/order/realtime") if q.get("orderLinkId")]
    assert len(queries) >= 2                              # at least one "not found" before the fill
    assert len(d.emu.requests("/v5/order/create")) == 1 and len(d.emu.truth().orders) == 1
    assert d.emu.truth().max_naked_seconds() == 0.0


def test_the_scan_counts_a_binance_stop_order_and_never_protects_twice(deploy, tmp_path):
    d = deploy(venue(lag=0.0), dialect=BinanceEmulator, protection=ProtectionSettings(scan_s=0.1, grace_s=0.0),
               streams=False)
    d.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
    d.wait_state("BTCUSDT", "PROTECTED")
    deadline = time.monotonic() + 15                      # bounded: until the scan has read it 5 times
    while len(d.emu.requests("/fapi/v3/positionRisk")) < 6 and time.monotonic() < deadline:
        d.sync("BTCUSDT")
    assert len(d.emu.requests("/fapi/v3/positionRisk")) >= 6
    d.sync("BTCUSDT")
    with sqlite3.connect(tmp_path / "journal0.sqlite") as db:
        triggers = [r[0] for r in db.execute("SELECT trigger FROM transitions WHERE symbol='BTCUSDT'")]
    assert "reprotect" not in triggers and "adopt_protect" not in triggers
    assert [a["side"] for a in d.emu.requests("/fapi/v1/algoOrder")] == ["SELL"]          # one stop, ever
    assert len(d.emu.requests("/fapi/v1/openAlgoOrders")) >= 5       # each scan read the stop orders too


def test_a_restart_rebuilds_from_the_journal_and_the_venue_through_ccxt(tcp_system, tmp_path):
    journal = str(tmp_path / "journal.sqlite")
    with EmulatorThread(venue()) as emu:                  # the venue outlives both runs of ours
        first = Deployment(tcp_system, emu, journal, attached=True, protection=None)
        first.open("BTCUSDT", Side.BUY, 0.01, 58_800.0)
        first.wait_state("BTCUSDT", "PROTECTED")
        assert isinstance(first.stop(), DeploymentStopped)
        queries_before = len(emu.requests("/v5/order/realtime"))
        second = Deployment(tcp_system, emu, journal, attached=True, protection=None)
        second.wait_state("BTCUSDT", "PROTECTED")
        assert second.snapshot("BTCUSDT").stop_price == 58_800.0
        stops = emu.requests("/v5/position/trading-stop")
        assert isinstance(second.stop(), DeploymentStopped)
    assert len(emu.requests("/v5/order/realtime")) > queries_before          # asked the venue by client id
    assert [s["stopLoss"] for s in stops] == ["58800"]                       # the stop set again (not modified)
    assert len(emu.requests("/v5/order/create")) == 1 and emu.truth().max_naked_seconds() == 0.0
