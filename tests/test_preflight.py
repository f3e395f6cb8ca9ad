"""The venue preflight at start, before any entry: one-way position mode, every deployed symbol
trading, a key that can trade (and a warning for one that can withdraw); and a venue that cannot
start yet, retried with a bounded back-off and shown as what it is."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
from typing import Any

import pytest

from actors.exchange.actor import START_BACKOFF_CAP_S, start_backoff, start_failure
from actors.messages import (
    DeploymentFailed,
    StartDeployment,
    StopDeployment,
)
from adapters.base import VenueError, VenueTimeout
from adapters.binance.adapter import BinanceAdapter
from adapters.bybit.adapter import BybitAdapter
from adapters.ccxt.settings import MissingKey
from adapters.emulators.account import EmulatorAccount
from adapters.emulators.base import EmulatorConfig
from adapters.emulators.binance import BinanceEmulator
from adapters.emulators.bybit import BybitEmulator
from adapters.sim.adapter import SimVenueConfig
from adapters.sim.engine import EngineConfig
from supervisor.supervisor import Supervisor
from tests.support import kit
from tests.support.emulator import SETTINGS, EmulatorThread, run_adapter
from tests.support.kit import (
    E2E_KEY,
    E2E_KEY_ENV,
    E2E_SECRET,
    E2E_SECRET_ENV,
    PRICES,
    Served,
    bybit_config,
    free_port,
    one_line_error,
    running,
)

DIALECTS = [pytest.param(BybitEmulator, BybitAdapter, id="bybit"),
            pytest.param(BinanceEmulator, BinanceAdapter, id="binance")]


def emulator(port: int = 0, **account: Any) -> EmulatorConfig:
    return EmulatorConfig(venue=SimVenueConfig(engine=EngineConfig(seed=2, prices=PRICES, volatility=0.0),
                                               orders_per_second=100), account=EmulatorAccount(**account))


def preflight(dialect: type, adapter: type, symbols: tuple[str, ...] = tuple(PRICES), **account: Any) -> Any:
    with EmulatorThread(emulator(**account), dialect) as emu:
        async def ask(a: Any) -> Any:
            return await a.preflight(symbols)
        return run_adapter(emu, adapter, ask)


@pytest.mark.parametrize(("dialect", "adapter"), DIALECTS)
def test_a_fit_account_has_nothing_to_say(dialect, adapter):
    result = preflight(dialect, adapter)
    assert result.problems == () and result.warnings == ()


@pytest.mark.parametrize(("dialect", "adapter", "setting"), [
    pytest.param(BybitEmulator, BybitAdapter, "switch-mode mode=0", id="bybit"),
    pytest.param(BinanceEmulator, BinanceAdapter, "dualSidePosition=false", id="binance")])
def test_hedge_mode_is_one_problem_naming_the_setting_to_change(dialect, adapter, setting):
    (problem,) = preflight(dialect, adapter, hedge_mode=True).problems
    assert "hedge mode" in problem and "one-way" in problem and setting in problem, problem


@pytest.mark.parametrize(("dialect", "adapter"), DIALECTS)
def test_a_symbol_not_trading_or_not_listed_is_named(dialect, adapter):
    problems = preflight(dialect, adapter, ("BTCUSDT", "ETHUSDT", "DOGEUSDT"), halted=("ETHUSDT",)).problems
    assert len(problems) == 2, problems
    assert problems[0].startswith("ETHUSDT is not trading") and "remove it from deployment.symbols" in problems[0]
    assert problems[1].startswith("DOGEUSDT is not a linear USDT perpetual"), problems


def test_a_bybit_key_that_cannot_trade_is_refused_and_one_that_can_withdraw_is_warned_of():
    (problem,) = preflight(BybitEmulator, BybitAdapter, read_only=True).problems
    assert "cannot trade" in problem and "read-write" in problem
    result = preflight(BybitEmulator, BybitAdapter, can_withdraw=True)
    assert result.problems == ()
    (warning,) = result.warnings
    assert "withdraw" in warning


@pytest.mark.parametrize(("dialect", "adapter"), DIALECTS)
def test_an_unfit_account_refuses_the_deployment_before_any_entry(tcp_system, tmp_path, dialect, adapter):
    with EmulatorThread(emulator(hedge_mode=True), dialect) as emu:
        sup = tcp_system.createActor(Supervisor)
        factory = functools.partial(adapter, emu.settings())
        reply = tcp_system.ask(sup, StartDeployment(tuple(PRICES), str(tmp_path / "j.sqlite"), factory, SETTINGS), 30)
        assert isinstance(reply, DeploymentFailed) and reply.usage, reply
        assert "hedge mode" in reply.reason and "\n" not in reply.reason
        assert [r for _, path, r in emu.requests_log() if "order" in path.lower() and _sent(path)] == []
        assert emu.truth().orders == ()
        tcp_system.ask(sup, StopDeployment(), 15)


def _sent(path: str) -> bool:
    """An order-placing path (Bybit create, Binance order and algo order)."""
    return path in ("/v5/order/create", "/fapi/v1/order", "/fapi/v1/algoOrder")


def test_a_key_that_can_withdraw_is_warned_of_in_status(tcp_system, tmp_path):
    with EmulatorThread(emulator(can_withdraw=True), BybitEmulator) as emu:
        d = kit.Deployment(tcp_system, tuple(PRICES), str(tmp_path / "j.sqlite"), emu.factory(), settings=SETTINGS)
        report = d.status()
        assert len(report.venue_warnings) == 1 and "withdraw" in report.venue_warnings[0]
        d.stop()


@pytest.mark.parametrize(("exc", "kind"), [
    (VenueTimeout("no answer"), "unreachable"),
    (VenueError(503, "Cannot connect to host"), "unreachable"),
    (VenueError(10004, "error sign!"), "keys"),
    (VenueError(-2015, "Invalid API-key"), "keys"),
    (VenueError("auth", "AuthenticationError"), "keys"),
    (MissingKey("PG_KEY is not set"), "keys"),
    (VenueError(10002, "server timestamp"), "clock"),
    (VenueError(-1021, "Timestamp outside recvWindow"), "clock"),
    (VenueError("ccxt", "BadResponse: markets"), "venue"),
])
def test_a_start_failure_is_shown_as_what_it_is(exc, kind):
    assert start_failure(exc) == kind


def test_the_start_back_off_doubles_up_to_its_cap():
    delays = [start_backoff(n) for n in range(1, 12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False))
    assert max(delays) == START_BACKOFF_CAP_S == delays[-1]


def test_a_venue_lost_after_deploying_is_retried_and_shown_in_status_until_it_is_back(tcp_system, tmp_path):
    port = free_port()
    first = EmulatorThread(emulator(), BybitEmulator)
    first.emulator.port = port
    with first:
        d = kit.Deployment(tcp_system, tuple(PRICES), str(tmp_path / "j.sqlite"), first.factory(), settings=SETTINGS)
    # The venue is gone; the exchange process dies: its restart cannot start the adapter.
    os.kill(d.pid("exchange"), signal.SIGKILL)
    report = d.status_until(lambda r: r.venue_status != "", 30, "status never said the venue is gone", every=0.1)
    assert report.venue_status.startswith("venue not ready (unreachable)"), report.venue_status
    assert "attempt" in report.venue_status and "next in" in report.venue_status
    again = EmulatorThread(emulator(), BybitEmulator)
    again.emulator.port = port
    with again:
        report = d.status_until(lambda r: r.venue_status == "" and dict((c, up) for c, _, up in r.children).get(
            "exchange"), 60, "the venue never came back in status", every=0.1)
        assert not report.safe_mode
        d.stop()


def test_posguard_run_on_a_hedge_mode_account_exits_2_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(E2E_KEY_ENV, E2E_KEY)
    monkeypatch.setenv(E2E_SECRET_ENV, E2E_SECRET)
    admin, api = free_port(), free_port()
    cfg = bybit_config(tmp_path, admin, api)
    cfg.write_text(cfg.read_text().replace("seed = 3", "seed = 3\nhedge_mode = true", 1))
    with Served("emulator", cfg) as emulator:
        assert "listening on" in emulator.first_line
        with running(cfg, duration=30) as run:
            out, err = run.proc.communicate(timeout=120)
        assert run.proc.returncode == 2, err
        line = one_line_error(subprocess.CompletedProcess(run.proc.args, 2, out, err))
        assert "hedge mode" in line and "mode=0" in line, line
        assert E2E_KEY not in err + out and E2E_SECRET not in err + out


def test_the_emulator_section_takes_the_account_switches(tmp_path):
    from supervisor.config.loader import ConfigError, load_config

    cfg = bybit_config(tmp_path, free_port(), free_port())
    cfg.write_text(cfg.read_text().replace("seed = 3", 'seed = 3\nhedge_mode = true\nhalted = ["ETHUSDT"]', 1))
    loaded = load_config(str(cfg))
    assert loaded.emulator_account == dataclasses.replace(EmulatorAccount(), hedge_mode=True, halted=("ETHUSDT",))
    cfg.write_text(cfg.read_text().replace("hedge_mode = true", 'hedge_mode = "yes"', 1))
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg))
    assert any(p.startswith("emulator.hedge_mode") for p in err.value.problems), err.value.problems


def test_an_adapter_that_fails_to_start_with_a_bug_fails_the_deployment_once_not_a_restart_loop():
    # Not the venue's doing (no retry helps): the start fails, with the reason, like a bad config.
    from actors.exchange.actor import ExchangeActor
    from actors.messages import ActorFailed

    exchange = ExchangeActor.__new__(ExchangeActor)
    exchange.supervisor = "sup"
    sent: list[tuple[object, object]] = []
    exchange.send = lambda to, msg: sent.append((to, msg))   # type: ignore[method-assign]
    exchange._started(object(), RuntimeError("adapter bug"))
    (to, failed), = sent
    assert to == "sup" and isinstance(failed, ActorFailed) and "adapter bug" in failed.reason
