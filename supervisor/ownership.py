"""Who owns a running deployment, as the Supervisor keeps it: the deployment lock (one
deployment per journal, held while any of its processes lives; it says how to find, prove and
end the deployment) and the `posguard run` that watches it (alerted once when it is gone)."""

from __future__ import annotations

import os
from typing import Any

from loguru import logger

from actors.messages import StartDeployment
from supervisor.host.procfs import alive
from supervisor.host.runtime import DeploymentLock, LockHeld, journal_identity


class Ownership:
    def __init__(self) -> None:
        self.spec: StartDeployment | None = None
        self.started_at = 0.0
        self.lock: DeploymentLock | None = None
        self.watcher_pid: int | None = None
        self.watcher_alerted = False

    def take(self, spec: StartDeployment, started_at: float) -> str | None:
        """Take the deployment lock before the journal is opened: one deployment per journal.
        Every child started later inherits it, so it is held while any of them lives. None, or
        why it cannot be taken."""
        assert spec.control is not None
        self.spec, self.started_at, self.watcher_pid = spec, started_at, spec.control.watcher_pid
        lock = DeploymentLock(spec.control.lock_path)
        try:
            lock.acquire(self.holder("running"))
        except LockHeld as held:
            h = held.holder
            return (f"journal {spec.journal_path} is in use by another deployment (supervisor pid {h.get('pid', '?')},"
                    f" posguard run pid {h.get('watcher_pid') or 'none'})")
        except OSError as exc:
            return f"deployment lock {spec.control.lock_path}: {exc.strerror}"
        self.lock = lock
        return None

    def holder(self, state: str) -> dict[str, Any]:
        """What the deployment lock says of us: how to find, prove and end this deployment."""
        assert self.spec is not None and self.spec.control is not None
        c = self.spec.control
        return {"pid": os.getpid(), "admin_pid": os.getppid(), "session": os.getsid(0), "pgid": os.getpgrp(),
                "journal": journal_identity(self.spec.journal_path, self.spec.account), "socket": c.socket_path,
                "config": c.config_path, "config_digest": c.config_digest, "watcher_pid": self.watcher_pid,
                "started_at": self.started_at, "state": state}

    def mark(self, state: str) -> None:
        """`stopped` before we go: a watcher seeing us go must not restart us."""
        if self.lock is not None:
            self.lock.update(self.holder(state))

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def watcher_changed(self, pid: int) -> None:
        logger.warning("posguard run pid {} now watches this deployment (was: {})", pid, self.watcher_pid)
        self.watcher_pid, self.watcher_alerted = pid, False
        self.mark("running")

    def watcher_lost(self) -> bool:
        """True once, when the watching `posguard run` is found gone."""
        if self.watcher_pid is None or self.watcher_alerted or alive(self.watcher_pid):
            return False
        self.watcher_alerted = True
        logger.critical("ALERT posguard run (pid {}) is gone: this deployment keeps protecting its positions,"
                        " unwatched. `posguard run` with the same config adopts it; `posguard stop` ends it.",
                        self.watcher_pid)
        return True
