"""The intervals' coverage on synthetic data with known truth, and their arithmetic."""

from __future__ import annotations

import random
import uuid
from collections import Counter

from app.evaluations import stats
from app.evaluations.metrics import CellValue, estimate_of

TRIALS = 480
ENGINES = 3


def _trial(rng: random.Random, questions: int, samples: int) -> tuple[float, float] | None:
    """One synthetic batch: every question has its own true rate (Beta(2, 3): mean 0.4, the
    truth); each (question, engine) cell is asked `samples` times."""
    cells = []
    for _ in range(questions):
        question = uuid.uuid4()
        rate = rng.betavariate(2, 3)
        for _ in range(ENGINES):
            shown = sum(rng.random() < rate for _ in range(samples))
            cells.append((question, CellValue(shown / samples, samples)))
    return estimate_of(cells, rng.getrandbits(63)).interval


def test_95_percent_intervals_contain_the_truth_90_to_98_percent_of_the_time() -> None:
    rng = random.Random(20261204)
    truth = 2 / 5
    hits: Counter[tuple[int, int]] = Counter()
    trials: Counter[tuple[int, int]] = Counter()
    for trial in range(TRIALS):
        questions = (5, 10, 20, 35, 50)[trial % 5]
        samples = (1, 5)[(trial // 5) % 2]
        interval = _trial(rng, questions, samples)
        assert interval is not None
        trials[(questions, samples)] += 1
        hits[(questions, samples)] += interval[0] <= truth <= interval[1]
    coverage = sum(hits.values()) / TRIALS
    assert 0.90 <= coverage <= 0.98, f"coverage {coverage:.3f}"
    for samples in (1, 5):
        part = sum(h for (_, s), h in hits.items() if s == samples)
        total = sum(t for (_, s), t in trials.items() if s == samples)
        assert 0.88 <= part / total <= 0.99, f"samples={samples}: {part / total:.3f}"


def test_fewer_than_three_questions_give_no_interval_and_say_why() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    estimate = estimate_of([(a, CellValue(1.0, 2)), (b, CellValue(0.0, 2))], seed=1)
    assert estimate.value == 0.5
    assert estimate.interval is None
    assert estimate.note == "fewer than 3 questions with answers (2): no interval"
    assert (estimate.cells, estimate.answers, estimate.questions) == (2, 4, 2)


def test_the_same_data_and_seed_give_the_same_interval() -> None:
    cells = [(uuid.UUID(int=i % 7), CellValue((i % 3) / 2, 1)) for i in range(40)]
    first = estimate_of(cells, stats.seed_of("batch", "b-1", "visibility"))
    again = estimate_of(list(reversed(cells)), stats.seed_of("batch", "b-1", "visibility"))
    assert first == again
    assert first.interval is not None


def test_a_question_is_resampled_whole() -> None:
    """Cells of one question move together: a question that favours the org everywhere
    widens the interval as one draw, not as many independent ones."""
    together = [(uuid.UUID(int=q), CellValue(float(q % 2), 1)) for q in range(10) for _ in range(9)]
    apart = [(uuid.uuid4(), CellValue(float(q % 2), 1)) for q in range(10) for _ in range(9)]
    wide, narrow = estimate_of(together, 7).interval, estimate_of(apart, 7).interval
    assert wide is not None
    assert narrow is not None
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])


def test_student_t_quantiles() -> None:
    # Tabulated two-sided 95% critical values.
    for df, expected in ((1, 12.706), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert abs(stats.t_quantile(0.975, df) - expected) < 1e-3


def test_a_change_is_a_verdict_only_when_its_interval_excludes_zero() -> None:
    questions = [uuid.uuid4() for _ in range(20)]
    before = stats.by_question((q, 0.2 + 0.01 * i, 1) for i, q in enumerate(questions))
    after = stats.by_question((q, 0.8 + 0.01 * i, 1) for i, q in enumerate(questions))
    up = stats.difference(after, before, seed=3, family=10)
    assert up.value is not None
    assert up.value > 0.5
    assert stats.verdict(up) == "up"
    down = stats.difference(before, after, seed=3, family=10)
    assert stats.verdict(down) == "down"
    same = stats.difference(before, before, seed=3, family=10)
    assert stats.verdict(same) == "within_noise"
    empty = stats.difference({}, before, seed=3, family=10)
    assert (empty.value, stats.verdict(empty)) == (None, "within_noise")
