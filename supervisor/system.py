"""Starting and joining the thespian actor system — loopback only.

thespian's TCP base listens on 0.0.0.0 for the admin and every actor, unauthenticated, with
pickled messages: anyone who reaches a port can run code. `bind_loopback_only()` rewrites the
wildcard bind address to 127.0.0.1 in the one class thespian binds through; it must run in
the process that starts the system (actor processes are forked from it and inherit it) and in
every CLI process that joins (its reply socket listens too).
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

LOOPBACK = "127.0.0.1"
BASE = "multiprocTCPBase"


def bind_loopback_only() -> None:
    os.environ["THESPIAN_BASE_IPADDR"] = LOOPBACK        # the address actors advertise
    from thespian.system.transport.IPBase import IPActorAddress

    if getattr(IPActorAddress, "_posguard_loopback", False):
        return

    def bind_args(self: Any) -> tuple[tuple[Any, ...]]:
        host, *rest = self.bindname
        return ((LOOPBACK if host in ("", "0.0.0.0") else host, *rest),)

    IPActorAddress.bindArgs = property(bind_args)        # type: ignore[method-assign,assignment]
    IPActorAddress._posguard_loopback = True             # type: ignore[attr-defined]


def port_listening(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start_system(admin_port: int) -> Any:
    """Start a new system; refuses when something already listens on the admin port
    (thespian would silently join it)."""
    if port_listening(admin_port):
        raise SystemAlreadyRunning(admin_port)
    bind_loopback_only()
    from thespian.actors import ActorSystem

    return ActorSystem(BASE, {"Admin Port": admin_port}, logDefs=_quiet_thespian_logging())


def forget_system() -> None:
    """Drop this process's handle on a system that was killed from outside, so the next
    `start_system` starts a fresh one (thespian keeps one system per process, and would hand
    back the dead one)."""
    from thespian.actors import ActorSystem

    with contextlib.suppress(AttributeError):
        delattr(ActorSystem, "systemBase")


def join_system(admin_port: int) -> Any | None:
    """Join a running system, or None if none listens — never start one by accident."""
    if not port_listening(admin_port):
        return None
    bind_loopback_only()
    from thespian.actors import ActorSystem

    return ActorSystem(BASE, {"Admin Port": admin_port}, logDefs=_quiet_thespian_logging())


class SystemAlreadyRunning(Exception):
    def __init__(self, port: int) -> None:
        super().__init__(f"something already listens on 127.0.0.1:{port} (another posguard run?)")
        self.port = port


def _quiet_thespian_logging() -> dict[str, Any]:
    # thespian's own logging: warnings and worse to stderr; our logs go through loguru.
    return {
        "version": 1,
        "formatters": {"plain": {"format": "thespian %(levelname)s %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": "WARNING"}},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
