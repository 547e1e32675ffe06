"""The batched estimates of a trend (`stats.estimates`, `stats.steps`) say exactly what the
one-at-a-time `estimate` and `difference` say, for any mix of question sets."""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable

from threadpoolctl import threadpool_info

from app.evaluations import stats

Series = list[dict[Hashable, stats.QuestionSums]]


def _series(seed: int, days: int = 60) -> Series:
    rng = random.Random(seed)
    out: Series = []
    for day in range(days):
        if day % 17 == 5:
            out.append({})  # a day nothing was measured
            continue
        # Questions come and go (a metric defined only when the org is listed, say), and a
        # few days have fewer than an interval needs.
        asked = [q for q in range(12) if rng.random() < (0.2 if day % 23 == 7 else 0.8)]
        out.append(
            stats.by_question(
                (q, float(rng.random() < 0.5), 1) for q in asked for _ in range(rng.randint(1, 4))
            )
        )
    return out


def test_estimates_of_a_series_are_each_samples_estimate() -> None:
    for seed in range(5):
        series = _series(seed)
        assert stats.estimates(series, seed) == [stats.estimate(s, seed) for s in series]


def test_steps_are_the_verdicts_of_each_difference_from_the_sample_before() -> None:
    for seed in range(5):
        series = _series(seed)
        valued = [i for i, sums in enumerate(series) if sums]
        family = len(valued) - 1
        expected: list[str | None] = [None] * len(series)
        for before, now in itertools.pairwise(valued):
            change = stats.difference(series[now], series[before], seed, family)
            expected[now] = stats.verdict(change)
        assert stats.steps(series, seed) == expected


def _day(
    rng: random.Random, lean: dict[int, float], rate: float
) -> dict[Hashable, stats.QuestionSums]:
    """20 questions, each asked 4 times at the day's rate shifted by the question's lean."""
    return stats.by_question(
        (q, float(rng.random() < rate + lean[q]), 1) for q in range(20) for _ in range(4)
    )


def test_a_real_jump_is_marked_up() -> None:
    rng = random.Random(3)
    lean = {q: rng.uniform(-0.1, 0.1) for q in range(20)}
    series = [_day(rng, lean, 0.25) for _ in range(30)] + [_day(rng, lean, 0.75) for _ in range(30)]
    verdicts = stats.steps(series, 1)
    assert verdicts[30] == "up"
    assert verdicts.count("up") + verdicts.count("down") <= 2


def test_steady_noise_is_seldom_marked_anywhere_in_a_series() -> None:
    """Family-wise: in 40 steady series of 60 days (59 steps each) at most a few have any
    marked step at all — the Bonferroni level holds over the whole chart, not per step."""
    marked = 0
    for seed in range(40):
        rng = random.Random(seed)
        lean = {q: rng.uniform(-0.1, 0.1) for q in range(20)}
        series = [_day(rng, lean, 0.25) for _ in range(60)]
        marked += any(v in ("up", "down") for v in stats.steps(series, seed))
    assert marked <= 4


def test_the_bootstrap_products_run_on_one_blas_thread() -> None:
    # Its extra threads spin through the small products: twice the CPU for no gain in time.
    stats.estimates(_series(3), seed=1)
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas
    assert all(pool["num_threads"] == 1 for pool in blas)
