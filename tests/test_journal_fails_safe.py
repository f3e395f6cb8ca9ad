"""A journal that cannot write (a full disk, for real: SQLite's max_page_count) never blocks a
close: closes, panic and the naked-deadline rollback reach the venue reduce-only under ids
derived from the journaled intent; the failure raises an alarm and enters safe mode. And the
journal itself is all-or-nothing: a failed write leaves nothing behind, a migration cut short
is run again whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.journal.store import MIGRATIONS, SCHEMA_VERSION, JournalStore
from actors.messages import (
    ClosePosition,
    CommandAccepted,
    CommandDenied,
    JournalDiskFault,
    JournalIntent,
    JournalOrder,
    JournalSynced,
    OpenPosition,
)
from actors.position.base import close_order_id
from actors.position.states import State
from actors.settings import PositionSettings
from adapters.base import OrderRequest, Side
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from tests.support import kit
from tests.support.harness import Harness, venue
from tests.support.kit import SimVenueThread


def test_a_close_goes_to_the_venue_reduce_only_when_the_journal_cannot_write():
    h = Harness(venue(lag=24.0))
    h.run()
    h.open()
    h.run()
    assert h.core.state is State.PROTECTED
    h.fail_journal = True                                      # from now on every write fails
    assert isinstance(h.close_position(), CommandAccepted)
    h.run()
    assert h.core.state is State.IDLE and not h.truth().open_positions()
    (close,) = [o for o in h.truth().orders if o.reduce_only]
    assert close.client_order_id == close_order_id(h.core.episode.intent_id or "", 1)   # derived from the intent


def test_the_naked_deadline_rollback_does_not_wait_for_a_dead_journal():
    from adapters.sim.faults import Fault, FaultKind

    h = Harness(venue(Fault("set_stop", FaultKind.ERROR, code=10016, message="timeout", times=100),
                      attached=False, lag=24.0))
    h.run()
    h.open()
    h.run(until=0.5)
    h.fail_journal = True
    h.run()
    assert h.core.state is State.IDLE and not h.truth().open_positions()       # flattened without the journal


def test_a_failed_write_leaves_nothing_behind_for_the_next_one_to_commit(tmp_path):
    async def scenario() -> list:
        store = JournalStore(str(tmp_path / "j.sqlite"))
        await store.open()
        intent = JournalIntent("i1", "BTCUSDT", Side.BUY, 1.0, 95.0)
        bad = JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pge1"), "i1", "entry", intent=intent)
        await store.record(bad)
        with pytest.raises(sqlite3.IntegrityError):                # the same order row again: refused ...
            await store.record(JournalOrder(OrderRequest("BTCUSDT", Side.BUY, 1.0, "pge1"), "i2", "entry",
                                            intent=JournalIntent("i2", "BTCUSDT", Side.BUY, 1.0, 95.0)))
        await store.record(JournalIntent("i3", "BTCUSDT", Side.SELL, 1.0, 105.0))   # ... and the next write
        rows = await store.rows("SELECT intent_id FROM intents ORDER BY intent_id")
        await store.close()
        return [r["intent_id"] for r in rows]
    assert asyncio.run(scenario()) == ["i1", "i3"]                 # i2's intent did not ride along


def test_a_migration_cut_short_runs_again_whole(tmp_path):
    path = tmp_path / "j.sqlite"
    with sqlite3.connect(path) as db:                              # version 1 and half of version 2
        db.executescript(MIGRATIONS[0])
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    with sqlite3.connect(path) as db:                              # a crash inside the next migration's
        db.execute("BEGIN")                                        # transaction commits nothing of it
        db.execute("ALTER TABLE intents ADD COLUMN kind TEXT NOT NULL DEFAULT 'entry'")
        db.rollback()

    async def reopen() -> int:
        store = JournalStore(str(path))
        version = await store.open()
        await store.close()
        return version
    assert asyncio.run(reopen()) == SCHEMA_VERSION
    assert asyncio.run(reopen()) == SCHEMA_VERSION                 # and again: no "duplicate column"


@pytest.fixture
def tiny_disk(tmp_path) -> Iterator[Path | None]:
    """A 2 MiB filesystem of its own (tmpfs), when this machine lets us mount one; else None."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Nothing more fits on the disk: the next journal write fails with ENOSPC, for real."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)


def test_a_full_disk_alarms_enters_safe_mode_and_panic_still_closes(tcp_system, tmp_path, tiny_disk):
    config = SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 100.0, "ETHUSDT": 10.0}, volatility=0.0,
                                                position_lag_s=24.0), latency_s=0.01, orders_per_second=200)
    journal = (tiny_disk or tmp_path) / "j.sqlite"
    with SimVenueThread(config, tmp_path) as sim:
        d = kit.Deployment(tcp_system, ("BTCUSDT", "ETHUSDT"), str(journal), sim.factory(),
                           settings=PositionSettings(journal_wait_s=0.5), protection=None, timeout=15)
        for symbol, stop in (("BTCUSDT", 95.0), ("ETHUSDT", 9.5)):
            d.open(symbol, Side.BUY, 1.0, stop)
            d.wait(symbol, "PROTECTED")
        fault = JournalDiskFault(truncate_wal=True, cap=tiny_disk is None)   # no mount here: SQLite's own cap
        assert isinstance(d.ask(fault, 10), JournalSynced)
        if tiny_disk is not None:
            fill(tiny_disk)                                        # the disk is full now
        for symbol in ("BTCUSDT", "ETHUSDT"):                      # what `posguard panic` does
            reply = d.ask(ClosePosition(symbol))
            assert isinstance(reply, CommandAccepted), (symbol, reply, d.status())
        for symbol in ("BTCUSDT", "ETHUSDT"):
            d.wait(symbol, "IDLE")
        truth = sim.truth()
        assert not truth.open_positions()                          # the venue is flat
        closes = sorted(o.client_order_id for o in truth.orders if o.reduce_only)
        assert len(closes) == 2 and all(c.startswith("pgc") for c in closes)
        status = d.status()
        if tiny_disk is not None:
            assert "full" in status.journal_error and status.safe_mode
            assert "journal cannot write" in status.safe_reason
            refused = d.ask(OpenPosition("BTCUSDT", Side.BUY, 1.0, 95.0))
            assert isinstance(refused, CommandDenied) and "safe mode" in refused.reason
        d.stop()
