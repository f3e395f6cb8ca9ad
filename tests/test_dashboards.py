"""The dashboards shipped for what posguard exports: the Grafana dashboard and the Prometheus
alert rules in conf/ name only series the code exports (and the dashboard shows each of them),
every alert rule fires and stays quiet as its promtool test says, and the series they rely on
carry what the deployment knows (readiness, the venue, the rate limit's waits)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from actors.exchange.core import Pacer
from supervisor.metrics import PHASES, Metrics
from tests.support.processes import ROOT

DASHBOARD = ROOT / "conf" / "grafana" / "posguard-dashboard.json"
RULES = ROOT / "conf" / "prometheus" / "posguard-alerts.yml"
RULE_TESTS = ROOT / "conf" / "prometheus" / "posguard-alerts.test.yml"
SERIES = re.compile(r"\b(posguard_[a-z_]+)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> tuple[set[str], set[str]]:
    """(every series name the metrics expose, every metric family) -- from the code itself."""
    metrics = Metrics(0, dict, serve=False)
    families = {m.name: m.type for m in metrics.registry.collect()}
    names = {name + suffix for name, kind in families.items() for suffix in SUFFIXES[kind]}
    return names, set(families)


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def test_the_grafana_dashboard_shows_every_exported_family_and_nothing_else():
    names, families = exported()
    used = {s for e in dashboard_exprs() for s in SERIES.findall(e)}
    assert used <= names, f"the dashboard names series nobody exports: {sorted(used - names)}"
    shown = {f for f in families if any(u == f or u.startswith(f + "_") for u in used)}
    assert shown == families, f"families with no panel: {sorted(families - shown)}"
    dash = json.loads(DASHBOARD.read_text())
    assert dash["__inputs"][0]["pluginId"] == "prometheus" and len({p["id"] for p in dash["panels"]}) == len(
        dash["panels"])


def test_the_alert_rules_name_only_exported_series():
    names, _ = exported()
    text = RULES.read_text()
    exprs = re.findall(r"^\s+expr: (.+)$", text, re.MULTILINE)
    assert len(exprs) == 6
    used = {s for e in exprs for s in SERIES.findall(e)}
    assert used and used <= names, sorted(used - names)


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed: tests/os-packages.sh installs it"
                                              " (Debian's prometheus package)")
def test_every_alert_rule_passes_its_promtool_test():
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "6 rules found" in check.stdout, check.stdout + check.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=60, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    tested_rules = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested_rules == set(re.findall(r"- alert: (\w+)", RULES.read_text()))     # each rule has its test


def test_a_broken_rule_fails_its_promtool_test(tmp_path: Path):
    """The promtool test is worth something: a rule that never fires fails it."""
    if PROMTOOL is None:
        pytest.skip("promtool is not installed: tests/os-packages.sh installs it (Debian's prometheus package)")
    (tmp_path / "posguard-alerts.yml").write_text(RULES.read_text().replace("posguard_safe_mode == 1",
                                                                            "posguard_safe_mode == 2"))
    shutil.copy(RULE_TESTS, tmp_path)
    tested = subprocess.run([PROMTOOL, "test", "rules", "posguard-alerts.test.yml"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert tested.returncode != 0 and "PosguardSafeMode" in tested.stdout + tested.stderr


def _sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def test_phase_and_venue_series_follow_what_the_supervisor_tells_them():
    metrics = Metrics(0, dict, naked_deadline_s=7.5, serve=False)
    assert _sample(metrics, "posguard_naked_deadline_seconds") == 7.5
    metrics.on_phase("starting", venue_up=False)
    assert (_sample(metrics, "posguard_ready"), _sample(metrics, "posguard_venue_up")) == (0, 0)
    metrics.on_phase("ready", venue_up=True)
    assert (_sample(metrics, "posguard_ready"), _sample(metrics, "posguard_venue_up")) == (1, 1)
    assert {p: _sample(metrics, "posguard_phase", {"phase": p}) for p in PHASES} == {
        "starting": 0, "ready": 1, "safe_mode": 0, "stopping": 0}
    metrics.on_phase("safe_mode", venue_up=True)
    assert _sample(metrics, "posguard_ready") == 0


def test_rate_limit_waits_add_up_across_heartbeats_and_a_restarted_exchange():
    metrics = Metrics(0, dict, serve=False)
    metrics.on_figures((("orders_waits", 3), ("orders_waited_s", 0.5), ("reads_waits", 0), ("reads_waited_s", 0.0)),
                       pid=100)
    metrics.on_figures((("orders_waits", 5), ("orders_waited_s", 0.75)), pid=100)
    metrics.on_figures((("orders_waits", 1), ("orders_waited_s", 0.25)), pid=200)       # a new exchange, from 0
    # A new process whose first heartbeat already passed the old one's total: still all of it.
    metrics.on_figures((("orders_waits", 7), ("orders_waited_s", 1.0)), pid=300)
    assert _sample(metrics, "posguard_rate_limit_waits_total", {"limit": "orders"}) == 13
    assert _sample(metrics, "posguard_rate_limit_wait_seconds_total", {"limit": "orders"}) == 2.0


def test_the_pacer_counts_the_calls_that_waited_and_how_long():
    now = [0.0]
    pacer = Pacer(2.0, clock=lambda: now[0], reserve=0.0)

    async def run() -> None:
        await pacer.wait()
        await pacer.wait()                                   # the bucket (2) is empty now
        waiter = asyncio.ensure_future(pacer.wait())
        await asyncio.sleep(0)
        now[0] = 0.5                                         # a token is due
        await asyncio.wait_for(waiter, 5)
    asyncio.run(run())
    assert pacer.waits == 1 and pacer.waited_s == 0.5
