"""Bad input, as tables: each row is an input, the one line that must name what was wrong (and,
where it can, what would be accepted), and the proof that nothing reached the venue.

1. CONFIG: `posguard run` in this process on a config with one (or two) mistakes: exit 2, one
   `posguard: config error: KEY: ...` line per mistake, and nothing started (no `var/` folder:
   no journal, no socket, no venue).
2. CLI: operator commands with bad arguments, against a deployment that is not running: exit 2
   with the argument's reason (checked before anything is contacted), one line.
3. RUNNING: one demo deployment for the whole table; bad API requests (raw JSON lines) and bad
   `posguard open`/`close` commands (subprocesses) are refused naming the problem, and the
   venue's order count and positions are what they were. One close that is fine does reach it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.sim.truth import TrueState
from supervisor.actor_system.start import free_port
from supervisor.cli.main import main
from tests.support import kit
from tests.support.kit import POSGUARD, ROOT, PosguardRun, demo_config, running

BIG = "1" + "0" * 400                                   # a 401-digit whole number: TOML reads it as an int
CONFIG_ERROR = "posguard: config error: "


def stderr_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip()]


# -- 1. the config --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigRow:
    """A change to the known-good demo config, and the problems it must be refused with:
    (dotted key, words its line must hold). `replace` changes the first occurrence of its old
    text; `append` is added at the end (after the [[open]] tables); ADMIN is the admin port."""

    expect: tuple[tuple[str, ...], ...]
    append: str = ""
    replace: tuple[str, str] | None = None


def _row(name: str, expect: tuple[tuple[str, ...], ...], append: str = "",
         replace: tuple[str, str] | None = None) -> Any:
    return pytest.param(ConfigRow(expect, append, replace), id=name)


CONFIG = [
    _row("qty-401-digits", (("open[0].qty", "finite number", "> 0 and <= 1e+12", "401-digit"),),
         replace=("qty = 0.01", f"qty = {BIG}")),
    _row("seconds-401-digits", (("position.naked_deadline_s", ">= 0.01 and <= 300", "401-digit"),),
         append=f"[position]\nnaked_deadline_s = {BIG}\n"),
    _row("count-401-digits", (("supervision.max_restarts", "must be <= 1000"),),
         append=f"[supervision]\nmax_restarts = {BIG}\n"),
    _row("qty-1e300", (("open[0].qty", "must be <= 1000000000000", "1e+300"),),
         replace=("qty = 0.01", "qty = 1e300")),
    _row("naked-deadline-1e300", (("position.naked_deadline_s", "must be <= 300", "1e+300"),),
         append="[position]\nnaked_deadline_s = 1e300\n"),
    _row("reply-timeout-1e300", (("position.reply_timeout_s", "must be <= 300", "1e+300"),),
         append="[position]\nreply_timeout_s = 1e300\n"),
    _row("heartbeat-timeout-0", (("supervision.heartbeat_timeout_s", "must be >= 0.05", "got 0"),),
         append="[supervision]\nheartbeat_timeout_s = 0\n"),
    _row("restart-window-0", (("supervision.within_s", "must be >= 1.0", "got 0"),),
         append="[supervision]\nwithin_s = 0\n"),
    _row("supervision-jitter-50", (("supervision.jitter", "must be <= 1.0", "got 50"),),
         append="[supervision]\njitter = 50\n"),
    _row("stream-jitter-50", (("stream.jitter", "must be <= 1.0", "got 50"),),
         append="[stream]\njitter = 50\n"),
    _row("metrics-port-is-admin-port", (("metrics.port", "is admin.port already", "its own"),),
         append="[metrics]\nport = ADMIN\n"),
    _row("admin-port-privileged", (("admin.port", "from 1024 to 65535", "got 80"),),
         replace=("port = ADMIN", "port = 80")),
    _row("stop-pct-100", (("open[0].stop_pct", "must be <= 50", "got 100"),),
         replace=("stop_pct = 2.0", "stop_pct = 100")),
    _row("unknown-key", (("position.naked_deadlin_s", "unknown key", "naked_deadline_s"),),
         append="[position]\nnaked_deadlin_s = 3\n"),
    _row("unknown-section", (("positon", "unknown section", "position"),),
         append="[positon]\nnaked_deadline_s = 3\n"),
    _row("seconds-nan", (("position.naked_deadline_s", "must be a finite number", "got nan"),),
         append="[position]\nnaked_deadline_s = nan\n"),
    _row("seconds-inf", (("position.poll_s", "must be a finite number", "got inf"),),
         append="[position]\npoll_s = inf\n"),
    _row("seconds-minus-inf", (("protection.scan_s", "must be a finite number", "got -inf"),),
         append="[protection]\nscan_s = -inf\n"),
    _row("seconds-negative", (("protection.scan_s", "must be >= 0.01", "got -5"),),
         append="[protection]\nscan_s = -5\n"),
    _row("seconds-a-string", (("position.naked_deadline_s", "must be a number", "'10'"),),
         append="[position]\nnaked_deadline_s = \"10\"\n"),
    _row("seconds-a-boolean", (("supervision.heartbeat_s", "must be a number", "True"),),
         append="[supervision]\nheartbeat_s = true\n"),
    _row("grace-under-the-rest-lag", (("protection.grace_s", ">= the venue's REST position lag (2.4 s)"),),
         append="[protection]\ngrace_s = 1.0\n"),
    _row("unknown-window-under-recv-window", (("position.entry_unknown_window_s", "recv window (5.0)", "6.0"),),
         append="[position]\nentry_unknown_window_s = 5.5\n"),
    _row("heartbeat-timeout-not-above-period",
         (("supervision.heartbeat_timeout_s", "more than supervision.heartbeat_s (5.0)"),),
         append="[supervision]\nheartbeat_s = 5.0\nheartbeat_timeout_s = 5.0\n"),
    _row("backoff-cap-under-backoff", (("stream.backoff_cap_s", "must be >= stream.backoff_s (0.5)"),),
         append="[stream]\nbackoff_cap_s = 0.1\n"),
    _row("two-problems", (("position.naked_deadline_s", "must be >= 0.01", "got -1"),
                          ("position.poll_s", "must be a number", "'fast'")),
         append="[position]\nnaked_deadline_s = -1\npoll_s = \"fast\"\n"),
    _row("risk-max-notional-negative", (("risk.max_notional", "must be > 0", "got -1"),),
         replace=("max_notional = 100000.0", "max_notional = -1")),
    _row("risk-symbol-not-deployed", (("risk.symbols.XRPUSDT", "'XRPUSDT' is not in deployment.symbols"),),
         append="[risk.symbols.XRPUSDT]\nmax_notional = 5.0\n"),
    _row("risk-symbol-bad-limit", (("risk.symbols.ETHUSDT.max_stop_distance_pct", "must be > 0", "got 0"),),
         append="[risk.symbols.ETHUSDT]\nmax_stop_distance_pct = 0\n"),
    _row("open-qty-over-max-qty", (("open[1].qty", "0.5 is above the risk limit max_qty 0.1"),),
         replace=("max_notional = 100000.0", "max_notional = 100000.0\nmax_qty = 0.1")),
    _row("journal-path-and-url", (("journal", "give exactly one of path (a SQLite file) or url"),),
         replace=('path = "var/journal.sqlite"', 'path = "var/journal.sqlite"\nurl = "postgresql://pg@127.0.0.1/db"')),
    _row("journal-url-with-password", (("journal.url", "carries a password: put it in journal.password_file"),
                                       ("runtime.dir", "required with journal.url")),
         replace=('path = "var/journal.sqlite"', 'url = "postgresql://pg:hunter2@127.0.0.1:5432/db"')),
    _row("journal-url-not-postgres", (("journal.url", "must look like postgresql://user@host:5432/dbname"),),
         replace=('path = "var/journal.sqlite"', 'url = "mysql://pg@127.0.0.1/db"\naccount = "a"'),
         append="[runtime]\ndir = \"var\"\n"),
    _row("journal-account-and-lease", (("journal.account", "use 1 to 40 of a-z, 0-9 and _"),
                                       ("lease.renew_s", "at most half of lease.ttl_s - lease.margin_s (1.25)")),
         replace=('path = "var/journal.sqlite"', 'url = "postgresql://pg@127.0.0.1/db"\naccount = "Desk-1"'),
         append="[runtime]\ndir = \"var\"\n[lease]\nrenew_s = 2.0\n"),
    _row("open-stop-over-max-distance", (("open[0].stop_pct", "above the risk limit max_stop_distance_pct 10%"),),
         replace=("stop_pct = 2.0", "stop_pct = 20.0")),
]


@pytest.mark.parametrize("row", CONFIG)
def test_a_bad_config_is_one_line_per_problem_naming_its_key_and_nothing_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], row: ConfigRow) -> None:
    admin = free_port()
    cfg = demo_config(tmp_path, admin)
    text = cfg.read_text().replace(f"port = {admin}", "port = ADMIN")
    if row.replace is not None:
        assert row.replace[0] in text, row.replace
        text = text.replace(*row.replace, 1)
    cfg.write_text((text + row.append).replace("ADMIN", str(admin)))

    code = main(["run", "--config", str(cfg), "--duration", "1"])
    out, err = capsys.readouterr()
    lines = stderr_lines(err)
    assert code == 2, err
    assert lines and all(line.startswith(CONFIG_ERROR) for line in lines), err
    assert len(lines) == len(row.expect), err                     # each problem once, nothing else
    for key, *words in row.expect:
        said = [line for line in lines if line.startswith(f"{CONFIG_ERROR}{key}: ")]
        assert len(said) == 1 and all(w in said[0] for w in words), (key, words, err)
    assert out == ""
    assert not (tmp_path / "var").exists()                       # no journal, no socket, no venue


# -- 2. the operator commands' arguments ----------------------------------------------------------


CLI = [
    pytest.param(["open", "BTCUSDT", "buy", "inf", "--sl", "1%"], ("QTY must be a positive finite number", "inf"),
                 id="qty-inf"),
    pytest.param(["open", "BTCUSDT", "buy", "-1", "--sl", "1%"], ("QTY must be a positive", "got -1"), id="qty-neg"),
    pytest.param(["open", "BTCUSDT", "buy", "0", "--sl", "1%"], ("QTY must be a positive", "got 0"), id="qty-0"),
    pytest.param(["open", "BTCUSDT", "buy", "nan", "--sl", "1%"], ("QTY must be a positive", "nan"), id="qty-nan"),
    pytest.param(["open", "BTCUSDT", "buy", "1e13", "--sl", "1%"], ("QTY", "at most 1e+12", "1e13"), id="qty-1e13"),
    pytest.param(["open", "BTCUSDT", "buy", "lots", "--sl", "1%"], ("QTY must be a number", "'lots'"),
                 id="qty-word"),
    pytest.param(["open", "BTCUSDT", "buy", "0.01", "--sl", "inf"], ("--sl must be a positive price", "'inf'"),
                 id="sl-inf"),
    pytest.param(["open", "BTCUSDT", "buy", "0.01", "--sl", "150%"], ("--sl", "at most 99 like 2%", "'150%'"),
                 id="sl-150pct"),
    pytest.param(["open", "BTCUSDT", "buy", "0.01", "--sl", "0"], ("--sl must be a positive price", "'0'"),
                 id="sl-0"),
    pytest.param(["open", "BTCUSDT", "buy", "0.01", "--sl", "-5%"], ("--sl", "percentage above 0", "'-5%'"),
                 id="sl-neg-pct"),
    pytest.param(["open", "BTCUSDT", "buy", "0.01", "--sl", "-inf"], ("--sl", "'-inf'"), id="sl-minus-inf"),
    pytest.param(["open", "BTCUSDT", "buy", "0.01", "--sl", "nan%"], ("--sl", "'nan%'"), id="sl-nan-pct"),
    pytest.param(["open", "BTC", "buy", "1", "--sl", "1%"], ("'BTC' is not a symbol", "BTCUSDT or BTC/USDT:USDT"),
                 id="not-a-symbol"),
    pytest.param(["open", "XRPUSDT", "buy", "1", "--sl", "1%"],
                 ("XRPUSDT is not in this deployment", "BTCUSDT, ETHUSDT"), id="not-deployed"),
    pytest.param(["open", "BTCUSDT", "up", "1", "--sl", "1%"], ("SIDE must be buy or sell", "'up'"), id="side-up"),
    pytest.param(["open", "BTCUSDT", "buy", "1"], ("required: --sl", "see posguard open --help"), id="no-sl"),
    pytest.param(["open", "BTCUSDT", "buy", "1", "--sl", "1%", "--now"],
                 ("unrecognized arguments: --now", "see posguard open --help"), id="unknown-option"),
    pytest.param(["close", "BTC"], ("'BTC' is not a symbol",), id="close-not-a-symbol"),
    pytest.param(["amend", "BTCUSDT", "--sl", "2%"], ("--sl of amend is a price or breakeven", "'2%'"),
                 id="amend-pct"),
    pytest.param(["amend", "BTCUSDT", "--sl", "-5"], ("--sl must be a positive price", "'-5'"), id="amend-neg"),
    pytest.param(["amend", "XRPUSDT", "--sl", "1"], ("XRPUSDT is not in this deployment",), id="amend-not-deployed"),
    pytest.param(["amend", "BTCUSDT"], ("amend changes one thing", "--tp PRICE"), id="amend-no-sl"),
    pytest.param(["amend", "BTCUSDT", "--sl", "1", "--tp", "2"], ("amend changes one thing",), id="amend-two"),
    pytest.param(["amend", "BTCUSDT", "--tp", "2%"], ("--tp of amend is a price", "'2%'"), id="amend-tp-pct"),
    pytest.param(["amend", "BTCUSDT", "--trail", "abc"], ("--trail must be a percentage", "'abc'"),
                 id="amend-trail-text"),
    pytest.param(["open", "BTCUSDT", "buy", "1", "--sl", "1%", "--tp", "-3"], ("--tp must be a positive price",),
                 id="open-tp-negative"),
    pytest.param(["close", "BTCUSDT", "--qty", "-1"], ("QTY must be a positive finite number", "-1"),
                 id="close-qty-negative"),
    pytest.param(["close", "XRPUSDT"], ("XRPUSDT is not in this deployment", "BTCUSDT, ETHUSDT"),
                 id="close-not-deployed"),
    pytest.param(["inspect", "XRP/USDT:USDT"], ("XRPUSDT is not in this deployment",), id="inspect-not-deployed"),
    pytest.param(["inspect", "BTCUSDT", "--events", "-5"], ("--events must be from 0 to 1000", "-5"),
                 id="events-neg"),
    pytest.param(["inspect", "BTCUSDT", "--events", "abc"],
                 ("argument --events: invalid int value: 'abc'", "see posguard inspect --help"), id="events-abc"),
    pytest.param(["events", "--since", "-1"], ("--since must be 0 or more", "-1"), id="since-neg"),
    pytest.param(["events", "--last", "-1"], ("--last must be from 0 to 100000", "-1"), id="last-neg"),
]


@pytest.fixture
def idle_config(tmp_path: Path) -> Path:
    """A config whose deployment is not running (and never is)."""
    return demo_config(tmp_path, free_port())


def run_main(argv: list[str]) -> int:
    """`posguard ARGV` in this process; argparse's own refusals exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(("argv", "words"), CLI)
def test_a_bad_argument_is_refused_before_anything_is_contacted(
        idle_config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: tuple[str, ...]) -> None:
    code = run_main([*argv, "--config", str(idle_config)])
    out, err = capsys.readouterr()
    lines = stderr_lines(err)
    assert code == 2 and len(lines) == 1, err
    line = lines[0]
    assert line.startswith("posguard: ") and all(w in line for w in words), line
    assert "not running" not in line and "nothing serves" not in line, line     # the argument, not the deployment
    assert out == ""
    assert not (idle_config.parent / "var").exists()


def test_a_misspelt_command_is_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["opne", "BTCUSDT"]) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "invalid choice: 'opne'" in lines[0] and "see posguard --help" in lines[0]


def test_operator_commands_check_arguments_without_pydantic_or_the_config_module(idle_config: Path) -> None:
    # The CLI's fast path: a bad argument is answered without importing the config machinery.
    probe = ("import sys\nfrom supervisor.cli.main import main\n"
             f"code = main(['open', 'BTCUSDT', 'buy', 'nan', '--sl', '1%', '--config', {str(idle_config)!r}])\n"
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'"
             " or m == 'supervisor.config.loader')\n"
             "print(code, heavy)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.strip() == "2 []", (proc.stdout, proc.stderr)


# -- 3. a running deployment ----------------------------------------------------------------------


PRICES = {"BTCUSDT": 60000.0, "SOLUSDT": 150.0, "ETHUSDT": 3000.0}   # BTC and SOL opened at start; ETH idle
STEADY = {"BTCUSDT": "PROTECTED", "SOLUSDT": "PROTECTED", "ETHUSDT": "IDLE"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PosguardRun]:
    folder = tmp_path_factory.mktemp("running")
    with running(demo_config(folder, free_port(), symbols=PRICES)) as run:
        run.read_until("API on")
        run.wait_states(STEADY, within=60)
        yield run


def venue_truth(run: PosguardRun) -> TrueState:
    """The simulated venue's own account (orders, positions), asked on its socket."""
    return kit.venue_truth(run.var / "venue.sock")


def venue_orders(truth: TrueState) -> tuple[Any, ...]:
    """What reached the venue that could change a position: every order, every order-like call."""
    return (tuple(o.client_order_id for o in truth.orders), truth.call_count("create_order"),
            truth.call_count("set_stop"), {s: p.qty for s, p in truth.open_positions().items()})


def api_line(path: Path, line: bytes) -> dict[str, Any]:
    """One raw request line on its own connection: the reply to it."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.settimeout(10)
        fh = s.makefile("rb")
        assert json.loads(fh.readline())["posguard"] == "api"
        with contextlib.suppress(OSError):                       # a line too long: it may stop reading
            s.sendall(line)
        return json.loads(fh.readline())


def _open(args: str) -> bytes:
    return b'{"id": 7, "op": "open", "args": {' + args.encode() + b"}}\n"


@dataclass(frozen=True)
class Bad:
    """A bad request: raw API line (`api`) or `posguard` argv (`cli`); the code (API error code,
    or CLI exit) and the words its message must hold."""

    api: bytes | None
    cli: tuple[str, ...] | None
    code: str | int
    words: tuple[str, ...]


def _api(name: str, line: bytes, code: str, *words: str) -> Any:
    return pytest.param(Bad(line, None, code, words), id=f"api-{name}")


def _cli(name: str, argv: str, code: int, *words: str) -> Any:
    return pytest.param(Bad(None, tuple(argv.split()), code, words), id=f"cli-{name}")


ETH = '"symbol": "ETHUSDT", "side": "buy"'
RUNNING = [
    _api("qty-nan", _open(f'{ETH}, "qty": NaN, "sl": 2900'), "bad_request", "NaN is not a JSON number"),
    _api("qty-1e999", _open(f'{ETH}, "qty": 1e999, "sl": 2900'), "bad_request", "args.qty", "finite"),
    _api("qty-5000-digits", _open(f'{ETH}, "qty": 1{"0" * 5000}, "sl": 2900'), "bad_request", "args.qty",
         "finite number > 0 and <= 1e+12"),
    _api("qty-string", _open(f'{ETH}, "qty": "1", "sl": 2900'), "bad_request", "args.qty must be a number"),
    _api("unknown-op", b'{"id": 7, "op": "launch"}\n', "unknown_op", "unknown op \"launch\"", "open, close"),
    _api("unknown-symbol", _open('"symbol": "XRPUSDT", "side": "buy", "qty": 1, "sl": 1'), "unknown_symbol",
         "XRPUSDT is not in this deployment", "BTCUSDT, SOLUSDT, ETHUSDT"),
    _api("not-a-symbol", _open('"symbol": "BTC", "side": "buy", "qty": 1, "sl": 1'), "bad_request",
         "'BTC' is not a symbol"),
    _api("side-up", _open('"symbol": "ETHUSDT", "side": "up", "qty": 0.01, "sl": 2900'), "bad_request",
         "args.side must be buy or sell"),
    _api("two-stops", _open(f'{ETH}, "qty": 0.01, "sl": 2900, "sl_pct": 2'), "bad_request", "exactly one"),
    _api("over-max-notional", _open(f'{ETH}, "qty": 100, "sl_pct": 1'), "refused", "above max_notional",
         "100,000.00 USDT"),
    _api("stop-too-far", _open(f'{ETH}, "qty": 0.01, "sl_pct": 20'), "refused", "at most 10% is accepted"),
    _api("held-symbol-other-side", _open('"symbol": "BTCUSDT", "side": "sell", "qty": 0.01, "sl_pct": 2'), "refused",
         "BTCUSDT is open buy", "an add is of the same side"),
    _api("close-idle", b'{"id": 7, "op": "close", "args": {"symbol": "ETHUSDT"}}\n', "refused",
         "ETHUSDT is IDLE", "close applies to a filled position"),
    _api("line-too-long", b'{"op": "status", "pad": "' + b"x" * 200_000 + b'"}\n', "bad_request", "longer than"),
    _api("amend-idle", b'{"id": 7, "op": "amend", "args": {"symbol": "ETHUSDT", "sl": 2900}}\n', "refused",
         "ETHUSDT is IDLE", "only a PROTECTED position's stop can be moved"),
    _api("amend-both", b'{"id": 7, "op": "amend", "args": {"symbol": "BTCUSDT", "sl": 59000, "breakeven": true}}\n',
         "bad_request", "amend changes one thing"),
    _api("amend-neither", b'{"id": 7, "op": "amend", "args": {"symbol": "BTCUSDT"}}\n', "bad_request",
         "amend changes one thing"),
    _api("open-tp-twice", _open(f'{ETH}, "qty": 0.01, "sl_pct": 2, "tp": 3100, "tp_pct": 2'), "bad_request",
         "at most one of args.tp"),
    _api("close-more-than-held", b'{"id": 7, "op": "close", "args": {"symbol": "BTCUSDT", "qty": 5}}\n', "refused",
         "is more than the open"),
    _api("amend-tp-idle", b'{"id": 7, "op": "amend", "args": {"symbol": "ETHUSDT", "tp": 3100}}\n', "refused",
         "ETHUSDT is IDLE"),
    _cli("amend-idle", "amend ETHUSDT --sl 2900", 1, "ETHUSDT: refused", "ETHUSDT is IDLE"),
    _cli("amend-buy-stop-above-price", "amend BTCUSDT --sl 70000", 1, "a buy's stop must be below the price"),
    _cli("amend-stop-too-far", "amend BTCUSDT --sl 30000", 1, "at most 10% is accepted"),
    _cli("amend-breakeven-under-water", "amend BTCUSDT --sl breakeven", 1, "a buy's stop must be below the price"),
    _cli("over-max-notional", "open ETHUSDT buy 100 --sl 1%", 1, "ETHUSDT: refused", "above max_notional"),
    _cli("add-over-notional", "open BTCUSDT buy 100 --sl 1%", 1, "BTCUSDT: refused", "add refused",
         "above max_notional"),
    _cli("amend-tp-wrong-side", "amend BTCUSDT --tp 59500", 1, "a buy's take-profit must be above the price"),
    _cli("amend-trail-out-of-bounds", "amend BTCUSDT --trail 25%", 1, "outside", "bounds [0.1, 10]%"),
    _cli("close-more-than-held", "close BTCUSDT --qty 5", 1, "BTCUSDT: refused", "is more than the open"),
    _cli("open-tp-wrong-side", "open ETHUSDT buy 0.01 --sl 1% --tp 2000", 1, "a buy's take-profit must be above"),
    _cli("buy-stop-above-price", "open ETHUSDT buy 0.01 --sl 70000", 1, "a buy's stop must be below the price"),
    _cli("sell-stop-below-price", "open ETHUSDT sell 0.01 --sl 2000", 1, "a sell's stop must be above the price"),
    _cli("stop-too-far", "open ETHUSDT buy 0.01 --sl 2000", 1, "% from the price", "at most 10% is accepted"),
    _cli("qty-nan", "open ETHUSDT buy nan --sl 1%", 2, "QTY must be a positive finite number"),
    _cli("close-not-deployed", "close XRPUSDT", 2, "XRPUSDT is not in this deployment", "SOLUSDT"),
    _cli("close-idle", "close ETHUSDT", 1, "ETHUSDT: refused", "ETHUSDT is IDLE"),
]


def states(run: PosguardRun) -> dict[str, str]:
    return {p["symbol"]: p["state"] for p in run.status()["positions"]}


@pytest.mark.parametrize("bad", RUNNING)
def test_a_bad_request_to_a_running_deployment_is_refused_and_nothing_reaches_the_venue(
        deployment: PosguardRun, bad: Bad) -> None:
    before, held = venue_orders(venue_truth(deployment)), states(deployment)
    if bad.api is not None:
        reply = api_line(deployment.socket, bad.api)
        assert reply["ok"] is False and reply["error"]["code"] == bad.code, reply
        message = reply["error"]["message"]
    else:
        assert bad.cli is not None
        proc = subprocess.run([*POSGUARD, *bad.cli, "--config", str(deployment.config)], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)
        lines = stderr_lines(proc.stderr)
        assert proc.returncode == bad.code and len(lines) == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
        message = lines[0]
        assert message.startswith("posguard: ")
    assert all(w in message for w in bad.words), message
    assert states(deployment) == held                            # the deployment goes on as it was ...
    assert venue_orders(venue_truth(deployment)) == before       # ... and the venue saw no order


def test_a_close_does_reach_the_venue(deployment: PosguardRun) -> None:
    # The one good row: SOLUSDT (held, PROTECTED) closes reduce-only and ends flat and IDLE.
    before = venue_truth(deployment)
    assert "SOLUSDT" in before.open_positions()
    proc = subprocess.run([*POSGUARD, "close", "SOLUSDT", "--config", str(deployment.config)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and "closing SOLUSDT reduce-only" in proc.stdout, proc.stderr
    deployment.wait_states({"SOLUSDT": "IDLE"}, within=60)
    after = venue_truth(deployment)
    known = {o.client_order_id for o in before.orders}
    new = [o for o in after.orders if o.client_order_id not in known]
    assert [(o.symbol, o.reduce_only) for o in new] == [("SOLUSDT", True)], new
    assert "SOLUSDT" not in after.open_positions()
    assert after.open_positions()["BTCUSDT"].qty == before.open_positions()["BTCUSDT"].qty   # the other untouched


def test_the_deployment_survived_the_whole_table(deployment: PosguardRun) -> None:
    status = deployment.status()
    assert deployment.proc.poll() is None and status["safe_mode"] is False, status
    assert {p["symbol"]: p["state"] for p in status["positions"]}["BTCUSDT"] == "PROTECTED"
