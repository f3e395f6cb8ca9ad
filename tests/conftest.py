"""Fixtures: the emulators' test keys, quiet logs, and actor systems that tests start and always
shut down, on free loopback ports. What tests and benchmarks share lives in tests/support/kit.py."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest
from loguru import logger

from supervisor.host.procfs import in_sessions, proc_stat, sessions_of, wait_exited
from tests.support import kit


@pytest.fixture(autouse=True, scope="session")
def test_keys() -> Iterator[None]:
    """The emulators' keys, set before any actor system starts (its processes inherit them)."""
    before = kit.set_test_keys()
    yield
    kit.restore_env(before)


@pytest.fixture(autouse=True, scope="session")
def quiet_logs() -> Iterator[None]:
    logger.remove()                       # tests assert on behaviour, not on log noise
    yield


@pytest.fixture(autouse=True)
def close_harnesses() -> Iterator[None]:
    yield
    from tests.support.harness import OPEN_HARNESSES

    while OPEN_HARNESSES:
        OPEN_HARNESSES.pop().close()


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
    from supervisor.actor_system.start import free_port, start_system

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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One private PostgreSQL cluster for the session (tests/support/postgres.py); each test takes
    a database of its own from it (`pg_url`)."""
    from tests.support import postgres

    why = postgres.missing()
    if why:
        pytest.skip(why)
    server = postgres.PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server, request) -> str:
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40] + f"_{os.getpid()}"
    postgres_server.psql(f"DROP DATABASE IF EXISTS {name}")
    return postgres_server.create_database(name)
