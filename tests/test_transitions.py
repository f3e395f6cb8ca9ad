"""The transition table itself: every edge is driven by a scenario on the simulated venue
(parametrised from the table, so a new edge without a scenario fails), plus a hypothesis
state machine that throws random faults, time and commands at one PositionCore."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors.fsm import FSM, InvalidTransition
from actors.messages import JournalTransition
from actors.position.core import TIMERS
from actors.position.states import CLOSABLE, CLOSING, HELD, TRANSITIONS, State, TimerKind, Trigger
from adapters.base import Side
from adapters.sim.faults import Fault, FaultKind
from tests.support.harness import PRICE, SYMBOL, Harness, fast_settings, venue

HANDLING = {State.RECOVERING, State.ENTERING, State.CONFIRMING_ENTRY, State.PROTECTING, State.FLATTENING, State.STUCK}


def edges(h: Harness) -> set[tuple[State, Trigger]]:
    return {(State(m.from_state), Trigger(m.trigger)) for m in h.journal if isinstance(m, JournalTransition)}


Edge = tuple[State, Trigger]


def test_named_state_sets_agree_with_the_table():
    assert {s for s, t in TRANSITIONS if t is Trigger.CLOSE_REQUESTED} == CLOSABLE
    assert {s for s, t in TRANSITIONS if t is Trigger.CLOSE_CONFIRMED} == CLOSING
    assert set(State) - {State.IDLE, State.RECOVERING} == HELD


def test_every_timer_kind_has_a_guard_and_a_handler():
    assert set(TIMERS) == set(TimerKind)


def opened(h: Harness, **kw) -> Harness:
    h.open(**kw)
    h.run()
    return h


def s_attached(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(), crash_after=list(crash or [])))


def s_separate(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(attached=False), crash_after=list(crash or [])))


def s_ack_only_separate(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(attached=False, ack_only=True), crash_after=list(crash or [])))


def s_ambiguous_entry(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(Fault("create_order", FaultKind.TIMEOUT_AFTER)), crash_after=list(crash or [])))


def s_rejected_entry(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(Fault("create_order", FaultKind.ERROR, code=110007, message="no balance")),
                          crash_after=list(crash or [])))


def s_lost_entry(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(Fault("create_order", FaultKind.TIMEOUT_BEFORE)), crash_after=list(crash or [])))


def s_unknown_fill_deadline(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(Fault("create_order", FaultKind.TIMEOUT_AFTER),
                                Fault("fetch_order", FaultKind.ERROR, code=10016, times=60), attached=False),
                          crash_after=list(crash or [])))


def s_stop_rejected(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(Fault("set_stop", FaultKind.ERROR, code=10001, message="risk"), attached=False),
                          crash_after=list(crash or [])))


def s_stop_deadline(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(Fault("set_stop", FaultKind.ERROR, code=10016, times=1000), attached=False),
                          crash_after=list(crash or [])))


def s_close_while_protecting(crash: list[Edge] | None = None) -> Harness:
    h = Harness(venue(Fault("set_stop", FaultKind.ERROR, code=10016, times=1000), attached=False),
                crash_after=list(crash or []))
    h.open()
    h.run(until=1.0)
    h.close_position()
    h.run()
    return h


def s_close(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.close_position()
    h.run()
    return h


def s_stuck_then_closed(crash: list[Edge] | None = None) -> Harness:
    h = Harness(venue(Fault("create_order", FaultKind.ERROR, code=10001, message="params", reduce_only=True,
                            times=4)), settings=fast_settings(max_close_attempts=3), crash_after=list(crash or []))
    h.open()
    h.run()
    h.close_position()
    h.run()
    return h


def s_restart_after_fill(crash: list[Edge] | None = None) -> Harness:
    return s_attached([(State.ENTERING, Trigger.ENTRY_FILLED_WITH_STOP), *(crash or [])])


def s_restart_with_entry_in_flight(crash: list[Edge] | None = None) -> Harness:
    return opened(Harness(venue(Fault("create_order", FaultKind.LATE, delay_s=2.0)),
                          crash_after=[(State.ENTERING, Trigger.ENTRY_AMBIGUOUS), *(crash or [])]))


def s_restart_mid_close(crash: list[Edge] | None = None) -> Harness:
    return s_close([(State.PROTECTED, Trigger.CLOSE_REQUESTED), *(crash or [])])


def s_adopt_protect(crash: list[Edge] | None = None) -> Harness:
    h = Harness(venue(), crash_after=list(crash or []))
    h.foreign_position(qty=2.0)
    h.adopt(qty=2.0, stop=95.0)
    h.run()
    return h


def s_adopt_close(crash: list[Edge] | None = None) -> Harness:
    h = Harness(venue(), crash_after=list(crash or []))
    h.foreign_position(qty=2.0)
    h.adopt(qty=2.0, stop=None)
    h.run()
    return h


def _close_unjournaled_then_crash(h: Harness, *after_crash: Fault) -> Harness:
    """PROTECTED; the journal fails; a close goes out anyway (its id derived) and reaches the
    engine only a second later; the actor dies before anything of it is journaled."""
    h.open()
    h.run()
    h.fail_journal = True
    h.adapter.faults.add(Fault("create_order", FaultKind.LATE, delay_s=1.0, reduce_only=True))
    h.close_position()
    h.run(until=0.0)
    h.fail_journal = False
    for fault in after_crash:
        h.adapter.faults.add(fault)
    h.crash()
    h.run()
    return h


def s_close_found_protected(crash: list[Edge] | None = None) -> Harness:
    return _close_unjournaled_then_crash(Harness(venue(), crash_after=list(crash or [])))


def s_close_found_protecting(crash: list[Edge] | None = None) -> Harness:
    # The first probe goes unanswered, and the stop keeps being refused "busy": the close is
    # found while still protecting.
    return _close_unjournaled_then_crash(Harness(venue(attached=False), crash_after=list(crash or [])),
                                         Fault("fetch_order", FaultKind.TIMEOUT_BEFORE),
                                         Fault("set_stop", FaultKind.ERROR, code=10006, times=50))


def s_stop_drift(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.adapter.engine.clear_stop(SYMBOL)                  # someone removed our stop by hand
    h.reprotect()
    h.run()
    return h


def s_closed_by_hand(crash: list[Edge] | None = None) -> Harness:
    h = opened(Harness(venue(), streams=True, crash_after=list(crash or [])))
    h.outside("order", side="sell", qty=1.0, reduce_only=True)   # closed in the venue's app
    h.run()
    return h


def s_suspect_list_read(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.observe(missing=True)                              # a list read that left our position out
    h.run()
    return h


def s_flipped_by_hand(crash: list[Edge] | None = None) -> Harness:
    # Long 1, then someone sells 2: short 1. Our long's stop cannot go on a short ("should be
    # greater"): rolled back reduce-only, and the venue says nothing of ours is left to reduce.
    h = opened(Harness(venue(), streams=True, crash_after=list(crash or [])))
    h.outside("order", side="sell", qty=2.0)
    h.run()
    assert h.core.state is State.IDLE
    h.adopt(qty=1.0, stop=105.0, side=Side.SELL)         # the new short is foreign: the scan's adoption
    h.run()
    return h


def s_close_while_verifying(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.observe(missing=True)                              # the venue is being asked (its answer queued) ...
    h.close_position()                                   # ... when the operator closes
    h.run()
    return h


def s_closed_while_protecting(crash: list[Edge] | None = None) -> Harness:
    # The stop is refused "busy" once; meanwhile the position is closed by hand (the stream says
    # so); the next try finds no position, which the stream's news explains.
    h = Harness(venue(Fault("set_stop", FaultKind.ERROR, code=10006), attached=False), streams=True,
                crash_after=list(crash or []))
    h.open()
    h.run(until=0.1)
    h.outside("order", side="sell", qty=1.0, reduce_only=True)
    h.run()
    return h


def s_stop_moved(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.amend(stop=97.0)
    h.run()
    return h


def s_stop_move_refused(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.amend(stop=PRICE + 1.0)                            # a buy's stop above the price: refused, the old stands
    h.run()
    return h


def s_close_while_moving(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.amend(stop=97.0)                                   # the venue's answer queued ...
    h.close_position()                                   # ... when the operator closes
    h.run()
    return h


def s_tp_set(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.core.note_price(PRICE)
    h.amend(tp=PRICE + 5.0)
    h.run()
    return h


def s_tp_refused(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.adapter.faults.add(Fault("set_exit", FaultKind.ERROR, code=10001, message="params error"))
    h.amend(trail=1.0)                                   # the venue refuses it: the stop stands
    h.run()
    return h


def s_close_while_setting_exit(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.core.note_price(PRICE)
    h.amend(tp=PRICE + 5.0)                              # the venue's answer queued ...
    h.close_position()                                   # ... when the operator closes
    h.run()
    return h


def s_reduce(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.close_position(qty=0.4)
    h.run()
    return h


def s_reduce_refused(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.adapter.faults.add(Fault("create_order", FaultKind.ERROR, code=10001, message="params", reduce_only=True))
    h.close_position(qty=0.4)
    h.run()
    return h


def s_close_while_reducing(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.close_position(qty=0.4)                            # its answer queued ...
    h.close_position()                                   # ... when the operator closes all
    h.run()
    return h


def s_add(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.open(qty=0.5)
    h.run()
    return h


def s_add_refused(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.adapter.faults.add(Fault("create_order", FaultKind.ERROR, code=110007, message="no balance", reduce_only=False))
    h.open(qty=0.5)
    h.run()
    return h


def s_close_while_adding(crash: list[Edge] | None = None) -> Harness:
    h = s_attached(crash)
    h.open(qty=0.5)                                      # its answer queued ...
    h.close_position()                                   # ... when the operator closes all
    h.run()
    return h


SCENARIOS: dict[Edge, Callable[..., Harness]] = {
    (State.PROTECTED, Trigger.SET_EXIT): s_tp_set,
    (State.SETTING_EXIT, Trigger.EXIT_SET): s_tp_set,
    (State.SETTING_EXIT, Trigger.EXIT_REFUSED): s_tp_refused,
    (State.SETTING_EXIT, Trigger.CLOSE_REQUESTED): s_close_while_setting_exit,
    (State.PROTECTED, Trigger.REDUCE): s_reduce,
    (State.REDUCING, Trigger.REDUCED): s_reduce,
    (State.REDUCING, Trigger.REDUCE_REFUSED): s_reduce_refused,
    (State.REDUCING, Trigger.CLOSE_REQUESTED): s_close_while_reducing,
    (State.PROTECTED, Trigger.ADD): s_add,
    (State.ADDING, Trigger.ADDED): s_add,
    (State.ADDING, Trigger.ADD_REFUSED): s_add_refused,
    (State.ADDING, Trigger.CLOSE_REQUESTED): s_close_while_adding,
    (State.PROTECTED, Trigger.MOVE_STOP): s_stop_moved,
    (State.MOVING_STOP, Trigger.STOP_MOVED): s_stop_moved,
    (State.MOVING_STOP, Trigger.MOVE_REFUSED): s_stop_move_refused,
    (State.MOVING_STOP, Trigger.CLOSE_REQUESTED): s_close_while_moving,
    (State.PROTECTED, Trigger.OUTSIDE_SEEN): s_closed_by_hand,
    (State.VERIFYING, Trigger.CLOSED_OUTSIDE): s_closed_by_hand,
    (State.VERIFYING, Trigger.OUTSIDE_UNCONFIRMED): s_suspect_list_read,
    (State.VERIFYING, Trigger.STOP_FAILED): s_flipped_by_hand,
    (State.VERIFYING, Trigger.CLOSE_REQUESTED): s_close_while_verifying,
    (State.PROTECTING, Trigger.CLOSED_OUTSIDE): s_closed_while_protecting,
    (State.IDLE, Trigger.ADOPT_PROTECT): s_adopt_protect,
    (State.IDLE, Trigger.ADOPT_CLOSE): s_adopt_close,
    (State.PROTECTED, Trigger.REPROTECT): s_stop_drift,
    (State.RECOVERING, Trigger.RECOVERED_FLAT): s_attached,
    (State.RECOVERING, Trigger.ENTRY_FILLED): s_restart_after_fill,
    (State.RECOVERING, Trigger.ENTRY_AMBIGUOUS): s_restart_with_entry_in_flight,
    (State.RECOVERING, Trigger.RESUME_CLOSE): s_restart_mid_close,
    (State.IDLE, Trigger.OPEN): s_attached,
    (State.ENTERING, Trigger.ENTRY_FILLED_WITH_STOP): s_attached,
    (State.ENTERING, Trigger.ENTRY_FILLED): s_separate,
    (State.ENTERING, Trigger.ENTRY_ACKED): s_ack_only_separate,
    (State.ENTERING, Trigger.ENTRY_AMBIGUOUS): s_ambiguous_entry,
    (State.ENTERING, Trigger.ENTRY_REJECTED): s_rejected_entry,
    (State.CONFIRMING_ENTRY, Trigger.ENTRY_FILLED_WITH_STOP): s_ambiguous_entry,
    (State.CONFIRMING_ENTRY, Trigger.ENTRY_FILLED): s_ack_only_separate,
    (State.CONFIRMING_ENTRY, Trigger.ENTRY_REJECTED): s_lost_entry,
    (State.CONFIRMING_ENTRY, Trigger.NAKED_DEADLINE): s_unknown_fill_deadline,
    (State.PROTECTING, Trigger.STOP_CONFIRMED): s_separate,
    (State.PROTECTING, Trigger.STOP_FAILED): s_stop_rejected,
    (State.PROTECTING, Trigger.NAKED_DEADLINE): s_stop_deadline,
    (State.PROTECTING, Trigger.CLOSE_REQUESTED): s_close_while_protecting,
    (State.PROTECTED, Trigger.CLOSE_REQUESTED): s_close,
    (State.PROTECTED, Trigger.CLOSE_FOUND): s_close_found_protected,
    (State.PROTECTING, Trigger.CLOSE_FOUND): s_close_found_protecting,
    (State.FLATTENING, Trigger.CLOSE_CONFIRMED): s_close,
    (State.FLATTENING, Trigger.CLOSE_UNCONFIRMED): s_stuck_then_closed,
    (State.STUCK, Trigger.CLOSE_CONFIRMED): s_stuck_then_closed,
}


def intents(h: Harness) -> int:
    return sum(1 for m in h.journal if getattr(m, "intent", None) is not None)


def converged(h: Harness) -> None:
    """Given time, every path ends protected or flat, and belief matches the venue."""
    h.advance(300.0)
    pos = h.truth().open_positions().get(SYMBOL)
    assert h.position_reads() == 0
    assert h.entries_on_venue() <= max(1, intents(h))     # never a second entry for one intent (or foreign)
    assert h.core.state in (State.IDLE, State.PROTECTED), h.core.state
    if h.core.state is State.IDLE:
        assert pos is None, "we believe we are flat but the venue holds a position"
    elif pos is None:
        assert any(o.client_order_id.startswith("stop-") for o in h.truth().orders)   # our stop fired
    else:
        assert pos.stop_price is not None


@pytest.mark.parametrize("edge", list(TRANSITIONS), ids=lambda e: f"{e[0]}--{e[1]}")
def test_every_edge_is_driven_by_a_venue_scenario(edge):
    assert edge in SCENARIOS, f"no scenario drives {edge}: add one"
    h = SCENARIOS[edge]()
    assert edge in edges(h)
    assert h.position_reads() == 0
    assert h.entries_on_venue() <= 1


@pytest.mark.parametrize("edge", list(TRANSITIONS), ids=lambda e: f"{e[0]}--{e[1]}")
def test_a_crash_right_after_any_edge_converges(edge):
    # The actor dies the moment this edge is journaled: memory, timers and in-flight replies
    # lost. A new actor rebuilds from the journal and the venue and must still converge.
    h = SCENARIOS[edge](crash=[edge])
    assert h.crashes >= 1, f"the scenario never took {edge}"
    converged(h)


def test_fsm_refuses_edges_not_in_the_table():
    fsm = FSM(TRANSITIONS, State.IDLE)
    with pytest.raises(InvalidTransition):
        fsm.apply(Trigger.CLOSE_CONFIRMED)
    assert fsm.state is State.IDLE


def test_no_state_is_a_dead_end():
    sources = {s for s, _ in TRANSITIONS}
    assert set(State) <= sources | {State.IDLE}
    for state in State:
        assert state in sources, f"{state} has no way out"


FAULTS = st.sampled_from([
    Fault("create_order", FaultKind.TIMEOUT_AFTER),
    Fault("create_order", FaultKind.TIMEOUT_BEFORE),
    Fault("create_order", FaultKind.LATE, delay_s=2.0),
    Fault("create_order", FaultKind.LATE, delay_s=4.0, reduce_only=True),
    Fault("create_order", FaultKind.ERROR, code=10006, message="rate limit"),
    Fault("create_order", FaultKind.ERROR, code=110007, message="no balance"),
    Fault("create_order", FaultKind.ERROR, code=10016, message="server error"),
    Fault("create_order", FaultKind.TIMEOUT_AFTER, reduce_only=True),
    Fault("create_order", FaultKind.ERROR, code=10001, message="params", reduce_only=True),
    Fault("set_stop", FaultKind.ERROR, code=10001, message="risk"),
    Fault("set_stop", FaultKind.ERROR, code=10016, times=5),
    Fault("set_stop", FaultKind.TIMEOUT_AFTER),
    Fault("set_stop", FaultKind.TIMEOUT_BEFORE, times=100),
    Fault("fetch_order", FaultKind.ERROR, code=10016, times=10),
    Fault("fetch_order", FaultKind.TIMEOUT_BEFORE, times=3),
])


class PositionMachine(RuleBasedStateMachine):
    """Random commands, faults and time against one symbol; the invariant is the product's promise."""

    def __init__(self) -> None:
        super().__init__()
        self.h: Harness | None = None

    @rule(attached=st.booleans(), ack_only=st.booleans(), deadline=st.sampled_from([1.0, 10.0]))
    def start(self, attached: bool, ack_only: bool, deadline: float) -> None:
        # A deadline shorter than an in-flight entry's delay makes the rollback race the entry.
        if self.h is None:
            self.h = Harness(venue(attached=attached, ack_only=ack_only, volatility=0.002),
                             settings=fast_settings(naked_deadline_s=deadline))

    @rule(fault=FAULTS)
    def inject(self, fault: Fault) -> None:
        if self.h is not None:
            self.h.adapter.faults.add(fault)

    @rule(qty=st.sampled_from([0.5, 1.0, 3.0]))
    def open(self, qty: float) -> None:
        if self.h is not None:
            self.h.open(qty=qty, stop=90.0)
            self.h.run(until=0.0)

    @rule()
    def crash(self) -> None:
        if self.h is not None:
            self.h.crash()

    @rule()
    def close(self) -> None:
        if self.h is not None:
            self.h.close_position()
            self.h.run(until=0.0)

    @rule(seconds=st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    def wait(self, seconds: float) -> None:
        if self.h is not None:
            self.h.advance(seconds)

    @invariant()
    def every_open_position_is_protected_or_being_handled(self) -> None:
        h = self.h
        if h is None:
            return
        assert h.position_reads() == 0
        assert h.entries_on_venue() <= intents(h)
        pos = h.truth().open_positions().get(SYMBOL)
        if pos is not None and pos.stop_price is None:
            assert h.core.state in HANDLING, f"naked position while {h.core.state}"
        if h.core.state is State.IDLE:
            assert pos is None, "we believe we are flat but the venue holds a position"

    def teardown(self) -> None:
        h = self.h
        if h is None:
            return
        try:
            self._converges(h)
        finally:
            h.close()

    @staticmethod
    def _converges(h: Harness) -> None:
        converged(h)


TestPositionMachine = PositionMachine.TestCase
TestPositionMachine.settings = settings(max_examples=150, stateful_step_count=25, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
