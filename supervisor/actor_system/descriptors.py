"""Constant descriptors per actor process: thespian patches applied where the system starts.

Measured (tests/test_scale.py counts them): with the fork start method, multiprocessing's Popen
keeps two pipe ends per child in the parent (its sentinel pair, popen_fork._launch) for as long
as the Popen object lives, and thespian keeps it for the child's life. thespian closes in a new
child only its parent's transport sockets (the full sweep, `closeUnusedFiles`, is commented out
in thespian 4.0.1 and covered fds 3..254 only). So the k-th child of the Supervisor inherited
2(k-1) pipes of its siblings -- 824 descriptors in a late actor of a 400-symbol deployment, the
total growing with the square of the deployment -- and every actor inherited the listening
socket of whatever process started the system.

1. Parent side: once a child is forked, the parent closes its two pipe ends of that child's
   Popen (thespian learns of a child's death from SIGCHLD and waitpid, never the sentinel).
2. Child side, before thespian's own start: close every inherited pipe, socket and anonymous
   inode (epoll, eventfd) except stdio and multiprocessing's parent sentinel. Regular files stay:
   the log file, the deployment lock (its flock must be held by every actor), the keys' sealed
   memfd (adapters/keys.py decides who keeps it).
3. thespian formats a full repr of every message for DEBUG log lines on each send and receive,
   DEBUG on or not: with DEBUG off, only the message's type is named.

thespian is pinned (setup.py) because these reach into its internals; tests/test_scale.py
fails if a patched name moves.

Past 1 024: thespian waits on its sockets with `selectors.DefaultSelector` (epoll), which has no
FD_SETSIZE ceiling, but a soft RLIMIT_NOFILE of 1 024 (a common default) would make the
Supervisor of a large deployment fail with EMFILE. The system's start raises the soft limit to
the hard one, and `posguard run` refuses a deployment the hard limit cannot hold.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import signal
import stat
import sys
from typing import Any

_APPLIED = False
FILES_BASE = 256                     # what any one process holds: logs, journal, venue sockets, thespian
FILES_PER_CHILD = 4                  # the Supervisor's sockets to and from one child, a reconnect's included
FILES_CEILING = 65536                # never ask for more than this, whatever the hard limit


class OpenFilesLimit(Exception):
    """The hard limit on open files is below what the deployment needs."""


def files_needed(processes: int) -> int:
    """Descriptors the busiest process (the Supervisor) of a deployment of `processes` needs."""
    return FILES_BASE + FILES_PER_CHILD * processes


def raise_open_files_limit(needed: int = 0) -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (at most FILES_CEILING), inherited by every actor
    process forked after it; returns the soft limit now. Raises OpenFilesLimit when even the
    hard limit is below `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = FILES_CEILING if hard == resource.RLIM_INFINITY else min(hard, FILES_CEILING)
    if soft < room:
        resource.setrlimit(resource.RLIMIT_NOFILE, (room, hard))
        soft = room
    if soft < needed:
        raise OpenFilesLimit(f"the open-files limit ({soft}) is below the {needed} this deployment needs")
    return soft


def deployment_processes(symbols: int, per_process: int) -> int:
    """Actor processes of a deployment: PositionActors, plus the Supervisor, exchange, journal,
    protection, API and stream."""
    return math.ceil(symbols / max(1, per_process)) + 6


def inherited_descriptors(keep: set[int]) -> list[int]:
    """Pipes, sockets and anonymous inodes of this process, but those in `keep` and stdio."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd in keep:
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue                                     # the listing's own descriptor, gone now
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_IFMT(mode) == 0:   # 0: epoll, eventfd
            out.append(fd)
    return out


def close_inherited_descriptors() -> int:
    """In a freshly forked actor process: close what it inherited and does not use."""
    import multiprocessing.process as mpp

    keep = set()
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            keep.add(stream.fileno())
    sentinel = getattr(getattr(mpp, "_parent_process", None), "_sentinel", None)
    if isinstance(sentinel, int):
        keep.add(sentinel)
    wakeup = signal.set_wakeup_fd(-1)                    # a parent's wake-up descriptor is not ours
    doomed = inherited_descriptors(keep)
    for fd in doomed:
        with contextlib.suppress(OSError):
            os.close(fd)
    if wakeup >= 0 and wakeup not in doomed:
        signal.set_wakeup_fd(wakeup)
    return len(doomed)


def apply() -> None:
    """Patch thespian in this process (before it starts the system: actor processes are forked
    from it and inherit the patched functions)."""
    global _APPLIED
    if _APPLIED:
        return
    raise_open_files_limit()
    from thespian.system import multiprocCommon as mpc
    from thespian.system import transport as tr
    from thespian.system import utilis

    start_child_actor = mpc.MultiProcReplicator._startChildActor

    def _start_child_actor(self: Any, *args: Any, **kw: Any) -> Any:
        result = start_child_actor(self, *args, **kw)
        procs = getattr(self, "_child_procs", None)
        if procs:
            finalizer = getattr(getattr(procs[-1].childProc, "_popen", None), "finalizer", None)
            if finalizer is not None:
                finalizer()                              # closes parent_r and parent_w, once
        return result

    mpc.MultiProcReplicator._startChildActor = _start_child_actor

    start_child = mpc.startChild

    def _start_child(*args: Any, **kw: Any) -> Any:
        close_inherited_descriptors()
        return start_child(*args, **kw)

    mpc.startChild = _start_child                        # a module global, looked up at each fork

    def cheap(original: Any) -> Any:
        def identify(self: Any) -> str:
            if utilis._thesplog_control_settings[0] <= logging.DEBUG:
                return str(original(self))
            target = getattr(self, "targetAddr", None) or getattr(self, "sender", None)
            return f"{type(self).__name__}({target}, {type(self.message).__name__})"
        return identify

    tr.TransmitIntent.identify = cheap(tr.TransmitIntent.identify)
    tr.ReceiveEnvelope.identify = cheap(tr.ReceiveEnvelope.identify)
    _APPLIED = True
