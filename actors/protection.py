"""ProtectionActor: the last line of defence. It scans the venue's positions periodically and
finds what nothing protects or what changed outside posguard: foreign positions (opened outside
posguard), positions of ours the venue shows resized, flipped, with another stop, or not at all,
and stop orders of ours left working on a symbol that is flat.

It only detects: acting on the venue is the symbol's PositionActor's job (one writer per
symbol), asked through the supervisor with AdoptPosition, PositionObserved or CancelLeftovers.
It leaves alone what a PositionActor is handling or changed within `grace_s` (>= the venue's REST
lag: the incident's 24 s lag must never make it set a second stop on, or close, a position being
opened). A list read that leaves out a position we hold is only suspect (logged, counted): the
PositionActor asks the matching engine before anything is closed or cancelled. Anything that
could close a foreign position needs two agreeing reads, and a leftover stop order is cancelled
only after two reads the REST lag apart show its symbol flat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from loguru import logger
from thespian.actors import WakeupMessage

from actors.async_bridge import BridgedActor
from actors.messages import (
    AdoptPosition,
    CancelLeftovers,
    Collaborators,
    CommandAccepted,
    CommandDenied,
    ConfigureProtection,
    FetchPositions,
    FetchStopOrders,
    PositionObserved,
    PositionsFetched,
    PositionSnapshot,
    PositionSnapshots,
    ProtectionReady,
    ScanDone,
    ScanNow,
    StopOrdersFetched,
    StreamTrust,
    StreamView,
)
from actors.position.base import ADOPTION_REFUSED
from actors.position.states import RESTING, State
from actors.settings import ProtectionSettings
from adapters.base import PositionReport, Side, StopOrderReport
from adapters.stops import is_ours, with_stop_orders

SCAN = "protection-scan"
ASKED_KEPT = 16                      # reads in flight remembered (their answers may be lost)
REJUDGE = "protection-rejudge"
MISSING = "PROTECTED here, but the venue view shows no position"
EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the scan saw that needs a decision; `key` identifies it across scans."""

    symbol: str
    kind: str                        # foreign | undeployed | drift | resized | flipped | missing
    detail: str
    position: PositionReport | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.symbol, self.kind


def findings(view: list[PositionReport], snapshots: dict[str, PositionSnapshot], now: float,
             grace_s: float, symbols: tuple[str, ...]) -> list[Finding]:
    """What the venue view shows that our actors do not account for (pure; unit-tested)."""
    out: list[Finding] = []

    def settled(snap: PositionSnapshot) -> bool:
        if snap.state == State.IDLE and snap.intent_id is None:
            return True                                  # never opened anything: nothing of ours to see
        return snap.state in RESTING and now - snap.updated_at >= grace_s

    seen = set()
    for p in view:
        seen.add(p.symbol)
        snap = snapshots.get(p.symbol)
        if p.symbol not in symbols and snap is None:
            out.append(Finding(p.symbol, "undeployed", f"{p.side} {p.qty:g} on a symbol this deployment does not run",
                               p))
        elif snap is None or not settled(snap):          # not heard from its actor yet, or busy
            continue
        elif snap.state == State.IDLE:
            out.append(Finding(p.symbol, "foreign", f"{p.side} {p.qty:g}, stop {p.stop_price or 'NONE'}", p))
        elif snap.side is not None and p.side != snap.side:
            out.append(Finding(p.symbol, "flipped", f"venue {p.side} {p.qty:g}, ours {snap.side} {snap.filled_qty:g}",
                               p))
        elif abs(p.qty - snap.filled_qty) > EPS:
            out.append(Finding(p.symbol, "resized", f"venue {p.qty:g}, ours {snap.filled_qty:g}", p))
        elif not _holds_our_stop(p, snap.stop_price):
            out.append(Finding(p.symbol, "drift", f"venue stop {p.stop_price or 'NONE'}, ours {snap.stop_price}", p))
    for symbol, snap in snapshots.items():
        if symbol not in seen and snap.state == State.PROTECTED and settled(snap):
            out.append(Finding(symbol, "missing", MISSING))
    return out


def _holds_our_stop(p: PositionReport, ours: float | None) -> bool:
    prices = p.stop_prices or ((p.stop_price,) if p.stop_price is not None else ())
    return ours is not None and any(abs(price - ours) <= EPS for price in prices)


def leftover_stops(view: list[PositionReport], orders: list[StopOrderReport], snapshots: dict[str, PositionSnapshot],
                   symbols: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Stop orders of ours working on a symbol the view shows flat and no episode of ours holds:
    symbol -> their client ids (pure)."""
    held = {p.symbol for p in view}
    out: dict[str, list[str]] = {}
    for order in orders:
        snap = snapshots.get(order.symbol)
        busy = snap is not None and snap.state != State.IDLE
        if is_ours(order) and order.symbol not in held and not busy and (snap is not None or order.symbol
                                                                        not in symbols):
            out.setdefault(order.symbol, []).append(order.client_order_id)
    return {symbol: tuple(sorted(ids)) for symbol, ids in out.items()}


def adoption_stop(p: PositionReport, stop_pct: float) -> float | None:
    """The stop an adopted position keeps: its own if it has one (a stop position or a stop
    order we count as one) -- taking it over must never loosen or stack protection -- else one
    `stop_pct` from its entry; from the venue's mark price when the entry is unknown or the
    price has already moved past that stop; never from nothing (None: no price to place it by)."""
    if p.stop_price is not None:
        return p.stop_price
    distance = stop_pct / 100
    for reference in (p.entry_price, p.mark_price):
        if not reference or reference <= 0:
            continue
        stop = round(reference * (1 - distance if p.side is Side.BUY else 1 + distance), 8)
        through = p.mark_price is not None and (stop >= p.mark_price if p.side is Side.BUY else stop <= p.mark_price)
        if not through:
            return stop
    return None


class ProtectionActor(BridgedActor):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.settings = ProtectionSettings()
        self.symbols: tuple[str, ...] = ()
        self.exchange: Any = None
        self.snapshots: dict[str, PositionSnapshot] = {}
        self.suspects: dict[tuple[str, str], int] = {}   # finding key -> consecutive scans seen
        # Stream evidence (actors/stream.py): used only while the stream is trusted.
        self.stop_orders = False
        self.stream_grace_s = 1.0
        self.trusted = False
        self.stream_view: dict[str, PositionReport | None] = {}
        self.stream_stops: dict[tuple[str, str], StopOrderReport] = {}
        self.untrusted_updates: list[StreamView] = []       # live updates kept until reconciliation ends
        self.stream_suspects: dict[tuple[str, str], int] = {}
        self.awaiting_stops: dict[str, PositionReport] = {}  # symbol -> foreign position, its stop orders asked
        self.scan_requests: dict[str, Any] = {}              # ScanNow request id -> who asked
        # request id -> when the read was asked (host-monotonic ns): what it shows is no newer than
        # that, however late its answer is judged. Each read has its own id, so a lost answer never
        # dates the next one; at most ASKED_KEPT are remembered.
        self.asked_ns: dict[str, int] = {}
        self.reads = 0
        self.rejudge_armed = False
        # (symbol, leftover client ids) -> when a read first showed them on a flat symbol
        self.leftovers: dict[tuple[str, tuple[str, ...]], float] = {}

    def receiveMsg_ConfigureProtection(self, msg: ConfigureProtection, sender: Any) -> None:  # noqa: N802
        first = self.exchange is None
        self.supervisor, self.exchange, self.settings, self.symbols = sender, msg.exchange, msg.settings, msg.symbols
        self.stop_orders, self.stream_grace_s = msg.stop_orders, msg.stream_grace_s
        for snap in msg.snapshots:
            self.snapshots.setdefault(snap.symbol, snap)
        if first:
            self.wakeupAfter(timedelta(seconds=self.settings.scan_s), SCAN)
        self.send(sender, ProtectionReady())

    def receiveMsg_Collaborators(self, msg: Collaborators, sender: Any) -> None:  # noqa: N802
        self.exchange = msg.exchange

    def receiveMsg_PositionSnapshots(self, msg: PositionSnapshots, sender: Any) -> None:  # noqa: N802
        for snap in msg.snapshots:
            self.receiveMsg_PositionSnapshot(snap, sender)

    def receiveMsg_PositionSnapshot(self, msg: PositionSnapshot, sender: Any) -> None:  # noqa: N802
        if not msg.supersedes(self.snapshots.get(msg.symbol)):
            return                                           # overtaken in transit by a newer one
        self.snapshots[msg.symbol] = msg
        if self.trusted and self.stream_view.get(msg.symbol) is not None:
            # The stream showed a position while its actor was busy (or unheard of): judge it
            # again now, not when the lagging REST scan comes round.
            self._judge_stream(msg.symbol, fresh=False)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:  # noqa: N802
        if msg.payload == REJUDGE:
            self.rejudge_armed = False
            for symbol, position in list(self.stream_view.items()):
                if self.trusted and position is not None:
                    self._judge_stream(symbol, fresh=False)
            return
        if msg.payload != SCAN:
            return
        self.wakeupAfter(timedelta(seconds=self.settings.scan_s), SCAN)   # re-arm first: a failure never stops scans
        if self.exchange is not None:
            self.reads += 1
            self._fetch(f"{SCAN}:{self.reads}")

    def receiveMsg_ScanNow(self, msg: ScanNow, sender: Any) -> None:  # noqa: N802
        if self.exchange is None:
            self.send(sender, ScanDone(msg.request_id, "exchange not known yet"))
            return
        self.scan_requests[msg.request_id] = sender
        self._fetch(msg.request_id)

    def _fetch(self, request_id: str) -> None:
        self.asked_ns[request_id] = time.monotonic_ns()
        while len(self.asked_ns) > ASKED_KEPT:               # answers lost (an exchange restarted)
            del self.asked_ns[next(iter(self.asked_ns))]
        self.send(self.exchange, FetchPositions(request_id=request_id))

    def receiveMsg_PositionsFetched(self, msg: PositionsFetched, sender: Any) -> None:  # noqa: N802
        asker = self.scan_requests.pop(msg.request_id, None)
        try:
            self._scanned(msg)
        finally:
            if asker is not None:
                failure = None if msg.failure is None else f"{msg.failure.outcome} {msg.failure.code}"
                self.send(asker, ScanDone(msg.request_id, failure))

    def _scanned(self, msg: PositionsFetched) -> None:
        read_ns = self.asked_ns.pop(msg.request_id, 0)
        if msg.failure is not None:
            logger.warning("protection scan: venue positions unreadable ({} {}: {}); observation refused,"
                           " next scan in {}s", msg.failure.outcome, msg.failure.code, msg.failure.message,
                           self.settings.scan_s)
            return
        now = time.time()
        found = findings(list(msg.positions), self.snapshots, now, self.settings.grace_s, self.symbols)
        keys = {f.key for f in found}
        self.suspects = {k: n for k, n in self.suspects.items() if k in keys}
        for f in found:
            seen = self.suspects[f.key] = self.suspects.get(f.key, 0) + 1
            self._decide(f, seen, read_ns)
        self._sweep(list(msg.positions), list(msg.stop_orders), now)

    def _sweep(self, view: list[PositionReport], orders: list[StopOrderReport], now: float) -> None:
        """Stop orders of ours on a flat symbol (a close-all stop outlives its position): cancelled
        once two reads at least `grace_s` (the REST lag) apart both show it flat with them -- and
        the stream, while trusted, shows no position there either."""
        found = leftover_stops(view, orders, self.snapshots, self.symbols)
        if self.trusted:
            found = {s: ids for s, ids in found.items() if self.stream_view.get(s) is None}
        current = set(found.items())
        self.leftovers = {k: t for k, t in self.leftovers.items() if k in current}
        for key in current:
            first = self.leftovers.setdefault(key, now)
            if first == now:
                logger.warning("protection: stop orders of ours {} work on {}, which the venue shows flat;"
                               " cancelling them if a read {}s later agrees", ", ".join(key[1]), key[0],
                               self.settings.grace_s)
            elif now - first >= self.settings.grace_s:
                del self.leftovers[key]
                symbol, ids = key
                logger.warning("protection: asking {} to cancel stop orders of ours on a flat symbol: {}", symbol,
                               ", ".join(ids))
                self.send(self.supervisor, CancelLeftovers(symbol, ids))

    def _decide(self, f: Finding, reads: int, read_ns: int = 0) -> None:
        policy = self.settings.foreign_policy
        foreign = f.kind in ("foreign", "undeployed")     # an undeployed symbol gets an actor on demand
        if foreign and policy == "alert":
            if reads == 1:
                logger.critical("ALERT protection: {} {} -- policy is alert only; a human must act",
                                f.symbol, f.detail)
            return
        if foreign and policy == "protect" and f.position is not None:
            p = f.position                               # protecting closes nothing: one read is enough
            stop = adoption_stop(p, self.settings.foreign_stop_pct)
            if stop is None:
                if reads == 1:
                    logger.critical("ALERT protection: {} {} has neither an entry nor a mark price: no stop can be"
                                    " placed by it; a human must act", f.symbol, f.detail)
                return
            self._ask(AdoptPosition(f.symbol, p.side, p.qty, stop, reason=f"foreign position ({f.detail})",
                                    reference_price=p.mark_price))
        elif f.kind in ("missing", "flipped", "resized", "drift"):
            # A position of ours the read shows otherwise, settled past the REST lag. Never enough
            # to close or cancel anything: its PositionActor judges it -- a stop is set again
            # (idempotent), a new size journaled (the next read corrects a wrong one), and only
            # the matching engine's "no position" confirms that a position is gone.
            if f.kind == "missing":
                logger.warning("protection: suspect list read: {} is PROTECTED here, the venue's list leaves it"
                               " out; asking its PositionActor to ask the venue", f.symbol)
            self._ask(PositionObserved(f.symbol, f.position, f.kind, read_ns=read_ns))
        elif reads < 2:
            logger.warning("protection: {} {} ({}); acting if the next read agrees", f.symbol, f.kind, f.detail)
        elif foreign and f.position is not None:       # policy close: two agreeing reads
            p = f.position
            self._ask(AdoptPosition(f.symbol, p.side, p.qty, None, reason=f"foreign position ({f.detail})"))

    def _ask(self, msg: AdoptPosition | PositionObserved) -> None:
        self.suspects.pop((msg.symbol, "foreign"), None)
        self.suspects.pop((msg.symbol, "undeployed"), None)
        logger.warning("protection: asking {} to {}: {}", msg.symbol, type(msg).__name__,
                       msg.reason if isinstance(msg, AdoptPosition) else msg.finding)
        self.send(self.supervisor, msg)

    # -- stream evidence -----------------------------------------------------------------------

    def receiveMsg_StreamTrust(self, msg: StreamTrust, sender: Any) -> None:  # noqa: N802
        self.trusted = msg.trusted
        if not msg.trusted:
            # What the stream said before the gap may be stale now: forget it; REST scans carry on.
            self.stream_view.clear()
            self.stream_stops.clear()
            self.stream_suspects.clear()
            self.untrusted_updates.clear()
            return
        updates, self.untrusted_updates = self.untrusted_updates, []
        for update in updates:
            self._stream(update)

    def receiveMsg_StreamView(self, msg: StreamView, sender: Any) -> None:  # noqa: N802
        if self.trusted:
            self._stream(msg)
        else:
            self.untrusted_updates.append(msg)           # live, newer than the gap: used once reconciled

    def _stream(self, msg: StreamView) -> None:
        for order, is_open in msg.stops:
            key = (order.symbol, order.client_order_id or order.venue_order_id)
            if is_open:
                self.stream_stops[key] = order
            else:
                self.stream_stops.pop(key, None)
        changed = {symbol for symbol, _ in msg.positions} | {order.symbol for order, _ in msg.stops}
        for symbol, position in msg.positions:
            self.stream_view[symbol] = position
        for symbol in changed:
            self._judge_stream(symbol)

    def _judge_stream(self, symbol: str, fresh: bool = True) -> None:
        """A position the stream shows that nothing of ours accounts for is protected at once
        (one observation sets a stop; two agreeing ones before anything that could close it).
        `fresh`: a new observation; else the same one judged again (its actor moved on), which
        never counts as a second, agreeing read."""
        position = self.stream_view.get(symbol)
        view = [] if position is None else with_stop_orders(
            [position], [o for (s, _), o in self.stream_stops.items() if s == symbol])
        snaps = {symbol: self.snapshots[symbol]} if symbol in self.snapshots else {}
        found = [f for f in findings(view, snaps, time.time(), self.stream_grace_s, self.symbols)
                 if f.kind in ("foreign", "undeployed")]  # drift and vanished positions: the REST scan's
        self._rejudge_after_grace(symbol, position)
        keys = {f.key for f in found}
        for key in [k for k in self.stream_suspects if k[0] == symbol and k not in keys]:
            del self.stream_suspects[key]
        for f in found:
            seen = self.stream_suspects[f.key] = self.stream_suspects.get(f.key, 0) + (1 if fresh else 0) or 1
            if (self.stop_orders and f.position is not None and f.position.stop_price is None
                    and self.settings.foreign_policy == "protect"):
                # It may have a stop order the stream has not told us of: ask before adopting
                # (an adopted position keeps the stop it has: never stacked, never loosened).
                if symbol not in self.awaiting_stops and self.exchange is not None:
                    self.awaiting_stops[symbol] = f.position
                    self.send(self.exchange, FetchStopOrders(symbol))
                continue
            self._decide(f, seen)

    def _rejudge_after_grace(self, symbol: str, position: PositionReport | None) -> None:
        """A position shown while its actor has only just settled is judged again once the grace
        is over (nothing else would bring it up before the next REST scan)."""
        snap = self.snapshots.get(symbol)
        if position is None or snap is None or snap.state not in RESTING or self.rejudge_armed:
            return                                       # busy or unheard of: its next snapshot re-judges
        wait = self.stream_grace_s - (time.time() - snap.updated_at)
        if wait > 0 and not (snap.state == State.IDLE and snap.intent_id is None):
            self.rejudge_armed = True
            self.wakeupAfter(timedelta(seconds=wait + 0.05), REJUDGE)

    def receiveMsg_StopOrdersFetched(self, msg: StopOrdersFetched, sender: Any) -> None:  # noqa: N802
        position = self.awaiting_stops.pop(msg.symbol, None)
        if position is None:
            return
        if msg.failure is not None:
            logger.warning("protection: {} stop orders unreadable ({}); protecting it with our stop",
                           msg.symbol, msg.failure.code)
        (judged,) = with_stop_orders([position], list(msg.orders))
        self._decide(Finding(msg.symbol, "foreign" if msg.symbol in self.symbols else "undeployed",
                             f"{judged.side} {judged.qty:g}, stop {judged.stop_price or 'NONE'} (stream)", judged), 1)

    def receiveMsg_CommandAccepted(self, msg: CommandAccepted, sender: Any) -> None:  # noqa: N802
        pass                                             # the PositionActor's snapshots tell the rest

    def receiveMsg_CommandDenied(self, msg: CommandDenied, sender: Any) -> None:  # noqa: N802
        if msg.reason.startswith(ADOPTION_REFUSED):      # a position we will not guard: a human must look
            logger.critical("ALERT protection: {} {}; a human must act", msg.symbol, msg.reason)
        else:                                            # busy: the next read judges it again
            logger.info("protection: {} declined: {}", msg.symbol, msg.reason)
