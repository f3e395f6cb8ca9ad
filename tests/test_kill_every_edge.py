"""A real `kill -9` of the PositionActor's process at every edge of its transition table, on
thespian's multiprocess TCP base (parametrised from the table: a new edge needs a case here).

The actor dies the moment it takes the edge (a failpoint, see actors/failpoints.py); the
supervisor restarts it; it rebuilds from the journal and the venue. Each case must converge:
protected or flat on the venue, at most one entry per intent, and the journal agreeing."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sqlite3
import time
from dataclasses import dataclass, field

import pytest

from actors.messages import (
    AdoptPosition,
    AmendPosition,
    ClosePosition,
    GetTrueState,
    JournalDiskFault,
    JournalSync,
    JournalSynced,
    OpenPosition,
    PositionObserved,
    PositionSnapshot,
    Reprotect,
    StatusReport,
    StatusRequest,
    StopDeployment,
    WaitForState,
)
from actors.position.states import TRANSITIONS, State, Trigger
from actors.settings import PositionSettings, SupervisionSettings
from adapters.base import OrderRequest, Side
from adapters.sim.adapter import SimulatedAdapter, SimVenueConfig
from adapters.sim.engine import EngineConfig
from adapters.sim.faults import Fault, FaultKind
from tests.support import kit

S, T = State, Trigger
SYMBOL = "BTCUSDT"


@dataclass(frozen=True)
class Case:
    faults: tuple[Fault, ...] = ()
    attached: bool = True
    ack_only: bool = False
    close_when: str | None = None            # send a close once the symbol reaches this state
    foreign: bool = False                    # the venue starts with a 2.0 position nobody journaled
    adopt_stop: float | None = None          # adopt it (None with foreign: adopt by closing)
    reprotect_when: str | None = None        # ask for a re-protection once in this state
    observe_when: str | None = None          # once in this state, a REST read says the position is gone
    closed_by_hand: bool = False             # ... and it is: closed by hand just before our stop is set again
    amend_when: str | None = None            # once in this state, move the stop to `amend_to`
    amend_to: float = 97.0
    exit_when: str | None = None             # once in this state, set a take-profit at `tp`
    tp: float = 105.0
    reduce_when: str | None = None           # once in this state, close 0.8 of the 2.0
    add_when: str | None = None              # once in this state, add 0.5
    first_kill: tuple[State, Trigger] | None = None   # reach a recovery edge through an earlier kill
    settings: dict = field(default_factory=dict)


UNKNOWN_STOP = Fault("set_stop", FaultKind.ERROR, code=10016, times=10_000)
class VenueWithForeignBTC(SimulatedAdapter):
    """A venue that already holds a BTCUSDT position opened by hand, without a stop."""

    async def start(self) -> None:
        await self.create_order(OrderRequest(SYMBOL, Side.BUY, 2.0, "manual-1"))


class VenueClosedByHand(SimulatedAdapter):
    """A venue where the position is closed by hand just before our stop is set again (the
    REST read was right)."""

    async def set_stop(self, symbol: str, stop_price: float, position_side: Side | None = None) -> float | None:
        held = self.engine.true_state().open_positions().get(symbol)
        if held is not None:
            side = Side.SELL if held.qty > 0 else Side.BUY
            self.engine.create_order(OrderRequest(symbol, side, abs(held.qty), f"hand-{len(self.calls)}",
                                                  reduce_only=True), True)
        return await super().set_stop(symbol, stop_price, position_side)


SLOW_STOP = Fault("set_stop", FaultKind.DELAY, delay_s=0.5)
SLOW_EXIT = Fault("set_exit", FaultKind.DELAY, delay_s=0.5)
SLOW_REDUCE = Fault("create_order", FaultKind.DELAY, delay_s=0.5, reduce_only=True)
SLOW_ADD = Fault("create_order", FaultKind.DELAY, delay_s=0.5, reduce_only=False, skip=1)   # the entry goes
REFUSED_STOP = Fault("set_stop", FaultKind.ERROR, code=10001, message="risk limit")
CASES: dict[tuple[State, Trigger], Case] = {
    (S.PROTECTED, T.SET_EXIT): Case(exit_when="PROTECTED"),
    (S.SETTING_EXIT, T.EXIT_SET): Case(exit_when="PROTECTED"),
    (S.SETTING_EXIT, T.EXIT_REFUSED): Case((Fault("set_exit", FaultKind.ERROR, code=10001, message="params"),),
                                           exit_when="PROTECTED"),
    (S.SETTING_EXIT, T.CLOSE_REQUESTED): Case((SLOW_EXIT,), exit_when="PROTECTED", close_when="SETTING_EXIT"),
    (S.PROTECTED, T.REDUCE): Case(reduce_when="PROTECTED"),
    (S.REDUCING, T.REDUCED): Case(reduce_when="PROTECTED"),
    (S.REDUCING, T.REDUCE_REFUSED): Case((Fault("create_order", FaultKind.ERROR, code=10001, message="params",
                                                reduce_only=True),), reduce_when="PROTECTED"),
    (S.REDUCING, T.CLOSE_REQUESTED): Case((SLOW_REDUCE,), reduce_when="PROTECTED", close_when="REDUCING"),
    (S.PROTECTED, T.ADD): Case(add_when="PROTECTED"),
    (S.ADDING, T.ADDED): Case(add_when="PROTECTED"),
    (S.ADDING, T.ADD_REFUSED): Case((Fault("create_order", FaultKind.ERROR, code=110007, message="no balance",
                                           reduce_only=False, skip=1),), add_when="PROTECTED"),
    (S.ADDING, T.CLOSE_REQUESTED): Case((SLOW_ADD,), add_when="PROTECTED", close_when="ADDING"),
    (S.PROTECTED, T.MOVE_STOP): Case(amend_when="PROTECTED"),
    (S.MOVING_STOP, T.STOP_MOVED): Case(amend_when="PROTECTED"),
    (S.MOVING_STOP, T.MOVE_REFUSED): Case(amend_when="PROTECTED", amend_to=101.0),   # above the price: refused
    (S.MOVING_STOP, T.CLOSE_REQUESTED): Case((SLOW_STOP,), amend_when="PROTECTED", close_when="MOVING_STOP"),
    (S.PROTECTED, T.OUTSIDE_SEEN): Case(observe_when="PROTECTED"),
    (S.VERIFYING, T.OUTSIDE_UNCONFIRMED): Case(observe_when="PROTECTED"),
    (S.VERIFYING, T.CLOSED_OUTSIDE): Case(observe_when="PROTECTED", closed_by_hand=True),
    (S.VERIFYING, T.STOP_FAILED): Case((REFUSED_STOP,), observe_when="PROTECTED"),
    (S.VERIFYING, T.CLOSE_REQUESTED): Case((SLOW_STOP,), observe_when="PROTECTED", close_when="VERIFYING"),
    (S.PROTECTING, T.CLOSED_OUTSIDE): Case(observe_when="PROTECTED", closed_by_hand=True,
                                           first_kill=(S.PROTECTED, T.OUTSIDE_SEEN)),
    (S.IDLE, T.ADOPT_PROTECT): Case(foreign=True, adopt_stop=95.0),
    (S.IDLE, T.ADOPT_CLOSE): Case(foreign=True),
    (S.PROTECTED, T.REPROTECT): Case(reprotect_when="PROTECTED"),
    (S.RECOVERING, T.RECOVERED_FLAT): Case(),
    (S.RECOVERING, T.ENTRY_FILLED): Case(first_kill=(S.ENTERING, T.ENTRY_FILLED_WITH_STOP)),
    (S.RECOVERING, T.ENTRY_AMBIGUOUS): Case((Fault("create_order", FaultKind.LATE, delay_s=0.3),),
                                            first_kill=(S.ENTERING, T.ENTRY_AMBIGUOUS)),
    (S.RECOVERING, T.RESUME_CLOSE): Case(close_when="PROTECTED", first_kill=(S.PROTECTED, T.CLOSE_REQUESTED)),
    (S.IDLE, T.OPEN): Case(),
    (S.ENTERING, T.ENTRY_FILLED_WITH_STOP): Case(),
    (S.ENTERING, T.ENTRY_FILLED): Case(attached=False),
    (S.ENTERING, T.ENTRY_ACKED): Case(attached=False, ack_only=True),
    (S.ENTERING, T.ENTRY_AMBIGUOUS): Case((Fault("create_order", FaultKind.TIMEOUT_AFTER),)),
    (S.ENTERING, T.ENTRY_REJECTED): Case((Fault("create_order", FaultKind.ERROR, code=110007, message="no balance"),)),
    (S.CONFIRMING_ENTRY, T.ENTRY_FILLED_WITH_STOP): Case((Fault("create_order", FaultKind.TIMEOUT_AFTER),)),
    (S.CONFIRMING_ENTRY, T.ENTRY_FILLED): Case(attached=False, ack_only=True),
    (S.CONFIRMING_ENTRY, T.ENTRY_REJECTED): Case((Fault("create_order", FaultKind.TIMEOUT_BEFORE),)),
    (S.CONFIRMING_ENTRY, T.NAKED_DEADLINE): Case((Fault("create_order", FaultKind.TIMEOUT_AFTER),
                                                  Fault("fetch_order", FaultKind.ERROR, code=10016, times=40)),
                                                 attached=False),
    (S.PROTECTING, T.STOP_CONFIRMED): Case(attached=False),
    (S.PROTECTING, T.STOP_FAILED): Case((Fault("set_stop", FaultKind.ERROR, code=10001, message="risk"),),
                                        attached=False),
    (S.PROTECTING, T.NAKED_DEADLINE): Case((UNKNOWN_STOP,), attached=False),
    (S.PROTECTING, T.CLOSE_REQUESTED): Case((UNKNOWN_STOP,), attached=False, close_when="PROTECTING"),
    (S.PROTECTED, T.CLOSE_REQUESTED): Case(close_when="PROTECTED"),
    (S.FLATTENING, T.CLOSE_CONFIRMED): Case(close_when="PROTECTED"),
    (S.FLATTENING, T.CLOSE_UNCONFIRMED): Case((Fault("create_order", FaultKind.ERROR, code=10001, message="params",
                                                     reduce_only=True, times=3),),
                                              close_when="PROTECTED", settings={"max_close_attempts": 2}),
    (S.STUCK, T.CLOSE_CONFIRMED): Case((Fault("create_order", FaultKind.ERROR, code=10001, message="params",
                                              reduce_only=True, times=3),),
                                       close_when="PROTECTED", settings={"max_close_attempts": 2}),
}


# Edges reached only when a close went out while the journal could not record it: see
# test_kill_9_when_a_close_went_out_unjournaled.
UNJOURNALED_CLOSE = {(S.PROTECTED, T.CLOSE_FOUND): True, (S.PROTECTING, T.CLOSE_FOUND): False}   # attached?


def test_every_edge_has_a_kill_case():
    assert set(CASES) | set(UNJOURNALED_CLOSE) == set(TRANSITIONS) and not set(CASES) & set(UNJOURNALED_CLOSE)


def ask(asys, to, msg, kind: type, timeout: float = 5.0):
    """An ask that skips stray answers (a wait answered after its asker moved on)."""
    end = time.monotonic() + max(0.0, timeout)
    reply = asys.ask(to, msg, max(0.0, timeout))
    while reply is not None and not isinstance(reply, kind) and time.monotonic() < end:
        reply = asys.listen(max(0.0, end - time.monotonic()))
    return reply if isinstance(reply, kind) else None


def recovered_after(asys, sup, journal, kills: list[tuple[State, Trigger]]) -> str | None:
    """The state the journal ends in once it holds every killed edge and, after the last of them,
    a transition out of RECOVERING (the restarted actor's recovery); else None."""
    if ask(asys, sup, JournalSync(symbol=SYMBOL), JournalSynced) is None:
        return None
    with contextlib.closing(sqlite3.connect(journal)) as db:
        rows = db.execute("SELECT from_state, trigger, to_state FROM transitions WHERE symbol=? ORDER BY id",
                          (SYMBOL,)).fetchall()
    edges = [(from_state, trigger) for from_state, trigger, _ in rows]
    if not all((str(s), str(t)) in edges for s, t in kills):
        return None
    last_kill = max(edges.index((str(s), str(t))) for s, t in kills)   # a failpoint fires at its edge's first arrival
    if not any(from_state == str(S.RECOVERING) for from_state, _ in edges[last_kill + 1:]):
        return None
    return rows[-1][2]


@pytest.mark.parametrize("edge", list(CASES), ids=lambda e: f"{e[0]}--{e[1]}")
def test_kill_9_at_every_edge_converges(edge, tcp_system, tmp_path):
    case = CASES[edge]
    kills = [case.first_kill, edge] if case.first_kill else [edge]
    failpoints = tuple((f"{s}:{t}", str(tmp_path / f"kill{i}")) for i, (s, t) in enumerate(kills))
    settings = PositionSettings(naked_deadline_s=1.0, entry_unknown_window_s=0.6, poll_s=0.03, retry_s=0.03,
                                retry_cap_s=0.1, reply_timeout_s=1.5, failpoints=failpoints,
                                **case.settings)
    venue = SimVenueConfig(engine=EngineConfig(seed=8, prices={SYMBOL: 100.0}, position_lag_s=2.4, volatility=0.0),
                           attached_stops=case.attached, ack_only=case.ack_only, latency_s=0.005,
                           orders_per_second=1000, faults=case.faults,
                           recv_window_s=0.35)        # scaled with the 0.6 s "never arrived" window
    asys, journal = tcp_system, tmp_path / "journal.sqlite"
    adapter = VenueWithForeignBTC if case.foreign else VenueClosedByHand if case.closed_by_hand else SimulatedAdapter
    sup = kit.Deployment(asys, (SYMBOL,), str(journal), functools.partial(adapter, venue), settings=settings,
                         supervision=SupervisionSettings(backoff_s=0.01, heartbeat_s=0.2),
                         protection=None, timeout=10).sup           # reads: none but start-up
    if case.foreign:
        asys.ask(sup, AdoptPosition(SYMBOL, Side.BUY, 2.0, case.adopt_stop), 5)
    else:
        asys.ask(sup, OpenPosition(SYMBOL, Side.BUY, 2.0, 95.0), 5)
    if case.reprotect_when and asys.ask(sup, WaitForState(SYMBOL, (case.reprotect_when,)), 10) is not None:
        asys.ask(sup, Reprotect(SYMBOL, "test: verify the stop"), 5)
    if case.amend_when and asys.ask(sup, WaitForState(SYMBOL, (case.amend_when,)), 10) is not None:
        asys.ask(sup, AmendPosition(SYMBOL, case.amend_to), 5)
    if case.exit_when and asys.ask(sup, WaitForState(SYMBOL, (case.exit_when,)), 10) is not None:
        asys.ask(sup, AmendPosition(SYMBOL, take_profit=case.tp), 5)
    if case.reduce_when and asys.ask(sup, WaitForState(SYMBOL, (case.reduce_when,)), 10) is not None:
        asys.ask(sup, ClosePosition(SYMBOL, qty=0.8), 5)
    if case.add_when and asys.ask(sup, WaitForState(SYMBOL, (case.add_when,)), 10) is not None:
        asys.ask(sup, OpenPosition(SYMBOL, Side.BUY, 0.5, 95.0), 5)
    if case.observe_when and asys.ask(sup, WaitForState(SYMBOL, (case.observe_when,)), 10) is not None:
        asys.ask(sup, PositionObserved(SYMBOL, None, "missing"), 5)
    if case.close_when and asys.ask(sup, WaitForState(SYMBOL, (case.close_when,)), 10) is not None:
        asys.ask(sup, ClosePosition(SYMBOL), 5)

    # Converged: every kill happened and, after the last restart, the symbol rests in IDLE or
    # PROTECTED -- reached by the restarted actor (the journal shows it leave RECOVERING after the
    # last kill, and ends where the supervisor's snapshot is), not a snapshot from before a kill.
    # Each wait is answered by the supervisor when the next such snapshot arrives.
    deadline, seen, report, snap = time.monotonic() + 20, 0.0, None, None
    while time.monotonic() < deadline:
        report = ask(asys, sup, StatusRequest(), StatusReport)
        snap = report.positions[0]
        if (all((tmp_path / f"kill{i}").exists() for i in range(len(kills))) and report.restarts >= len(kills)
                and snap.state in ("IDLE", "PROTECTED") and all(up for _, _, up in report.children)
                and recovered_after(asys, sup, journal, kills) == snap.state):
            break
        rest = ask(asys, sup, WaitForState(SYMBOL, ("IDLE", "PROTECTED"), newer_than=seen), PositionSnapshot,
                   timeout=deadline - time.monotonic())
        seen = rest.updated_at if rest is not None else seen
    else:
        raise AssertionError(f"no convergence after the kill at {edge}: {report}")

    truth = asys.ask(sup, GetTrueState(), 5).state
    pos = truth.open_positions().get(SYMBOL)
    entries = [o for o in truth.orders if not o.reduce_only and o.client_order_id.startswith("pge")]
    assert len(entries) <= 1
    adds = [o for o in truth.orders if o.client_order_id.startswith("pga")]
    assert len(adds) <= 1                                 # an add is never sent twice either
    assert truth.call_count("fetch_positions") <= 1       # the start-up report only
    if snap.state == "IDLE":
        assert pos is None, f"believed flat after the kill at {edge}, but the venue holds {pos}"
    else:
        assert pos is not None and pos.stop_price is not None
        assert abs(pos.qty) == snap.filled_qty
    asys.ask(sup, JournalSync(symbol=SYMBOL), 5)
    with sqlite3.connect(journal) as db:
        last = db.execute("SELECT to_state FROM transitions WHERE symbol=? ORDER BY id DESC LIMIT 1",
                          (SYMBOL,)).fetchone()[0]
    assert last == snap.state                             # the journal agrees with the actor
    asys.ask(sup, StopDeployment(), 10)


@pytest.mark.parametrize("edge", list(UNJOURNALED_CLOSE), ids=lambda e: f"{e[0]}--{e[1]}")
def test_kill_9_when_a_close_went_out_unjournaled(edge, tcp_system, tmp_path):
    # PROTECTED; the journal cannot write; a close goes out anyway (its id derived from the intent) and
    # reaches the engine a little later; kill -9 before anything of it is journaled; the disk
    # has room again. The restarted actor, which the journal tells "PROTECTED", finds the close
    # by its derived id -- and is killed right there, at the edge; the next one converges.
    attached = UNJOURNALED_CLOSE[edge]
    faults = (Fault("create_order", FaultKind.LATE, delay_s=0.3, reduce_only=True),)
    if not attached:                                      # the restarted actor keeps protecting
        faults += (Fault("set_stop", FaultKind.ERROR, code=10006, times=10_000, skip=1),)
    settings = PositionSettings(naked_deadline_s=5.0, entry_unknown_window_s=0.6, poll_s=0.03, retry_s=0.03,
                                retry_cap_s=0.1, reply_timeout_s=1.5, journal_wait_s=0.2,
                                failpoints=((f"{edge[0]}:{edge[1]}", str(tmp_path / "kill")),))
    venue = SimVenueConfig(engine=EngineConfig(seed=8, prices={SYMBOL: 100.0}, position_lag_s=2.4, volatility=0.0),
                           attached_stops=attached, latency_s=0.005, orders_per_second=1000, faults=faults,
                           recv_window_s=0.35)
    asys, journal = tcp_system, tmp_path / "journal.sqlite"
    sup = kit.Deployment(asys, (SYMBOL,), str(journal), functools.partial(SimulatedAdapter, venue), settings=settings,
                         supervision=SupervisionSettings(backoff_s=0.01, heartbeat_s=0.2), protection=None,
                         timeout=10).sup
    asys.ask(sup, OpenPosition(SYMBOL, Side.BUY, 2.0, 95.0), 5)
    assert ask(asys, sup, WaitForState(SYMBOL, ("PROTECTED",)), PositionSnapshot, 10) is not None
    assert ask(asys, sup, JournalDiskFault(truncate_wal=False, refuse=True), JournalSynced, 10) is not None
    asys.ask(sup, ClosePosition(SYMBOL), 5)
    deadline = time.monotonic() + 10                      # the close went out (it lands 0.3 s later)
    while asys.ask(sup, GetTrueState(), 5).state.call_count("create_order") < 2:
        assert time.monotonic() < deadline, "the close never went out"
    pid = {c: p for c, p, _ in ask(asys, sup, StatusRequest(), StatusReport).children}[f"position:{SYMBOL}"]
    os.kill(pid, signal.SIGKILL)
    assert ask(asys, sup, JournalDiskFault(truncate_wal=False, heal=True), JournalSynced, 10) is not None

    deadline, report = time.monotonic() + 20, None
    while time.monotonic() < deadline:                    # bounded: each ask is a round trip
        report = ask(asys, sup, StatusRequest(), StatusReport)
        snap = report.positions[0]
        if (tmp_path / "kill").exists() and report.restarts >= 2 and snap.state == "IDLE" and all(
                up for _, _, up in report.children):
            break
    else:
        raise AssertionError(f"no convergence after the kill at {edge}: {report}")
    truth = asys.ask(sup, GetTrueState(), 5).state
    assert truth.open_positions() == {}
    assert len([o for o in truth.orders if o.reduce_only and o.client_order_id.startswith("pgc")]) == 1   # once
    asys.ask(sup, JournalSync(symbol=SYMBOL), 5)
    with sqlite3.connect(journal) as db:
        triggers = [r[0] for r in db.execute("SELECT trigger FROM transitions WHERE symbol=? ORDER BY id",
                                             (SYMBOL,))]
    # It ends with the unjournaled close found after the restart, then confirmed. A restart once
    # flat (the watchdog is quick here: 0.2 s heartbeats, on a loaded machine) adds only
    # `recovered_flat` after them.
    while triggers and triggers[-1] == "recovered_flat":
        triggers.pop()
    assert triggers[-2:] == ["close_found", "close_confirmed"], triggers
    asys.ask(sup, StopDeployment(), 10)
