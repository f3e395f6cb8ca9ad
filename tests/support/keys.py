"""The keys the emulators accept, put into the environment only when asked (`set_test_keys`),
and a manual clock."""


from __future__ import annotations

import os

KEY, SECRET = "test-key-0123456789", "test-secret-abcdefghijklmnop"       # what the emulators accept


KEY_ENV, SECRET_ENV = "POSGUARD_TEST_BYBIT_KEY", "POSGUARD_TEST_BYBIT_SECRET"


BAD_SECRET_ENV = "POSGUARD_TEST_BYBIT_BAD_SECRET"     # a secret the emulator does not accept


TEST_KEYS = {KEY_ENV: KEY, SECRET_ENV: SECRET, BAD_SECRET_ENV: "a-wrong-secret-for-tests"}


E2E_KEY_ENV, E2E_SECRET_ENV = "PG_E2E_KEY", "PG_E2E_SECRET"        # the ones `bybit_config` names


E2E_KEY, E2E_SECRET = "PGKEY-e2e-7f3a9c", "PGSECRET-e2e-b81d44e0"


def set_test_keys() -> dict[str, str | None]:
    """Put the emulators' test keys in this process's environment. Call it before an actor system
    starts: its processes inherit the environment of the admin process, forked at start.
    Returns what the variables held before, for `restore_env`."""
    before = {name: os.environ.get(name) for name in TEST_KEYS}
    os.environ.update(TEST_KEYS)
    return before


def restore_env(before: dict[str, str | None]) -> None:
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class ManualClock:
    """A clock that moves only when told: `clock()` is now, `clock.t` may be set, `advance` adds."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
