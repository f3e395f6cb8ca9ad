"""The Supervisor actor, a shell over plain objects: its children (supervisor/children.py: the
table, start-when-ready, restarts with back-off and intensity, heartbeats), the operator's
commands (supervisor/commands.py: routing, relays, waiters, stop/flatten) and its reports
(supervisor/status.py). Children come from specs (supervisor/specs.py), each started once what
it needs is ready, and stopped in reverse; past the restart intensity the system enters safe
mode (no new entries; protection keeps running).

Failures are learned three ways: thespian's ChildActorExited (a crash, kill -9), a child's
own ChildFailed (a handler raised: its state may be half-changed), and a heartbeat it was sent
and did not answer in time. A replaced child never overlaps its successor: the old one is gone
before the new one starts.
"""

from __future__ import annotations

from supervisor.shell.failures import Failures
from supervisor.shell.lifecycle import Lifecycle
from supervisor.shell.operations import Operations


class Supervisor(Lifecycle, Failures, Operations):
    """The deployment's root actor (the handlers: supervisor/shell/)."""
