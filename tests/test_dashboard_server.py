"""The live page's server without a browser or a deployment: the event feed says when what a
page asks for was pruned (never skips over it), closing answers the long polls at once, a
journal that does not answer is a 503 with the page's headers, "/" without the token is a 403
that hands a reload its tab's token back, and a replaced API whose port is taken keeps its
socket once the deployment runs. `posguard dashboard` gives the token only to a running
deployment's API, never to whatever listens on the port."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from actors.async_bridge import AsyncBridge
from actors.messages import ActorFailed, ConfigureApi, Event
from supervisor.api.protocol import ApiError
from supervisor.client import socket_path_of
from supervisor.dashboard.server import HEADERS, DashboardServer, Feed, Gone
from supervisor.dashboard.source import serve_page
from supervisor.host.runtime import DASHBOARD_TOKEN_NAME
from tests.support import kit

TOKEN = "t" * 43


class Journal:
    """Events `oldest`..`latest` held (older ones pruned), as the journal answers a read."""

    def __init__(self, oldest: int, latest: int, fail: bool = False) -> None:
        self.oldest, self.latest, self.fail = oldest, latest, fail

    async def status_text(self) -> str:
        if self.fail:
            raise ApiError("unavailable", "the journal did not answer")
        return '{"phase": "ready"}'

    async def read(self, since: int, limit: int) -> tuple[list[Event], int, int]:
        first = max(since + 1, self.oldest)
        last = min(self.latest, first + limit - 1)
        events = [Event(seq, 1.0, "transition", "BTCUSDT", {}) for seq in range(first, last + 1)]
        return events, self.oldest, self.latest

    def series(self) -> dict[str, Any]:
        return {"entries": []}


def test_resuming_from_a_pruned_seq_is_gone_not_a_silent_skip():
    async def run() -> None:
        feed = Feed(Journal(oldest=50, latest=60))
        with pytest.raises(Gone) as gone:
            await feed.after(10, 0)                        # 11..49 are pruned: the journal answers 50..60
        assert (gone.value.oldest, gone.value.latest) == (50, 60)
        assert [e["seq"] for e in await feed.after(49, 0)] == list(range(50, 61))   # from the oldest held: all
        assert await feed.after(60, 0) == []
    asyncio.run(run())


def test_closing_answers_every_long_poll_at_once():
    async def run() -> None:
        feed = Feed(Journal(oldest=1, latest=5))
        polls = [asyncio.create_task(feed.after(5, 20.0)) for _ in range(3)]
        await asyncio.sleep(0)                             # each is waiting for news now
        assert not any(p.done() for p in polls)
        feed.close()
        assert await asyncio.wait_for(asyncio.gather(*polls), 2.0) == [[], [], []]
    asyncio.run(run())


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:        # noqa: S310 - 127.0.0.1 only
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _serving(source: Any):
    bridge = AsyncBridge()
    server = DashboardServer(kit.free_port(), TOKEN, source)
    bridge.call(server.start())
    return bridge, server


def test_a_journal_that_does_not_answer_is_a_503_with_the_page_headers():
    bridge, server = _serving(Journal(1, 1, fail=True))
    try:
        status, headers, body = _get(f"http://127.0.0.1:{server.port}/api/status",
                                     {"Authorization": "Bearer " + TOKEN})
        assert status == 503 and '"unavailable"' in body
        assert all(headers.get(k) == v for k, v in HEADERS.items())
    finally:
        bridge.call(server.close())
        bridge.close()


def test_the_bare_page_is_403_with_no_data_and_a_script_that_brings_the_tabs_token_back():
    bridge, server = _serving(Journal(1, 1))
    try:
        status, headers, body = _get(f"http://127.0.0.1:{server.port}/")
        assert status == 403 and "forbidden" in body and "phase" not in body
        nonce = headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
        assert f'<script nonce="{nonce}">' in body and "sessionStorage" in body
        assert all(headers.get(k) == v for k, v in HEADERS.items())
        assert _get(f"http://127.0.0.1:{server.port}/?token={TOKEN}")[0] == 200
    finally:
        bridge.call(server.close())
        bridge.close()


class _Api:
    """What serve_page uses of the API actor."""

    def __init__(self) -> None:
        self.bridge = AsyncBridge()
        self.dashboard: DashboardServer | None = None
        self.sent: list[Any] = []

    def send(self, to: Any, msg: Any) -> None:
        self.sent.append(msg)


@pytest.mark.parametrize("deployed", [False, True])
def test_a_page_whose_port_is_taken_fails_the_start_but_not_a_running_deployments_api(tmp_path: Path, deployed):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    api = _Api()
    try:
        msg = ConfigureApi(str(tmp_path / "api.sock"), None, None, ("BTCUSDT",),
                           dashboard_port=squatter.getsockname()[1], token_path=str(tmp_path / "token"),
                           page_required=not deployed)
        served = serve_page(api, Journal(1, 1), msg, "supervisor")
        assert api.dashboard is None
        if deployed:                                       # the API keeps its socket: no failure said
            assert served and api.sent == []
        else:                                              # the deployment does not start without it
            assert not served and isinstance(api.sent[0], ActorFailed) and "cannot serve" in api.sent[0].reason
    finally:
        squatter.close()
        api.bridge.close()


def test_posguard_dashboard_gives_no_token_to_a_port_squatter(tmp_path: Path):
    port = kit.free_port()
    cfg = kit.demo_config(tmp_path, kit.free_port(), tables={"dashboard": {"port": port}})
    runtime = os.path.dirname(socket_path_of(str(cfg)))
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    token_path = os.path.join(runtime, DASHBOARD_TOKEN_NAME)
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # left by an earlier run
    os.write(fd, (TOKEN + "\n").encode())
    os.close(fd)
    squatter = socket.socket()                             # someone else listens there; posguard is down
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        printed = kit.posguard("dashboard", "--config", str(cfg))
        assert printed.returncode != 0 and "no posguard deployment is running" in printed.stderr
        assert TOKEN not in printed.stdout + printed.stderr
    finally:
        squatter.close()
