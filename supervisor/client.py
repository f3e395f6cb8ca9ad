"""A small client for a running posguard deployment: what the `posguard` CLI uses, and what a
strategy imports to open with a stop, close, read the status and follow the events.

    from supervisor.client import Client

    with Client.for_config("conf/demo.toml", wait_s=60) as pg:   # connect once it serves
        pg.wait_ready(timeout=60)                                   # and once it takes entries
        pg.open("BTCUSDT", "buy", 0.01, sl_pct=2)
        for event in pg.events(since=0):
            print(event["seq"], event["kind"], event.get("to", ""))

It speaks the deployment's Unix socket (JSON lines, see supervisor/api/protocol.py) and
imports nothing but the standard library, so it starts fast. It talks only to a server that
runs as the same user (the kernel says who is at the other end), and it deserialises nothing
but JSON.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import struct
import threading
import time
import tomllib
from collections.abc import Iterator
from typing import Any

from supervisor.api.limits import COMMAND_MARGIN_S, COMMAND_WAIT_S, VERSION

TIMEOUT_S = 10.0
_PEERCRED = struct.Struct("3i")


class ClientError(Exception):
    """A refusal or failure, with the server's code (refused, bad_request, gone, ...)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class NotRunning(ClientError):
    """Nothing serves the deployment's socket."""


class NotReady(ClientError):
    """The deployment is up but not taking entries: still starting past the wait, in safe mode,
    or stopping. `phase`, `phase_detail` and `waiting_for` say which and why."""


def socket_path_of(config_path: str) -> str:
    """The API socket of the deployment a config describes: `[runtime] dir`, else the journal's
    folder, relative to the config file. Reads only those two keys (the CLI's fast path)."""
    with open(config_path, "rb") as fh:
        raw = tomllib.load(fh)
    base = os.path.dirname(os.path.abspath(config_path))
    runtime = (raw.get("runtime") or {}).get("dir")
    if not isinstance(runtime, str) or not runtime:
        journal = (raw.get("journal") or {}).get("path")
        if not isinstance(journal, str) or not journal:
            raise ValueError("journal.path: missing")
        runtime = os.path.dirname(journal) or "."
    directory = runtime if os.path.isabs(runtime) else os.path.normpath(os.path.join(base, runtime))
    return os.path.join(directory, "posguard.sock")


class Client:
    """One connection; requests are answered in order. Use as a context manager, or close()."""

    def __init__(self, socket_path: str, timeout: float = TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise NotRunning("not_running", f"no posguard deployment serves {socket_path}") from exc
        except OSError as exc:
            self._sock.close()
            raise ClientError("unavailable", f"{socket_path}: {exc.strerror or exc}") from exc
        pid, uid, _ = _PEERCRED.unpack(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if uid != os.geteuid():
            self._sock.close()
            raise ClientError("forbidden", f"{socket_path} is served by uid {uid} (pid {pid}), not by you"
                                           f" (uid {os.geteuid()}): not talking to it")
        self.server_pid = pid
        self._file = self._sock.makefile("rb")
        self._next = 0
        self.hello = self._read()
        if "error" in self.hello:
            self.close()
            _result(self.hello)                              # forbidden, or whatever the server said
        if self.hello.get("posguard") != "api" or self.hello.get("version") != VERSION:
            self.close()
            raise ClientError("protocol", f"{socket_path} does not speak posguard API version {VERSION}")

    @classmethod
    def for_config(cls, config_path: str, timeout: float = TIMEOUT_S, wait_s: float = 0.0) -> Client:
        """Connect to the deployment a config describes; `wait_s`: keep trying that long while
        nothing serves its socket yet (a `posguard run` just started)."""
        return cls.when_up(socket_path_of(config_path), timeout, wait_s)

    @classmethod
    def when_up(cls, socket_path: str, timeout: float = TIMEOUT_S, wait_s: float = 0.0) -> Client:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return cls(socket_path, timeout)
            except NotRunning:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)                              # the socket appears once the API serves it

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if hasattr(self, "_file"):
            self._file.close()
        self._sock.close()

    # -- requests ------------------------------------------------------------------------------

    def request(self, op: str, _waits: float = 0.0, **args: Any) -> Any:
        """Send one request; its result, or ClientError with the server's code and message.
        `_waits`: how long the server may wait before it answers (beyond the usual timeout)."""
        self._next += 1
        rid = self._next
        self._send({"id": rid, "op": op, "args": args})
        timeout = self._sock.gettimeout()
        if _waits and timeout is not None:
            self._sock.settimeout(timeout + _waits)
        try:
            reply = self._read()
        finally:
            self._sock.settimeout(timeout)
        if reply.get("id") != rid:
            raise ClientError("protocol", f"reply to request {reply.get('id')!r}, expected {rid}")
        return _result(reply)

    def status(self, truth: bool = False, columns: bool = False, fields: list[str] | None = None) -> dict[str, Any]:
        """The deployment's status. `columns`: positions as {"columns": [names], "rows": [[values]]}
        (half the bytes, parsed in half the time: for a large deployment polled often); `fields`:
        only these of each position. `positions_of()` turns either form into one dict per symbol."""
        args: dict[str, Any] = {"truth": truth, "columns": columns}
        if fields is not None:
            args["fields"] = list(fields)
        return self.request("status", **args)

    def inspect(self, symbol: str, events: int = 20) -> dict[str, Any]:
        return self.request("inspect", symbol=symbol, events=events)

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the deployment takes entries (its phase `ready`); its phase. Raises
        NotReady with the phase and what it waits for when it is not ready within `timeout`, or
        is in safe mode or stopping (neither ends by itself)."""
        result = self.request("wait", _waits=timeout, timeout=timeout)
        if not result["ready"]:
            detail = result["phase_detail"]
            raise NotReady("not_ready", f"deployment is {result['phase'].replace('_', ' ')}"
                                        f"{': ' + detail if detail else ''}", **result)
        return result

    def open(self, symbol: str, side: str, qty: float, sl: float | None = None, sl_pct: float | None = None,
             tp: float | None = None, tp_pct: float | None = None, trail_pct: float | None = None,
             wait: float | None = None, add: bool = True) -> dict[str, Any]:
        """Open a market position with its stop: `sl` a price, or `sl_pct` percent from the price;
        beside it a take-profit (`tp` a price, or `tp_pct` percent) and a venue-held trailing stop
        (`trail_pct`, its callback). On a symbol already open on the same side: an add (`add=False`:
        refused instead). Sent while the deployment starts, it waits for it up to `wait` s (the
        server's default: 5)."""
        args: dict[str, Any] = {"symbol": symbol, "side": side, "qty": qty, **({} if add else {"add": False})}
        args.update({"sl": sl} if sl is not None else {"sl_pct": sl_pct})
        args.update({k: v for k, v in (("tp", tp), ("tp_pct", tp_pct), ("trail_pct", trail_pct), ("wait", wait))
                     if v is not None})
        # Never give up before the server can: a client that timed out and sent again could
        # open twice (the server sends nothing after its wait, answered within the margin).
        return self.request("open", _waits=(COMMAND_WAIT_S if wait is None else wait) + COMMAND_MARGIN_S, **args)

    def close_position(self, symbol: str, qty: float | None = None, wait: float | None = None) -> dict[str, Any]:
        """Close reduce-only: all of it, or `qty` of it (the stop keeps covering what stays). Sent
        while the deployment starts, it goes once that symbol is recovered (up to `wait` s)."""
        args = {k: v for k, v in (("qty", qty), ("wait", wait)) if v is not None}
        return self.request("close", _waits=(COMMAND_WAIT_S if wait is None else wait) + COMMAND_MARGIN_S,
                            symbol=symbol, **args)

    def amend(self, symbol: str, sl: float | None = None, breakeven: bool = False, tp: float | None = None,
              trail_pct: float | None = None) -> dict[str, Any]:
        """Change one exit of a PROTECTED position: move its stop (to `sl`, or to break-even: the
        entry plus fees; the old stop stands until the venue has taken the new one), set or move
        its take-profit (`tp`), or its venue-held trailing stop (`trail_pct`)."""
        given = {"sl": sl, "tp": tp, "trail_pct": trail_pct}
        args = {"breakeven": True} if breakeven else {k: v for k, v in given.items() if v is not None}
        return self.request("amend", symbol=symbol, **args)

    def pause(self) -> dict[str, Any]:
        return self.request("pause")

    def resume(self) -> dict[str, Any]:
        return self.request("resume")

    def panic(self) -> dict[str, Any]:
        return self.request("panic")

    def stop(self, flatten: bool = False) -> dict[str, Any]:
        return self.request("stop", flatten=flatten)

    def events(self, since: int | None = None, follow: bool = True) -> Iterator[dict[str, Any]]:
        """Events after `since` (default: from now), in order, each once. With follow, this
        waits for new ones for ever (the connection's timeout is lifted); reconnect with
        since=<last seq seen> to resume without a gap. Raises ClientError("gone") when the
        journal no longer holds events that old."""
        self._next += 1
        rid = self._next
        args: dict[str, Any] = {"follow": follow}
        if since is not None:
            args["since"] = since
        self._send({"id": rid, "op": "events", "args": args})
        if follow:
            self._sock.settimeout(None)
        while True:
            reply = self._read()
            if "event" in reply:
                yield reply["event"]
                continue
            _result(reply)                               # raises on an error
            return

    # -- wire ----------------------------------------------------------------------------------

    def _send(self, obj: dict[str, Any]) -> None:
        try:
            self._sock.sendall(json.dumps(obj, allow_nan=False).encode() + b"\n")
        except OSError as exc:
            raise ClientError("unavailable", f"the deployment went away: {exc.strerror or exc}") from exc

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except TimeoutError:
            raise ClientError("timeout", "the deployment did not answer in time") from None
        except OSError as exc:
            raise ClientError("unavailable", f"the deployment went away: {exc.strerror or exc}") from exc
        if not line:
            raise ClientError("unavailable", "the deployment closed the connection")
        try:
            reply = _parse(line)
        except ValueError:
            raise ClientError("protocol", "the deployment sent something that is not JSON") from None
        if not isinstance(reply, dict):
            raise ClientError("protocol", "the deployment sent something that is not a JSON object")
        return reply


_parsing_lock = threading.Lock()
_parsing = 0
_parsing_paused = [False]                         # whether the collector ran before the first parse


def _parse(line: bytes) -> Any:
    """json.loads with the cyclic garbage collector paused: a 1 000-symbol status allocates
    thousands of lists, and the collections they triggered (a full one every few replies) took
    10-15 ms each. Parsing makes no reference cycles: nothing is left for the collector."""
    global _parsing
    with _parsing_lock:
        if _parsing == 0:
            _parsing_paused[0] = gc.isenabled()
            gc.disable()
        _parsing += 1
    try:
        return json.loads(line)
    finally:
        with _parsing_lock:                      # several threads parsing: the last one out restores it
            _parsing -= 1
            if _parsing == 0 and _parsing_paused[0]:
                gc.enable()


def positions_of(status: dict[str, Any]) -> list[dict[str, Any]]:
    """A status's positions, one dict per symbol, whichever form it was asked in."""
    positions = status["positions"]
    if isinstance(positions, dict):
        names = positions["columns"]
        return [dict(zip(names, row, strict=True)) for row in positions["rows"]]
    return list(positions)


def _result(reply: dict[str, Any]) -> Any:
    if reply.get("ok") is True:
        return reply.get("result")
    err = reply.get("error") or {}
    extra = {k: v for k, v in err.items() if k not in ("code", "message")}
    kind = NotReady if err.get("code") == "not_ready" else ClientError
    raise kind(str(err.get("code", "error")), str(err.get("message", "refused")), **extra)
