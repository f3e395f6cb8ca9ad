"""The operator API's server: a Unix socket that serves only the deployment's own user.

Authentication is the kernel's: the socket is 0600 in a 0700 directory, and every connection's
peer uid (SO_PEERCRED) is checked before a byte of it is parsed. Then JSON lines, one request,
one reply (supervisor/api/protocol.py); a malformed or unknown request gets an error naming the problem and
the connection stays usable; a line too long to be a request closes it. One client can never
take down the server: every connection is its own task, and every failure stays in it.

`events` turns a connection into a stream: events already in the journal after `since` are
sent first, then live ones as the journal commits them, in sequence order, each exactly once
(a gap in the live feed is filled from the journal). A `since` older than what the journal
still holds is answered "gone": the client re-reads the state instead of missing events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from loguru import logger

from actors.messages import Event
from supervisor.api.limits import MAX_LINE, VERSION
from supervisor.api.protocol import (
    ApiError,
    Request,
    encode,
    error,
    event_line,
    ok,
    parse_request,
)

PAGE = 500                            # events read from the journal at a time
MAX_BEHIND = 10_000                   # live batches a slow follower may have queued before it is cut off
_PEERCRED = struct.Struct("3i")


class EventSource(Protocol):
    async def read(self, since: int, limit: int) -> tuple[list[Event], int, int]:
        """Events with seq > since (at most `limit`), the oldest seq held, the latest seq."""


Handler = Callable[[Request], Awaitable[Any]]


def peer_uid(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket, from the kernel."""
    pid, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid


class ApiServer:
    def __init__(self, path: str, hello: dict[str, Any], handle: Handler, events: EventSource,
                 allowed_uid: int | None = None) -> None:
        self.path = path
        self.hello = {"posguard": "api", "version": VERSION, **hello}
        self.handle = handle
        self.events = events
        self.allowed_uid = os.geteuid() if allowed_uid is None else allowed_uid
        self._server: asyncio.base_events.Server | None = None
        self._followers: set[asyncio.Queue[tuple[Event, ...] | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise OSError(f"{self.path} exists and is not a socket")
            os.unlink(self.path)                        # a socket left by an earlier run of ours
        self._server = await asyncio.start_unix_server(self._accept, self.path, limit=MAX_LINE + 1)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def publish(self, events: tuple[Event, ...]) -> None:
        """Events the journal just committed (called on the server's loop)."""
        for queue in list(self._followers):
            if queue.qsize() >= MAX_BEHIND:
                queue.put_nowait(None)                  # tells that follower it fell behind
            else:
                queue.put_nowait(events)

    # -- connections ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - one connection's failure is never the server's
            logger.exception("api: connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid, uid = peer_uid(writer.get_extra_info("socket"))
        if uid != self.allowed_uid:
            logger.warning("api: refused a connection from uid {} (pid {}): this deployment serves uid {} only",
                           uid, pid, self.allowed_uid)
            writer.write(error(None, ApiError("forbidden", f"this posguard deployment serves uid {self.allowed_uid}"
                                                           f" only; you are uid {uid}")))
            await writer.drain()
            return
        writer.write(encode(self.hello))
        await writer.drain()
        while True:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                writer.write(error(None, ApiError("bad_request", f"request longer than {MAX_LINE} bytes;"
                                                                 " closing the connection")))
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                request = parse_request(line)
            except ApiError as exc:
                writer.write(error(exc.extra.pop("id", None), exc))
                await writer.drain()
                continue
            if request.op == "events":
                if await self._follow(request, reader, writer):
                    continue
                return                                   # a followed stream ends with its connection
            writer.write(await self._answer(request))
            await writer.drain()

    async def _answer(self, request: Request) -> bytes:
        try:
            return ok(request.id, await self.handle(request))
        except ApiError as exc:
            return error(request.id, exc)
        except Exception as exc:  # noqa: BLE001 - reported to the client, logged here
            logger.exception("api: {} failed", request.op)
            return error(request.id, ApiError("internal", f"{request.op} failed: {type(exc).__name__}"))

    # -- the event stream ------------------------------------------------------------------------

    async def _follow(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one `events` request; True when the connection may take another request."""
        rid, follow = request.id, request.args["follow"]
        queue: asyncio.Queue[tuple[Event, ...] | None] = asyncio.Queue()
        self._followers.add(queue)                      # before reading history: nothing falls between
        try:
            await self._stream(rid, follow, request.args["since"], queue, reader, writer)
        except ApiError as exc:
            writer.write(error(rid, exc))
            await writer.drain()
            return exc.code != "too_slow"
        finally:
            self._followers.discard(queue)
        return not follow

    async def _stream(self, rid: Any, follow: bool, since: int | None, queue: asyncio.Queue[tuple[Event, ...] | None],
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if since is None:
            _, _, since = await self.events.read(2**62, 0)
        last = await self._history(rid, since, writer)
        if not follow:
            writer.write(ok(rid, {"last": last}))
            await writer.drain()
            return
        closed = asyncio.ensure_future(reader.read())  # the client leaving ends the stream
        got: asyncio.Future[tuple[Event, ...] | None] | None = None
        try:
            while True:
                got = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({got, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    return
                batch = got.result()
                if batch is None:
                    writer.write(error(rid, ApiError("too_slow", f"this client fell {MAX_BEHIND} batches"
                                                                 f" behind; resume with since={last}",
                                                     since=last)))
                    await writer.drain()
                    return
                for event in batch:
                    if event.seq <= last:
                        continue
                    if event.seq > last + 1:        # a live event went missing: the journal has it
                        last = await self._history(rid, last, writer, until=event.seq - 1)
                    writer.write(event_line(rid, event))
                    last = event.seq
                await writer.drain()
        finally:
            closed.cancel()
            if got is not None:
                got.cancel()

    async def _history(self, rid: Any, since: int, writer: asyncio.StreamWriter, until: int | None = None) -> int:
        """Send the journal's events after `since` (up to `until`); returns the last seq sent."""
        last = since
        while True:
            events, oldest, latest = await self.events.read(last, PAGE)
            if last == since and latest > since and (oldest == 0 or since + 1 < oldest):
                raise ApiError("gone", f"events after {since} are no longer in the journal (oldest held:"
                                       f" {oldest or 'none'}); re-read the state, then follow from since={latest}",
                               oldest=oldest, latest=latest)
            for event in events:
                if until is not None and event.seq > until:
                    return last
                writer.write(event_line(rid, event))
                last = event.seq
            await writer.drain()
            if len(events) < PAGE:
                return last
