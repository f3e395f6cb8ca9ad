"""Two hosts, one account, one journal on PostgreSQL: one holds the lease and runs the
deployment, the other stands by; when the holder dies (kill -9 of its `posguard run` and of
every process of its actor system) the standby takes the account over from the shared journal
and the venue. Both hosts reach one simulated venue (`posguard venue`, a process of its own
that outlives what the test kills, as a real venue does)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from actors.position.base import epoch_of
from supervisor.actor_system.start import free_port
from supervisor.client import ClientError
from supervisor.host.procfs import kill_sessions
from supervisor.host.runtime import read_holder
from tests.support.configs import demo_config
from tests.support.cut import CuttableLink
from tests.support.processes import PosguardRun, Served, posguard, venue_orders

LEASE = {"ttl_s": 3.0, "renew_s": 0.5, "margin_s": 0.5}
ACCOUNT = "desk1"


def _configs(tmp_path: Path, pg_url: str, password_file: str, a_url: str | None = None,
             opens: bool | list[dict[str, Any]] = False) -> tuple[Path, Path, Path]:
    """The venue's config and two hosts' (`a_url`: host a's own path to the database)."""
    venue = demo_config(tmp_path / "venue", free_port(), opens=False,
                        tables={"venue.simulated": {"recv_window_s": 1.0}})
    socket = str(tmp_path / "venue" / "venue.sock")
    hosts = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        hosts.append(demo_config(folder, free_port(), opens=opens, tables={
            "venue.simulated": {"recv_window_s": 1.0, "server": socket},
            "journal": {"url": a_url if name == "a" and a_url else pg_url, "account": ACCOUNT,
                        "password_file": password_file},
            "runtime": {"dir": "var"}, "lease": LEASE}))
    return venue, hosts[0], hosts[1]


def _lease(postgres_server, pg_url: str) -> dict[str, object]:
    out = postgres_server.psql(
        "SELECT row_to_json(l) FROM (SELECT holder, epoch, expires_at > clock_timestamp() AS live"
        f" FROM posguard.leases WHERE account = '{ACCOUNT}') l", database=pg_url.rsplit("/", 1)[1])
    return json.loads(out.strip()) if out.strip() else {}


def _venue_orders(tmp_path: Path) -> tuple[Any, ...]:
    return venue_orders(str(tmp_path / "venue" / "venue.sock"))


def _run(config: Path) -> PosguardRun:
    return PosguardRun(config, duration=120, lock="deployment.lock")


def _hosts(stack: contextlib.ExitStack, tmp_path: Path, venue_cfg: Path, host_a: Path, host_b: Path,
           up: str = "API on") -> tuple[PosguardRun, PosguardRun]:
    """The venue served, host a holding the account (epoch 1) once it says `up`, host b standing by."""
    venue = stack.enter_context(Served("venue", venue_cfg, "--socket", str(tmp_path / "venue" / "venue.sock")))
    assert "listening on" in venue.first_line
    a = stack.enter_context(_run(host_a))
    a.read_until("holds account desk1", "epoch 1")
    a.read_until(up)
    b = stack.enter_context(_run(host_b))
    b.read_until("standby for account desk1", "held by", "epoch 1")
    return a, b


def test_a_standby_takes_the_account_over_when_the_holders_host_is_killed(tmp_path, postgres_server, pg_url):
    (tmp_path / "venue").mkdir()
    venue_cfg, host_a, host_b = _configs(tmp_path, pg_url, postgres_server.password_file)
    with contextlib.ExitStack() as stack:
        a, b = _hosts(stack, tmp_path, venue_cfg, host_a, host_b)

        with a.client(timeout=30.0) as pg:
            opened = pg.open("BTCUSDT", "buy", 0.01, sl_pct=2.0, wait=20.0)
        status = a.wait_states({"BTCUSDT": "PROTECTED"})
        stop = next(p for p in status["positions"] if p["symbol"] == "BTCUSDT")["stop_price"]
        assert stop == opened["stop_price"]
        assert _lease(postgres_server, pg_url)["epoch"] == 1
        standby = posguard("status", "--config", str(host_b))          # the standby host says what it waits for
        assert standby.returncode == 0 and "standby: posguard run pid" in standby.stdout, standby
        assert f":{a.proc.pid}:" in standby.stdout and "(epoch 1)" in standby.stdout
        fleet = posguard("fleet", "status", "--config", str(host_b))
        assert fleet.returncode == 0, fleet.stderr
        row = next(line for line in fleet.stdout.splitlines() if line.startswith("desk1"))
        assert f":{a.proc.pid}:" in row and " 1 " in row and "running" in row and "PROTECTED 1" in row, row

        # The holder's whole host dies: its `posguard run`, then every process of its actor system.
        session = read_holder(str(a.lock)).get("session")
        a.proc.kill()
        a.proc.wait()
        kill_sessions({str(session)})

        b.read_until("holds account desk1", "epoch 2")
        b.read_until("API on")
        status = b.wait_states({"BTCUSDT": "PROTECTED"})          # recovered from the shared journal
        mine = next(p for p in status["positions"] if p["symbol"] == "BTCUSDT")
        assert mine["stop_price"] == stop and mine["filled_qty"] == 0.01
        truth = b.status(truth=True)["truth"]["BTCUSDT"]
        assert truth["qty"] == 0.01 and truth["stop_price"] == stop and not truth["naked_seconds"]
        lease = _lease(postgres_server, pg_url)
        assert lease["epoch"] == 2 and lease["live"] and str(lease["holder"]).endswith(
            f":{b.proc.pid}:" + str(lease["holder"]).rsplit(":", 1)[1])

        with b.client(timeout=30.0) as pg:                          # the new holder may enter (after its wait)
            pg.open("ETHUSDT", "sell", 0.5, sl_pct=2.0, wait=20.0)
        b.wait_states({"BTCUSDT": "PROTECTED", "ETHUSDT": "PROTECTED"})

        entries = {o.client_order_id: epoch_of(o.client_order_id) for o in _venue_orders(tmp_path)
                   if o.client_order_id.startswith("pge")}
        assert sorted(entries.values()) == [1, 2], entries           # the venue's own log: who sent what

        out, err = b.interrupt()
        assert "stopped cleanly" in out and "Traceback" not in err
        assert _lease(postgres_server, pg_url)["live"] is False      # released on a clean stop: no TTL to wait


def test_a_holder_frozen_past_its_lease_is_taken_over_and_once_thawed_sends_nothing(
        tmp_path, postgres_server, pg_url):
    (tmp_path / "venue").mkdir()
    # The config's own open: sent by `posguard run` as soon as its deployment is up, it waits out
    # the new holder's hold on entries (the API asks again) rather than being dropped.
    opens = [{"symbol": "BTCUSDT", "side": "buy", "qty": 0.01, "stop_pct": 2.0}]
    venue_cfg, host_a, host_b = _configs(tmp_path, pg_url, postgres_server.password_file, opens=opens)
    with contextlib.ExitStack() as stack:
        a, b = _hosts(stack, tmp_path, venue_cfg, host_a, host_b, up="opening buy 0.01 BTCUSDT")
        a.wait_states({"BTCUSDT": "PROTECTED"})
        before = {o.client_order_id for o in _venue_orders(tmp_path) if epoch_of(o.client_order_id) == 1}

        # SIGSTOP of the holder's whole host (a GC pause, a hung VM) for longer than the lease.
        host = {a.proc.pid} | a.pids()
        for pid in host:
            os.kill(pid, signal.SIGSTOP)
        try:
            b.read_until("holds account desk1", "epoch 2")
            b.read_until("API on")
            b.wait_states({"BTCUSDT": "PROTECTED"})
        finally:
            for pid in host:
                os.kill(pid, signal.SIGCONT)
        a.read_until("ALERT", "lost", "standing by")                # it finds out, stops, and waits again
        a.read_until("standby for account desk1", "epoch 2")
        with b.client(timeout=30.0) as pg:
            pg.open("ETHUSDT", "sell", 0.5, sl_pct=2.0, wait=20.0)
        b.wait_states({"BTCUSDT": "PROTECTED", "ETHUSDT": "PROTECTED"})

        orders = _venue_orders(tmp_path)
        assert {o.client_order_id for o in orders if epoch_of(o.client_order_id) == 1} == before   # nothing late
        truth = b.status(truth=True)["truth"]
        assert truth["BTCUSDT"]["qty"] == 0.01 and truth["ETHUSDT"]["qty"] == -0.5
        assert all(t["stop_price"] and not t["naked_seconds"] for t in truth.values())
        out, err = b.interrupt()
        assert "stopped cleanly" in out and "Traceback" not in err


def test_a_holder_cut_from_the_database_fences_itself_and_a_standby_takes_over(tmp_path, postgres_server, pg_url):
    """Host a loses its path to the database only (it still reaches the venue): it cannot renew,
    fences itself at its deadline -- an entry asked of it is refused, nothing of its epoch reaches
    the venue -- while b takes the account over; once the path is back, a learns it lost the
    lease, stops its deployment (the stops stay) and stands by."""
    (tmp_path / "venue").mkdir()
    port = int(pg_url.rsplit(":", 1)[1].split("/", 1)[0])
    link = CuttableLink("127.0.0.1", port)
    a_url = pg_url.replace(f":{port}/", f":{link.port}/")
    venue_cfg, host_a, host_b = _configs(tmp_path, pg_url, postgres_server.password_file, a_url=a_url)
    with contextlib.ExitStack() as stack:
        stack.callback(link.close)
        a, b = _hosts(stack, tmp_path, venue_cfg, host_a, host_b)
        with a.client(timeout=30.0) as pg:
            pg.open("BTCUSDT", "buy", 0.01, sl_pct=2.0, wait=20.0)
        a.wait_states({"BTCUSDT": "PROTECTED"})
        before = {o.client_order_id for o in _venue_orders(tmp_path) if epoch_of(o.client_order_id) == 1}

        link.cut()
        b.read_until("holds account desk1", "epoch 2")              # a's lease ran out; b took it
        b.read_until("API on")
        b.wait_states({"BTCUSDT": "PROTECTED"})
        with a.client(timeout=60.0) as pg, pytest.raises(ClientError) as refused:
            pg.open("ETHUSDT", "buy", 0.1, sl_pct=2.0, wait=5.0)   # fenced: refused
        assert "safe mode" in refused.value.message and "lease not renewed" in refused.value.message
        with b.client(timeout=30.0) as pg:
            pg.open("ETHUSDT", "sell", 0.5, sl_pct=2.0, wait=20.0)
        b.wait_states({"BTCUSDT": "PROTECTED", "ETHUSDT": "PROTECTED"})

        link.heal()
        a.read_until("ALERT", "lost", "standing by")
        a.read_until("standby for account desk1", "epoch 2")
        assert {o.client_order_id for o in _venue_orders(tmp_path) if epoch_of(o.client_order_id) == 1} == before
        truth = b.status(truth=True)["truth"]
        assert truth["BTCUSDT"]["qty"] == 0.01 and truth["ETHUSDT"]["qty"] == -0.5
        assert all(t["stop_price"] and not t["naked_seconds"] for t in truth.values())
        out, err = b.interrupt()
        assert "stopped cleanly" in out and "Traceback" not in err
