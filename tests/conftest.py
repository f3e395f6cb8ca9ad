"""Fixtures: actor systems that tests start and always shut down, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator

import pytest
from loguru import logger

from supervisor.processes import in_sessions, proc_stat, sessions_of, wait_exited
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


@pytest.fixture
def simple_system() -> Iterator[object]:
    from thespian.actors import ActorSystem

    asys = ActorSystem("simpleSystemBase", transientUnique=True)
    try:
        yield asys
    finally:
        asys.shutdown()


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
        sessions = sessions_of(port)
        asys.shutdown()
    assert sessions, "the system's processes could not be found"
    left = wait_exited(in_sessions(sessions), timeout=15.0)   # generous: a loaded 2-core machine is slow
    if left:
        details = [(pid, proc_stat(pid)) for pid in sorted(left)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"actor processes left behind (now killed): {details}")
