"""Seeded chaos schedules for one PositionActor on the simulated venue (manual clock).

A schedule is a venue (attached or separate stop, acks with or without fills), a naked
deadline, and a random sequence of steps: open, close, wait, venue faults (ambiguous timeouts
after a fill, requests that arrive late, error replies, rate limits, rejections, latency
spikes), lost replies, actor crashes (memory, timers and in-flight replies lost), and, with a
stream, its lies: events lost, repeated or late, and claims that a stop fired when it did not;
replies missing a field we rely on; a journal that cannot write for a while (disk full). After
every step and at the end the product's promises are checked:

- no position read, ever; at most one entry order per intent;
- an open position on the venue without a stop is being handled (never IDLE/PROTECTED);
- IDLE means flat on the venue; given time, everything ends PROTECTED (with a stop) or IDLE.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from actors.messages import OrderStreamed
from actors.position_states import State
from adapters.base import OrderReport, OrderStatus, Side
from adapters.faults import Fault, FaultKind
from tests.harness import SYMBOL, Harness, fast_settings, venue

FATES = ("deliver", "drop", "twice", "late")        # what the stream does with each event
HANDLING = {State.RECOVERING, State.ENTERING, State.CONFIRMING_ENTRY, State.PROTECTING, State.FLATTENING, State.STUCK}


def random_fault(rng: random.Random) -> Fault:
    kind = rng.choice(["timeout_after", "timeout_before", "late", "error_unknown", "rate_limit", "reject",
                       "delay", "stop_reject", "stop_unknown", "query_unknown", "close_reject", "close_late",
                       "malformed"])
    times = rng.choice([1, 1, 1, 2, 5])
    match kind:
        case "timeout_after":
            return Fault("create_order", FaultKind.TIMEOUT_AFTER, times=times)
        case "timeout_before":
            return Fault("create_order", FaultKind.TIMEOUT_BEFORE, times=times)
        case "late":
            return Fault("create_order", FaultKind.LATE, delay_s=rng.choice([0.5, 2.0, 4.0]), reduce_only=False)
        case "error_unknown":
            return Fault(rng.choice(["create_order", "set_stop", "fetch_order"]), FaultKind.ERROR, times=times,
                         code=rng.choice([10016, 10000, 503]), message="server error")
        case "rate_limit":
            return Fault(rng.choice(["create_order", "set_stop"]), FaultKind.ERROR, times=times, code=10006,
                         message="Too many visits")
        case "reject":
            return Fault("create_order", FaultKind.ERROR, code=110007, message="ab not enough", reduce_only=False)
        case "delay":
            return Fault("*", FaultKind.DELAY, times=times, delay_s=rng.choice([0.5, 3.0]))
        case "stop_reject":
            return Fault("set_stop", FaultKind.ERROR, code=10001, message="risk limit")
        case "stop_unknown":
            return Fault("set_stop", FaultKind.TIMEOUT_AFTER, times=times)
        case "query_unknown":
            return Fault("fetch_order", FaultKind.TIMEOUT_BEFORE, times=times * 3)
        case "malformed":                                # executed; the reply lacks a field we rely on
            op = rng.choice(["create_order", "set_stop", "fetch_order"])
            return Fault(op, FaultKind.MALFORMED, times=times,
                         reduce_only=rng.choice([None, True, False]) if op == "create_order" else None)
        case "close_reject":
            return Fault("create_order", FaultKind.ERROR, code=10001, message="params", reduce_only=True, times=times)
        case _:
            return Fault("create_order", FaultKind.LATE, delay_s=rng.choice([0.5, 2.0]), reduce_only=True)


@dataclass
class Outcome:
    seed: int
    steps: list[str]
    violation: str | None = None


class Violation(AssertionError):
    pass


def check(h: Harness, final: bool = False) -> None:
    if h.position_reads():
        raise Violation("a position read happened")
    intents = sum(1 for m in h.journal if getattr(m, "intent", None) is not None)
    if h.entries_on_venue() > intents:
        raise Violation(f"{h.entries_on_venue()} entries on the venue for {intents} intents")
    pos = h.truth().open_positions().get(SYMBOL)
    state = h.core.state
    if pos is not None and pos.stop_price is None and state not in HANDLING:
        raise Violation(f"naked position while {state}")
    if state is State.IDLE and pos is not None:
        raise Violation("IDLE while the venue holds a position")
    if final:
        if state not in (State.IDLE, State.PROTECTED):
            raise Violation(f"did not converge: {state}")
        if state is State.PROTECTED and pos is None and not any(
                o.client_order_id.startswith("stop-") for o in h.truth().orders):
            raise Violation("PROTECTED but the venue is flat and no stop fired")


def run_schedule(seed: int) -> Outcome:
    rng = random.Random(seed)
    attached = rng.random() < 0.5
    streams = rng.random() < 0.5
    h = Harness(venue(*[random_fault(rng) for _ in range(rng.randint(0, 3))], attached=attached,
                      ack_only=rng.random() < 0.3, volatility=rng.choice([0.0, 0.0005, 0.002])),
                settings=fast_settings(naked_deadline_s=rng.choice([1.0, 3.0, 10.0]),
                                       reply_timeout_s=rng.choice([2.0, 15.0])),
                streams=streams, stream_fate=lambda msg: rng.choices(FATES, [5, 2, 1, 2])[0])
    steps: list[str] = [f"venue attached={attached} streams={streams}"]
    out = Outcome(seed, steps)
    try:
        for _ in range(rng.randint(3, 14)):
            action = rng.choices(["open", "close", "wait", "fault", "crash", "drop", "lie", "disk"],
                                 [4, 2, 4, 2, 1.5, 1, 1 if streams else 0, 1])[0]
            if action == "open":
                h.open(qty=rng.choice([0.5, 1.0, 3.0]), stop=90.0)
                h.run(until=0.0)
            elif action == "close":
                h.close_position()
                h.run(until=0.0)
            elif action == "wait":
                seconds = rng.choice([0.05, 0.3, 1.0, 3.0, 8.0, 30.0])
                h.advance(seconds)
                action = f"wait {seconds}"
            elif action == "fault":
                fault = random_fault(rng)
                h.adapter.faults.add(fault)
                action = f"fault {fault.op} {fault.kind}"
            elif action == "crash":
                h.crash()
            elif action == "disk":                       # the journal cannot write (disk full), or can again
                h.fail_journal = not h.fail_journal
                action = "journal fails" if h.fail_journal else "journal writes again"
            elif action == "lie":
                # The stream claims our position's stop fired (it did not): only REST may say so.
                claim = OrderReport(SYMBOL, f"stop-lie-{rng.random()}", "v-lie", Side.SELL, 1.0, OrderStatus.FILLED,
                                    1.0, 90.0, reduce_only=True)
                h.deliver(OrderStreamed(claim, closed_by=rng.choice(["stop", "liquidation"])))
                h.run(until=0.0)
            else:
                kinds = ("OrderPlaced", "OrderQueried", "StopSet")
                kind = rng.choice(kinds)
                h.drop = _drop_first(kind)
                action = f"drop next {kind}"
            steps.append(action)
            check(h)
        h.drop = None
        h.advance(600.0)
        check(h, final=True)
    except Violation as exc:
        out.violation = str(exc)
    finally:
        h.close()
    return out


def _drop_first(kind: str):
    dropped: list[object] = []

    def drop(msg: object) -> bool:
        if not dropped and type(msg).__name__ == kind:
            dropped.append(msg)
            return True
        return False

    return drop
