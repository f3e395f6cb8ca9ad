"""`posguard` end to end in subprocesses: run a deployment, ask its status from another
process, stop cleanly; user mistakes get one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.actor_system.start import free_port
from supervisor.cli.main import main
from supervisor.host.procfs import alive, listening_sockets, wait_exited
from tests.support.kit import ROOT, demo_config, one_line_error, posguard, running


@pytest.fixture(autouse=True)
def no_stray_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that made a folder: no `posguard` it started (its config is in that
    folder) is still running."""
    folder = str(request.getfixturevalue("tmp_path")) if "tmp_path" in request.fixturenames else None
    yield
    if folder is None:
        return
    stray = set()
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().decode(errors="replace")
        except OSError:
            continue
        if "supervisor.cli" in cmd and folder in cmd:
            stray.add(int(pid))
    assert not wait_exited(stray, timeout=5.0), f"posguard processes left running: {sorted(stray)}"

def test_run_status_and_clean_stop(tmp_path):
    port = free_port()
    cfg = demo_config(tmp_path, port)
    with running(cfg, duration=60) as run:
        seen = run.read_until("opening sell 0.5 ETHUSDT")  # wait for the run to say it is serving
        assert any("API on " in s and s.strip().endswith("posguard.sock") for s in seen), seen
        admin = [addr for addr, p in listening_sockets().values() if p == port]
        assert admin and all(a == "127.0.0.1" for a in admin)
        assert oct((tmp_path / "var" / "posguard.sock").stat().st_mode & 0o777) == "0o600"

        status = posguard("status", "--config", str(cfg), "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert {p["symbol"] for p in report["positions"]} == {"BTCUSDT", "ETHUSDT"}
        assert report["venue"] == "simulated"
        table = posguard("status", "--config", str(cfg))
        assert table.returncode == 0 and "SYMBOL" in table.stdout and "ETHUSDT" in table.stdout
        assert "\x1b[" not in table.stdout                # not a terminal: plain text
        probe = ("import sys\nfrom supervisor.cli.main import main\n"
                 f"code = main(['status', '--json', '--config', {str(cfg)!r}])\n"
                 "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'pydantic'}))\n")
        fast = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=20, cwd=ROOT)
        assert fast.stdout.splitlines()[-1] == "0 []", (fast.stdout, fast.stderr)   # --json draws nothing

        run.read_until("ETHUSDT", "PROTECTED")          # the live view shows both protected
        out, err = run.interrupt()                       # Ctrl-C: a clean stop, exit 0
    assert run.proc.returncode == 0, err
    assert "PROTECTED" in out and "stopped cleanly" in out
    assert "Traceback" not in err
    assert not [p for _, p in listening_sockets().values() if p == port]
    after = posguard("status", "--config", str(cfg))
    assert after.returncode == 1 and "no posguard deployment is running" in one_line_error(after)
    journal = tmp_path / "var" / "journal.sqlite"
    assert journal.exists()


def test_status_with_nothing_running_never_starts_a_system(tmp_path):
    port = free_port()
    cfg = demo_config(tmp_path, port)
    proc = posguard("status", "--config", str(cfg))
    assert proc.returncode == 1
    assert "nothing serves" in one_line_error(proc) and "posguard.sock" in one_line_error(proc)
    assert not [p for _, p in listening_sockets().values() if p == port]
    assert not (tmp_path / "var").exists()                # nothing was created either


@pytest.mark.parametrize(("extra", "key"), [
    ("[position]\nnaked_deadline_s = -1\n", "position.naked_deadline_s"),
    ("[position]\nnaked_deadlin_s = 3\n", "position.naked_deadlin_s"),
    ("[position]\nentry_unknown_window_s = 2\n", "position.entry_unknown_window_s"),   # < recv window
    ("[[open]]\nsymbol = \"XRPUSDT\"\nside = \"buy\"\nqty = 1\nstop = 1.0\n", "open[2].symbol"),
    ("[[open]]\nsymbol = \"BTCUSDT\"\nside = \"up\"\nqty = 1\nstop = 1.0\n", "open[2].side"),
])
def test_bad_config_is_one_line_naming_the_key_and_exit_2(tmp_path, extra, key):
    cfg = demo_config(tmp_path, free_port(), extra=extra)
    proc = posguard("run", "--config", str(cfg), "--duration", "1")
    assert proc.returncode == 2
    assert key in one_line_error(proc)


def test_config_errors_in_process(tmp_path, capsys):
    # Cheaper variants of the same promise, without subprocesses.
    missing = main(["status", "--config", str(tmp_path / "nope.toml")])
    assert missing == 2 and "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[venue\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    cfg = demo_config(tmp_path, free_port())
    cfg.write_text(cfg.read_text().replace('name = "simulated"', 'name = "kraken"'))
    assert main(["run", "--config", str(cfg)]) == 2
    assert "venue.name" in capsys.readouterr().err
    assert main(["run", "--config", str(demo_config(tmp_path, free_port())), "--duration", "-3"]) == 2


def test_run_refuses_a_port_that_is_already_taken(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = demo_config(tmp_path, taken.getsockname()[1])
        proc = posguard("run", "--config", str(cfg), "--duration", "1")
    assert proc.returncode == 1 and "already listens" in one_line_error(proc)


def test_demo_configs_load():
    from supervisor.config.loader import load_config

    for name in ("demo.toml", "demo-separate-stop.toml"):
        cfg = load_config(str(ROOT / "conf" / name))
        assert cfg.simulated is not None and cfg.simulated.engine.position_lag_s == 24.0


def test_operator_commands_end_to_end(tmp_path):
    cfg = str(demo_config(tmp_path, free_port()))

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return posguard(*args, "--config", cfg)

    def state(symbol: str) -> str:
        report = json.loads(pg("status", "--json").stdout)
        return next(p["state"] for p in report["positions"] if p["symbol"] == symbol)

    def wait_state(symbol: str, wanted: str) -> None:
        for _ in range(100):                              # each check is a CLI round trip (~0.2 s)
            if state(symbol) == wanted:
                return
        raise AssertionError(f"{symbol} never reached {wanted}")

    with running(Path(cfg), duration=60) as run:
        run.read_until("opening sell 0.5 ETHUSDT")
        wait_state("BTCUSDT", "PROTECTED")
        inspect = json.loads(pg("inspect", "BTCUSDT", "--json").stdout)
        assert inspect["position"]["state"] == "PROTECTED"
        assert [e["to"] for e in inspect["events"]][-2:] == ["ENTERING", "PROTECTED"]
        assert "journal events" in pg("inspect", "BTC/USDT:USDT").stdout          # unified symbol form

        stop = inspect["position"]["stop_price"]
        moved = pg("amend", "BTCUSDT", "--sl", f"{stop * 0.99:.1f}", "--json")     # a little farther
        assert moved.returncode == 0 and json.loads(moved.stdout)["ok"] is True, moved.stderr
        for _ in range(100):
            snap = json.loads(pg("inspect", "BTCUSDT", "--json").stdout)["position"]
            if snap["state"] == "PROTECTED" and snap["stop_price"] == round(stop * 0.99, 1):
                break
        else:
            raise AssertionError(f"the stop never moved: {snap}")

        closed = pg("close", "BTCUSDT", "--json")
        assert closed.returncode == 0 and json.loads(closed.stdout)["ok"] is True
        wait_state("BTCUSDT", "IDLE")

        assert json.loads(pg("pause", "--json").stdout)["safe_mode"] is True
        refused = pg("open", "BTCUSDT", "buy", "0.01", "--sl", "2%", "--json")
        assert refused.returncode == 1 and "safe mode" in json.loads(refused.stdout)["reason"]
        assert json.loads(pg("resume", "--json").stdout)["safe_mode"] is False
        opened = pg("open", "BTC/USDT:USDT", "long", "0.01", "--sl", "2%")
        assert opened.returncode == 0 and "opening buy 0.01 BTCUSDT" in opened.stdout
        wait_state("BTCUSDT", "PROTECTED")

        unconfirmed = pg("panic")                         # no terminal to ask: refuses without --yes
        assert unconfirmed.returncode == 2 and "--yes" in one_line_error(unconfirmed)
        panic = pg("panic", "--yes", "--json")
        assert panic.returncode == 0 and set(json.loads(panic.stdout)["closing"]) == {"BTCUSDT", "ETHUSDT"}
        wait_state("BTCUSDT", "IDLE")
        wait_state("ETHUSDT", "IDLE")

        for bad, words in ((("open", "BTCUSDT", "up", "1", "--sl", "2%"), "SIDE"),
                           (("open", "BTCUSDT", "buy", "-1", "--sl", "2%"), "QTY"),
                           (("open", "BTCUSDT", "buy", "1", "--sl", "cheap"), "--sl"),
                           (("open", "XRPUSDT", "buy", "1", "--sl", "1"), "not in this deployment")):
            proc = pg(*bad)
            assert proc.returncode == 2 and words in one_line_error(proc)
        run.interrupt()
    assert run.proc.returncode == 0


@pytest.mark.parametrize(("sig", "said"), [(signal.SIGKILL, "died"),
                                           (signal.SIGSTOP, "stopped answering")],   # hung: 3 asks of 5 s
                         ids=["killed", "hung"])
def test_run_replaces_its_actor_system_when_the_supervisor_dies_or_hangs(tmp_path, sig, said):
    port = free_port()
    cfg = demo_config(tmp_path, port)
    with running(cfg, duration=90) as run:
        run.read_until("ETHUSDT", "PROTECTED")           # both protected in the live view
        before = json.loads(posguard("status", "--config", str(cfg), "--json").stdout)
        old_pids = {before["supervisor_pid"]} | {c["pid"] for c in before["children"] if c["pid"]}
        os.kill(before["supervisor_pid"], sig)
        assert said in run.read_until("ALERT supervisor")[-1]
        run.read_until("ETHUSDT", "PROTECTED", "confirmed")   # the new system recovered both from the journal
        after = json.loads(posguard("status", "--config", str(cfg), "--json").stdout)
        new_pids = {after["supervisor_pid"]} | {c["pid"] for c in after["children"] if c["pid"]}
        assert not old_pids & new_pids
        assert not [p for p in old_pids if alive(p)]                     # none of the old left
        assert {p["symbol"]: p["state"] for p in after["positions"]} == {"BTCUSDT": "PROTECTED",
                                                                         "ETHUSDT": "PROTECTED"}
        out, err = run.interrupt()
    assert run.proc.returncode == 0 and "stopped cleanly" in out, err
    import sqlite3
    with sqlite3.connect(tmp_path / "var" / "journal.sqlite") as db:
        entries = db.execute("SELECT symbol, COUNT(*) FROM orders WHERE purpose='entry' GROUP BY symbol").fetchall()
    assert sorted(entries) == [("BTCUSDT", 1), ("ETHUSDT", 1)]      # recovered, never re-entered
    assert not [p for _, p in listening_sockets().values() if p == port]
