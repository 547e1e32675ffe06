"""Trends and change verdicts over seeded cell rows, through the HTTP API on Postgres."""

from __future__ import annotations

import csv
import io
import random
import uuid
from datetime import date, timedelta
from decimal import Decimal

import httpx

from app.context import AppContext
from app.db.models import BatchStatus, CellMetric, EvaluationBatch
from tests.clock import OffsetClock
from tests.factories import create_org, create_partner, expect
from tests.test_api_management import partner_client

QUESTIONS = 20
ENGINES = ("openai", "anthropic")
LOCATIONS = ("US",)


async def _seed(
    context: AppContext,
    org_id: str,
    days: dict[date, float],
    *,
    seed: int,
    status: BatchStatus = BatchStatus.COMPLETED,
) -> None:
    """One batch a day; each (question, engine, country) cell asked twice, shown at the day's
    rate — every question with its own lean, as real questions have."""
    rng = random.Random(seed)
    questions = [uuid.UUID(int=seed * 1000 + q) for q in range(QUESTIONS)]
    lean = {q: rng.uniform(-0.15, 0.15) for q in questions}
    async with context.sessions() as session:
        for day, rate in days.items():
            batch = EvaluationBatch(
                org_id=uuid.UUID(org_id),
                batch_date=day,
                status=status,
                price_per_run=Decimal("0.05"),
            )
            session.add(batch)
            await session.flush()
            for question in questions:
                for engine in ENGINES:
                    for location in LOCATIONS:
                        p = min(1.0, max(0.0, rate + lean[question]))
                        shown = sum(rng.random() < p for _ in range(2))
                        session.add(
                            CellMetric(
                                batch_id=batch.id,
                                question_id=question,
                                engine_id=engine,
                                location=location,
                                metric="visibility",
                                org_id=uuid.UUID(org_id),
                                batch_date=day,
                                value=shown / 2,
                                answers=2,
                            )
                        )
        await session.commit()


def _days(end: date, count: int, rate: float) -> dict[date, float]:
    return {end - timedelta(days=i): rate for i in range(count)}


async def _org(api: httpx.AsyncClient) -> tuple[str, str]:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, questions=1, engines=("openai",))
    return partner_id, setup.org_id


async def test_a_real_shift_is_up_and_noise_is_within_noise(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    today = clock.today()
    _, shifted = await _org(api)
    # The last 7 days at 70%, the 7 before at 30%.
    await _seed(
        context, shifted, _days(today, 7, 0.7) | _days(today - timedelta(7), 7, 0.3), seed=1
    )
    changes = expect(await api.get(f"/orgs/{shifted}/changes", params={"window": 7}), 200)
    assert changes["current"] == {"start": str(today - timedelta(6)), "end": str(today)}
    assert changes["previous"]["end"] == str(today - timedelta(7))
    visibility = changes["metrics"]["visibility"]
    overall = visibility["overall"]
    assert overall["verdict"] == "up", overall
    assert 0.3 < overall["difference"] < 0.5
    low, high = overall["interval"]
    assert 0 < low <= overall["difference"] <= high
    assert overall["current_cells"] == overall["previous_cells"] == 7 * QUESTIONS * 2
    assert set(visibility["by_engine"]) == set(ENGINES)
    assert all(c["verdict"] == "up" for c in visibility["by_engine"].values())
    assert visibility["by_location"]["US"]["verdict"] == "up"
    # Metrics nobody measured: no difference, never a verdict.
    citation = changes["metrics"]["citation_rate"]["overall"]
    assert (citation["difference"], citation["verdict"]) == (None, "within_noise")

    # The same rate throughout, many times over: noise is never called a change.
    for seed in range(2, 12):
        _, steady = await _org(api)
        await _seed(context, steady, _days(today, 14, 0.5), seed=seed)
        noise = expect(await api.get(f"/orgs/{steady}/changes"), 200)
        for scope in (
            noise["metrics"]["visibility"]["overall"],
            *noise["metrics"]["visibility"]["by_engine"].values(),
        ):
            assert scope["verdict"] == "within_noise", scope


async def test_a_verdict_never_contradicts_its_interval(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    today = clock.today()
    _, org_id = await _org(api)
    await _seed(
        context, org_id, _days(today, 3, 0.55) | _days(today - timedelta(3), 3, 0.45), seed=40
    )
    changes = expect(await api.get(f"/orgs/{org_id}/changes", params={"window": 3}), 200)
    for metric in changes["metrics"].values():
        for change in (
            metric["overall"],
            *metric["by_engine"].values(),
            *metric["by_location"].values(),
        ):
            if change["verdict"] != "within_noise":
                low, high = change["interval"]
                assert not low <= 0 <= high, change
    assert changes["comparisons"] == 6 * (1 + len(ENGINES) + len(LOCATIONS))


async def test_a_trend_has_a_point_per_period_with_its_interval(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    today = clock.today()
    _, org_id = await _org(api)
    days = {today - timedelta(days=i): 0.2 + 0.05 * i for i in range(10) if i != 4}
    await _seed(context, org_id, days, seed=60)
    # A failed batch's cells are not part of any trend.
    await _seed(
        context, org_id, {today - timedelta(days=4): 1.0}, seed=61, status=BatchStatus.FAILED
    )

    start = today - timedelta(days=9)
    trend = expect(
        await api.get(
            f"/orgs/{org_id}/trends",
            params={"metric": "visibility", "from": str(start), "to": str(today)},
        ),
        200,
    )
    points = trend["points"]
    assert [p["period"]["start"] for p in points] == [str(start + timedelta(i)) for i in range(10)]
    gap = points[5]
    assert gap["period"]["start"] == str(today - timedelta(days=4))
    assert (gap["value"], gap["interval"], gap["cells"]) == (None, None, 0)
    for point in points[:5] + points[6:]:
        assert point["cells"] == QUESTIONS * len(ENGINES)
        assert point["answers"] == 2 * point["cells"]
        low, high = point["interval"]
        assert low <= point["value"] <= high
    # Falling towards today, as seeded.
    assert points[0]["value"] > points[-1]["value"]
    assert trend["methodology"]["questions"] == QUESTIONS

    only = expect(
        await api.get(
            f"/orgs/{org_id}/trends",
            params={"metric": "visibility", "from": str(start), "engine": "anthropic"},
        ),
        200,
    )
    assert all(p["cells"] in (0, QUESTIONS) for p in only["points"])

    weekly = expect(
        await api.get(
            f"/orgs/{org_id}/trends",
            params={"metric": "visibility", "from": str(start), "granularity": "week"},
        ),
        200,
    )
    assert sum(p["cells"] for p in weekly["points"]) == 9 * QUESTIONS * len(ENGINES)
    assert all(
        date.fromisoformat(p["period"]["start"]).weekday() == 0 or p is weekly["points"][0]
        for p in weekly["points"]
    )

    exported = await api.get(
        f"/orgs/{org_id}/trends.csv", params={"metric": "visibility", "from": str(start)}
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == len(points)
    for row, point in zip(rows, points, strict=True):
        assert row["period_start"] == point["period"]["start"]
        assert row["value"] == ("" if point["value"] is None else str(point["value"]))
        assert row["cells"] == str(point["cells"])
        if point["interval"] is not None:
            assert (float(row["low"]), float(row["high"])) == tuple(point["interval"])


async def test_trends_are_scoped_and_validated(api: httpx.AsyncClient, context: AppContext) -> None:
    partner_id, org_id = await _org(api)
    other_partner, _ = await _org(api)
    async with partner_client(api, other_partner) as other:
        for path in (
            f"/orgs/{org_id}/trends?metric=visibility",
            f"/orgs/{org_id}/trends.csv",
            f"/orgs/{org_id}/changes",
        ):
            assert (await other.get(path)).status_code == 404, path
    async with partner_client(api, partner_id) as own:
        assert (await own.get(f"/orgs/{org_id}/trends?metric=visibility")).status_code == 200
    for params in (
        {"metric": "nonsense"},
        {"metric": "visibility", "granularity": "month"},
        {"metric": "visibility", "from": "2026-02-01", "to": "2026-01-01"},
        {"metric": "visibility", "from": "2020-01-01", "to": "2026-01-01"},
    ):
        response = await api.get(f"/orgs/{org_id}/trends", params=params)
        assert response.status_code == 422, (params, response.text)
    assert (await api.get(f"/orgs/{org_id}/changes", params={"window": 0})).status_code == 422
    assert (await api.get(f"/orgs/{org_id}/trends")).status_code == 422
