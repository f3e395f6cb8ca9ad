"""The operator API's server, transport and locks in isolation: no actors, a fake backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import pytest

from actors.messages import Event
from supervisor.actor_system import wire_auth
from supervisor.api.protocol import ApiError, Request
from supervisor.api.server import MAX_BEHIND, ApiServer
from supervisor.client import Client, ClientError
from supervisor.host.runtime import DeploymentLock, LockHeld, RuntimePaths, UnsafePath, WatcherLock, held_by


class Journal:
    """An event source holding events `oldest`..`latest`."""

    def __init__(self, latest: int = 0, oldest: int = 1) -> None:
        self.events = [Event(i, float(i), "transition", "BTCUSDT", {"n": i}) for i in range(oldest, latest + 1)]

    async def read(self, since: int, limit: int) -> tuple[list[Event], int, int]:
        held = [e for e in self.events if e.seq > since][:limit]
        oldest = self.events[0].seq if self.events else 0
        return held, oldest, self.events[-1].seq if self.events else 0

    def add(self) -> Event:
        event = Event(self.events[-1].seq + 1 if self.events else 1, 0.0, "fill", "BTCUSDT", {})
        self.events.append(event)
        return event


async def handler(request: Request) -> Any:
    if request.op == "close":
        raise ApiError("refused", f"{request.args['symbol']}: nothing to close")
    return {"op": request.op, "args": request.args}


class Served:
    """An ApiServer on its own loop in a thread, so the blocking Client can talk to it."""

    def __init__(self, path: str, journal: Journal) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ApiServer(path, {"pid": os.getpid()}, handler, journal)
        self.run(self.server.start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def publish(self, *events: Event) -> None:
        self.loop.call_soon_threadsafe(self.server.publish, tuple(events))

    def close(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path) -> Any:
    journal = Journal(latest=3)
    s = Served(str(tmp_path / "api.sock"), journal)
    s.journal = journal
    try:
        yield s
    finally:
        s.close()


def raw(path: str, *lines: bytes) -> list[dict[str, Any]]:
    """Send raw lines on one connection; the hello and every reply, parsed."""
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.settimeout(5)
        fh = s.makefile("rb")
        replies = [json.loads(fh.readline())]
        for line in lines:
            s.sendall(line)
            replies.append(json.loads(fh.readline()))
        return replies


BAD = [
    (b"not json\n", "bad_request", "JSON object"),
    (b"[1, 2]\n", "bad_request", "JSON object"),
    (b'{"op": "launch"}\n', "unknown_op", "unknown op"),
    (b'{"id": 1, "op": "open", "args": {"symbol": "BTCUSDT", "side": "buy", "qty": NaN, "sl": 1}}\n',
     "bad_request", "NaN"),
    (b'{"id": 2, "op": "open", "args": {"symbol": "BTCUSDT", "side": "buy", "qty": 1e999, "sl": 1}}\n',
     "bad_request", "finite"),
    (b'{"id": 3, "op": "open", "args": {"symbol": "BTCUSDT", "side": "buy", "qty": 1, "sl": 1, "sl_pct": 2}}\n',
     "bad_request", "exactly one"),
    (b'{"id": 4, "op": "close", "args": {"symbol": "BTC"}}\n', "bad_request", "not a symbol"),
    (b'{"id": 5, "op": "status", "args": {"truth": "yes"}}\n', "bad_request", "true or false"),
    (b'{"id": 6, "op": "stop", "args": {"flatten": true, "now": 1}}\n', "bad_request", "unknown argument 'now'"),
    (b'{"id": {"x": 1}, "op": "status"}\n', "bad_request", "id must be"),
    (b'{"id": 7, "op": "inspect", "args": {"symbol": "BTCUSDT", "events": -5}}\n', "bad_request", "0 to 1000"),
    (b'{"id": 8, "op": "open", "args": {"symbol": "BTCUSDT", "side": "up", "qty": 1, "sl": 1}}\n',
     "bad_request", "buy or sell"),
    (b'{"id": 9, "op": "events", "args": {"since": -1}}\n', "bad_request", "whole number"),
    (b'{"id": 5, "op": "status", "args": {"fields": "symbol"}}\n', "bad_request", "list of position fields"),
    (b'{"id": 5, "op": "status", "args": {"fields": ["symbol", "secret"]}}\n', "bad_request", "unknown field"),
]


def test_malformed_requests_get_an_error_naming_the_problem_and_the_connection_lives(served):
    path = served.server.path
    lines = [bad for bad, _, _ in BAD] + [b'{"id": 99, "op": "status"}\n']
    hello, *replies = raw(path, *lines)
    assert hello["posguard"] == "api" and hello["version"] == 1
    for (_, code, words), reply in zip(BAD, replies, strict=False):
        assert reply["ok"] is False and reply["error"]["code"] == code and words in reply["error"]["message"], reply
    defaults = {"truth": False, "columns": False, "fields": None}
    assert replies[-1] == {"id": 99, "ok": True, "result": {"op": "status", "args": defaults}}
    assert [r.get("id") for r in replies[3:9]] == [None, 2, 3, 4, 5, 6]   # the id, where it could be read


def test_a_line_too_long_closes_that_connection_only(served):
    import socket

    path = served.server.path
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        fh = s.makefile("rb")
        fh.readline()
        with contextlib.suppress(OSError):
            s.sendall(b'{"op": "status", "pad": "' + b"x" * 200_000 + b'"}\n')
        reply = json.loads(fh.readline())
        assert reply["error"]["code"] == "bad_request" and "longer than" in reply["error"]["message"]
    with Client(path) as pg:                                         # the server goes on
        assert pg.status()["op"] == "status"


def test_refusals_reach_the_client_as_errors(served):
    with Client(served.server.path) as pg:
        with pytest.raises(ClientError) as refused:
            pg.close_position("BTCUSDT")
        assert refused.value.code == "refused" and "nothing to close" in refused.value.message


def test_events_history_then_live_in_order_each_once_with_a_gap_filled_from_the_journal(served):
    with Client(served.server.path) as pg:
        stream = pg.events(since=1)
        assert [next(stream)["seq"] for _ in range(2)] == [2, 3]
        four, five, six = served.journal.add(), served.journal.add(), served.journal.add()
        served.publish(four)
        served.publish(four, six)                                   # a duplicate, and five went missing live
        assert [next(stream)["seq"] for _ in range(3)] == [4, 5, 6]
        assert five.kind == "fill"


def test_events_too_old_for_the_journal_are_gone_not_skipped(tmp_path):
    s = Served(str(tmp_path / "api.sock"), Journal(latest=50, oldest=40))
    try:
        with Client(s.server.path) as pg:
            with pytest.raises(ClientError) as gone:
                list(pg.events(since=10, follow=False))
            assert gone.value.code == "gone" and gone.value.extra["oldest"] == 40
            assert [e["seq"] for e in pg.events(since=39, follow=False)][:2] == [40, 41]
    finally:
        s.close()


def test_a_follower_too_far_behind_is_cut_off_with_where_to_resume(served):
    queue: asyncio.Queue[Any] = asyncio.Queue()
    served.server._followers.add(queue)
    for _ in range(MAX_BEHIND + 1):
        served.server.publish(())
    served.server._followers.discard(queue)
    assert queue.qsize() == MAX_BEHIND + 1 and list(queue._queue)[-1] is None   # the marker that ends it


# -- the transport's authentication --------------------------------------------------------------


def test_frames_without_the_key_are_refused_without_being_unpickled(tmp_path):
    ours, theirs = wire_auth.AuthenticatedSerializer(os.urandom(32)), wire_auth.AuthenticatedSerializer(os.urandom(32))
    marker = tmp_path / "ran"
    evil = pickle.dumps(_Touch(str(marker)))
    assert ours.loads(ours.dumps({"a": 1})) == {"a": 1}
    for frame in (evil, theirs.dumps(_Touch(str(marker))), os.urandom(10), b"", ours.dumps("x")[:-1] + b"y"):
        assert ours.loads(frame) is wire_auth.REFUSED
    assert not marker.exists()


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (self.path, "w")


# -- private paths and locks ----------------------------------------------------------------------


def test_private_paths_refuse_what_others_can_write_and_fix_what_others_can_read(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(UnsafePath, match="writable by its group and others"):
        RuntimePaths(str(shared / "j.sqlite"), str(shared)).check()
    private = tmp_path / "private"
    RuntimePaths(str(private / "j.sqlite"), str(private)).check()
    assert oct(private.stat().st_mode & 0o777) == "0o700"
    journal = private / "j.sqlite"
    journal.write_text("")
    journal.chmod(0o644)                                           # an older version left it readable
    RuntimePaths(str(journal), str(private)).check()
    assert oct(journal.stat().st_mode & 0o777) == "0o600"


def test_the_deployment_lock_is_shared_with_forked_children_the_watcher_lock_is_not(tmp_path):
    deployment, watcher = DeploymentLock(str(tmp_path / "d.lock")), WatcherLock(str(tmp_path / "w.lock"))
    deployment.acquire({"pid": os.getpid()})
    watcher.acquire({"pid": os.getpid()})
    with pytest.raises(LockHeld) as held:
        DeploymentLock(str(tmp_path / "d.lock")).acquire({})
    assert held.value.holder == {"pid": os.getpid()}
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:                                      # a forked child: keeps one, not the other
        os.close(read_end)
        deployment.fd = None                            # forget it here, so only the parent releases
        os.write(write_end, b"ok")
        signal.pause()                                  # until killed: it only has to exist
        os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 2) == b"ok"
    try:
        deployment.release()                            # the parent lets go ...
        assert held_by(DeploymentLock, str(tmp_path / "d.lock")) == {"pid": os.getpid()}   # ... the child holds it
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    assert held_by(DeploymentLock, str(tmp_path / "d.lock")) is None   # gone with the last holder
    watcher.release()
