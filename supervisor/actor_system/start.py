"""Starting the thespian actor system — loopback only, every frame authenticated.

thespian's TCP base listens on 0.0.0.0 for the admin and every actor, unauthenticated, with
pickled messages: anyone who reaches a port can run code. Two defences, both applied in the
process that starts the system (actor processes are forked from it and inherit them):
`bind_loopback_only()` rewrites the wildcard bind address to 127.0.0.1 in the one class
thespian binds through, and `wire_auth.install()` makes every frame carry an HMAC under a
random per-deployment key that nothing outside the deployment's processes ever holds. Nothing
outside joins the system: operators and strategies use the deployment's Unix-socket API.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from supervisor.actor_system import descriptors, wire_auth

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


def start_system(admin_port: int = 0) -> Any:
    """Start a new system (on a free port when `admin_port` is 0), its frames authenticated
    under a new random key; refuses when something already listens on the admin port (thespian
    would silently join it). The port is on the returned system as `posguard_port`."""
    if admin_port == 0:
        admin_port = free_port()
    if port_listening(admin_port):
        raise SystemAlreadyRunning(admin_port)
    bind_loopback_only()
    descriptors.apply()
    wire_auth.install(wire_auth.new_key())
    from thespian.actors import ActorSystem

    asys = ActorSystem(BASE, {"Admin Port": admin_port}, logDefs=_quiet_thespian_logging())
    asys.posguard_port = admin_port
    return asys


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def forget_system() -> None:
    """Drop this process's handle on a system that was killed from outside, so the next
    `start_system` starts a fresh one (thespian keeps one system per process, and would hand
    back the dead one)."""
    from thespian.actors import ActorSystem

    with contextlib.suppress(AttributeError):
        delattr(ActorSystem, "systemBase")


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
