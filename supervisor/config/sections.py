"""The config's sections that are no actor's settings, and the rules of the journal's."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from adapters.bounds import Count, Seconds, Text


@dataclass(frozen=True, slots=True)
class DeploymentSection:
    symbols: tuple[Text, ...] = ()
    refresh_s: Seconds[0.05, 60.0] = 1.0


@dataclass(frozen=True, slots=True)
class JournalSection:
    path: Text = ""                              # a SQLite file (the default), or
    url: Text = ""                               # postgresql://user@host:port/db (the password: never here)
    account: Text = "default"                    # on PostgreSQL: this deployment's account (schema, lease)
    password_file: Text | None = None            # on PostgreSQL: a 0600 file (else PGPASSWORD)


@dataclass(frozen=True, slots=True)
class RuntimeSection:
    dir: Text | None = None


@dataclass(frozen=True, slots=True)
class PortSection:
    port: Count[0, 65535] = 0


@dataclass(frozen=True, slots=True)
class VenueSection:
    name: Literal["simulated", "bybit", "binanceusdm"] = "simulated"


_PG_URL = re.compile(r"^postgres(ql)?://[^\s:@/]+@[^\s/@]+(:\d+)?/[A-Za-z0-9_]+(\?[^\s]*)?$")


def check_journal(fail: Callable[[str, str], None], journal: Any, runtime: Any, lease: Any) -> None:
    """A SQLite file or a PostgreSQL URL, never both; the URL names its user and carries no password."""
    if bool(journal.path) == bool(journal.url):
        fail("journal", "give exactly one of path (a SQLite file) or url (postgresql://user@host:port/db)")
        return
    if not journal.url:
        return
    from actors.journal.postgres import ACCOUNT, safe_url

    if urlsplit(journal.url).password is not None or "password=" in journal.url.lower():
        fail("journal.url", "carries a password: put it in journal.password_file (0600) or PGPASSWORD instead")
    elif not _PG_URL.match(journal.url):
        fail("journal.url", f"must look like postgresql://user@host:5432/dbname, got {safe_url(journal.url)!r}")
    if not ACCOUNT.fullmatch(journal.account):
        fail("journal.account", f"use 1 to 40 of a-z, 0-9 and _, got {journal.account!r}")
    if runtime.dir is None:
        fail("runtime.dir", "required with journal.url: where this host keeps its API socket and locks")
    if lease.renew_s * 2 > lease.ttl_s - lease.margin_s:
        fail("lease.renew_s", f"at most half of lease.ttl_s - lease.margin_s ({(lease.ttl_s - lease.margin_s) / 2:g}):"
                              " a renewal needs a second try before the lease runs out")
