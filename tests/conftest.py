"""Fixtures: actor systems that tests start and always shut down, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest
from loguru import logger

from tests.emulator import BAD_SECRET_ENV, KEY, KEY_ENV, SECRET, SECRET_ENV

# The emulator's test keys, set before any actor system starts: actor processes inherit the
# environment of the admin process, which is forked when a system starts.
os.environ[KEY_ENV], os.environ[SECRET_ENV] = KEY, SECRET
os.environ[BAD_SECRET_ENV] = "a-wrong-secret-for-tests"


@pytest.fixture(autouse=True, scope="session")
def quiet_logs() -> Iterator[None]:
    logger.remove()                       # tests assert on behaviour, not on log noise
    yield


@pytest.fixture(autouse=True)
def close_harnesses() -> Iterator[None]:
    yield
    from tests.harness import OPEN_HARNESSES

    while OPEN_HARNESSES:
        OPEN_HARNESSES.pop().close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                out.add(target[8:-1])
    except OSError:
        pass
    return out


def listening_sockets() -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket in this network namespace."""
    found = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with open(table) as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                if cols[3] != "0A":                       # LISTEN
                    continue
                hexaddr, hexport = cols[1].split(":")
                if v6:
                    addr = "::1" if hexaddr == "0" * 24 + "01000000" else hexaddr
                else:
                    addr = ".".join(str(b) for b in bytes.fromhex(hexaddr)[::-1])
                found[cols[9]] = (addr, int(hexport, 16))
    return found


def kill_system(admin_port: int, extra: set[int] = frozenset()) -> set[int]:
    """kill -9 a whole thespian system (and `extra` pids): everything in its session, again and
    again until nothing is left -- an actor being forked during the first sweep must not survive."""
    sessions = _sessions(admin_port)
    killed: set[int] = set()
    for pid in extra:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
    for _ in range(50):
        alive = _in_sessions(sessions)
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        wait_exited(alive, timeout=1.0)
    return killed


def _sessions(admin_port: int) -> set[str]:
    admin_inodes = {i for i, (_, port) in listening_sockets().items() if port == admin_port}
    sessions = set()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        stat = _proc_stat(pid)
        if stat and stat[0] != "Z" and socket_inodes(pid) & admin_inodes:
            sessions.add(stat[3])
    sessions.discard((_proc_stat(os.getpid()) or ["", "", "", ""])[3])   # ours holds a copy of the fd
    return sessions


def _in_sessions(sessions: set[str]) -> set[int]:
    return {pid for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
            if (st := _proc_stat(pid)) and st[0] != "Z" and st[3] in sessions}


def system_pids(admin_port: int) -> set[int]:
    """Every live process of the thespian system whose admin listens on `admin_port`.

    thespian daemonises its admin (new session), so the system is found by that session,
    not as descendants of the test process."""
    return _in_sessions(_sessions(admin_port))


@pytest.fixture
def simple_system() -> Iterator[object]:
    from thespian.actors import ActorSystem

    asys = ActorSystem("simpleSystemBase", transientUnique=True)
    try:
        yield asys
    finally:
        asys.shutdown()


def wait_exited(pids: set[int], timeout: float = 5.0) -> set[int]:
    """Wait (on pidfds, not sleeps) until every pid has exited; returns the ones still alive."""
    import select

    alive = set()
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            remaining = max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], remaining)[0]:
                alive.add(pid)
        finally:
            os.close(fd)
    return alive


@pytest.fixture
def tcp_system() -> Iterator[object]:
    """A loopback-only multiprocess system; after shutdown no process of it may remain (any that
    does is killed, and the test fails)."""
    from supervisor.system import start_system

    port = free_port()
    asys = start_system(port)
    asys.posguard_port = port
    sessions: set[str] = set()
    try:
        yield asys
    finally:
        sessions = _sessions(port)
        asys.shutdown()
    assert sessions, "the system's processes could not be found"
    left = wait_exited(_in_sessions(sessions), timeout=15.0)   # generous: a loaded 2-core machine is slow
    if left:
        details = [(pid, _proc_stat(pid)) for pid in sorted(left)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"actor processes left behind (now killed): {details}")
