"""`posguard run`'s standby on a shared journal, in-process: it takes a free account at once, a
host at its cap (lease.max_per_host) leaves the next account to another host and takes it once
it holds fewer, and a released lease is free at once (no TTL to wait)."""

from __future__ import annotations

import threading
from pathlib import Path

from supervisor.actor_system.start import free_port
from supervisor.config.loader import load_config
from supervisor.host.standby import Standby
from tests.support.configs import demo_config


def _config(tmp_path: Path, account: str, pg_url: str, password_file: str) -> object:
    folder = tmp_path / account
    folder.mkdir()
    return load_config(str(demo_config(folder, free_port(), opens=False, tables={
        "venue.simulated": {"recv_window_s": 1.0},
        "journal": {"url": pg_url, "account": account, "password_file": password_file},
        "runtime": {"dir": "var"}, "lease": {"ttl_s": 30.0, "renew_s": 0.2, "max_per_host": 1}})))


def test_a_host_at_its_cap_leaves_the_next_account_to_another_and_takes_it_once_it_holds_fewer(
        tmp_path, postgres_server, pg_url):
    first = Standby(_config(tmp_path, "desk1", pg_url, postgres_server.password_file), say=lambda line: None)
    said: list[str] = []
    stop = threading.Event()

    def say(line: str) -> None:
        said.append(line)
        if "left to another host" in line:
            stop.set()

    second = Standby(_config(tmp_path, "desk2", pg_url, postgres_server.password_file), say=say)
    try:
        grant = first.wait(threading.Event())
        assert grant is not None and grant.epoch == 1 and grant.account == "desk1"
        assert second.wait(stop) is None                         # capped: it stood by without taking desk2
        assert said == ["posguard: standby for account desk2: this host holds 1 accounts already"
                        " (lease.max_per_host); left to another host"]
        assert postgres_server.psql("SELECT count(*) FROM posguard.leases WHERE account = 'desk2'",
                                    database=pg_url.rsplit("/", 1)[1]) == "0"
        first.release()                                          # desk1 let go: this host holds none
        taken = second.wait(threading.Event())
        assert taken is not None and taken.account == "desk2" and taken.epoch == 1
        assert taken.entries_after > grant.entries_after         # its own wait, from its own takeover
    finally:
        first.close()
        second.close()


def test_the_fleet_example_config_loads_as_a_shared_journal_account():
    cfg = load_config(str(Path(__file__).resolve().parents[1] / "conf" / "fleet" / "account.toml"))
    assert cfg.journal_url.startswith("postgresql://") and cfg.journal_path == "" and cfg.account == "desk1"
    assert cfg.lease.ttl_s == 3.0 and cfg.lease.max_per_host == 4
    assert cfg.paths.deployment_lock == "/run/posguard/desk1/deployment.lock"


def test_on_a_shared_journal_every_series_carries_the_account_it_is_about():
    from prometheus_client import generate_latest

    from supervisor.metrics import Metrics

    metrics = Metrics(0, dict, serve=False)
    metrics.safe_mode.set(1)
    lines = [line for line in generate_latest(metrics.served("desk1")).decode().splitlines()
             if line and not line.startswith("#")]
    assert lines and all('account="desk1"' in line for line in lines), lines
    assert 'posguard_safe_mode{account="desk1"} 1.0' in lines
    plain = generate_latest(metrics.served(None)).decode()            # a single host's file journal: as before
    assert "posguard_safe_mode 1.0" in plain and "account=" not in plain
