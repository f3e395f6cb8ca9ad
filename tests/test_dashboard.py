"""The live page in a real headless browser (Debian's Chromium, driven by Playwright for Python),
against a three-symbol deployment on the simulated venue: it loads and shows the three PROTECTED
symbols, takes its token out of the address bar (a reload still works), follows a close, misses
nothing across a reload, and gives nothing without the token.
The server's own rules (host, token, long poll, the events it answers) are tested beside it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from supervisor.client import Client
from supervisor.dashboard.token import TokenError, ensure_token, fresh_token, read_token, token_ok
from tests.support import kit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import playwright.sync_api as playwright_api
except ImportError:                                          # the test extra installs it
    playwright_api = None

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or playwright_api is None,
    reason="needs Chromium (tests/os-packages.sh installs Debian's chromium) and Playwright (the test extra)")
# As root (CI) Chromium runs only without its sandbox; the rest keeps it off this closed network.
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
THREE = {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0}
DEMO_OPENS = [{"symbol": "BTCUSDT", "side": "buy", "qty": 0.01, "stop_pct": 2.0},       # as conf/demo.toml
              {"symbol": "ETHUSDT", "side": "sell", "qty": 0.5, "stop_pct": 2.0},
              {"symbol": "SOLUSDT", "side": "buy", "qty": 10, "stop_pct": 3.0}]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:        # noqa: S310 - 127.0.0.1 only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def deployment(tmp_path: Path):
    port = kit.free_port()
    cfg = kit.demo_config(tmp_path, kit.free_port(), symbols=THREE, opens=DEMO_OPENS,
                          tables={"dashboard": {"port": port}})
    with kit.running(cfg) as run:
        run.read_until("API on")
        run.wait_states(dict.fromkeys(THREE, "PROTECTED"))
        printed = kit.posguard("dashboard", "--config", str(cfg))
        assert printed.returncode == 0, printed.stderr
        url = printed.stdout.strip()
        assert url.startswith(f"http://127.0.0.1:{port}/?token=")
        yield run, url, port
        run.interrupt()


def test_the_token_file_is_private_made_once_and_refused_when_others_can_read_it(tmp_path: Path):
    path = str(tmp_path / "dashboard.token")
    token = ensure_token(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and ensure_token(path) == token == read_token(path)
    assert fresh_token(path) != token and read_token(path) != token      # a new binding: a new token
    assert token_ok(token, token) and not token_ok(token[:-1] + "x", token) and not token_ok(None, token)
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match="not a private file"):
        read_token(path)
    os.unlink(path)
    os.symlink("/etc/passwd", path)
    with pytest.raises(TokenError):
        ensure_token(path)                                   # never written nor read through a link


def test_without_the_token_or_from_another_host_name_nothing_is_served(deployment):
    run, url, port = deployment
    base, token = url.split("?token=")
    for path in ("", "api/status", "api/events?since=0", "api/series", "favicon.ico"):
        status, body = _get(base + path)
        assert status == 403 and "BTCUSDT" not in body, (path, status, body)
    assert _get(base + "?token=" + token[:-2] + "xx")[0] == 403
    assert _get(base + "api/status", {"Authorization": "Bearer " + token[::-1]})[0] == 403
    assert _get(url, {"Host": f"rebound.example:{port}"})[0] == 403        # DNS rebinding
    status, page = _get(url)
    assert status == 200 and "<script nonce=" in page
    status, body = _get(base + "api/status", {"Authorization": "Bearer " + token})
    assert status == 200 and json.loads(body)["phase"] == "ready"
    events = json.loads(_get(base + "api/events?since=0", {"Authorization": "Bearer " + token})[1])["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert _get(base + "api/events?since=abc", {"Authorization": "Bearer " + token})[0] == 400
    series = json.loads(_get(base + "api/series", {"Authorization": "Bearer " + token})[1])
    assert sorted(e[1] for e in series["entries"]) == sorted(THREE)             # one per entry, each protected
    request = urllib.request.Request(base + "api/status", method="POST", headers={"Authorization": "Bearer " + token})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)                            # noqa: S310
    assert refused.value.code == 405                                           # read-only: no action


def _rows(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all("#positions tbody tr", "rows => Object.fromEntries(rows.map("
                                                            "r => [r.dataset.symbol, r.dataset.state]))")


@needs_browser
def test_the_page_shows_the_deployment_follows_a_close_and_misses_nothing_across_a_reload(deployment):
    run, url, _ = deployment
    assert playwright_api is not None and CHROMIUM is not None
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            response = page.goto(url)
            assert response is not None and response.status == 200
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_function("document.querySelectorAll('#positions tr[data-state=PROTECTED]').length === 3")
            assert _rows(page) == dict.fromkeys(THREE, "PROTECTED")
            # The token left the address bar (and the history) for the tab's sessionStorage...
            assert "token" not in page.url
            assert page.evaluate("sessionStorage.getItem('posguard.token')") == url.split("?token=")[1]
            assert page.text_content("#phase") == "ready"
            assert page.locator("#events li[data-kind=stop]").count() == 3

            with Client(str(run.socket)) as pg:
                pg.close_position("SOLUSDT")
            page.wait_for_selector("#positions tr[data-symbol=SOLUSDT][data-state=IDLE]")
            page.wait_for_selector("#events li[data-kind=closed]")
            assert _rows(page) == {"BTCUSDT": "PROTECTED", "ETHUSDT": "PROTECTED", "SOLUSDT": "IDLE"}
            seen = int(page.evaluate("sessionStorage.getItem('posguard.lastSeq')"))

            page.goto("about:blank")                              # away while something happens
            with Client(str(run.socket)) as pg:
                pg.close_position("ETHUSDT")
            run.wait_states({"ETHUSDT": "IDLE"})
            page.goto(url)                                         # back: from the last event it saw
            page.wait_for_selector("#events li[data-kind=closed]")
            with Client(str(run.socket)) as pg:
                missed = [e["seq"] for e in pg.events(since=seen, follow=False)]
            page.wait_for_function(f"document.querySelectorAll('#events li').length >= {len(missed)}")
            shown = sorted(int(s) for s in page.eval_on_selector_all("#events li", "l => l.map(e => e.dataset.seq)"))
            assert shown == missed and missed[0] == seen + 1      # exactly what it had not seen
            page.wait_for_selector("#positions tr[data-symbol=ETHUSDT][data-state=IDLE]")
            assert "token" not in page.url
            page.reload()                                          # ...and a reload still gets the page
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_selector("#positions tr[data-symbol=BTCUSDT][data-state=PROTECTED]")
            assert "token" not in page.url

            bare = browser.new_page()
            refused = bare.goto(url.split("?")[0])
            assert refused is not None and refused.status == 403
            assert "BTCUSDT" not in bare.content() and "forbidden" in bare.content()
            assert errors == []
        finally:
            browser.close()
