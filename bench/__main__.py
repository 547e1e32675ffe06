"""The benchmark: `uv run python -m bench [--quick] [scenario ...]` (or `make bench`).

Every scenario runs the real code on loopback — Postgres (BENCH_POSTGRES_URL, the machine's by
default; each scenario makes and drops a database of its own), moto's SQS server, the engine
emulator — and prints each figure beside a baseline measured in the same run, with the ratio: the
machine is shared, so ratios carry over where absolute times do not. Each scenario is bounded in
time; the default run takes four to seven minutes (nine on a slow machine), `--quick` under one (it
runs `drain` and `memory` only when they are named). `flood` (10,000 orgs triggered at once, up to
fifteen minutes) runs only when named. `drain` measures BENCH_DRAIN_WORKERS worker processes (2 by
default) against one.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from app.logging import configure_logging
from app.settings import Settings
from bench import drain, enqueue, fanout, flood, limits, memory, reads, report, trigger, worker

Scenario = Callable[[bool], Awaitable[None]]

SCENARIOS: dict[str, Scenario] = {
    "worker": worker.scenario,
    "memory": memory.scenario,
    "reads": reads.scenario,
    "enqueue": enqueue.scenario,
    "drain": drain.scenario,
    "trigger": trigger.scenario,
    "ratelimit": limits.ratelimit,
    "lanes": limits.lanes,
    "fanout": fanout.scenario,
    "report": report.scenario,
    "flood": flood.scenario,
}
# Run only when named: `flood` triggers and drains 10,000 batches, several minutes on its own.
BY_NAME = ["flood"]
# What runs unless scenarios are named: all but `flood`; with `--quick`, also not the two that
# start and fill many batches' worth of processes (run them by name, `--quick drain memory`,
# in about 40 s).
FULL = [name for name in SCENARIOS if name not in BY_NAME]
QUICK = [name for name in FULL if name not in ("drain", "memory")]
# Seconds a scenario may take before it is cut short (and the run fails); `flood` stops its
# drain by itself before its own bound, `memory` runs 520 batches past 256 orgs' caches,
# `drain` two drains of up to 120 s, each after seeding and enqueueing 1,000 orgs and 150 rounds
# of polling 50 ms apart.
SCENARIO_LIMIT = {False: 90.0, True: 40.0}
LONGER_LIMIT = {
    "flood": {False: 900.0, True: 150.0},
    "memory": {False: 150.0, True: 40.0},
    "drain": {False: 360.0, True: 60.0},
}


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller scenarios, under a minute (drain, memory and flood only when named)",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"of {', '.join(SCENARIOS)} (all but {', '.join(BY_NAME)})",
    )
    args = parser.parse_args()
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    configure_logging(Settings(log_level="WARNING"))
    chosen = args.scenarios or (QUICK if args.quick else FULL)
    if "drain" in chosen:
        try:
            drain.drain_workers()
        except ValueError as exc:
            parser.error(str(exc))
    started = time.monotonic()
    for name in chosen:
        began = time.monotonic()
        limit = LONGER_LIMIT.get(name, SCENARIO_LIMIT)[args.quick]
        await asyncio.wait_for(SCENARIOS[name](args.quick), limit)
        print(f"  ({name}: {time.monotonic() - began:.1f} s)", flush=True)
    print(f"\nbench done in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
