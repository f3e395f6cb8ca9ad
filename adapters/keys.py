"""Venue keys: out of every environment and every memory but the exchange process's.

An operator (or systemd) starts `posguard run` with the keys in its environment. Everything
the deployment runs is forked from that process, and a fork copies both the memory and the
environment block that `/proc/<pid>/environ` shows. So `posguard run` first moves the keys
into a sealed memory file (memfd) and re-executes itself without them: the new image has
neither the keys nor their environment variables, only the number of a descriptor it never
reads. The ExchangeActor's process reads that descriptor when it builds its venue adapter;
every other actor process closes it at its first message (actors/async_bridge.py).

The processes that must pass the descriptor on (the watcher, thespian's admin and logger, the
Supervisor) are made non-dumpable, so no other process of the same user can open it through
/proc/<pid>/fd; the exchange process is non-dumpable too, with no core file.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
from collections.abc import Mapping

KEYS_FD_ENV = "POSGUARD_KEYS_FD"
PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3
_SEALS = 0x0001 | 0x0002 | 0x0004 | 0x0008         # F_SEAL_SEAL | SHRINK | GROW | WRITE


def seal(values: Mapping[str, str]) -> int:
    """A sealed, inheritable memfd holding `values` (env name -> value); returns its descriptor."""
    fd = os.memfd_create("posguard-keys", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, json.dumps(dict(values)).encode())
    import fcntl

    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    os.set_inheritable(fd, True)
    return fd


def keys_fd() -> int | None:
    text = os.environ.get(KEYS_FD_ENV, "")
    return int(text) if text.isdigit() else None


def read(name: str) -> str | None:
    """The value of key variable `name`: from the sealed memfd when `posguard run` handed the
    keys over, else from the environment (tests, and deployments driven without `run`)."""
    fd = keys_fd()
    if fd is not None:
        with contextlib.suppress(OSError, ValueError):
            size = os.fstat(fd).st_size
            values = json.loads(os.pread(fd, size, 0))
            if isinstance(values, dict) and isinstance(values.get(name), str):
                return values[name]
        return None
    return os.environ.get(name)


def drop_handle() -> None:
    """In a process that never needs the keys: close the memfd and become dumpable again."""
    fd = keys_fd()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        os.environ.pop(KEYS_FD_ENV, None)
    set_dumpable(True)


def set_dumpable(on: bool) -> None:
    """PR_SET_DUMPABLE: off, no other process of this user may ptrace this one, read its memory
    or open its /proc/<pid>/fd; no core file either (RLIMIT_CORE 0)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1 if on else 0, 0, 0, 0)
    if not on:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def dumpable() -> bool:
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    except (OSError, AttributeError):
        return True
