"""Seeded chaos schedules for one PositionActor on the simulated venue (manual clock).

A schedule is a venue (attached or separate stop, acks with or without fills), a naked
deadline, and a random sequence of steps: open, close, wait, venue faults (ambiguous timeouts
after a fill, requests that arrive late, error replies, rate limits, rejections, latency
spikes), lost replies, actor crashes (memory, timers and in-flight replies lost), and, with a
stream, its lies: events lost, repeated or late, and claims that a stop fired when it did not;
replies missing a field we rely on; a journal that cannot write for a while (disk full); what
is done outside posguard (closed, reduced, increased or flipped by hand, liquidated, ADL, our stop
cancelled or moved by hand) on venues of both kinds (stops on the position, stops as orders that
outlive it); and REST scans (settled reads, some of which leave the position out) that adopt what
nothing of ours holds. After every step and at the end the product's promises are checked:

- no position read on the entry/stop/rollback path; at most one entry order per intent;
- an open position on the venue without a stop is being handled (never IDLE/PROTECTED), except
  for a stop removed by hand or a position changed outside -- and then for no longer than the
  next scan plus the naked deadline;
- IDLE means flat on the venue (but for a position opened outside, until the next scan adopts it);
- never a stop order of ours cancelled while its position lived (with no other of ours in its
  place), and none left working on a symbol flat for longer than the confirmation window;
- given time, everything ends PROTECTED (with a stop) or IDLE.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from actors.messages import OrderStreamed
from actors.position.states import State
from adapters.base import OrderReport, OrderStatus, Side, VenueError
from adapters.sim.faults import Fault, FaultKind
from tests.support.harness import SYMBOL, Harness, fast_settings, venue

FATES = ("deliver", "drop", "twice", "late")        # what the stream does with each event
HANDLING = {State.RECOVERING, State.ENTERING, State.CONFIRMING_ENTRY, State.PROTECTING, State.VERIFYING,
            State.FLATTENING, State.STUCK}
OUTSIDE = ("close", "partial", "increase", "flip", "liquidate", "partial_liquidation", "adl", "clear_stop",
           "move_stop", "omit")
SCAN_S, LAG_S = 5.0, 2.0                            # the scan's period; the venue's REST lag (grace = lag)
CONFIRM_WINDOW_S = 10.0             # a flat symbol keeps no stop order of ours longer (a lost reply: + its timeout)


class Scanner:
    """The ProtectionActor in miniature, on the harness's clock: every SCAN_S a settled REST read
    (the lagging view) is judged -- what the core holds, or a foreign position adopted."""

    def __init__(self, h: Harness, rng: random.Random) -> None:
        self.h, self.rng = h, rng
        self.last = h.clock.t
        self.omit_next = False
        self.leftovers_since: float | None = None      # a read first showed stops of ours on a flat symbol

    def due(self) -> None:
        while self.h.clock.t - self.last >= SCAN_S:
            self.last += SCAN_S
            self.scan()

    def scan(self) -> None:
        h = self.h
        view = [p for p in h.adapter.engine.position_view() if p.symbol == SYMBOL]
        if self.omit_next:
            view, self.omit_next = [], False
        seen = view[0] if view else None
        last = h.published[-1] if h.published else h.core.snapshot()      # what the scan was told last
        settled = h.clock.t - last.updated_at >= LAG_S
        if not settled:
            return
        if h.core.state is State.PROTECTED:
            from actors.messages import PositionObserved

            h._guarded(lambda: h.core.observe(PositionObserved(SYMBOL, seen, "scan")))
        elif h.core.state is State.IDLE and seen is not None:           # the core refuses it mid-cleanup
            stop = round(seen.entry_price * (0.9 if seen.side is Side.BUY else 1.1), 8) if seen.entry_price else None
            h.adopt(qty=seen.qty, stop=seen.stop_price or stop, side=seen.side)
        self.sweep(seen)
        h.run(until=0.0)

    def sweep(self, seen: object) -> None:
        """Stop orders of ours on a symbol two reads the lag apart show flat: cancelled."""
        h = self.h
        ours = [o.client_order_id for o in h.working_stops() if o.client_order_id.startswith("pg")]
        if seen is not None or not ours or h.core.state is not State.IDLE:
            self.leftovers_since = None
            return
        if self.leftovers_since is None:
            self.leftovers_since = h.clock.t
        elif h.clock.t - self.leftovers_since >= LAG_S:
            h.cancel_leftovers(*ours)
            self.leftovers_since = None


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


@dataclass
class Watch:
    """What the checks remember between steps: since when the venue is naked or flat, and until
    when a change made outside excuses it (the next scan, plus the naked deadline)."""

    naked_since: float | None = None
    flat_since: float | None = None
    excused_until: float = -1.0
    reads_before: int = 0                            # position reads the scans made (allowed)
    outside: bool = False                            # something was done outside posguard in this schedule
    idle_since: float | None = None
    journal_back_at: float = -1.0                    # when the journal could write again (a cleanup waits for it)


def check(h: Harness, final: bool = False, watch: Watch | None = None) -> None:
    watch = watch or Watch()
    if h.position_reads() > watch.reads_before:
        raise Violation("a position read happened")
    intents = sum(1 for m in h.journal if getattr(m, "intent", None) is not None)
    if h.entries_on_venue() > intents:
        raise Violation(f"{h.entries_on_venue()} entries on the venue for {intents} intents")
    pos = h.truth().open_positions().get(SYMBOL)
    state, now = h.core.state, h.clock.t
    watch.idle_since = (watch.idle_since if watch.idle_since is not None else now) if state is State.IDLE else None
    # After a change outside posguard, what is left when an episode of ours ends (an increase made
    # while we closed, a flip) is a foreign position: the next scan adopts it.
    excused = now <= watch.excused_until or (watch.outside and watch.idle_since is not None
                                              and now - watch.idle_since <= SCAN_S + LAG_S + 1.0)
    naked = pos is not None and pos.stop_price is None
    watch.naked_since = (watch.naked_since if watch.naked_since is not None else now) if naked else None
    if naked and state not in HANDLING and not excused:
        raise Violation(f"naked position while {state}")
    if watch.naked_since is not None and now - watch.naked_since > h.settings.naked_deadline_s + SCAN_S + LAG_S \
            and not excused and state not in HANDLING:
        raise Violation(f"naked for {now - watch.naked_since:.1f}s")
    if state is State.IDLE and pos is not None and not excused:
        raise Violation("IDLE while the venue holds a position")
    book = h.adapter.engine.stop_book
    if book is not None:
        ours_naked = [cid for cid in h.adapter.engine.cancelled_live if cid.startswith("pg")]
        if ours_naked:
            raise Violation(f"stop {ours_naked[0]} cancelled while its position lived, nothing else covering it")
        watch.flat_since = (watch.flat_since if watch.flat_since is not None else now) if pos is None else None
        ours = [w for w in book.working(SYMBOL) if w.client_id.startswith("pg")]
        window = CONFIRM_WINDOW_S + 2 * h.settings.reply_timeout_s
        since = max(watch.flat_since, watch.journal_back_at) if watch.flat_since is not None else None
        if (ours and since is not None and now - since > window
                and not h.fail_journal and state is State.IDLE):
            raise Violation(f"stop orders of ours {[w.client_id for w in ours]} working on a flat symbol")
    if final:
        if state not in (State.IDLE, State.PROTECTED):
            raise Violation(f"did not converge: {state}")
        if state is State.PROTECTED and pos is None and not any(
                o.client_order_id.startswith("stop-") for o in h.truth().orders):
            raise Violation("PROTECTED but the venue is flat and no stop fired")


def outside_action(h: Harness, rng: random.Random, scanner: Scanner) -> str:
    """Something done to the account outside posguard; returns what (or that it could not be)."""
    pos = h.truth().open_positions().get(SYMBOL)
    kind = rng.choice(OUTSIDE)
    if kind == "omit":
        scanner.omit_next = True                         # the next list read leaves the position out
        return "outside omit"
    if pos is None:
        return f"outside {kind}: nothing open"
    held = Side.BUY if pos.qty > 0 else Side.SELL
    size = abs(pos.qty)
    try:
        match kind:
            case "close":
                h.outside("order", side=held.opposite, qty=size, reduce_only=True)
            case "partial":
                h.outside("order", side=held.opposite, qty=round(size / 2, 8), reduce_only=True)
            case "increase":
                h.outside("order", side=held, qty=0.5)
            case "flip":
                h.outside("order", side=held.opposite, qty=size + 0.5)
            case "liquidate":
                h.outside("liquidate")
            case "partial_liquidation":
                h.outside("liquidate", qty=round(size / 2, 8))
            case "adl":
                h.outside("deleverage", qty=rng.choice([None, round(size / 2, 8)]))
            case "clear_stop":
                h.outside("clear_stop")
            case "move_stop":
                px = h.adapter.engine.price(SYMBOL)
                h.outside("move_stop", price=round(px * (0.97 if held is Side.BUY else 1.03), 8))
    except VenueError as exc:
        return f"outside {kind}: refused ({exc})"
    return f"outside {kind}"


def run_schedule(seed: int) -> Outcome:
    rng = random.Random(seed)
    attached = rng.random() < 0.5
    streams = rng.random() < 0.5
    stop_orders = rng.random() < 0.3
    h = Harness(venue(*[random_fault(rng) for _ in range(rng.randint(0, 3))], attached=attached,
                      ack_only=rng.random() < 0.3, volatility=rng.choice([0.0, 0.0005, 0.002]), lag=LAG_S,
                      stop_orders=stop_orders),
                settings=fast_settings(naked_deadline_s=rng.choice([1.0, 3.0, 10.0]),
                                       reply_timeout_s=rng.choice([2.0, 15.0]),
                                       follow_stop_moves=rng.random() < 0.3),
                streams=streams, stream_fate=lambda msg: rng.choices(FATES, [5, 2, 1, 2])[0])
    scanner, watch = Scanner(h, rng), Watch()
    steps: list[str] = [f"venue attached={attached} streams={streams} stop_orders={stop_orders}"]
    out = Outcome(seed, steps)
    try:
        for _ in range(rng.randint(3, 14)):
            action = rng.choices(["open", "close", "wait", "fault", "crash", "drop", "lie", "disk", "outside", "amend",
                                  "change"], [4, 2, 4, 2, 1.5, 1, 1 if streams else 0, 1, 2, 1.5, 1.5])[0]
            if action == "open":
                h.open(qty=rng.choice([0.5, 1.0, 3.0]), stop=90.0)
                h.run(until=0.0)
            elif action == "close":
                h.close_position()
                h.run(until=0.0)
            elif action == "amend":                      # a stop move: a price (120: refused, above it) or break-even
                to = rng.choice([85.0, 93.0, 97.0, 120.0, None])
                h.amend(stop=to, breakeven=to is None)
                h.run(until=0.0)
                action = f"amend {to or 'breakeven'}"
            elif action == "change":                     # beside the stop: a take-profit, a trail, part closed, an add
                h.core.note_price(h.adapter.engine.price(SYMBOL))
                what = rng.choice(["tp", "tp-wrong-side", "trail", "reduce", "add"])
                if what.startswith("tp"):
                    h.amend(tp=80.0 if what == "tp-wrong-side" else 130.0)
                elif what == "trail":
                    h.amend(trail=rng.choice([1.0, 5.0]))
                elif what == "reduce":
                    h.close_position(qty=rng.choice([0.2, 0.5]))
                else:
                    h.open(qty=0.5, stop=90.0)
                h.run(until=0.0)
                action = f"change {what}"
            elif action == "wait":
                seconds = rng.choice([0.05, 0.3, 1.0, 3.0, 8.0, 30.0])
                advance(h, scanner, watch, seconds)
                action = f"wait {seconds}"
            elif action == "outside":
                action = outside_action(h, rng, scanner)
                h.run(until=0.0)
                watch.outside = True
                if "refused" not in action and "nothing" not in action:
                    watch.excused_until = h.clock.t + SCAN_S + LAG_S + h.settings.naked_deadline_s
            elif action == "fault":
                fault = random_fault(rng)
                h.adapter.faults.add(fault)
                action = f"fault {fault.op} {fault.kind}"
            elif action == "crash":
                h.crash()
            elif action == "disk":                       # the journal cannot write (disk full), or can again
                h.fail_journal = not h.fail_journal
                action = "journal fails" if h.fail_journal else "journal writes again"
                watch.journal_back_at = h.clock.t if not h.fail_journal else watch.journal_back_at
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
            watch.reads_before = h.position_reads()
            check(h, watch=watch)
        h.drop = None
        if h.fail_journal:
            h.fail_journal, watch.journal_back_at = False, h.clock.t
        advance(h, scanner, watch, 600.0)
        watch.reads_before = h.position_reads()
        check(h, final=True, watch=watch)
    except Violation as exc:
        out.violation = str(exc)
    finally:
        h.close()
    return out


def advance(h: Harness, scanner: Scanner, watch: Watch, seconds: float) -> None:
    """Time passes, a scan every SCAN_S (its position reads are the scan's, not the core's), and
    the promises are checked at every scan."""
    end = h.clock.t + seconds
    while h.clock.t < end:
        step = min(SCAN_S, end - h.clock.t)
        h.advance(step)
        scanner.due()
        watch.reads_before = h.position_reads()
        check(h, watch=watch)


def _drop_first(kind: str):
    dropped: list[object] = []

    def drop(msg: object) -> bool:
        if not dropped and type(msg).__name__ == kind:
            dropped.append(msg)
            return True
        return False

    return drop
