"""Seeded chaos schedules against one PositionActor on the simulated venue (manual clock).

Each schedule mixes venue faults (ambiguous timeouts after a fill, late arrivals, error
replies, rate limits, rejections, latency spikes), lost replies and actor crashes with open /
close / wait steps, and checks the promises after every step and at the end (tests/support/chaos.py).

    python bench/chaos.py --schedules 10000 --seed 0
Last line: schedules=<N> violations=<V>
"""

from __future__ import annotations

import argparse
import time

from loguru import logger

from tests.support.chaos import run_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="first schedule's seed; the rest follow")
    args = parser.parse_args()
    logger.remove()
    started = time.perf_counter()
    violations = []
    for n, seed in enumerate(range(args.seed, args.seed + args.schedules), 1):
        outcome = run_schedule(seed)
        if outcome.violation:
            violations.append(outcome)
            print(f"seed {seed}: {outcome.violation}; steps {outcome.steps}", flush=True)
        if n % 1000 == 0:
            print(f"... {n} schedules, {len(violations)} violations, {time.perf_counter() - started:.0f}s", flush=True)
    elapsed = time.perf_counter() - started
    print(f"{args.schedules} schedules in {elapsed:.1f}s ({elapsed / max(1, args.schedules) * 1000:.1f} ms each)")
    print(f"schedules={args.schedules} violations={len(violations)}")


if __name__ == "__main__":
    main()
