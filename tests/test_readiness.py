"""Readiness: the deployment's phase (what it waits for while it starts), `posguard wait`,
`Client.wait_ready`, and entries and closes sent while it starts waiting for it -- as pure
functions first, then against a real `posguard run` whose venue is frozen while it starts."""

from __future__ import annotations

import json
import os
import signal

from actors.messages import ClosePosition, OpenPosition
from adapters.base import Side
from supervisor.children import Children
from supervisor.client import Client, NotReady
from supervisor.commands import Commands
from supervisor.specs import ChildKind, ChildSpec
from supervisor.status import Health, PhaseName, phase_of
from tests.support import kit


def _children(symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")) -> Children:
    children = Children()
    for kind in (ChildKind.JOURNAL, ChildKind.EXCHANGE, ChildKind.API):
        children.add(ChildSpec(kind, kind, object))
    children.add(ChildSpec("positions:0", ChildKind.POSITIONS, object, symbols=symbols))
    return children


def _phase(children: Children, health: Health | None = None, **kw: object):
    args = {"deployed": False, "stopping": "", "safe_mode": False, "safe_reason": ""} | kw
    return phase_of(children=children, health=health or Health(), **args)  # type: ignore[arg-type]


def _ready(children: Children, *ids: str) -> None:
    for child_id in ids:
        children.by_id[child_id].ready = True


def test_a_starting_deployment_says_what_it_waits_for_step_by_step():
    children, health = _children(), Health()
    phase = _phase(children, health)
    assert phase.name == PhaseName.STARTING
    assert phase.waiting_for == ("journal", "venue", "api", "recovery") and phase.recovered == (0, 2)

    _ready(children, "journal", "api")
    health.venue_status = "venue not ready (unreachable): Cannot connect; attempt 2, next in 2s"
    phase = _phase(children, health)
    assert phase.waiting_for == ("venue", "recovery") and "Cannot connect" in phase.detail

    health.on_exchange_preflight()
    phase = _phase(children, health)
    assert phase.waiting_for == ("preflight", "recovery") and "preflight" in phase.detail

    _ready(children, "exchange")
    children.by_id["positions:0"].symbols_ready.add("BTCUSDT")
    phase = _phase(children, health)
    assert phase.waiting_for == ("recovery",) and phase.recovered == (1, 2)
    assert "recovery of 1 of 2 symbols" in phase.detail


def test_once_deployed_it_is_ready_or_in_safe_mode_or_stopping():
    children = _children()
    _ready(children, "journal", "exchange", "api", "positions:0")
    assert _phase(children, deployed=True).name == PhaseName.READY
    assert _phase(children, deployed=True).recovered == (2, 2)
    safe = _phase(children, deployed=True, safe_mode=True, safe_reason="operator (posguard pause)")
    assert (safe.name, safe.detail) == (PhaseName.SAFE_MODE, "operator (posguard pause)")
    assert _phase(children, deployed=True, stopping="stopping").name == PhaseName.STOPPING
    assert _phase(children, deployed=False, stopping="stopping").name == PhaseName.STOPPING


def test_a_close_goes_to_a_recovered_symbol_before_the_deployment_is_ready_an_entry_does_not():
    children = _children()
    child = children.by_id["positions:0"]
    child.address = "actor-address"
    commands = Commands(children, lambda to, msg: None)
    entry = OpenPosition("BTCUSDT", Side.BUY, 1.0, 90.0)
    denied = commands.target(entry, "asker", deployed=False)
    assert denied.retry and denied.reason == "deployment is not ready"             # type: ignore[union-attr]
    assert commands.target(ClosePosition("BTCUSDT"), "asker", deployed=False).retry  # type: ignore[union-attr]

    child.symbols_ready.add("BTCUSDT")                                 # its state rebuilt, its venue asked
    assert commands.target(ClosePosition("BTCUSDT"), "asker", deployed=False) == "actor-address"
    assert commands.target(entry, "asker", deployed=False).retry       # type: ignore[union-attr]
    assert not commands.target(OpenPosition("XRPUSDT", Side.BUY, 1.0, 1.0), "asker", True).retry  # type: ignore


def test_while_the_exchange_is_replaced_an_entry_is_held_a_close_goes():
    # An entry routed now would go to the exchange that died (its order lost, then judged
    # never arrived: a refused entry the operator did not expect); a close resyncs by itself.
    children, health = _children(), Health(venue_stage="")           # the adapter runs
    _ready(children, "journal", "exchange", "api", "positions:0")
    children.by_id["positions:0"].address = "actor-address"
    commands = Commands(children, lambda to, msg: None)
    entry = OpenPosition("BTCUSDT", Side.BUY, 1.0, 90.0)
    assert commands.target(entry, "asker", deployed=True) == "actor-address"
    assert health.venue_up

    children.down(children.by_id["exchange"])
    health.on_exchange_gone()
    denied = commands.target(entry, "asker", deployed=True)
    assert denied.retry and "exchange is restarting" in denied.reason           # type: ignore[union-attr]
    assert commands.target(ClosePosition("BTCUSDT"), "asker", deployed=True) == "actor-address"
    assert not health.venue_up                                        # posguard_venue_up 0 meanwhile
    health.on_exchange_preflight()
    assert health.venue_up                                            # it answers: only its checks run


def test_wait_and_commands_sent_while_the_venue_is_frozen_wait_for_it_then_go(tmp_path):
    """The simulated venue in its own process is stopped (SIGSTOP) before the deployment starts:
    the deployment waits for the venue. Meanwhile `status` says so, `wait` and an `open` with a
    short bound are refused naming the phase, and an `open` with a long bound, sent now, goes
    once the venue is let go -- no sleeps: each step waits on what the deployment says."""
    venue_socket = str(tmp_path / "venue.sock")
    cfg = kit.demo_config(tmp_path, kit.free_port(), opens=False,
                          tables={"venue.simulated": {"server": venue_socket}})
    config = str(cfg)
    with kit.Served("venue", cfg) as venue, kit.running(cfg) as run:
        assert "listening" in venue.first_line
        os.kill(venue.proc.pid, signal.SIGSTOP)
        try:
            with Client.when_up(str(run.socket), wait_s=30) as pg:
                status = pg.status()
            assert status["phase"] == "starting" and "venue" in status["waiting_for"], status
            assert status["recovery"] == {"done": 0, "of": 2}

            waited = kit.posguard("wait", "--config", config, "--timeout", "0.5")
            assert waited.returncode == 1
            assert kit.one_line_error(waited).startswith("posguard: not ready: deployment is starting: venue")
            refused = kit.posguard("open", "BTCUSDT", "buy", "0.01", "--sl", "2%", "--wait", "0.3",
                                   "--config", config, "--json")
            assert refused.returncode == 1, refused.stderr
            answer = json.loads(refused.stdout)
            assert answer["ok"] is False and "phase starting" in answer["reason"], answer

            # Sent now, while the venue is frozen: each waits on the deployment, then is answered.
            later, ready = Client(str(run.socket), timeout=90), Client(str(run.socket), timeout=90)
            later._send({"id": 1, "op": "open", "args": {"symbol": "BTCUSDT", "side": "buy", "qty": 0.01,
                                                          "sl_pct": 2, "wait": 60}})
            ready._send({"id": 1, "op": "wait", "args": {"timeout": 60}})
        finally:
            os.kill(venue.proc.pid, signal.SIGCONT)
        with ready:
            result = ready._read()["result"]
        assert result["ready"] and result["phase"] == "ready" and result["recovery"] == {"done": 2, "of": 2}
        with later:
            opened = later._read()
        assert opened["ok"] and opened["result"]["symbol"] == "BTCUSDT", opened
        run.wait_states({"BTCUSDT": "PROTECTED"})
        with Client(str(run.socket)) as pg:
            assert pg.wait_ready(timeout=1)["phase"] == "ready"
            pg.pause()
            try:
                pg.wait_ready(timeout=5)
                raise AssertionError("safe mode is not ready")
            except NotReady as exc:                                  # at once: it will not end by itself
                assert exc.extra["phase"] == "safe_mode" and "posguard pause" in exc.message
        run.interrupt()


def test_a_host_whose_lease_is_not_renewed_routes_only_closes_and_a_new_holder_holds_entries_only():
    # The journal's process reports each renewal's deadline (LeaseDeadline); past it this host is
    # fenced: the scan's adoptions and cancels and the operator's entries and stop moves could touch
    # the positions of the host that took the account over. A close can never open: it still goes.
    from actors.journal.lease import boottime
    from actors.messages import AdoptPosition, AmendPosition

    children = _children()
    _ready(children, "journal", "exchange", "api", "positions:0")
    children.by_id["positions:0"].address = "actor-address"
    commands = Commands(children, lambda to, msg: None)
    entry, adopt = OpenPosition("BTCUSDT", Side.BUY, 1.0, 90.0), AdoptPosition("BTCUSDT", Side.BUY, 1.0, 90.0)
    move = AmendPosition("BTCUSDT", stop_price=95.0)
    commands.lease_deadline = boottime() + 60.0                      # renewed: everything goes
    assert all(commands.target(m, "asker", deployed=True) == "actor-address" for m in (entry, adopt, move))

    commands.lease_deadline = boottime() - 0.001                     # not renewed in time
    for msg in (entry, adopt, move):
        denied = commands.target(msg, "asker", deployed=True)
        assert denied.retry and "fenced" in denied.reason, denied    # type: ignore[union-attr]
    assert commands.target(ClosePosition("BTCUSDT"), "asker", deployed=True) == "actor-address"

    commands.lease_deadline, commands.entries_after = boottime() + 60.0, boottime() + 60.0   # just took over
    denied = commands.target(entry, "asker", deployed=True)
    assert denied.retry and "previous holder's orders" in denied.reason  # type: ignore[union-attr]
    assert commands.target(ClosePosition("BTCUSDT"), "asker", deployed=True) == "actor-address"
