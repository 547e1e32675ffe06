"""Estimates over cells with percentile-bootstrap intervals that resample questions.

A metric's estimate is the mean over (question, engine, country) cells of each cell's value (the
mean of its samples). Answers to one question are not independent — every engine and country
asked it, and one question can favour the org everywhere — so the bootstrap resamples whole
questions: each replicate draws as many questions as there are, with replacement, and takes
the mean over the cells of the questions drawn.

The interval is the *expanded* percentile interval (Hesterberg, 2015): the plain percentile
interval is too narrow for few questions, so its tail probabilities are taken where a normal
quantile equals sqrt(n / (n − 1)) · t(n − 1) instead of z; from about 30 questions on it is the
ordinary 2.5 % / 97.5 % percentile interval. Replicates come from a generator seeded from what
is measured (the batch, or the trend window), so the same data always gives the same interval.

A change verdict (`difference`, `steps`) is read from a family-wise interval — Bonferroni over
the comparisons reported together — built from the bootstrap's standard error and the expanded
t quantile, since percentiles that far out in the tails are too unsteady to test against.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from threadpoolctl import threadpool_limits

# The bootstrap's matrix products are small (2,000 replicates × the questions × the points):
# OpenBLAS's extra threads save no time on them and spin while they wait. In one API process
# switching between the two, a 90-day report cost 405 ms of CPU a request with them against
# 197 on one thread, at the same p50 (351 and 345 ms): CPU that Postgres and the other requests
# on the same cores go without. One thread for the whole process, whoever imports this.
threadpool_limits(limits=1, user_api="blas")

REPLICATES = 2000
CONFIDENCE = 0.95
MIN_QUESTIONS = 3
METHOD = (
    f"percentile bootstrap over questions ({REPLICATES} replicates, expanded for small "
    f"samples), {CONFIDENCE:.0%} interval, seeded from the batch or trend window"
)


@dataclass(frozen=True, slots=True)
class QuestionSums:
    """What one question adds to an estimate: the sum of its cells' values and their count."""

    total: float
    cells: int
    answers: int


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float | None
    interval: tuple[float, float] | None
    note: str | None  # why there is no interval
    cells: int
    answers: int
    questions: int


@dataclass(frozen=True, slots=True)
class Difference:
    value: float | None
    interval: tuple[float, float] | None
    # The interval at the family-wise level a verdict needs (see `verdict`).
    strict_interval: tuple[float, float] | None
    note: str | None


def seed_of(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def by_question(cells: Iterable[tuple[Hashable, float, int]]) -> dict[Hashable, QuestionSums]:
    """(question, cell value, answers) rows → each question's sums."""
    totals: dict[Hashable, list[float]] = {}
    for question, value, answers in cells:
        entry = totals.setdefault(question, [0.0, 0, 0])
        entry[0] += value
        entry[1] += 1
        entry[2] += answers
    return {q: QuestionSums(t, int(c), int(a)) for q, (t, c, a) in totals.items()}


def add_sums(parts: Iterable[Mapping[Hashable, QuestionSums]]) -> dict[Hashable, QuestionSums]:
    """Question sums of several samples pooled (a week of days, or every group of a batch)."""
    totals: dict[Hashable, list[float]] = {}
    for sums in parts:
        for question, part in sums.items():
            entry = totals.setdefault(question, [0.0, 0, 0])
            entry[0] += part.total
            entry[1] += part.cells
            entry[2] += part.answers
    return {q: QuestionSums(t, int(c), int(a)) for q, (t, c, a) in totals.items()}


def estimate(sums: Mapping[Hashable, QuestionSums], seed: int) -> Estimate:
    cells = sum(s.cells for s in sums.values())
    answers = sum(s.answers for s in sums.values())
    n = len(sums)
    value = mean(sums)
    if value is None:
        return Estimate(None, None, "no answers to measure", 0, 0, 0)
    if n < MIN_QUESTIONS:
        note = f"fewer than {MIN_QUESTIONS} questions with answers ({n}): no interval"
        return Estimate(_round(value), None, note, cells, answers, n)
    replicates = _replicates([sums], seed)[0]
    interval = _percentiles(replicates, n, 1 - CONFIDENCE)
    return Estimate(_round(value), interval, None, cells, answers, n)


def difference(
    current: Mapping[Hashable, QuestionSums],
    previous: Mapping[Hashable, QuestionSums],
    seed: int,
    family: int,
) -> Difference:
    """current − previous, with the questions of both windows resampled together (a question
    asked in both is one draw), and the interval a verdict is read from: Bonferroni-adjusted
    for the `family` comparisons reported beside it, so pure noise seldom reads as a change."""
    now, before = mean(current), mean(previous)
    if now is None or before is None:
        side = "current" if now is None else "previous"
        return Difference(None, None, None, f"no answers in the {side} window")
    value = now - before
    questions = set(current) | set(previous)
    if len(questions) < MIN_QUESTIONS:
        note = f"fewer than {MIN_QUESTIONS} questions with answers ({len(questions)}): no interval"
        return Difference(_round(value), None, None, note)
    replicated_now, replicated_before = _replicates(
        [current, previous], seed, questions=sorted(questions, key=str)
    )
    diffs = replicated_now - replicated_before
    diffs = diffs[~np.isnan(diffs)]
    n = len(questions)
    alpha = 1 - CONFIDENCE
    spread = float(np.std(diffs, ddof=1)) if diffs.size > 1 else None
    return Difference(
        _round(value),
        _percentiles(diffs, n, alpha),
        _strict_interval(value, spread, n, alpha / max(family, 1)),
        None,
    )


def _strict_interval(
    value: float, spread: float | None, n: int, alpha: float
) -> tuple[float, float] | None:
    """The family-wise interval a verdict is read from: value ± sqrt(n/(n−1)) · t(n−1) at
    1 − alpha/2 times the bootstrap's standard error. Not a percentile: at a Bonferroni level
    (alpha / dozens of comparisons) the percentile would sit among the two or three most
    extreme of 2,000 replicates, so noise would cross 0 far more often than alpha says; the
    standard error of 2,000 replicates is steady."""
    if spread is None:
        return None
    half = math.sqrt(n / (n - 1)) * t_quantile(1 - alpha / 2, n - 1) * spread
    return _round(value - half), _round(value + half)


def estimates(series: Sequence[Mapping[Hashable, QuestionSums]], seed: int) -> list[Estimate]:
    """`estimate` of each sample over one seed's draws — a trend's points. Samples with as
    many questions share one matrix product and one sort (an org asks the same questions every
    day), so a year of daily points costs about what a few points do."""
    by_size: dict[int, list[int]] = {}
    for index, sums in enumerate(series):
        if len(sums) >= MIN_QUESTIONS:
            by_size.setdefault(len(sums), []).append(index)
    out: list[Estimate | None] = [None] * len(series)
    for n, members in by_size.items():
        means = _means(_draws(seed, n), [series[i] for i in members], None)
        (intervals,) = _column_percentiles(means, n, 1 - CONFIDENCE)
        for index, interval in zip(members, intervals, strict=True):
            sums = series[index]
            out[index] = Estimate(
                _round(mean(sums) or 0.0),
                interval,
                None,
                sum(s.cells for s in sums.values()),
                sum(s.answers for s in sums.values()),
                n,
            )
    # Fewer questions than an interval needs, or none: `estimate` says why.
    return [e if e is not None else estimate(series[i], seed) for i, e in enumerate(out)]


def steps(series: Sequence[Mapping[Hashable, QuestionSums]], seed: int) -> list[str | None]:
    """The verdict on each sample against the one before it with answers (None for the first,
    and for one without answers), Bonferroni-adjusted over every step of the series: what
    `difference` and `verdict` say of each pair, with the draws of one seed, computed for all
    steps over as many questions at once."""
    valued = [i for i, sums in enumerate(series) if mean(sums) is not None]
    family = max(len(valued) - 1, 1)
    alpha = 1 - CONFIDENCE
    out: list[str | None] = [None] * len(series)
    by_size: dict[int, list[tuple[int, int, list[Hashable]]]] = {}
    for before, now in itertools.pairwise(valued):
        questions = sorted(set(series[now]) | set(series[before]), key=str)
        if len(questions) < MIN_QUESTIONS:
            out[now] = "within_noise"
            continue
        by_size.setdefault(len(questions), []).append((before, now, questions))
    for n, pairs in by_size.items():
        counts = _draws(seed, n)
        keys = [questions for _, _, questions in pairs]
        diffs = _means(counts, [series[now] for _, now, _ in pairs], keys) - _means(
            counts, [series[before] for before, _, _ in pairs], keys
        )
        (shown,) = _column_percentiles(diffs, n, alpha)
        finite = np.sum(~np.isnan(diffs), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            spreads = np.nanstd(diffs, axis=0, ddof=1)
        for (before, now, _), interval, spread, count in zip(
            pairs, shown, spreads, finite, strict=True
        ):
            value = (mean(series[now]) or 0.0) - (mean(series[before]) or 0.0)
            strict = _strict_interval(
                value, float(spread) if count > 1 else None, n, alpha / family
            )
            out[now] = verdict(Difference(_round(value), interval, strict, None))
    return out


def _means(
    counts: np.ndarray,
    samples: Sequence[Mapping[Hashable, QuestionSums]],
    keys: Sequence[Sequence[Hashable]] | None,
) -> np.ndarray:
    """Bootstrap means (replicates × samples): sample j's i-th question — of its own sorted
    questions, or of keys[j] — is the one the draws' column i counts (NaN where a draw held
    no cell of the sample)."""
    orders = keys if keys is not None else [sorted(s, key=str) for s in samples]
    empty = QuestionSums(0.0, 0, 0)
    totals = np.array(
        [[s.get(k, empty).total for k in order] for s, order in zip(samples, orders, strict=True)]
    )
    cells = np.array(
        [
            [float(s.get(k, empty).cells) for k in order]
            for s, order in zip(samples, orders, strict=True)
        ]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        means: np.ndarray = (counts @ totals.T) / (counts @ cells.T)
    return means


def _column_percentiles(
    replicates: np.ndarray, n: int, *alphas: float
) -> list[list[tuple[float, float] | None]]:
    """The expanded percentile interval of every column at once, at each of `alphas`, from one
    sort: linear interpolation between order statistics (as `np.quantile` does) over each
    column's finite values; None for a column with none."""
    ordered = np.sort(replicates, axis=0)  # NaN sorts last
    finite = np.sum(~np.isnan(replicates), axis=0)
    last = np.maximum(finite - 1, 0)

    def at(q: float) -> np.ndarray:
        position = q * last
        below = np.floor(position).astype(int)
        above = np.minimum(below + 1, last)
        low = np.take_along_axis(ordered, below[None, :], axis=0)[0]
        high = np.take_along_axis(ordered, above[None, :], axis=0)[0]
        found: np.ndarray = low + (high - low) * (position - below)
        return found

    out = []
    for alpha in alphas:
        tail = _expanded_tail(n, alpha)
        lows, highs = at(tail), at(1 - tail)
        out.append(
            [
                (_round(float(lo)), _round(float(hi))) if count else None
                for lo, hi, count in zip(lows, highs, finite, strict=True)
            ]
        )
    return out


def verdict(change: Difference) -> str:
    """up / down only when the family-wise interval excludes 0 — which implies the 95 %
    interval shown does too."""
    strict = change.strict_interval
    if strict is None or change.interval is None:
        return "within_noise"
    if strict[0] > 0 and change.interval[0] > 0:
        return "up"
    if strict[1] < 0 and change.interval[1] < 0:
        return "down"
    return "within_noise"


def mean(sums: Mapping[Hashable, QuestionSums]) -> float | None:
    """The mean over the cells of every question; None with no cell."""
    cells = sum(s.cells for s in sums.values())
    return sum(s.total for s in sums.values()) / cells if cells else None


def _replicates(
    samples: list[Mapping[Hashable, QuestionSums]],
    seed: int,
    questions: list[Hashable] | None = None,
) -> list[np.ndarray]:
    """Bootstrap means of each sample over the same draws of questions (NaN where a draw held
    no cell of that sample)."""
    keys = questions if questions is not None else sorted(samples[0], key=str)
    counts = _draws(seed, len(keys))
    out = []
    for sums in samples:
        totals = np.array([sums[k].total if k in sums else 0.0 for k in keys])
        cells = np.array([float(sums[k].cells) if k in sums else 0.0 for k in keys])
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((counts @ totals) / (counts @ cells))
    return out


@lru_cache(maxsize=32)
def _draws(seed: int, n: int) -> np.ndarray:
    """How often each of n questions is drawn in each replicate. Estimates that share a seed
    share their draws — a trend's points, a batch's metrics — which costs one generation for
    all of them instead of one each (drawing is most of a bootstrap's cost)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=REPLICATES).astype(np.float64)
    counts.setflags(write=False)
    return counts


def _percentiles(replicates: np.ndarray, n: int, alpha: float) -> tuple[float, float] | None:
    """The expanded percentile interval of one sample's replicates."""
    return _column_percentiles(replicates[:, None], n, alpha)[0][0]


@lru_cache(maxsize=4096)
def _expanded_tail(n: int, alpha: float) -> float:
    """The tail probability whose normal quantile is sqrt(n/(n−1)) · t_{n−1}(1 − alpha/2)."""
    z = math.sqrt(n / (n - 1)) * t_quantile(1 - alpha / 2, n - 1)
    return NormalDist().cdf(-z)


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """Student's t quantile for p in (0.5, 1), by bisection on the exact CDF."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for t ≥ 0 and integer degrees of freedom (Abramowitz & Stegun 26.7.3–4)."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        term, series = math.cos(theta), 0.0
        if df > 1:
            series = term
            for k in range(3, df - 1, 2):
                term *= cos2 * (k - 1) / k
                series += term
        inside = (2 / math.pi) * (theta + math.sin(theta) * series)
    else:
        term, series = 1.0, 1.0
        for k in range(2, df - 1, 2):
            term *= cos2 * (k - 1) / k
            series += term
        inside = math.sin(theta) * series
    return 0.5 + inside / 2


def _round(value: float) -> float:
    return round(value, 4)
