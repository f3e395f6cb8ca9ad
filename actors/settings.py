"""What a deployment is configured with, as the actors receive it: frozen values, checked
by the config schemas (supervisor/config/schema.py) before any actor sees them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adapters.bounds import Count, Fraction, Internal, Number, Percent, Price, Quantity, Seconds


@dataclass(frozen=True, slots=True)
class PositionSettings:
    """Timing of a PositionActor; tests scale these down, production uses the defaults."""

    naked_deadline_s: Seconds[0.01, 300.0] = 10.0       # protection not confirmed this long after the fill → flatten
    # An order not found this long after it left for the venue never arrived: it must exceed the
    # venue's recv window (Bybit: 5 s), with a margin for clocks and transport.
    entry_unknown_window_s: Seconds[0.01, 600.0] = 7.0
    poll_s: Seconds[0.001, 60.0] = 0.2                  # re-query interval for orders whose final state is unknown
    retry_s: Seconds[0.001, 60.0] = 0.25                # first back-off for retry-later outcomes (doubles, capped)
    retry_cap_s: Seconds[0.001, 600.0] = 4.0
    max_close_attempts: Count[1, 1000] = 5          # definite close rejections before the position is STUCK
    max_entry_retries: Count[0, 100] = 5           # retry-later replies to an entry before giving up
    reply_timeout_s: Seconds[0.1, 300.0] = 15.0        # a request unanswered this long was lost: ask again by id
    reference_max_age_s: Seconds[1.0, 3600.0] = 60.0   # a price older than this is fetched again for limits
    journal_wait_s: Seconds[0.01, 30.0] = 1.0          # a close waits no longer for its journal row: it goes anyway
    # Our stop moved by hand on the venue: keep the operator's price (within the risk limits) instead
    # of setting ours again. A stop removed by hand is always set again.
    follow_stop_moves: bool = False
    # A stop moved to break-even sits this far beyond the entry price (percent of it), so that a
    # fill there pays both sides' taker fees (Bybit and Binance: 0.055 % and 0.05 % a side).
    breakeven_fees_pct: Number[0.0, 5.0] = 0.11
    failpoints: Internal[tuple[tuple[str, str], ...]] = ()   # crash tests only: ("STATE:trigger", marker)


@dataclass(frozen=True, slots=True)
class SupervisionSettings:
    """At most `max_restarts` within `within_s` seconds, else safe mode; back-off between restarts
    of one child doubles from `backoff_s` to `backoff_cap_s`, with +-`jitter` spread."""

    max_restarts: Count[1, 1000] = 5
    within_s: Seconds[1.0, 86_400.0] = 60.0
    backoff_s: Seconds[0.001, 60.0] = 0.05
    backoff_cap_s: Seconds[0.001, 3600.0] = 5.0
    jitter: Fraction = 0.2
    heartbeat_s: Seconds[0.01, 60.0] = 1.0             # how often children are asked whether they are alive
    heartbeat_timeout_s: Seconds[0.05, 600.0] = 5.0     # unanswered this long: hung, killed and replaced
    # How many symbols one PositionActor process guards; 0: one each up to 40 symbols, beyond that
    # as many as keeps the deployment at about 40 such processes (README, "Sizing").
    symbols_per_process: Count[0, 1000] = 0


@dataclass(frozen=True, slots=True)
class ProtectionSettings:
    """The protection scan: how often, how long to leave a recently changed symbol alone (at least
    the venue's REST lag), and what to do with a position nothing of ours opened."""

    scan_s: Seconds[0.01, 3600.0] = 5.0
    grace_s: Seconds[0.0, 3600.0] = 30.0
    foreign_policy: Literal["protect", "close", "alert"] = "protect"      # protect | close | alert
    foreign_stop_pct: Percent[50.0] = 2.0        # protect: stop this far from the position's entry price


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """What one entry may be, checked before anything is journaled or sent (a reduce-only close
    is never refused by a limit). Notional and stop distance are measured at the reference price."""

    max_qty: Quantity | None = None                  # None: bounded by max_notional alone
    max_notional: Price = 1000.0                     # USDT
    max_stop_distance_pct: Percent[50.0] = 10.0      # how far from the price a stop may be


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """What makes a deployment one: its lock, its operator API, its identity and its watcher."""

    socket_path: str                     # the operator API (Unix socket, JSON lines)
    lock_path: str                       # the deployment lock (held while any process of it lives)
    config_path: str = ""
    config_digest: str = ""              # sha256 of the config file: an adopter proves it is the same
    watcher_pid: int | None = None       # the `posguard run` that started it
    dashboard_port: int | None = None    # the live page on 127.0.0.1 (None: off), behind the token in token_path
    token_path: str = ""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How the stream is kept: reconnect back-off (doubling, capped, with jitter), and how long
    a symbol must have been left alone before stream evidence alone may adopt it."""

    backoff_s: Seconds[0.001, 60.0] = 0.5
    backoff_cap_s: Seconds[0.001, 3600.0] = 30.0
    jitter: Fraction = 0.2
    grace_s: Seconds[0.0, 60.0] = 1.0


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """The account's lease, when the journal is shared (PostgreSQL): one writer per account."""

    ttl_s: Seconds[0.5, 60.0] = 3.0      # how long a renewal holds the account
    renew_s: Seconds[0.1, 20.0] = 1.0    # renew this often (several tries within one TTL)
    margin_s: Seconds[0.0, 10.0] = 0.5   # fence ourselves this long before the database would
    # At most this many accounts held by this host at once (0: no cap): a host that already holds
    # its share leaves the next account to another, so a fleet spreads.
    max_per_host: Count[0, 10000] = 0


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """The lease `posguard run` took for its deployment: the journal's process renews exactly
    this (account, holder, epoch), and fences every write on it."""

    account: str
    holder: str
    epoch: int
    settings: LeaseSettings = LeaseSettings()
    entries_after: float = 0.0           # boot-time clock: no entry before (the previous holder's late orders)
