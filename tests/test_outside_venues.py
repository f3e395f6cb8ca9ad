"""What is done to a guarded position outside posguard, through the whole deployment on each
venue: the simulated venue (its own server) and both emulators through real ccxt (Bybit v5:
stops on the position; Binance USDⓈ-M: close-all stop orders that outlive it), with the
incident's 24 s REST lag and the private stream on -- and, for what the stream missed, REST.

Each case checks the state, the journaled event with its cause, what of ours is left working on
the venue (its own truth), and that nothing was cancelled while the position lived. How fast
each is noticed is bench/drift.py's to measure, not a test's."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.settings import PositionSettings, ProtectionSettings, StreamSettings, SupervisionSettings
from adapters.base import Side
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.bybit import BybitEmulator
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from adapters.sim.outside import outside
from tests.support import kit
from tests.support.emulator import SETTINGS, EmulatorThread, emulator_config
from tests.support.kit import PRICES, SimVenueThread

VENUES = ("sim", "bybit", "binance")
SYMBOL, QTY, STOP = "BTCUSDT", 0.01, 58_800.0


class Venue:
    """One venue for one deployment: its engine (truth, outside actions) and its adapter factory."""

    def __init__(self, kind: str, made: kit.Deployments, folder: Path, lag: float, faults: tuple[Fault, ...]) -> None:
        self.kind = kind
        if kind == "sim":
            self.thread: Any = made.venue(SimVenueThread(SimVenueConfig(
                engine=EngineConfig(seed=5, prices=PRICES, position_lag_s=lag, volatility=0.0), latency_s=0.02,
                orders_per_second=100, streams=True, faults=faults), folder))
            self.engine = self.thread.engine
            self.factory = self.thread.factory()
            self.adapter = self.thread.adapter
        else:
            dialect = BybitEmulator if kind == "bybit" else BinanceEmulator
            self.thread = made.venue(EmulatorThread(emulator_config(*faults, lag=lag), dialect))
            self.engine = self.thread.emulator.engine
            self.factory = self.thread.factory()
            self.adapter = self.thread.emulator.adapter

    def act(self, action: str, **args: Any) -> None:
        self.thread.on_loop(lambda: outside(self.engine, action, SYMBOL, **args))

    def position(self) -> Any:
        return self.thread.truth().open_positions().get(SYMBOL)

    def our_stops(self) -> list[Any]:
        """Stop orders of ours working on the venue (none where stops live on the position)."""
        return [o for o in self.thread.on_loop(lambda: self.engine.stop_orders(SYMBOL))
                if o.client_order_id.startswith("pg")]

    def stream_down(self) -> None:
        """The private stream is lost and cannot come back (its keys refused) for now."""
        if self.kind == "sim":
            self.thread.stream_fault("reject_auth", True)
        else:
            self.thread.stream_fault("reject_auth", on=True)
        self.thread.stream_fault("drop")


@pytest.fixture
def guarded(tcp_system, tmp_path) -> Iterator[Callable[..., tuple[kit.Deployment, Venue]]]:
    with kit.Deployments(tcp_system, expect_stopped=True) as made:
        def start(kind: str, *, lag: float = 24.0, protection: ProtectionSettings | None = None,
                  faults: tuple[Fault, ...] = (),
                  settings: PositionSettings = SETTINGS) -> tuple[kit.Deployment, Venue]:
            venue = Venue(kind, made, tmp_path, lag, faults)
            d = made.start(tuple(PRICES), str(tmp_path / "journal.sqlite"), venue.factory, settings=settings,
                           supervision=SupervisionSettings(backoff_s=0.01, heartbeat_s=0.2),
                           protection=protection or ProtectionSettings(scan_s=60.0, grace_s=30.0),   # no scan here
                           stream=StreamSettings(backoff_s=0.05, backoff_cap_s=0.5), timeout=20)
            d.journal = str(tmp_path / "journal.sqlite")
            d.until(lambda: d.stream_state() == "up", 15, "the stream up and reconciled")
            d.open(SYMBOL, Side.BUY, QTY, STOP)
            d.wait(SYMBOL, "PROTECTED", within=15)
            return d, venue

        yield start


def events(d: kit.Deployment, kind: str) -> list[dict[str, Any]]:
    d.sync(SYMBOL)
    with sqlite3.connect(d.journal) as db:
        return [json.loads(data) for (data,) in db.execute(
            "SELECT data FROM events WHERE symbol=? AND kind=? ORDER BY seq", (SYMBOL, kind))]


def ours_closed(v: Venue) -> list[Any]:
    return [o for o in v.thread.truth().orders if o.reduce_only and o.client_order_id.startswith("pg")]


@pytest.mark.parametrize("kind", VENUES)
@pytest.mark.parametrize(("action", "args", "reason"), [
    ("order", {"side": "sell", "qty": QTY, "reduce_only": True}, "closed_outside"),
    ("liquidate", {}, "liquidated"),
    ("deleverage", {}, "adl"),
    ("trigger_stop", {}, "stop_triggered"),
], ids=["closed_by_hand", "liquidated", "adl", "stop_triggered"])
def test_closed_outside_goes_idle_with_its_cause_and_no_order_of_ours_stays_working(guarded, kind, action, args,
                                                                                      reason):
    d, v = guarded(kind)
    v.act(action, **args)
    snap = d.wait(SYMBOL, "IDLE", within=10)
    assert v.position() is None
    closed = events(d, "closed")[-1]
    assert closed["reason"] == reason and closed["source"] == "stream" and closed["outside"]
    assert ours_closed(v) == []                          # confirmed, not closed again by us
    d.until(lambda: v.our_stops() == [], 10, "no stop of ours left working")
    assert "closed outside posguard" in snap.last_event


@pytest.mark.parametrize("kind", VENUES)
def test_reduced_outside_is_shown_and_journaled_and_still_covered(guarded, kind):
    d, v = guarded(kind)
    v.act("order", side="sell", qty=QTY / 2, reduce_only=True)
    d.until(lambda: d.snapshot(SYMBOL).filled_qty == pytest.approx(QTY / 2), 10, "the new qty shown")
    assert d.snapshot(SYMBOL).state == "PROTECTED"
    pos = v.position()
    assert abs(pos.qty) == pytest.approx(QTY / 2) and pos.stop_price == STOP
    change = [e for e in events(d, "outside") if e["change"] == "reduced"]
    assert change and change[-1]["after"] == pytest.approx(QTY / 2)


@pytest.mark.parametrize("kind", VENUES)
def test_increased_outside_is_adopted_and_the_stop_covers_all_of_it(guarded, kind):
    d, v = guarded(kind)
    v.act("order", side="buy", qty=QTY)
    d.until(lambda: d.snapshot(SYMBOL).filled_qty == pytest.approx(2 * QTY), 10, "the new qty shown")
    pos = v.position()
    assert pos.qty == pytest.approx(2 * QTY) and pos.stop_price == STOP
    assert [e["change"] for e in events(d, "outside")] == ["increased"]


@pytest.mark.parametrize("kind", VENUES)
def test_flipped_outside_ends_the_episode_and_the_new_position_is_adopted(guarded, kind):
    d, v = guarded(kind)
    v.act("order", side="sell", qty=3 * QTY)             # long 0.01 -> short 0.02
    d.wait(SYMBOL, "IDLE", within=10)
    assert events(d, "closed")[-1]["reason"] == "closed_outside"
    snap = d.wait(SYMBOL, "PROTECTED", within=15)        # the new short, adopted (policy: protect)
    assert snap.side == "sell" and snap.filled_qty == pytest.approx(2 * QTY)
    pos = v.position()
    assert pos.qty == pytest.approx(-2 * QTY) and pos.stop_price > PRICES[SYMBOL]
    assert [o for o in v.our_stops() if o.side is Side.SELL] == []   # the long's stop is gone


@pytest.mark.parametrize("kind", VENUES)
def test_our_stop_cancelled_by_hand_is_set_again(guarded, kind):
    d, v = guarded(kind)
    v.act("clear_stop")
    d.until(lambda: (v.position() or None) and v.position().stop_price == STOP
            and any(e["change"] == "stop_removed" for e in events(d, "outside")), 10, "our stop set again")
    assert d.wait(SYMBOL, "PROTECTED").stop_price == STOP


@pytest.mark.parametrize("kind", ["sim", "bybit"])       # Binance: a move by hand is a cancel and a new order
@pytest.mark.parametrize("follow", [False, True], ids=["restore", "follow"])
def test_our_stop_moved_by_hand_is_set_back_unless_the_config_follows_the_operator(guarded, kind, follow):
    from dataclasses import replace

    d, v = guarded(kind, settings=replace(SETTINGS, follow_stop_moves=follow))
    v.act("move_stop", price=59_000.0)
    want = 59_000.0 if follow else STOP
    d.until(lambda: any(e["change"] == "stop_moved" for e in events(d, "outside"))
            and v.position().stop_price == want and d.snapshot(SYMBOL).stop_price == want, 10, "settled")
    assert events(d, "outside")[-1]["action"] == ("follow" if follow else "restore")


@pytest.mark.parametrize("kind", VENUES)
def test_closed_while_the_stream_was_down_is_found_through_rest_with_its_cause(guarded, kind):
    d, v = guarded(kind, lag=0.5, protection=ProtectionSettings(scan_s=0.3, grace_s=0.6))
    v.stream_down()                                      # only REST will tell
    d.until(lambda: d.stream_state() == "down", 10, "the stream lost")
    v.act("trigger_stop")
    d.wait(SYMBOL, "IDLE", within=15)
    closed = events(d, "closed")[-1]
    assert closed["reason"] == "stop_triggered" and closed["source"].startswith("rest")
    d.until(lambda: v.our_stops() == [], 10, "no stop of ours left working")


@pytest.mark.parametrize("kind", VENUES)
def test_a_list_read_that_omits_our_position_cancels_nothing(guarded, kind):
    d, v = guarded(kind, lag=0.5, protection=ProtectionSettings(scan_s=0.3, grace_s=0.6))
    stops = v.our_stops()
    omit = Fault("fetch_positions", FaultKind.OMIT, symbol=SYMBOL, times=3, skip=3)   # once settled past the lag
    v.thread.on_loop(lambda: v.adapter.faults.add(omit))
    d.until(lambda: v.adapter.faults.pending == 0, 15, "the omitting reads made")
    d.until(lambda: d.snapshot(SYMBOL).state == "PROTECTED" and events(d, "transition")[-1]["trigger"]
            != "outside_seen", 10, "every suspect reading refuted")
    refuted = [e for e in events(d, "transition") if e["trigger"] == "outside_unconfirmed"]
    assert refuted                                       # each suspect read was put to the engine
    assert v.position().stop_price == STOP and v.our_stops() == stops
    assert events(d, "cancel_stops") == [] and ours_closed(v) == []
    assert d.snapshot(SYMBOL).state == "PROTECTED"
