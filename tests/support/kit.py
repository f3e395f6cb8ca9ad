"""The test kit, in one place: what tests and benchmarks share to build configs, run deployments and end them.

Importing it changes nothing (no environment variable, no process, no thread): the emulators'
keys reach the environment only through `set_test_keys()` (tests/conftest.py calls it once per
session; a benchmark calls it before its first actor system forks). Every fixture or context
manager here cleans up after itself, leaving no process, port or socket behind.

- keys: `set_test_keys`, and the keys the emulators accept
- clocks: `ManualClock`
- configs: `demo_config` (simulated venue), `bybit_config` (a real-venue config for the emulator)
- a deployment on an actor system of this process: `Deployment`, `Deployments`, `actor_system`
- `posguard` in subprocesses: `posguard`, `one_line_error`, `PosguardRun`, `running`, `Served`,
  `end_deployment`
- the simulated venue: `SimVenueThread` (in this process), `venue_truth` (one served on a socket)

Each concern is its own module (keys, configs, deployment, processes, sim_venue); this one
re-exports them, as tests use them: `from tests.support import kit` ... `kit.demo_config(...)`.
"""

from supervisor.actor_system.start import free_port
from tests.support.configs import (
    PRICES,
    bybit_config,
    default_opens,
    demo_config,
    toml_text,
    write_config,
)
from tests.support.deployment import (
    Deployment,
    Deployments,
    actor_system,
)
from tests.support.keys import (
    BAD_SECRET_ENV,
    E2E_KEY,
    E2E_KEY_ENV,
    E2E_SECRET,
    E2E_SECRET_ENV,
    KEY,
    KEY_ENV,
    SECRET,
    SECRET_ENV,
    TEST_KEYS,
    ManualClock,
    restore_env,
    set_test_keys,
)
from tests.support.processes import (
    POSGUARD,
    ROOT,
    PosguardRun,
    Served,
    end_deployment,
    one_line_error,
    posguard,
    running,
)
from tests.support.sim_venue import (
    SimVenueThread,
    venue_truth,
)

__all__ = [
    "free_port",
    "KEY",
    "SECRET",
    "KEY_ENV",
    "SECRET_ENV",
    "BAD_SECRET_ENV",
    "TEST_KEYS",
    "E2E_KEY_ENV",
    "E2E_SECRET_ENV",
    "E2E_KEY",
    "E2E_SECRET",
    "set_test_keys",
    "restore_env",
    "ManualClock",
    "PRICES",
    "toml_text",
    "default_opens",
    "write_config",
    "demo_config",
    "bybit_config",
    "Deployment",
    "Deployments",
    "actor_system",
    "ROOT",
    "POSGUARD",
    "posguard",
    "one_line_error",
    "PosguardRun",
    "end_deployment",
    "running",
    "Served",
    "venue_truth",
    "SimVenueThread",
]
