"""ApiActor: the operator API of a running deployment, as a supervised child of the Supervisor.

The socket server (supervisor/api/server.py) runs on this actor's event loop; each operation
below is a coroutine there that asks the Supervisor (or the journal) through thespian and
turns the answer into JSON. The loop never touches thespian: `ask` posts the send to the
actor's thread and waits for the reply the actor's thread hands back by id.

The CLI and strategies reach the deployment only through here: nobody outside the
deployment's processes joins the actor system (whose frames are authenticated) or unpickles
anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from typing import Any

from loguru import logger

from actors.async_bridge import AsyncBridge, BridgedActor
from actors.messages import (
    Ack,
    ActorFailed,
    AmendPosition,
    ApiReady,
    ClosePosition,
    Collaborators,
    CommandAccepted,
    CommandDenied,
    ConfigureApi,
    Event,
    EventsCommitted,
    EventsRead,
    EventsReport,
    FetchPrice,
    GetTrueState,
    OpenPosition,
    PositionSnapshot,
    PositionSnapshots,
    PriceFetched,
    ReadEvents,
    RecentEvents,
    SetSafeMode,
    StatusReport,
    StatusRequest,
    StopReply,
    StopRequest,
    SubscribeEvents,
    TrueStateReport,
    WatcherChanged,
    new_id,
)
from actors.position.states import HELD
from adapters.base import Side
from supervisor.api.limits import ASK_TIMEOUT_S
from supervisor.api.protocol import POSITION_FIELDS, ApiError, Encoded, Request, encode
from supervisor.api.readiness import Readiness, not_ready, phase_json
from supervisor.api.server import ApiServer
from supervisor.dashboard.series import EntrySeries
from supervisor.dashboard.server import DashboardServer
from supervisor.dashboard.source import serve_page

FLATTEN_TIMEOUT_S = 120.0            # `stop --flatten` answers once every position is closed
CACHED_FORMS = 4                     # (columns, fields) forms of status kept encoded; others built per ask
COLUMNS = POSITION_FIELDS                     # a position's fields, in `status`; tests hold them to the snapshot's
SNAPSHOT_FIELDS = tuple(f for f in COLUMNS if f != "naked_now")       # read off the snapshot as it is


class ApiActor(Readiness, BridgedActor):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.config: ConfigureApi | None = None
        self.journal: Any = None
        self.server: ApiServer | None = None
        self.waiting: dict[str, asyncio.Future[Any]] = {}      # request id -> the loop's future
        self.latest_event: int | None = None                    # the last event seq the journal committed
        # What the Supervisor tells us (read and written on the loop): status is answered from here.
        self.header: StatusReport | None = None
        self.heard_at = 0.0                                     # monotonic: when the Supervisor last spoke
        self.told = asyncio.Event()             # set (and replaced) each time the Supervisor tells us more
        self.snapshots: dict[str, PositionSnapshot] = {}
        # A status of 1 000 positions is answered from cached JSON: each row encoded once per change.
        # Encoded once per snapshot, per form asked for: (columns, fields) -> JSON text.
        self.rows: dict[str, dict[tuple[bool, tuple[str, ...]], str]] = {}     # by symbol
        self.positions_text: dict[tuple[bool, tuple[str, ...]], str] = {}       # every row's, joined
        self.forms: set[tuple[bool, tuple[str, ...]]] = set()                   # the forms cached
        self.dashboard: DashboardServer | None = None
        self.series = EntrySeries()

    # -- lifecycle (actor thread) ----------------------------------------------------------------

    def receiveMsg_ConfigureApi(self, msg: ConfigureApi, sender: Any) -> None:  # noqa: N802
        self.supervisor = sender
        self.journal = msg.journal
        if self.server is None:
            self.config = msg
            self.bridge = AsyncBridge()
            server = ApiServer(msg.socket_path, msg.hello, self._handle, _JournalEvents(self))
            try:
                self.bridge.call(server.start())
            except OSError as exc:
                self.send(sender, ActorFailed("api", f"cannot serve {msg.socket_path}: {exc}"))
                return
            self.server = server
            logger.info("operator API on {}", msg.socket_path)
            if msg.dashboard_port is not None and not serve_page(self, _JournalEvents(self), msg, sender):
                return
        self.send(msg.journal, SubscribeEvents(self.myAddress))
        self.send(sender, ApiReady())

    def receiveMsg_Collaborators(self, msg: Collaborators, sender: Any) -> None:  # noqa: N802
        if msg.journal != self.journal:
            self.journal = msg.journal
            self.send(msg.journal, SubscribeEvents(self.myAddress))

    def receiveMsg_EventsCommitted(self, msg: EventsCommitted, sender: Any) -> None:  # noqa: N802
        if msg.events and self.latest_event is not None:
            self.latest_event = max(self.latest_event, msg.events[-1].seq)
        if self.server is not None and self.bridge is not None:
            self.bridge.loop.call_soon_threadsafe(self.server.publish, msg.events)
            if self.dashboard is not None:
                self.bridge.loop.call_soon_threadsafe(self.dashboard.feed.publish, msg.events)

    def on_exit(self) -> None:
        if self.dashboard is not None and self.bridge is not None:
            with contextlib.suppress(Exception):
                self.bridge.call(self.dashboard.close(), timeout=5)
        if self.server is not None and self.bridge is not None:
            try:
                self.bridge.call(self.server.close(), timeout=5)
            except Exception:  # noqa: BLE001 - shutting down anyway
                logger.exception("api close failed")
        super().on_exit()

    # -- replies, by id (actor thread) ------------------------------------------------------------

    def _resolve(self, key: str, msg: Any) -> None:
        future = self.waiting.pop(key, None)
        if future is not None and self.bridge is not None:
            self.bridge.loop.call_soon_threadsafe(_settle, future, msg)

    def receiveMsg_StatusReport(self, msg: StatusReport, sender: Any) -> None:  # noqa: N802
        if msg.request_id:
            self._resolve(msg.request_id, msg)
        elif self.bridge is not None:
            self.bridge.loop.call_soon_threadsafe(self._heard, msg)

    def receiveMsg_PositionSnapshot(self, msg: PositionSnapshot, sender: Any) -> None:  # noqa: N802
        if self.bridge is not None:
            self.bridge.loop.call_soon_threadsafe(self._snapshot, msg)

    def receiveMsg_PositionSnapshots(self, msg: PositionSnapshots, sender: Any) -> None:  # noqa: N802
        if self.bridge is not None:
            self.bridge.loop.call_soon_threadsafe(lambda: [self._snapshot(s) for s in msg.snapshots])

    def _snapshot(self, snap: PositionSnapshot) -> None:
        if not snap.supersedes(self.snapshots.get(snap.symbol)):
            return                                           # overtaken in transit by a newer one
        self.snapshots[snap.symbol] = snap
        self.series.on_snapshot(snap)
        self.rows.pop(snap.symbol, None)
        self.positions_text.clear()

    def _heard(self, header: StatusReport) -> None:
        self.header, self.heard_at = header, time.monotonic()
        self.told.set()                                      # whoever waits on the phase looks again
        self.told = asyncio.Event()

    def receiveMsg_CommandAccepted(self, msg: CommandAccepted, sender: Any) -> None:  # noqa: N802
        self._resolve(msg.command_id, msg)

    def receiveMsg_CommandDenied(self, msg: CommandDenied, sender: Any) -> None:  # noqa: N802
        self._resolve(msg.command_id, msg)

    def receiveMsg_PriceFetched(self, msg: PriceFetched, sender: Any) -> None:  # noqa: N802
        self._resolve(msg.request_id, msg)

    def receiveMsg_EventsReport(self, msg: EventsReport, sender: Any) -> None:  # noqa: N802
        self._resolve(msg.request_id, msg)

    def receiveMsg_EventsRead(self, msg: EventsRead, sender: Any) -> None:  # noqa: N802
        self._resolve(msg.request_id, msg)

    def receiveMsg_TrueStateReport(self, msg: TrueStateReport, sender: Any) -> None:  # noqa: N802
        self._resolve(msg.request_id, msg)

    def receiveMsg_StopReply(self, msg: StopReply, sender: Any) -> None:  # noqa: N802
        self._resolve(msg.request_id, msg)

    def receiveMsg_Ack(self, msg: Ack, sender: Any) -> None:  # noqa: N802
        self._resolve(msg.request_id, msg)

    # -- asking, from the loop --------------------------------------------------------------------

    async def ask(self, to_journal: bool, msg: Any, key: str, timeout: float = ASK_TIMEOUT_S) -> Any:
        assert self.bridge is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def send() -> None:                               # on the actor's thread
            target = self.journal if to_journal else self.supervisor
            self.waiting[key] = future
            self.send(target, msg)
        self.bridge.post(send)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.bridge.post(lambda: self.waiting.pop(key, None))
            raise ApiError("timeout", f"the deployment did not answer within {timeout:g} s") from None

    # -- operations (the loop) ---------------------------------------------------------------------

    async def _handle(self, request: Request) -> Any:
        a = request.args
        match request.op:
            case "status":
                fields = a["fields"] or COLUMNS
                if not a["truth"] and self.header is not None:
                    return await self._status_encoded(a["columns"], fields)
                status = await self._status(a["truth"])
                status["positions"] = ({"columns": list(fields), "rows": [[p[f] for f in fields] for p in
                                                                          status["positions"]]}
                                       if a["columns"] else [{f: p[f] for f in fields} for p in status["positions"]])
                return status
            case "inspect":
                return await self._inspect(a["symbol"], a["events"])
            case "open":
                return await self._open(a["symbol"], Side(a["side"]), a["qty"], a["sl"], a["sl_pct"],
                                        (a["tp"], a["tp_pct"], a["trail_pct"]), a["wait"], a["add"])
            case "close":
                msg = ClosePosition(self._known(a["symbol"]), qty=a["qty"])
                reply = _command(await self._command_when_ready(msg, a["wait"]))
                return {**reply, "qty": a["qty"]} if a["qty"] is not None else reply
            case "wait":
                return await self._wait_ready(a["timeout"])
            case "amend":
                msg = AmendPosition(self._known(a["symbol"]), a["sl"], a["breakeven"], take_profit=a["tp"],
                                    trail_pct=a["trail_pct"])
                return {**_command(await self._command(msg)), "stop_price": a["sl"], "breakeven": a["breakeven"],
                        "take_profit": a["tp"], "trail_pct": a["trail_pct"]}
            case "pause" | "resume":
                on = request.op == "pause"
                rid = new_id()
                report = await self.ask(False, SetSafeMode(on, f"operator (posguard {request.op})", rid), rid)
                return {"safe_mode": report.safe_mode, "reason": report.safe_reason}
            case "panic":
                return await self._panic()
            case "stop":
                rid = new_id()
                reply = await self.ask(False, StopRequest(a["flatten"], rid), rid,
                                       FLATTEN_TIMEOUT_S if a["flatten"] else ASK_TIMEOUT_S)
                if not reply.ok:
                    raise ApiError("refused", reply.detail)
                return {"stopping": True, "detail": reply.detail}
            case "watch":
                rid = new_id()
                await self.ask(False, WatcherChanged(a["pid"], rid), rid)
                return {"watcher_pid": a["pid"]}
        raise ApiError("unknown_op", f"unknown op {request.op}")

    async def _status_encoded(self, columns: bool, fields: tuple[str, ...]) -> Encoded:
        """`status` from what the Supervisor told us, as JSON text: the header encoded now, the
        positions from rows encoded once per snapshot (a naked row each time: its clock runs).
        `columns`: rows as arrays under one list of names; `fields`: only those. At 1 000
        symbols what the client parses is most of the cost: half the bytes, half the time."""
        assert self.header is not None
        header = await self._with_extras(status_json(self.header), time.monotonic() - self.heard_at)
        del header["positions"]
        form = (columns, fields)
        if form not in self.forms and len(self.forms) < CACHED_FORMS:
            self.forms.add(form)
        cached = form in self.forms                       # a client cycling through field orders gets
        text = self.positions_text.get(form)              # answers, not a cache that grows without end
        if text is None:
            now, parts, live = time.time(), [], False
            for symbol in sorted(self.snapshots):
                snap = self.snapshots[symbol]
                if snap.naked_since is not None:         # its naked_now changes with the clock
                    parts.append(_row_text(snap, now, columns, fields))
                    live = True
                    continue
                rows = self.rows.setdefault(symbol, {})
                row = rows.get(form)
                if row is None:
                    row = _row_text(snap, now, columns, fields)
                    if cached:
                        rows[form] = row
                parts.append(row)
            text = "[" + ",".join(parts) + "]"
            if columns:
                text = '{"columns":' + json.dumps(fields, separators=(",", ":")) + ',"rows":' + text + "}"
            if not live and cached:
                self.positions_text[form] = text
        return Encoded(encode(header)[:-2].decode() + ',"positions":' + text + "}")

    async def _status(self, truth: bool) -> dict[str, Any]:
        if self.header is not None:
            # Answered here, from what the Supervisor told us: no hop. It tells us at least every
            # heartbeat, so a Supervisor that is hung shows as `supervisor_heard_s_ago` growing.
            positions = tuple(self.snapshots[s] for s in sorted(self.snapshots))
            report = dataclasses.replace(self.header, positions=positions)
            heard = time.monotonic() - self.heard_at
        else:
            rid = new_id()
            report = await self.ask(False, StatusRequest(rid), rid)
            heard = 0.0
        out = await self._with_extras(status_json(report), heard)
        if truth:
            tid = new_id()
            reply = await self.ask(False, GetTrueState(request_id=tid), tid)
            if reply.state is not None:
                out["truth"] = {p.symbol: {"qty": p.qty, "stop_price": p.stop_price, "naked_seconds": p.naked_seconds,
                                           "open": p.closed_at is None}
                                for p in reply.state.positions}          # the latest episode of each symbol
        return out

    async def _with_extras(self, out: dict[str, Any], heard_s: float) -> dict[str, Any]:
        """The API's own fields of `status`: when it heard the Supervisor, the latest seq, the page."""
        out["supervisor_heard_s_ago"] = round(heard_s, 3)
        if self.latest_event is None:                     # once; then the journal's pushes keep it
            _, _, self.latest_event = await _JournalEvents(self).read(2**62, 0)
        out["last_event"] = self.latest_event
        # Said only by the API that holds the port: `posguard dashboard` prints the URL (and the
        # token) only then, never to whatever else listens there while posguard is down.
        out["dashboard"] = {"port": self.dashboard.port} if self.dashboard is not None else None
        return out

    async def _inspect(self, symbol: str, limit: int) -> dict[str, Any]:
        status = await self._status(False)
        position = next((p for p in status["positions"] if p["symbol"] == symbol), None)
        if position is None:
            raise ApiError("unknown_symbol", f"{symbol} is not managed by this deployment")
        rid = new_id()
        report: EventsReport = await self.ask(False, RecentEvents(symbol, limit, request_id=rid), rid)
        events = [dict(zip(("at", "from", "to", "trigger", "detail"), e, strict=True)) for e in report.events]
        return {"position": position, "events": events}

    async def _open(self, symbol: str, side: Side, qty: float, sl: float | None, sl_pct: float | None,
                    exits: tuple[float | None, float | None, float | None], wait_s: float, add: bool) -> Any:
        self._known(symbol)
        deadline = time.monotonic() + wait_s
        phase = await self._wait_ready(wait_s)            # the price below needs a venue that runs
        if phase["phase"] == "starting":
            raise not_ready(symbol, "deployment is not ready", phase, wait_s)
        tp, tp_pct, trail_pct = exits
        price = None
        if sl is None or tp_pct is not None:
            rid = new_id()
            fetched: PriceFetched = await self.ask(False, FetchPrice(symbol, request_id=rid), rid)
            if fetched.price is None:
                why = fetched.failure.message if fetched.failure else "no price"
                raise ApiError("unavailable", f"no price for {symbol} to place a stop or take-profit in % from: {why}")
            price = fetched.price
        up = 1 if side is Side.BUY else -1                # a stop below a long's price, a take-profit above
        if sl is None:
            assert sl_pct is not None and price is not None
            sl = round(price * (1 - up * sl_pct / 100), 8)
        if tp_pct is not None:
            assert price is not None
            tp = round(price * (1 + up * tp_pct / 100), 8)
        msg = OpenPosition(symbol, side, qty, sl, reference_price=price, take_profit=tp, trail_pct=trail_pct, add=add)
        result = _command(await self._command_when_ready(msg, max(0.0, deadline - time.monotonic())))
        return {**result, "side": str(side), "qty": qty, "stop_price": sl, "take_profit": tp, "trail_pct": trail_pct}

    async def _command(self, msg: OpenPosition | ClosePosition | AmendPosition) -> CommandAccepted | CommandDenied:
        return await self.ask(False, msg, msg.command_id)

    async def _panic(self) -> dict[str, Any]:
        status = await self._status(False)
        held = [p["symbol"] for p in status["positions"] if p["state"] in HELD]
        # Every close at once (rule 9): one process that does not answer costs its own symbols a
        # "refused" after the ask's timeout, never the closes of the others.
        replies = await asyncio.gather(*(self._command(ClosePosition(s)) for s in held), return_exceptions=True)
        closing, refused = [], {}
        for symbol, reply in zip(held, replies, strict=True):
            if isinstance(reply, CommandDenied):
                refused[symbol] = reply.reason
            elif isinstance(reply, BaseException):
                refused[symbol] = str(reply)
            else:
                closing.append(symbol)
        return {"closing": closing, "refused": refused}

    def _known(self, symbol: str) -> str:
        assert self.config is not None
        if symbol not in self.config.symbols:
            raise ApiError("unknown_symbol", f"{symbol} is not in this deployment"
                                             f" ({', '.join(self.config.symbols[:10])}"
                                             f"{', ...' if len(self.config.symbols) > 10 else ''})")
        return symbol


class _JournalEvents:
    """The event source the API server reads history from: the journal, through the actor."""

    def __init__(self, actor: ApiActor) -> None:
        self.actor = actor

    async def read(self, since: int, limit: int) -> tuple[list[Event], int, int]:
        rid = new_id()
        reply: EventsRead = await self.actor.ask(True, ReadEvents(since, limit, rid), rid)
        if reply.failure is not None:
            raise ApiError("unavailable", reply.failure)
        return list(reply.events), reply.oldest, reply.latest


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _command(reply: CommandAccepted | CommandDenied) -> dict[str, Any]:
    if isinstance(reply, CommandDenied):
        raise ApiError("refused", f"{reply.symbol}: {reply.reason}", symbol=reply.symbol)
    return {"symbol": reply.symbol, "intent_id": reply.intent_id}


def position_json(p: PositionSnapshot, now: float) -> dict[str, Any]:
    return {name: getattr(p, name) for name in SNAPSHOT_FIELDS} | {"naked_now": p.naked_now(now)}


def _row_text(p: PositionSnapshot, now: float, columns: bool = False,
              fields: tuple[str, ...] = COLUMNS) -> str:
    whole = position_json(p, now)
    if columns:
        return encode([whole[name] for name in fields])[:-1].decode()
    return encode(whole if fields == COLUMNS else {name: whole[name] for name in fields})[:-1].decode()


def status_json(report: StatusReport) -> dict[str, Any]:
    """A StatusReport as the API shows it (also what `posguard status --json` prints)."""
    now = time.time()
    return {
        **phase_json(report),
        "venue": report.venue, "started_at": report.started_at, "safe_mode": report.safe_mode,
        "safe_reason": report.safe_reason, "restarts": report.restarts, "supervisor_pid": report.supervisor_pid,
        "watcher_pid": report.watcher_pid, "stopping": report.stopping, "reconciliation": report.reconciliation,
        "exchange_dumpable": report.exchange_dumpable, "journal_error": report.journal_error,
        "venue_status": report.venue_status, "venue_warnings": list(report.venue_warnings),
        "streams": {s.stream: {"state": s.state, "reason": s.reason, "reconnects": s.reconnects,
                               "last_gap_s": round(s.gap_s, 3), "since": s.since} for s in report.streams},
        "children": [{"id": c, "pid": pid, "up": up} for c, pid, up in report.children],
        "positions": [position_json(p, now) for p in report.positions],
    }
