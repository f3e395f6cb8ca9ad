"""A bounded run of the seeded chaos schedules (bench/chaos.py runs any number)."""

from __future__ import annotations

from tests.chaos import run_schedule

SCHEDULES = 200


def test_chaos_schedules_keep_every_promise():
    failures = [o for o in (run_schedule(seed) for seed in range(SCHEDULES)) if o.violation]
    assert not failures, "\n".join(f"seed {o.seed}: {o.violation}; steps {o.steps}" for o in failures[:5])
