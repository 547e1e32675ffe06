"""Worker memory over many batches: the Python heap after each batch should stay level.

Orgs of 1 run each (seeded with set-based SQL and triggered by `enqueue_all`, as in the
`flood` scenario: the API one at a time is too slow for this many) have their batches run one
after another by the worker's pipeline; after every ten, garbage is collected and the
process's memory is read. The figure is the growth per batch over the second half of the run,
beside the heap one batch uses while it runs (its peak above the level it started from).
"""

from __future__ import annotations

import gc
import resource
import sys
import tracemalloc

from bench.common import Figure, report
from bench.flood import seeded_batches
from bench.worker import run_batches


def _rss() -> int:
    """This process's resident set, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def scenario(quick: bool) -> None:
    count = 200 if quick else 520
    # The first batches fill caches that are bounded (compiled patterns of the names of the
    # last 256 orgs in app/extraction/matching.py and of their negations in
    # app/analysis/reading.py, and `re`'s own cache of 512 patterns behind them; compiled
    # statements; each connection's prepared statements): more orgs than they hold, but with
    # `--quick`.
    warm = 100 if quick else 280
    every = 10
    async with seeded_batches(count) as (context, batches):
        await run_batches(context, batches[:warm])
        gc.collect()
        tracemalloc.start()
        start, _ = tracemalloc.get_traced_memory()
        await run_batches(context, batches[warm : warm + 1])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        levels: list[tuple[int, int]] = []
        for first in range(warm + 1, count, every):
            await run_batches(context, batches[first : first + every])
            gc.collect()
            levels.append((_rss(), sys.getallocatedblocks()))
    half = len(levels) // 2
    batches_measured = (len(levels) - 1 - half) * every
    rss_growth = (levels[-1][0] - levels[half][0]) / batches_measured
    blocks_growth = (levels[-1][1] - levels[half][1]) / batches_measured
    report(
        "memory: worker heap over many batches",
        [
            Figure(
                "resident memory growth per batch (second half)",
                rss_growth / 1024,
                "KiB",
                (peak - start) / 1024,
                "heap one batch uses while it runs",
                "≈ 0",
            ),
        ],
        [
            f"{count - warm - 1} batches of 1 run (each of its own org) after "
            f"{warm + 1} to warm up; resident {levels[0][0] / 2**20:,.1f} MiB after the first "
            f"{every}, {levels[half][0] / 2**20:,.1f} MiB at half way, "
            f"{levels[-1][0] / 2**20:,.1f} MiB at the end; Python's allocated blocks "
            f"{blocks_growth:+.0f} per batch over the second half"
        ],
    )
