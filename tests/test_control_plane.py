"""A deployment only its owner can drive: authenticated actor frames, a private operator API,
private files, keys only in the exchange process, one lifecycle per journal.

"Another user" is a process forked from this test that drops to uid/gid 65534 (the suite runs
as root in CI); where the suite is not root, that process is simply one that lacks the
deployment's transport key, and the checks that need a second uid are skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import socket
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.actor_system.start import free_port
from supervisor.host.procfs import alive, kill_sessions, listening_sockets, socket_inodes, unix_peer_pid
from supervisor.host.runtime import read_holder
from tests.support.kit import POSGUARD, ROOT, PosguardRun, demo_config, running

NOBODY = 65534
BOTH = {"BTCUSDT": "PROTECTED", "ETHUSDT": "PROTECTED"}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user may read (the config lives there); the deployment's own `var/`
    inside it is created private by `posguard run`."""
    folder = Path(tempfile.mkdtemp(prefix="pg-shared-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def as_other_user(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in a forked process of another uid (or, not root, one without the
    deployment's key); its JSON-able result comes back through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                          # the child: never returns into pytest
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            result = {"ok": fn(*args)}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"crash": repr(exc)}
        with contextlib.suppress(BaseException):
            os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "crash" not in result, result
    return result["ok"]


class _Payload:
    """Unpickling this runs a shell command: what an attacker would send."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def _attack(ports: list[int], api_socket: str, marker: str) -> dict[str, Any]:
    payload = pickle.dumps(_Payload(marker))
    framed = (b"%d>" % len(payload)) + payload                     # thespian's framing
    envelope = pickle.dumps((None, _Payload(marker)))
    frames = [framed, b"%d>" % len(envelope) + envelope, payload, os.urandom(700),
              b"%d>" % (32 + len(payload)) + os.urandom(32) + payload]   # a forged tag
    answered = 0
    for port in ports:
        for frame in frames:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(frame)
                with contextlib.suppress(OSError):
                    answered += bool(s.recv(64))
    api = "not tried: same user"
    if os.geteuid() == NOBODY:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(api_socket)
                s.sendall(b'{"op": "panic"}\n')
                api = s.recv(4096).decode()
        except OSError as exc:
            api = f"refused: {exc.strerror}"
    return {"answered": answered, "api": api}


def _listening_ports(pids: set[int]) -> list[int]:
    listening = listening_sockets()
    return sorted({listening[i][1] for pid in pids for i in socket_inodes(pid) if i in listening})


def _cli(config: str, *commands: list[str]) -> list[tuple[int, str]]:
    from supervisor.cli.main import main

    out = []
    for command in commands:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main([*command, "--config", config])
        out.append((rc, err.getvalue()))
    return out


def test_another_user_runs_nothing_on_any_socket_and_cannot_drive_the_deployment(shared_dir):
    import encodings.idna  # noqa: F401 - loaded before the fork: the other user cannot read /root

    import supervisor.cli.commands  # noqa: F401
    import supervisor.cli.views  # noqa: F401
    from adapters.ccxt import settings  # noqa: F401

    marker = shared_dir / "pwned"
    cfg = demo_config(shared_dir, free_port(), extra=f"[metrics]\nport = {free_port()}\n")
    with running(cfg) as run:
        run.read_until("API on")
        run.wait_states(BOTH)
        pids = run.pids()
        ports = _listening_ports(pids | {run.proc.pid})
        assert len(ports) >= len(pids) - 1                          # the admin, every actor, the metrics
        assert all(addr == "127.0.0.1" for addr, port in listening_sockets().values() if port in ports)
        before = run.status(truth=True)

        result = as_other_user(_attack, ports, str(run.socket), str(marker))
        assert not marker.exists()                                  # no code ran, anywhere
        if os.geteuid() == 0:
            assert result["api"].startswith("refused")               # 0700 runtime directory
            refusals = as_other_user(_cli, str(cfg), ["panic", "--yes"], ["pause"],
                                     ["open", "BTCUSDT", "buy", "0.01", "--sl", "2%"], ["stop"])
            for rc, err in refusals:
                lines = [line for line in err.splitlines() if line.strip()]
                assert rc != 0 and len(lines) == 1 and "Traceback" not in err, err
                assert "Permission denied" in lines[0]

        after = run.status(truth=True)                               # still answering, nothing changed
        assert after["safe_mode"] is False and after["supervisor_pid"] == before["supervisor_pid"]
        assert {p["symbol"]: p["state"] for p in after["positions"]} == BOTH
        assert after["truth"] == before["truth"] | {s: after["truth"][s] for s in after["truth"]}
        assert {s: t["qty"] for s, t in after["truth"].items()} == {s: t["qty"] for s, t in before["truth"].items()}
        assert run.pids() == pids                                    # no actor died or was replaced
        out, err = run.interrupt()
    assert "stopped cleanly" in out and "Traceback" not in err


def test_the_api_refuses_a_peer_of_another_uid_even_when_it_can_reach_the_socket(tmp_path):
    import asyncio

    from supervisor.api.server import ApiServer

    async def never(request: Any) -> Any:
        raise AssertionError("a request of another user was handled")

    class NoEvents:
        async def read(self, since: int, limit: int) -> tuple[list[Any], int, int]:
            return [], 0, 0

    path = str(tmp_path / "api.sock")

    async def scenario() -> str:
        server = ApiServer(path, {}, never, NoEvents(), allowed_uid=NOBODY)   # serves only uid 65534
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(path)          # we are root: not served
            writer.write(b'{"id": 1, "op": "panic"}\n')
            line = await reader.readline()
            with contextlib.suppress(ConnectionResetError):                    # and the connection is closed
                assert await reader.readline() == b""
            writer.close()
            return line.decode()
        finally:
            await server.close()

    reply = json.loads(asyncio.run(scenario()))
    assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
    assert not os.path.exists(path)                                            # the server cleans up


def test_files_are_private_and_an_open_directory_is_refused(tmp_path):
    cfg = demo_config(tmp_path, free_port())
    with running(cfg) as run:
        run.read_until("API on")
        run.wait_states(BOTH)
        run.interrupt()
    var = tmp_path / "var"
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    written = list(var.iterdir())
    assert {p.name for p in written} >= {"journal.sqlite", "posguard.log", "journal.sqlite.lock",
                                         "journal.sqlite.run.lock"}
    for path in written:
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600, (path, oct(path.lstat().st_mode))

    var.chmod(0o777)                                                 # someone opened it up
    proc = subprocess.run([*POSGUARD, "run", "--config", str(cfg), "--duration", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "writable by" in lines[0] and "chmod 700" in lines[0]
    assert unix_peer_pid(str(var / "posguard.sock")) is None         # nothing started


def _memory_has(pid: int, needle: bytes) -> bool:
    """Whether `needle` is anywhere in the writable memory of a process (root, or our own uid)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addresses, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            start, end = (int(a, 16) for a in addresses.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, OverflowError, ValueError):
                continue
    return False


def test_keys_live_only_in_the_exchange_process(tmp_path):
    from adapters.emulators.base import EmulatorConfig
    from adapters.sim.adapter import SimVenueConfig
    from adapters.sim.engine import EngineConfig
    from tests.support.emulator import EmulatorThread
    from tests.support.kit import E2E_KEY_ENV, E2E_SECRET_ENV, bybit_config

    key, secret = "PGKEY-only-in-exchange-5e1f", "PGSECRET-only-in-exchange-93ac70d2"
    venue = SimVenueConfig(engine=EngineConfig(prices={"BTCUSDT": 60000.0, "ETHUSDT": 3000.0}, volatility=0.0))
    with EmulatorThread(EmulatorConfig(venue=venue, keys=((key, secret),))) as emu:
        cfg = bybit_config(tmp_path, free_port(), emu.emulator.port)
        env = {**os.environ, E2E_KEY_ENV: key, E2E_SECRET_ENV: secret}
        with running(cfg, env=env) as run:
            run.read_until("API on")
            status = run.wait_states(BOTH)
            exchange = next(c["pid"] for c in status["children"] if c["id"] == "exchange")
            deployment = run.pids() | {run.proc.pid}
            assert exchange in deployment and status["exchange_dumpable"] is False
            with open(f"/proc/{exchange}/limits") as fh:
                core = next(line for line in fh if line.startswith("Max core file size"))
            assert core.split()[4:6] == ["0", "0"]
            for pid in deployment:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    environ = fh.read()
                assert secret.encode() not in environ and key.encode() not in environ, pid
                assert b"PG_E2E_SECRET" not in environ                 # not even the variable's name
                if pid != exchange:
                    assert not _memory_has(pid, secret.encode()), f"the secret is in the memory of pid {pid}"
            assert _memory_has(exchange, secret.encode())               # where it must be, to sign requests
            run.interrupt()


def test_kill_9_of_run_alone_is_adopted_and_of_everything_is_replaced_then_stop(tmp_path):
    cfg = demo_config(tmp_path, free_port())
    first = PosguardRun(cfg)
    second = third = None
    try:
        first.read_until("API on")
        before = first.wait_states(BOTH)
        first.proc.kill()                                            # kill -9 of `posguard run` alone
        first.proc.wait()
        during = first.status()                                      # protection goes on, unwatched
        assert during["supervisor_pid"] == before["supervisor_pid"]
        assert {p["symbol"]: p["state"] for p in during["positions"]} == BOTH

        second = PosguardRun(cfg)
        second.read_until("adopted the running deployment")
        adopted = second.wait_states(BOTH)
        assert adopted["supervisor_pid"] == before["supervisor_pid"] and adopted["watcher_pid"] == second.proc.pid
        assert adopted["started_at"] == before["started_at"]          # the same system, never restarted
        old = second.pids()

        second.proc.kill()                                           # now kill -9 of everything
        second.proc.wait()
        kill_sessions({str(read_holder(str(second.lock))["session"])})
        assert not [p for p in old if alive(p)]

        third = PosguardRun(cfg)
        third.read_until("symbols on simulated venue")               # started anew, from the journal
        after = third.wait_states(BOTH)
        assert after["supervisor_pid"] != before["supervisor_pid"] and not third.pids() & old
        with sqlite3.connect(tmp_path / "var" / "journal.sqlite") as db:
            entries = db.execute("SELECT symbol, COUNT(*) FROM orders WHERE purpose='entry' GROUP BY symbol")
            assert sorted(entries.fetchall()) == [("BTCUSDT", 1), ("ETHUSDT", 1)]

        system = third.pids()
        stop = subprocess.run([*POSGUARD, "stop", "--config", str(cfg)], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stderr
        out, err = third.proc.communicate(timeout=30)
        assert third.proc.returncode == 0 and "stopped by the operator" in out, err
        assert not [p for p in system if alive(p)]
        assert unix_peer_pid(str(tmp_path / "var" / "venue.sock")) is None    # its venue went with it
    finally:
        for run in (first, second, third):
            if run is not None:
                run.end()


def test_stop_with_flatten_closes_every_position_reduce_only_first(tmp_path):
    cfg = demo_config(tmp_path, free_port())
    with running(cfg) as run:
        run.read_until("API on")
        run.wait_states(BOTH)
        stop = subprocess.run([*POSGUARD, "stop", "--flatten", "--config", str(cfg), "--json"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0 and json.loads(stop.stdout)["stopped"] is True, stop.stderr
        run.proc.communicate(timeout=30)
    with sqlite3.connect(tmp_path / "var" / "journal.sqlite") as db:
        closes = db.execute("SELECT symbol, status, reduce_only FROM orders WHERE purpose='close'").fetchall()
        closed = db.execute("SELECT symbol FROM events WHERE kind='closed'").fetchall()
    assert sorted(closes) == [("BTCUSDT", "filled", 1), ("ETHUSDT", "filled", 1)]
    assert sorted(closed) == [("BTCUSDT",), ("ETHUSDT",)]


def test_a_second_run_on_the_same_journal_exits_2_naming_the_pid(tmp_path):
    cfg = demo_config(tmp_path, free_port())
    other = demo_config(tmp_path, free_port(), name="other-port.toml")   # same journal, another admin port
    with running(cfg) as run:
        run.read_until("API on")
        proc = subprocess.run([*POSGUARD, "run", "--config", str(other), "--duration", "5"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and f"pid {run.proc.pid}" in lines[0], proc.stderr
        assert run.status()["watcher_pid"] == run.proc.pid              # the first one is untouched
        run.interrupt()


def test_an_events_client_cut_off_mid_stream_resumes_with_since_and_misses_nothing(tmp_path):
    cfg = demo_config(tmp_path, free_port())
    with running(cfg) as run:
        run.read_until("API on")
        run.wait_states(BOTH)
        seen: list[dict[str, Any]] = []
        with run.client() as pg:
            for event in pg.events(since=0):
                seen.append(event)
                if len(seen) == 5:
                    break                                            # cut off mid-stream
        with run.client() as pg:                                     # events happen while it is away
            pg.close_position("BTCUSDT")
        run.wait_states({"BTCUSDT": "IDLE"})
        with run.client() as pg:
            pg.open("BTCUSDT", "buy", 0.01, sl_pct=2)
        run.wait_states(BOTH)
        with run.client() as pg:
            seen += list(pg.events(since=seen[-1]["seq"], follow=False))
        with run.client() as pg:
            everything = list(pg.events(since=0, follow=False))
        run.interrupt()
    seqs = [e["seq"] for e in seen]
    assert seqs == [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert seen == everything                                        # each exactly once, in order
    kinds = {(e["kind"], e["symbol"]) for e in everything}
    assert {("fill", "BTCUSDT"), ("stop", "BTCUSDT"), ("closed", "BTCUSDT"), ("transition", "ETHUSDT")} <= kinds
    from tests.test_event_schema import schema_problems
    assert [p for e in everything for p in schema_problems(e)] == []         # what docs/events.md says


def test_the_readme_client_example_runs_against_a_demo_deployment(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    cfg = demo_config(tmp_path, free_port())
    with running(cfg) as run:
        run.read_until("API on")
        run.wait_states(BOTH)
        exec(compile(example.replace("conf/demo.toml", str(cfg)), "README.md", "exec"), {})   # noqa: S102
        printed = capsys.readouterr().out
        assert "'BTCUSDT': 'PROTECTED'" in printed and "closed BTCUSDT" in printed and "'stop_price'" in printed
        run.wait_states(BOTH)                                        # opened again, with its stop
        run.interrupt()


def test_status_in_columns_holds_what_the_objects_hold(tmp_path):
    from actors.messages import PositionSnapshot
    from supervisor.api.protocol import POSITION_FIELDS
    from supervisor.cli.views import TABLE_FIELDS
    from supervisor.client import ClientError, positions_of

    cfg = demo_config(tmp_path, free_port())
    with running(cfg) as run:
        run.read_until("API on")
        run.wait_states(BOTH)
        with run.client() as pg:
            objects, columns = pg.status(), pg.status(columns=True)
            naked = pg.status(truth=True, columns=True)                # the uncached path too
        assert isinstance(columns["positions"], dict) and len(columns["positions"]["rows"]) == 2
        assert positions_of(columns) == positions_of(objects) == objects["positions"]
        assert positions_of(naked) == objects["positions"] and "truth" in naked
        assert len(json.dumps(columns["positions"]["rows"][0])) < 0.7 * len(json.dumps(objects["positions"][0]))
        moving = ("positions", "supervisor_heard_s_ago", "last_event")      # last_event: events go on
        assert {k: v for k, v in columns.items() if k not in moving} == \
            {k: v for k, v in objects.items() if k not in moving}
        with run.client() as pg:
            table = pg.status(columns=True, fields=list(TABLE_FIELDS))
            some = pg.status(fields=["state", "symbol", "state"])
            with pytest.raises(ClientError, match="unknown field"):
                pg.status(fields=["symbol", "api_key"])
        assert positions_of(table) == [{f: p[f] for f in TABLE_FIELDS} for p in objects["positions"]]
        assert some["positions"] == [{"state": p["state"], "symbol": p["symbol"]} for p in objects["positions"]]
        snapshot_fields = [f for f in PositionSnapshot.__dataclass_fields__ if f != "made_ns"]   # made_ns: ours
        assert list(POSITION_FIELDS) == [*snapshot_fields, "naked_now"]                         # none left out
        run.interrupt()
