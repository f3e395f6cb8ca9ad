"""The processes of a running thespian system, found from outside it (Linux /proc).

thespian daemonises its admin into a new session, so a system's processes are not descendants
of the process that started it: they are found by the session of whoever listens on its admin
port. Used by `posguard run` to replace a system whose supervisor died, and by the tests to
prove nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import time


def proc_stat(pid: int) -> list[str] | None:
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


def child_listening_on(port: int, parent: int | None = None) -> int | None:
    """The pid of a child of `parent` (this process) that listens on TCP `port`: how to find an
    actor process by its address when it never told us its pid (hung before its first answer)."""
    parent = os.getpid() if parent is None else parent
    inodes = {inode for inode, (_, p) in listening_sockets().items() if p == port}
    if not inodes:
        return None
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := proc_stat(int(name))) is not None and stat[1] == str(parent) \
                and socket_inodes(int(name)) & inodes:
            return int(name)
    return None


def kill_system(admin_port: int, extra: set[int] = frozenset()) -> set[int]:
    """kill -9 a whole thespian system (and `extra` pids): everything in its session, again and
    again until nothing is left -- an actor being forked during the first sweep must not survive."""
    return kill_sessions(sessions_of(admin_port), extra)


def kill_sessions(sessions: set[str], extra: set[int] = frozenset()) -> set[int]:
    """kill -9 every process of these sessions (and `extra`) until none is left; never our own."""
    sessions = sessions - {(proc_stat(os.getpid()) or ["", "", "", ""])[3]}
    killed: set[int] = set()
    for pid in extra:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
    for _ in range(50):
        alive = in_sessions(sessions)
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        wait_exited(alive, timeout=1.0)
    return killed


def sessions_of(admin_port: int) -> set[str]:
    admin_inodes = {i for i, (_, port) in listening_sockets().items() if port == admin_port}
    sessions = set()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        stat = proc_stat(pid)
        if stat and stat[0] != "Z" and socket_inodes(pid) & admin_inodes:
            sessions.add(stat[3])
    sessions.discard((proc_stat(os.getpid()) or ["", "", "", ""])[3])   # ours holds a copy of the fd
    return sessions


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def in_sessions(sessions: set[str]) -> set[int]:
    return {pid for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
            if (st := proc_stat(pid)) and st[0] != "Z" and st[3] in sessions}


def system_pids(admin_port: int) -> set[int]:
    """Every live process of the thespian system whose admin listens on `admin_port`.

    thespian daemonises its admin (new session), so the system is found by that session,
    not as descendants of the test process."""
    return in_sessions(sessions_of(admin_port))


def wait_exited(pids: set[int], timeout: float = 5.0) -> set[int]:
    """Wait (on pidfds, not sleeps) until every pid has exited; returns the ones still alive."""
    alive = set()
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            remaining = max(0.0, deadline - time.monotonic())
            poller = select.poll()                       # not select(): descriptors past 1024 are fine
            poller.register(fd, select.POLLIN)
            if not poller.poll(remaining * 1000):
                alive.add(pid)
        finally:
            os.close(fd)
    return alive


def unix_peer_pid(path: str) -> int | None:
    """The pid of the process of this user serving the Unix socket at `path` (the kernel says
    who listens), or None when nothing of ours answers there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return None
        pid, uid, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return pid if uid == os.geteuid() else None
