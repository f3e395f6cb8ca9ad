"""Where a deployment keeps its files, who may touch them, and the locks that make it one.

- Files are the owner's alone (PostgreSQL's data directory, OpenSSH's key files): every
  directory a deployment writes is 0700 and every file 0600; a directory another user can
  write to, or that another user owns, is refused with one line naming the fix.
- One deployment per journal. The *deployment lock* (`<journal>.lock`, flock) is taken by the
  Supervisor before it opens the journal, and every actor process it starts inherits the
  descriptor: the lock is held as long as any process of the deployment lives, so a second
  deployment can never write beside survivors. The *watcher lock* (`<journal>.run.lock`, a
  POSIX record lock, which a forked child does not inherit) is held by `posguard run` alone:
  it tells a second `run` apart from a deployment whose watcher died.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from dataclasses import dataclass
from typing import Any

SOCKET_NAME = "posguard.sock"
VENUE_SOCKET_NAME = "venue.sock"
DASHBOARD_TOKEN_NAME = "dashboard.token"
MAX_SOCKET_PATH = 107                 # sun_path, less its terminating NUL


class UnsafePath(Exception):
    """A path others could read or write; the message says what to change."""


@dataclass(frozen=True, slots=True)
class RuntimePaths:
    """Every path of one deployment, derived from its journal and runtime directory."""

    journal: str
    runtime_dir: str

    @property
    def socket(self) -> str:
        """The operator API (JSON lines over a Unix socket)."""
        return os.path.join(self.runtime_dir, SOCKET_NAME)

    @property
    def venue_socket(self) -> str:
        """The simulated venue's own process, when `posguard run` starts one."""
        return os.path.join(self.runtime_dir, VENUE_SOCKET_NAME)

    @property
    def dashboard_token(self) -> str:
        """The live page's token (0600): `posguard dashboard` reads it to print the page's URL."""
        return os.path.join(self.runtime_dir, DASHBOARD_TOKEN_NAME)

    @property
    def deployment_lock(self) -> str:
        # A journal on PostgreSQL has no file here: the locks are this host's, in its runtime
        # directory (one deployment of the account per host; the lease makes it one per fleet).
        return self.journal + ".lock" if self.journal else os.path.join(self.runtime_dir, "deployment.lock")

    @property
    def watcher_lock(self) -> str:
        return self.journal + ".run.lock" if self.journal else os.path.join(self.runtime_dir, "run.lock")

    def check(self) -> None:
        """Create what is missing, privately; refuse what others could touch. Raises UnsafePath."""
        files = (self.journal, self.journal + "-wal", self.journal + "-shm") if self.journal else ()
        for directory in dict.fromkeys((self.runtime_dir, os.path.dirname(self.journal) or self.runtime_dir)):
            private_dir(directory)
        for path in (*files, self.deployment_lock, self.watcher_lock, self.dashboard_token):
            private_file(path)
        if len(self.socket.encode()) > MAX_SOCKET_PATH:
            raise UnsafePath(f"runtime directory {self.runtime_dir} is too deep for a Unix socket path"
                             f" ({len(self.socket.encode())} > {MAX_SOCKET_PATH} bytes): set [runtime] dir shorter")


def journal_identity(journal: str, account: str = "default") -> str:
    """One journal, however it is named: a file by its real path, a database by URL and account."""
    if journal.startswith(("postgresql://", "postgres://")):
        return f"{journal}#{account}"
    return os.path.realpath(journal)


def private_dir(path: str) -> None:
    """Make `path` (0700) if missing; refuse it if another user owns it or may write to it."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise UnsafePath(f"{path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()});"
                         " use a directory of your own")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePath(f"{path} is writable by {_who(st.st_mode)} (mode {stat.S_IMODE(st.st_mode):04o});"
                         f" run: chmod 700 {path}")


def private_file(path: str) -> None:
    """An existing file must be ours; it is made 0600 if it was more open (older versions)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{path} is a symbolic link; posguard writes only files of its own there")
    if st.st_uid != os.geteuid():
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o600)


def _who(mode: int) -> str:
    both = mode & stat.S_IWGRP and mode & stat.S_IWOTH
    return "its group and others" if both else "its group" if mode & stat.S_IWGRP else "others"


# -- locks -----------------------------------------------------------------------------------


class LockHeld(Exception):
    """Another process holds the lock; `holder` is what it wrote there (may be empty)."""

    def __init__(self, path: str, holder: dict[str, Any]) -> None:
        super().__init__(f"{path} is held by pid {holder.get('pid', '?')}")
        self.path = path
        self.holder = holder


class _Lock:
    """A lock file that says who holds it (JSON). Subclasses choose the kind of lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def _lock(self, fd: int) -> None:
        raise NotImplementedError

    def acquire(self, holder: dict[str, Any]) -> None:
        """Take it and write `holder`; raises LockHeld (with what the holder wrote) if taken."""
        self._take()
        self.update(holder)

    def _take(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            self._lock(fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockHeld(self.path, read_holder(self.path)) from None
            raise
        self.fd = fd

    def update(self, holder: dict[str, Any]) -> None:
        assert self.fd is not None
        data = json.dumps(holder).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        """Let go of this process's hold (never LOCK_UN: that would free a flock for every
        forked child sharing it); what the holder wrote stays, to say who held it last."""
        if self.fd is None:
            return
        os.close(self.fd)
        self.fd = None


class DeploymentLock(_Lock):
    """flock: held by the open file description, so shared with every forked child that keeps
    the descriptor (see `inheritable()`): released only when the last of them is gone."""

    def _lock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


class WatcherLock(_Lock):
    """A POSIX record lock: it belongs to this process alone (a forked child does not inherit
    it), so it is released the moment `posguard run` dies, whatever its actors do."""

    def _lock(self, fd: int) -> None:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def read_holder(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read() or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def held_by(lock: type[_Lock], path: str) -> dict[str, Any] | None:
    """What the current holder wrote, or None when nobody holds it. The probe never keeps the
    lock nor erases what a previous holder wrote. Never probe a WatcherLock this process holds:
    closing any descriptor of the file drops a POSIX lock."""
    if not os.path.exists(path):
        return None
    probe = lock(path)
    try:
        probe._take()
    except LockHeld as held:
        return held.holder
    except OSError:
        return None
    probe.release()
    return None
