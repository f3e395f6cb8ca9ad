"""What every conversation shares: ids, creation times, a venue's failure, and the replies
that say a command was taken or refused."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from adapters.errors import Outcome


def new_id() -> str:
    return uuid.uuid4().hex


def now_ts() -> float:
    return time.time()


def id_field():
    return field(default_factory=new_id)


def ts_field():
    return field(default_factory=now_ts)


@dataclass(frozen=True, slots=True)
class CommandAccepted:
    """The command was taken; progress shows in the position's state."""

    command_id: str
    symbol: str
    intent_id: str | None = None


@dataclass(frozen=True, slots=True)
class CommandDenied:
    """The command was refused before anything was journaled or sent."""

    command_id: str
    symbol: str
    reason: str
    retry: bool = False                  # not yet: the deployment, or this symbol's actor, is still starting


@dataclass(frozen=True, slots=True)
class VenueFailure:
    """A venue call that did not simply succeed, classified by what to do next."""

    outcome: Outcome
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Ack:
    """A request that needs no other answer was taken."""

    request_id: str
