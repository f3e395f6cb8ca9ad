"""The account an emulator plays, as the venue preflight asks about it (kept apart from the
emulators so that loading a config never imports their HTTP server)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EmulatorAccount:
    hedge_mode: bool = False         # two positions per symbol (posguard needs one-way)
    read_only: bool = False          # the key cannot trade
    can_withdraw: bool = False       # the key may withdraw (posguard warns)
    halted: tuple[str, ...] = ()     # venue symbols not trading (settling, delisted)
