"""StreamActor: the owner of a venue's private stream -- its health, its gaps, and where its
evidence goes. (The socket itself lives in the exchange process, the only one with the keys;
it relays everything here, actors/exchange/stream_runner.py.)

A stream is evidence, never a writer. Orders, positions and stop orders go to their symbol's
PositionActor, which treats its own orders like answers to a query by client id and everything
else as evidence of what was done outside it (actors/position/outside.py: judged, never acted on alone);
positions and stop orders also go to the ProtectionActor, which treats them like scan results. Health is explicit:

    down --(connected)--> reconciling --(every PositionActor re-asked by client id, and a REST
                                          scan done)--> up --(lost)--> down

While the stream is not up, the ProtectionActor does not use stream evidence (it scans through
REST as always) and status, metrics and the log say so; after every gap the symbols are
reconciled through REST before the stream is trusted again, because nothing a stream missed
is ever replayed.
"""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from actors.async_bridge import BridgedActor
from actors.messages import (
    ConfigureStream,
    FillStreamed,
    OpenStream,
    OrderStreamed,
    PositionStreamed,
    ScanDone,
    ScanNow,
    StopOrderStreamed,
    StreamGap,
    StreamHealth,
    StreamReady,
    StreamRoutes,
    StreamStatus,
    StreamTrust,
    StreamUpdates,
    StreamView,
)
from actors.settings import StreamSettings
from adapters.streams import StreamFill, StreamOrder, StreamPosition, StreamStopOrder

DOWN, RECONCILING, UP = "down", "reconciling", "up"


class StreamActor(BridgedActor):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.settings = StreamSettings()
        self.exchange: Any = None
        self.protection: Any = None
        self.positions: dict[str, Any] = {}
        self.state = DOWN
        self.stream = "private"
        self.reason = "not connected yet"
        self.reconnects = 0
        self.gap_s = 0.0
        self.reconciling: str | None = None      # the ScanNow we wait for before trusting again

    def receiveMsg_ConfigureStream(self, msg: ConfigureStream, sender: Any) -> None:  # noqa: N802
        self.supervisor, self.settings, self.stream = sender, msg.settings, msg.name
        self._route(msg.exchange, msg.protection, msg.positions)
        self._status()                                   # before Ready: status always shows the stream
        self.send(sender, StreamReady())

    def receiveMsg_StreamRoutes(self, msg: StreamRoutes, sender: Any) -> None:  # noqa: N802
        self._route(msg.exchange, msg.protection, msg.positions)

    def _route(self, exchange: Any, protection: Any, positions: tuple[tuple[str, Any], ...]) -> None:
        exchange_changed = exchange != self.exchange
        self.exchange, self.protection, self.positions = exchange, protection, dict(positions)
        if exchange_changed and exchange is not None:
            # A new exchange process has no stream yet: ask it for one (an old one died with its process).
            self.send(exchange, OpenStream(self.myAddress, self.settings))

    # -- health ------------------------------------------------------------------------------

    def receiveMsg_StreamHealth(self, msg: StreamHealth, sender: Any) -> None:  # noqa: N802
        self.reconnects = msg.reconnects
        if msg.up:
            self.gap_s = msg.gap_s
            self._reconcile(f"stream {msg.stream} connected after a {msg.gap_s:.1f}s gap")
        elif self.state != DOWN or msg.reason != self.reason:
            was = self.state
            self.state, self.reason, self.reconciling = DOWN, msg.reason, None
            if self.protection is not None:
                self.send(self.protection, StreamTrust(False, msg.reason))
            if was != DOWN:
                logger.critical("ALERT stream {} lost ({}): falling back to REST polling until it is back and"
                                " reconciled", msg.stream, msg.reason)
            self._status()

    def _reconcile(self, why: str) -> None:
        """Nothing a stream missed is replayed: every symbol asks again by client id, and the
        ProtectionActor scans through REST, before stream evidence is trusted again."""
        self.state, self.reason = RECONCILING, why
        logger.warning("{}: reconciling every symbol through REST before trusting it", why)
        for address in {str(a): a for a in self.positions.values()}.values():   # once per process: it
            self.send(address, StreamGap(why))                                 # tells every symbol it hosts
        if self.protection is None:
            self._trusted()
            return
        scan = ScanNow()
        self.reconciling = scan.request_id
        self.send(self.protection, scan)
        self._status()

    def receiveMsg_ScanDone(self, msg: ScanDone, sender: Any) -> None:  # noqa: N802
        if msg.request_id != self.reconciling or self.state != RECONCILING:
            return
        if msg.failure is not None:
            logger.warning("reconciliation scan failed ({}); trying again", msg.failure)
            self._reconcile(self.reason)
            return
        self._trusted()

    def _trusted(self) -> None:
        self.state, self.reason, self.reconciling = UP, "reconciled", None
        if self.protection is not None:
            self.send(self.protection, StreamTrust(True, "reconciled through REST"))
        logger.info("stream {} up and reconciled: its evidence is used again", self.stream)
        self._status()

    def _status(self) -> None:
        if self.supervisor is not None:
            self.send(self.supervisor, StreamStatus(self.stream, self.state, self.reason, self.reconnects,
                                                    self.gap_s, time.time()))

    # -- evidence, fanned out by symbol ------------------------------------------------------

    def receiveMsg_StreamUpdates(self, msg: StreamUpdates, sender: Any) -> None:  # noqa: N802
        positions: list[tuple[str, Any]] = []
        stops: list[tuple[Any, bool]] = []
        for item in msg.items:
            match item:
                case StreamOrder(report=report, closed_by=closed_by):
                    self._to_symbol(report.symbol, OrderStreamed(report, closed_by, msg.received_ns))
                case StreamFill(symbol=symbol, client_order_id=cid):
                    self._to_symbol(symbol, FillStreamed(symbol, cid))
                case StreamPosition(symbol=symbol, position=position, stop_known=stop_known):
                    positions.append((symbol, position))
                    self._to_symbol(symbol, PositionStreamed(symbol, position, stop_known, msg.received_ns))
                case StreamStopOrder(order=order, open=is_open, ended=ended):
                    stops.append((order, is_open))
                    self._to_symbol(order.symbol, StopOrderStreamed(order, is_open, ended, msg.received_ns))
        if (positions or stops) and self.protection is not None:
            self.send(self.protection, StreamView(tuple(positions), tuple(stops), msg.at))

    def _to_symbol(self, symbol: str, msg: Any) -> None:
        address = self.positions.get(symbol)
        if address is not None:
            self.send(address, msg)
