"""Failpoints: a real `kill -9` of an actor's own process at a named point, for crash tests.

A failpoint is (name, marker_path): the first time the point is reached it creates the marker
and (via `kill_self`) dies by SIGKILL, exactly as an operator's `kill -9` would. The marker
stops a restarted actor from dying there again. Empty in production.
"""

from __future__ import annotations

import os
import signal


def armed(name: str, failpoints: tuple[tuple[str, str], ...]) -> bool:
    """True (once per marker) when `name` is a failpoint: the caller should now die."""
    for point, marker in failpoints:
        if point != name:
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)   # only the first arrival dies
        except FileExistsError:
            continue
        os.close(fd)
        return True
    return False


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
