"""The live page: read-only HTTP on 127.0.0.1, served from the operator API's process (on its
event loop, beside the Unix socket), behind the deployment's token.

    GET /?token=T          the page (HTML, its script and style inlined: no build step, no CDN)
    GET /api/status        the status (positions in columns)        } Authorization: Bearer T
    GET /api/events?since=N  events after N; waits for one (long poll) }
    GET /api/series        time to protected and naked seconds per entry, over the run

Without the token (compared in constant time) every path answers 403 and no data. The Host
header must name 127.0.0.1 or localhost (a page elsewhere that rebinds its DNS name to
127.0.0.1 is refused before the token is looked at). There is no control action: the page only
reads. Events come from the journal as the API's `events` gives them, so a page that reloads
with the last seq it saw misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import deque
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from actors.messages import Event
from supervisor.api.protocol import ApiError, event_json
from supervisor.dashboard.token import token_ok

PAGE = 500                          # events per answer
RING = 5000                         # recent events answered from memory (older ones from the journal)
LONG_POLL_S = 20.0                  # an events request with nothing new waits this long, then answers empty
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}


class PageSource(Protocol):
    async def status_text(self) -> str:
        """The status as JSON text (positions in columns)."""

    async def read(self, since: int, limit: int) -> tuple[list[Event], int, int]:
        """The journal's events after `since`, the oldest seq held, the latest."""

    def series(self) -> dict[str, Any]:
        """Per entry: when, symbol, time to protected, naked seconds."""


class Gone(Exception):
    def __init__(self, oldest: int, latest: int) -> None:
        super().__init__(f"events are no longer held from there (oldest {oldest})")
        self.oldest, self.latest = oldest, latest


class Feed:
    """Recent events in memory, in seq order, and a wake-up for those waiting on new ones."""

    def __init__(self, source: PageSource) -> None:
        self.source = source
        self.ring: deque[dict[str, Any]] = deque(maxlen=RING)
        self.news = asyncio.Event()
        self.closing = False

    def close(self) -> None:
        """Every long poll answers now (empty): closing never waits out their 20 s."""
        self.closing = True
        self.news.set()

    def publish(self, events: tuple[Event, ...]) -> None:
        for event in events:
            if not self.ring or event.seq > self.ring[-1]["seq"]:
                self.ring.append(event_json(event))
        self.news.set()
        self.news = asyncio.Event()

    async def after(self, since: int, wait_s: float) -> list[dict[str, Any]]:
        """Events after `since` (at most PAGE); none yet: wait up to `wait_s` for one."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            news = self.news                            # before looking: nothing falls between
            found: list[dict[str, Any]] | None = None
            if self.ring and self.ring[0]["seq"] <= since + 1:                # the ring holds what follows
                found = [e for e in self.ring if e["seq"] > since][:PAGE]
            if found and any(e["seq"] != since + 1 + i for i, e in enumerate(found)):
                found = None                             # a push went missing: the journal has it
            if found is None:
                events, oldest, latest = await self.source.read(since, PAGE)
                if latest > since and (oldest == 0 or since + 1 < oldest):
                    # What follows `since` was pruned: said, never skipped over in silence
                    # (the page resumes from the oldest held and says what it missed).
                    raise Gone(oldest, latest)
                found = [event_json(e) for e in events]
            left = deadline - asyncio.get_running_loop().time()
            if found or left <= 0 or self.closing:
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), left)


def _asset(name: str) -> str:
    return resources.files("supervisor.dashboard").joinpath("static", name).read_text(encoding="utf-8")


class DashboardServer:
    def __init__(self, port: int, token: str, source: PageSource) -> None:
        self.port, self.token, self.source = port, token, source
        self.feed = Feed(source)
        self._runner: web.AppRunner | None = None
        self._page = _asset("index.html").replace("/*STYLE*/", _asset("app.css")).replace("/*SCRIPT*/",
                                                                                          _asset("app.js"))

    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/series", self._series)
        # A request still running at close gets this long (the long polls were woken already).
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise

    async def close(self) -> None:
        self.feed.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- every request: the host, then the token ------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return _refused("this page is served as 127.0.0.1 only")
        if request.path == "/":
            given = request.query.get("token")
        else:
            auth = request.headers.get("Authorization", "")
            given = auth[7:] if auth.startswith("Bearer ") else None
        if not token_ok(given, self.token):
            if request.path == "/":
                return _refused_page()
            return _refused("no valid token: open the URL `posguard dashboard` prints")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        except ApiError as exc:                          # the journal or the Supervisor did not answer
            response = web.json_response({"error": exc.code, "message": exc.message}, status=503)
        response.headers.update(HEADERS)
        return response

    async def _index(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self';"
               " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        body = self._page.replace("{{NONCE}}", nonce)
        return web.Response(text=body, content_type="text/html", headers={"Content-Security-Policy": csp})

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(text=await self.source.status_text(), content_type="application/json")

    async def _events(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            wait_s = min(LONG_POLL_S, max(0.0, float(request.query.get("wait", "0"))))
        except ValueError:
            return web.json_response({"error": "since is a whole number, wait seconds"}, status=400)
        if since < 0:
            return web.json_response({"error": "since is 0 or more"}, status=400)
        try:
            events = await self.feed.after(since, wait_s)
        except Gone as exc:
            return web.json_response({"error": "gone", "oldest": exc.oldest, "latest": exc.latest}, status=410)
        return web.Response(text=json.dumps({"events": events, "last": events[-1]["seq"] if events else since}),
                            content_type="application/json")

    async def _series(self, request: web.Request) -> web.Response:
        return web.json_response(self.source.series())


# The page keeps its token in the tab's sessionStorage and takes it out of the address bar (and
# so of the history): a reload asks for "/" without it, and is answered by this -- no data,
# only a script that comes back with the tab's token. A token in the address that was refused
# (an older run's) is dropped from the tab instead, so it never loops.
_RELOAD = ('const k = "posguard.token", t = sessionStorage.getItem(k);'
           ' if (new URLSearchParams(location.search).has("token")) sessionStorage.removeItem(k);'
           ' else if (t) location.replace("/?token=" + encodeURIComponent(t));')


def _refused_page() -> web.Response:
    nonce = secrets.token_urlsafe(16)
    body = (f"<!doctype html><title>posguard</title><p>403 forbidden: no valid token: open the URL"
            f" <code>posguard dashboard</code> prints</p><script nonce=\"{nonce}\">{_RELOAD}</script>\n")
    headers = {**HEADERS, "Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'"}
    return web.Response(status=403, text=body, content_type="text/html", headers=headers)


def _refused(why: str) -> web.Response:
    return web.Response(status=403, text=f"403 forbidden: {why}\n", headers=HEADERS)
