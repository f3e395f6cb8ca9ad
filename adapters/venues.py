"""The venues posguard can trade on, by name: what the config may say, and how each venue's
adapter is built inside the exchange process (imported there, and only there: ccxt is heavy)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Venue:
    name: str
    adapter: str                     # "module:Class" of its VenueAdapter
    attached_stop: bool              # a stop can travel with the entry order


VENUES: dict[str, Venue] = {
    "simulated": Venue("simulated", "adapters.sim.adapter:SimulatedAdapter", attached_stop=True),
    "bybit": Venue("bybit", "adapters.bybit.adapter:BybitAdapter", attached_stop=True),
    "binanceusdm": Venue("binanceusdm", "adapters.binance.adapter:BinanceAdapter", attached_stop=False),
}


def build(where: str, *args: Any) -> Any:
    """Import `module:Class` and make one (in the process that calls it)."""
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def adapter_factory(venue: str, settings: Any, sim_server: str | None = None) -> Callable[[], Any]:
    """A picklable callable that builds the venue's adapter where it is called (the exchange)."""
    if venue == "simulated" and sim_server is not None:
        return functools.partial(build, "adapters.sim.remote:RemoteSimAdapter", sim_server)
    return functools.partial(build, VENUES[venue].adapter, settings)
