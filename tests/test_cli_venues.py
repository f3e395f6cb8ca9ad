"""`posguard run` on a real-venue config pointed at the Bybit emulator, end to end through
real ccxt and HTTP; the [venue] section's checks; keys that never reach a log or a reply."""

from __future__ import annotations

import json
import urllib.request

import pytest

from supervisor.cli.main import main
from tests.support.kit import (
    E2E_KEY,
    E2E_KEY_ENV,
    E2E_SECRET,
    E2E_SECRET_ENV,
    ROOT,
    Served,
    bybit_config,
    free_port,
    one_line_error,
    posguard,
    running,
)


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv(E2E_KEY_ENV, E2E_KEY)
    monkeypatch.setenv(E2E_SECRET_ENV, E2E_SECRET)


def test_run_and_status_against_the_emulator_through_ccxt(tmp_path, keys):
    admin, api = free_port(), free_port()
    cfg = bybit_config(tmp_path, admin, api)
    with Served("emulator", cfg) as emulator, running(cfg, duration=60) as run:
        assert f"listening on http://127.0.0.1:{api}" in emulator.first_line
        seen = run.read_until("opening sell 0.5 ETHUSDT")
        assert any("on bybit venue (stops attached to entries)" in s for s in seen), seen
        seen = run.read_until("ETHUSDT", "PROTECTED")    # the live view shows both protected
        while not any("BTCUSDT" in s and "PROTECTED" in s for s in seen[-3:]):
            seen = run.read_until("ETHUSDT", "PROTECTED")
        status = posguard("status", "--config", str(cfg), "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["venue"] == "bybit"
        assert {p["symbol"]: p["state"] for p in report["positions"]} == {"BTCUSDT": "PROTECTED",
                                                                           "ETHUSDT": "PROTECTED"}
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/emulator/truth", timeout=5) as reply:
            truth = json.load(reply)
        stops = {p["symbol"]: p["stop_price"] for p in truth["positions"] if p["closed_at"] is None}
        assert stops["ETHUSDT"] == 3100.0 and 58_000 < stops["BTCUSDT"] < 60_000
        assert max(p["naked_seconds"] for p in truth["positions"]) == 0.0
        assert all(p["stop_price"] == stops[p["symbol"]] for p in report["positions"])   # as the venue holds it
        out, err = run.interrupt()
        assert run.proc.returncode == 0, err
        assert "stopped cleanly" in out and "Traceback" not in err
    everything = status.stdout + out + err + (tmp_path / "var" / "posguard.log").read_text()
    assert E2E_KEY not in everything and E2E_SECRET not in everything
    import sqlite3
    with sqlite3.connect(tmp_path / "var" / "journal.sqlite") as db:
        dump = "\n".join(db.iterdump())
    assert E2E_KEY not in dump and E2E_SECRET not in dump and "BTCUSDT" in dump


def test_a_missing_key_is_one_line_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(E2E_KEY_ENV, raising=False)
    monkeypatch.setenv(E2E_SECRET_ENV, E2E_SECRET)
    proc = posguard("run", "--config", str(bybit_config(tmp_path, free_port(), free_port())), "--duration", "1")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "PG_E2E_KEY is not set" in line and E2E_SECRET not in line


@pytest.mark.parametrize(("old", "new", "key"), [
    ("key_env = \"PG_E2E_KEY\"", "key_env = \"PG_E2E_KEY\"\ntestnet = \"yes\"", "venue.testnet"),
    ("key_env = \"PG_E2E_KEY\"", "key_env = \"PG_E2E_KEY\"\ntestnet = true\ndemo = true", "venue.demo"),
    ("key_env = \"PG_E2E_KEY\"", "key_env = \"not a name\"", "venue.key_env"),
    ("key_env = \"PG_E2E_KEY\"", "key_env = \"PG_E2E_KEY\"\nattached_stop = 1", "venue.attached_stop"),
    ("key_env = \"PG_E2E_KEY\"", "key_env = \"PG_E2E_KEY\"\ntimeout_s = 0", "venue.timeout_s"),
    ("key_env = \"PG_E2E_KEY\"", "key_env = \"PG_E2E_KEY\"\nsimulated = {}", "venue.simulated"),
    ("orders_per_second = 100", "orders_per_second = 100\nfaults = 3", "emulator.faults"),
    ("name = \"bybit\"", "name = \"binanceusdm\"\nattached_stop = true", "venue.attached_stop"),
])
def test_bad_venue_config_is_one_line_naming_the_key(tmp_path, keys, capsys, old, new, key):
    cfg = bybit_config(tmp_path, free_port(), free_port())
    cfg.write_text(cfg.read_text().replace(old, new, 1))
    assert main(["run", "--config", str(cfg), "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()                              # one line per problem, each naming its key
    assert any(line.startswith(f"posguard: config error: {key}") for line in lines), err
    assert all(line.startswith("posguard: config error: ") for line in lines) and "Traceback" not in err


def test_unknown_venue_and_bad_symbols_and_urls(tmp_path, keys, capsys):
    cfg = bybit_config(tmp_path, free_port(), free_port())
    text = cfg.read_text()
    for old, new, key in [('name = "bybit"', 'name = "kraken"', "venue.name"),
                          ('"BTC/USDT:USDT", "ETHUSDT"]', '"BTC/USD:BTC", "ETHUSDT"]', "deployment.symbols[0]"),
                          ("api_url = \"http", "api_url = \"ftp", "venue.api_url")]:
        cfg.write_text(text.replace(old, new, 1))
        assert main(["run", "--config", str(cfg), "--duration", "1"]) == 2
        err = capsys.readouterr().err
        assert key in err, err
    cfg.write_text(text.replace('name = "bybit"', 'name = "binanceusdm"'))        # the emulator speaks Bybit
    assert main(["emulator", "--config", str(cfg)]) == 2
    assert "emulator: the Bybit emulator needs" in capsys.readouterr().err


def test_example_venue_configs_load():
    from supervisor.config.loader import load_config

    for name, venue in (("bybit.toml", "bybit"), ("binance.toml", "binanceusdm"), ("bybit-emulator.toml", "bybit")):
        cfg = load_config(str(ROOT / "conf" / name))
        assert cfg.venue == venue and cfg.ccxt is not None and cfg.simulated is None
    assert load_config(str(ROOT / "conf" / "binance.toml")).ccxt.attached_stop is False


def test_an_unreachable_venue_is_one_clear_line_and_nothing_left_running(tmp_path, keys):
    admin = free_port()
    proc = posguard("run", "--config", str(bybit_config(tmp_path, admin, free_port())), "--duration", "5",
                    timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("posguard: deployment failed to start: exchange: venue adapter failed to start")
    assert "Cannot connect" in last
    from supervisor.host.procfs import listening_sockets
    assert not [p for _, p in listening_sockets().values() if p == admin]
