"""JournalActor: the one writer of the journal database.

An order is acknowledged (OrderJournaled) only after its row is committed; the PositionActor
sends the order to the venue only after that acknowledgement.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from loguru import logger

from actors.async_bridge import AsyncBridge, BridgedActor
from actors.journal.holding import LeaseKeeper
from actors.journal.store import SCHEMA_VERSION, JournalStore
from actors.messages import (
    ActorFailed,
    ConfigureJournal,
    Event,
    EventsCommitted,
    EventsRead,
    EventsReport,
    JournalCancel,
    JournalDiskFault,
    JournalExit,
    JournalFailed,
    JournalHealth,
    JournalOrder,
    JournalReady,
    JournalSync,
    JournalSynced,
    LeaseDeadline,
    LoadPositionJournal,
    OrderJournaled,
    OrdersJournaled,
    PlaceOrder,
    PlaceOrders,
    ReadEvents,
    RecentEvents,
    SubscribeEvents,
)

HEALED_AFTER_S = 5.0


class JournalActor(BridgedActor):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.store: JournalStore | None = None
        self.subscribers: list[Any] = []         # told of every committed event (the operator API)
        self.failing: str | None = None          # the write error, while writes fail
        self.last_failure = 0.0                  # monotonic
        # What the commits finished in one handler say, sent when it ends: one message per
        # receiver, not one per order. A burst of a thousand entries otherwise queued thousands of
        # sends here, thespian stopped reading while it drained them, and a heartbeat waited
        # behind them long enough for the watchdog to call the journal hung.
        self.to_place: dict[str, tuple[Any, list[PlaceOrder]]] = {}
        self.to_forward: list[tuple[Any, Any]] = []   # (to, message): cancels sent on once committed
        self.journaled: dict[str, tuple[Any, list[str]]] = {}
        self.committed: list[Event] = []
        self.keeper: LeaseKeeper | None = None   # the account's lease, on PostgreSQL

    def receiveMessage(self, message: Any, sender: Any) -> Any:  # noqa: N802 - thespian's name
        result = super().receiveMessage(message, sender)
        try:
            self._flush()
        except Exception:  # noqa: BLE001 - rule 5: thespian would re-run the message, sending again
            logger.exception("journal: telling what was committed failed")
        return result

    def _flush(self) -> None:
        """In the order they used to go one by one: the orders to the venue, then who journaled them.
        Taken out first: whatever happens while sending, nothing is ever sent twice."""
        to_place, journaled, committed, to_forward = self.to_place, self.journaled, self.committed, self.to_forward
        self.to_place, self.journaled, self.committed, self.to_forward = {}, {}, [], []
        for exchange, orders in to_place.values():
            self.send(exchange, orders[0] if len(orders) == 1 else PlaceOrders(tuple(orders)))
        for to, msg in to_forward:
            self.send(to, msg)
        for asker, cids in journaled.values():
            self.send(asker, OrderJournaled(cids[0]) if len(cids) == 1 else OrdersJournaled(tuple(cids)))
        if committed:
            for subscriber in self.subscribers:
                self.send(subscriber, EventsCommitted(tuple(committed)))

    def receiveMsg_ConfigureJournal(self, msg: ConfigureJournal, sender: Any) -> None:  # noqa: N802
        self.supervisor = sender
        if self.store is None:
            self.watch = msg.watch
            self.bridge = AsyncBridge()
            store = JournalStore(msg.path, account=msg.account, password_file=msg.password_file) \
                if msg.lease is not None or msg.path.startswith(("postgresql://", "postgres://")) \
                else JournalStore(msg.path)
            self.bridge.call(store.open())
            if msg.lease is not None:
                keeper = LeaseKeeper(store.backend, msg.lease,  # type: ignore[arg-type]
                                     lambda ok, what: self._post_lease(ok, what),
                                     lambda deadline: self._post_deadline(deadline))
                try:
                    self.bridge.call(keeper.start())
                except BaseException:
                    self.bridge.call(store.close())
                    raise
                self.keeper = keeper
            self.store = store
        assert self.bridge is not None
        carried = self.bridge.call(self.store.safe_mode_reason())
        self.send(sender, JournalReady(SCHEMA_VERSION, safe_mode_reason=carried))

    def receiveMsg_JournalOrder(self, msg: JournalOrder, sender: Any) -> None:  # noqa: N802
        cid = msg.request.client_order_id
        if self.store is None or self.bridge is None:
            self.send(sender, JournalFailed(cid, "journal not open"))
            return
        self.bridge.submit(self.store.record(msg), lambda result: self._committed(msg, sender, result))

    def _committed(self, msg: JournalOrder, sender: Any, result: Any) -> None:
        cid = msg.request.client_order_id
        if isinstance(result, BaseException):
            logger.opt(exception=result).error("journal write failed for order {}", cid)
            self.send(sender, JournalFailed(cid, f"{type(result).__name__}: {result}"))
            self._health(result)
            return
        self._health(None)
        if msg.forward_to is not None:
            # Past the lease's deadline the exchange sends it no more (and the venue, by the
            # request's signed time, would refuse it late): see actors/exchange/core.py.
            not_after = self.keeper.deadline if self.keeper is not None else None
            place = PlaceOrder(msg.request, reply_to=msg.reply_to or sender, not_after=not_after)
            self.to_place.setdefault(str(msg.forward_to), (msg.forward_to, []))[1].append(place)
        self.journaled.setdefault(str(sender), (sender, []))[1].append(cid)
        self._publish(result)

    def receiveMsg_JournalCancel(self, msg: JournalCancel, sender: Any) -> None:  # noqa: N802
        """Like an order: the reason is committed first, then the cancel goes to the venue."""
        self._commit_then_forward(msg, sender, msg.request.request_id,
                                  f"stop orders of {msg.request.symbol} not cancelled yet")

    def receiveMsg_JournalExit(self, msg: JournalExit, sender: Any) -> None:  # noqa: N802
        """Like an order: the exit asked for is committed first, then it goes to the venue."""
        request = msg.request
        self._commit_then_forward(msg, sender, request.request_id, f"{request.kind} of {request.symbol} not sent")

    def _commit_then_forward(self, msg: JournalCancel | JournalExit, sender: Any, request_id: str, unsent: str) -> None:
        if self.store is None or self.bridge is None:
            self.send(sender, JournalFailed(request_id, "journal not open"))
            return

        def committed(result: Any) -> None:
            if isinstance(result, BaseException):
                logger.opt(exception=result).error("journal write failed; {}", unsent)
                self.send(sender, JournalFailed(request_id, f"{type(result).__name__}: {result}"))
                self._health(result)
                return
            self._health(None)
            if msg.forward_to is not None:
                self.to_forward.append((msg.forward_to, msg.request))
            self._publish(result)
        self.bridge.submit(self.store.record(msg), committed)

    def _record(self, msg: Any, sender: Any) -> None:
        if self.store is None or self.bridge is None:
            logger.error("journal not open: {} lost", type(msg).__name__)
            return
        self.bridge.submit(self.store.record(msg), lambda result: self._logged(msg, result))

    def _publish(self, events: list[Event]) -> None:
        self.committed.extend(events)

    def receiveMsg_SubscribeEvents(self, msg: SubscribeEvents, sender: Any) -> None:  # noqa: N802
        if msg.subscriber not in self.subscribers:
            self.subscribers.append(msg.subscriber)

    def receiveMsg_ReadEvents(self, msg: ReadEvents, sender: Any) -> None:  # noqa: N802
        if self.store is None or self.bridge is None:
            self.send(sender, EventsRead(msg.request_id, failure="journal not open"))
            return

        def answer(result: Any) -> None:
            if isinstance(result, BaseException):
                self.send(sender, EventsRead(msg.request_id, failure=f"journal read failed: {result}"))
            else:
                events, oldest, latest = result
                self.send(sender, EventsRead(msg.request_id, tuple(events), oldest, latest))
        self.bridge.submit(self.store.read_events(msg.since, msg.limit), answer)

    def receiveMsg_JournalSync(self, msg: JournalSync, sender: Any) -> None:  # noqa: N802
        to = msg.reply_to or sender
        if self.store is None or self.bridge is None:
            self.send(to, JournalSynced(msg.tag))
            return
        self.bridge.submit(self.store.sync(), lambda _: self._synced(to, msg.tag))

    def _synced(self, to: Any, tag: str) -> None:
        self._flush()                            # what was committed before the sync is told first
        self.send(to, JournalSynced(tag))

    def receiveMsg_LoadPositionJournal(self, msg: LoadPositionJournal, sender: Any) -> None:  # noqa: N802
        if self.store is None or self.bridge is None:
            self.send(sender, JournalFailed(None, "journal not open"))
            return
        self.bridge.submit(self.store.load_symbols(msg.symbols), lambda result: self._loaded(sender, result))

    def _loaded(self, sender: Any, result: Any) -> None:
        if isinstance(result, BaseException):
            logger.opt(exception=result).error("journal read failed")
            self.send(sender, JournalFailed(None, f"journal read failed: {result}"))
        else:
            self.send(sender, result)

    def receiveMsg_RecentEvents(self, msg: RecentEvents, sender: Any) -> None:  # noqa: N802
        to = msg.reply_to or sender
        if self.store is None or self.bridge is None:
            self.send(to, EventsReport(msg.symbol, request_id=msg.request_id))
            return
        self.bridge.submit(self.store.recent_events(msg.symbol, msg.limit),
                           lambda result: self.send(to, EventsReport(msg.symbol, request_id=msg.request_id)
                                                    if isinstance(result, BaseException)
                                                    else dataclasses.replace(result, request_id=msg.request_id)))

    receiveMsg_JournalOrderUpdate = _record    # noqa: N815
    receiveMsg_JournalTransition = _record     # noqa: N815
    receiveMsg_JournalIntent = _record         # noqa: N815
    receiveMsg_JournalSafeMode = _record       # noqa: N815
    receiveMsg_JournalEvent = _record          # noqa: N815
    receiveMsg_JournalPosition = _record       # noqa: N815

    def _logged(self, msg: Any, result: Any) -> None:
        if isinstance(result, BaseException):
            logger.opt(exception=result).error("journal write failed: {}", type(msg).__name__)
            self._health(result)
        else:
            self._health(None)
            self._publish(result)

    def _post_lease(self, ok: bool, what: str) -> None:
        """From the loop thread: the lease went bad, came back, or was lost."""
        assert self.bridge is not None
        self.bridge.post(lambda: self._lease_changed(ok, what))

    def _post_deadline(self, deadline: float) -> None:
        """From the loop thread, at every renewal: the Supervisor gates the scan's and the operator's
        commands on it (an adoption or a stop move by a fenced holder could touch the new holder's)."""
        assert self.bridge is not None
        self.bridge.post(lambda: self.supervisor is not None and self.send(self.supervisor, LeaseDeadline(deadline)))

    def _lease_changed(self, ok: bool, what: str) -> None:
        if self.supervisor is not None:
            self.send(self.supervisor, JournalHealth(ok, what))

    def _health(self, error: BaseException | None) -> None:
        """Tell the supervisor when writes start failing (safe mode: no entry it cannot record),
        and when they have worked again for HEALED_AFTER_S (a nearly full disk lets small
        writes through between failures: that is not health)."""
        now = time.monotonic()
        if error is not None:
            self.last_failure = now
            if self.failing is None:
                self.failing = f"{type(error).__name__}: {error}"
                if self.supervisor is not None:
                    self.send(self.supervisor, JournalHealth(False, self.failing))
        elif self.failing is not None and now - self.last_failure >= HEALED_AFTER_S:
            self.failing = None
            if self.supervisor is not None:
                self.send(self.supervisor, JournalHealth(True))

    def receiveMsg_JournalDiskFault(self, msg: JournalDiskFault, sender: Any) -> None:  # noqa: N802
        if self.store is not None and self.bridge is not None:
            if msg.cap:
                pages = self.bridge.call(self.store.limit_pages(0))
                logger.warning("journal capped at {} pages (fault injection)", pages)
            if msg.refuse:
                self.bridge.call(self.store.refuse_writes(True))
                logger.warning("journal refuses every write (fault injection)")
            if msg.heal:
                self.bridge.call(self.store.heal())
                logger.warning("journal cap lifted (fault injection)")
            if msg.truncate_wal:
                self.bridge.call(self.store.truncate_wal())
            self.send(sender, JournalSynced("disk-fault"))

    def on_handler_error(self, message: Any, sender: Any, exc: Exception) -> None:
        if isinstance(message, ConfigureJournal):
            self.send(sender, ActorFailed("journal", f"journal {message.path} could not be opened: {exc}"))
            return
        if isinstance(message, JournalOrder):
            self.send(sender, JournalFailed(message.request.client_order_id, str(exc)))
        super().on_handler_error(message, sender, exc)

    def on_exit(self) -> None:
        if self.store is not None and self.bridge is not None:
            try:
                if self.keeper is not None:
                    self.bridge.call(self.keeper.close(), timeout=5)
                self.bridge.call(self.store.close(), timeout=5)
            except Exception:  # noqa: BLE001
                logger.exception("journal close failed")
        super().on_exit()
