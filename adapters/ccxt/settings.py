"""How to reach a real venue: picklable settings (key *names*, never keys) and symbol forms.

Imports nothing heavy: the CLI and the config loader use it, and ccxt costs ~0.5 s and ~90 MB
to import, so only the ExchangeActor's process ever loads it (inside the adapters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters.bounds import Count, Number, Seconds, Text

MIN_SECRET_LEN = 6                   # shorter values are no keys; scrubbing them would mangle text

_UNIFIED = re.compile(r"^([A-Z0-9]+)/([A-Z0-9]+):([A-Z0-9]+)$")
_VENUE_FORM = re.compile(r"^[A-Z0-9]+USDT$")


class MissingKey(Exception):
    """An environment variable named in the config does not hold a key."""


@dataclass(frozen=True, slots=True)
class CcxtVenueSettings:
    """A venue reached through ccxt. Keys are read from the environment inside the adapter's
    own process, so they never travel in a message, a config object or a journal row."""

    name: str                        # "bybit" | "binanceusdm"
    key_env: Text
    secret_env: Text
    api_url: Text | None = None       # overrides every REST base URL (emulators, proxies)
    testnet: bool = False
    demo: bool = False               # demo trading (Bybit demo, Binance demo)
    attached_stop: bool = True       # Bybit: stopLoss travels with the entry order
    orders_per_second: Number[0.01, 1000.0] = 10.0  # the account's order limit (Bybit ~10/s per endpoint)
    reads_per_second: Number[0.01, 1000.0] = 20.0
    timeout_s: Seconds[0.1, 60.0] = 10.0          # one HTTP request; past it the outcome is unknown
    recv_window_ms: Count[100, 60_000] = 5000
    ws_url: Text | None = None        # the private streams' base (ws:// or wss://); None: from api_url
    streams: bool = True             # follow the venue's private stream (adapters/ccxt/stream.py)

    def credentials(self) -> tuple[str, str]:
        """The keys, from the environment, or from the sealed memfd `posguard run` moved them to
        (adapters/keys.py). Raises MissingKey naming the variable, never a value."""
        from adapters import keys

        key, secret = keys.read(self.key_env) or "", keys.read(self.secret_env) or ""
        for env, value in ((self.key_env, key), (self.secret_env, secret)):
            if not value.strip():
                raise MissingKey(f"environment variable {env} is not set (it must hold the {self.name} API"
                                 f" {'key' if env == self.key_env else 'secret'})")
        return key.strip(), secret.strip()


def venue_symbol(text: str) -> str:
    """`BTCUSDT` or ccxt's unified `BTC/USDT:USDT` -> the venue id `BTCUSDT` (linear USDT
    perpetuals, the only markets posguard trades). Raises ValueError for anything else."""
    s = text.strip().upper()
    m = _UNIFIED.match(s)
    if m:
        base, quote, settle = m.groups()
        if quote != "USDT" or settle != "USDT":
            raise ValueError(f"{text!r}: only USDT-settled linear perpetuals are supported")
        return base + quote
    if _VENUE_FORM.match(s) and len(s) > 4:
        return s
    raise ValueError(f"{text!r} is not a symbol: write BTCUSDT or BTC/USDT:USDT")


def unified_symbol(venue_id: str) -> str:
    """`BTCUSDT` -> `BTC/USDT:USDT`."""
    return f"{venue_id.removesuffix('USDT')}/USDT:USDT"
