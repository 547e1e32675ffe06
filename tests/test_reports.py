"""Report links and the report page, through the real API over HTTP on Postgres: who may mint
a link, what it shows, which tokens never open, and that everything from an answer or a name
is escaped."""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta
from html.parser import HTMLParser

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.context import AppContext
from app.db.models import (
    EvaluationBatch,
    Org,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
)
from app.evaluations.trends import Granularity
from app.reports import content, tokens
from app.settings import Settings
from devtools.history import seed_history
from tests.clock import OffsetClock
from tests.conftest import make_settings
from tests.factories import create_org, create_partner, expect
from tests.test_api_management import partner_client

SIGNING_KEY = SecretStr("a report signing key for these tests")


@pytest.fixture
def settings(postgres_url: str, queue_url: str, sqs_endpoint: str) -> Settings:
    return make_settings(postgres_url, queue_url, sqs_endpoint, report_signing_key=SIGNING_KEY)


def _days(end: date, count: int) -> list[date]:
    return [end - timedelta(days=i) for i in range(count - 1, -1, -1)]


def _token(url: str) -> str:
    return url.rsplit("/r/", 1)[1]


async def _page(api: httpx.AsyncClient, url: str, **params: str) -> httpx.Response:
    """The page as anyone holding the link gets it: no API key."""
    async with httpx.AsyncClient(timeout=30) as anonymous:
        return await anonymous.get(url, params=params)


class _Elements(HTMLParser):
    """Tags and their attributes, and the text outside tags, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    return parser


async def test_a_read_key_mints_a_link_that_opens_without_a_key_until_revoked(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    setup = await create_org(api, await create_partner(api), questions=3, engines=("openai",))
    await seed_history(context, setup.org_id, _days(clock.today(), 4))
    key = expect(
        await api.post(
            f"/partners/{setup.partner_id}/api-keys", json={"name": "viewer", "scopes": ["read"]}
        ),
        201,
    )["key"]
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as viewer:
        created = expect(await viewer.post(f"/orgs/{setup.org_id}/report-links"), 201)
        assert created["url"].startswith(f"{api.base_url}/r/")
        assert created["status"] == "active"
        assert created["days"] == 30
        assert created["from"] is None
        expires = date.fromisoformat(created["expires_at"][:10])
        assert expires == clock.today() + timedelta(days=30)

        page = await _page(api, created["url"])
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src" not in page.headers["content-security-policy"]
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "private, no-store"
        assert "HubSpot" in page.text

        listed = expect(await viewer.get(f"/orgs/{setup.org_id}/report-links"), 200)
        assert [item["id"] for item in listed["items"]] == [created["id"]]
        assert "url" not in listed["items"][0]
        assert listed["items"][0]["last_opened_at"] is not None

        revoked = expect(
            await viewer.post(f"/orgs/{setup.org_id}/report-links/{created['id']}/revoke"), 200
        )
        assert revoked["status"] == "revoked"
    gone = await _page(api, created["url"])
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("text/html")
    assert "Report not found" in gone.text
    audit = expect(await api.get("/audit-events", params={"resource_id": setup.org_id}), 200)
    actions = {event["action"] for event in audit["items"]}
    assert {"report_link.created", "report_link.revoked"} <= actions


async def test_tampered_foreign_and_expired_tokens_answer_404_as_a_page(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    setup = await create_org(api, await create_partner(api), questions=3, engines=("openai",))
    await seed_history(context, setup.org_id, _days(clock.today(), 2))
    created = expect(
        await api.post(f"/orgs/{setup.org_id}/report-links", json={"expires_in_days": 2}), 201
    )
    token = _token(created["url"])
    assert (await _page(api, created["url"])).status_code == 200

    body, signature = token.split(".")
    claims = tokens.verify(token, SIGNING_KEY, clock.now())
    widened = tokens.sign(
        tokens.LinkClaims(
            claims.link_id,
            claims.org_id,
            claims.date_from,
            claims.date_to,
            claims.days,
            claims.expires_at + timedelta(days=365),
        ),
        SecretStr("not the server's key"),
    )
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad in (
        f"{flipped}.{signature}",  # payload changed, signature kept
        f"{body}.{signature[:-1]}",  # signature cut short
        f"{widened.split('.')[0]}.{signature}",  # a longer expiry with the old signature
        widened,  # signed with another key
        "not-a-token",
        "a" * 600,
    ):
        response = await _page(api, f"{api.base_url}/r/{bad}")
        assert response.status_code == 404, bad
        assert "Report not found" in response.text

    clock.offset += timedelta(days=2, seconds=1)
    expired = await _page(api, created["url"])
    assert expired.status_code == 404
    listed = expect(await api.get(f"/orgs/{setup.org_id}/report-links"), 200)
    assert listed["items"][0]["status"] == "expired"


async def test_a_partner_cannot_mint_or_see_links_of_another_partners_org(
    api: httpx.AsyncClient,
) -> None:
    mine = await create_org(api, await create_partner(api), questions=1, engines=("openai",))
    theirs = await create_org(api, await create_partner(api), questions=1, engines=("openai",))
    foreign = expect(await api.post(f"/orgs/{theirs.org_id}/report-links"), 201)
    async with partner_client(api, mine.partner_id) as client:
        for response in (
            await client.post(f"/orgs/{theirs.org_id}/report-links"),
            await client.get(f"/orgs/{theirs.org_id}/report-links"),
            await client.post(f"/orgs/{theirs.org_id}/report-links/{foreign['id']}/revoke"),
            # Another org's link id under one's own org is unknown too.
            await client.post(f"/orgs/{mine.org_id}/report-links/{foreign['id']}/revoke"),
        ):
            assert response.status_code == 404, response.text
    assert (await _page(api, foreign["url"])).status_code == 200


async def test_links_refuse_bad_ranges_and_expiries_with_422(
    api: httpx.AsyncClient, clock: OffsetClock
) -> None:
    setup = await create_org(api, await create_partner(api), questions=1, engines=("openai",))
    today = clock.today()
    path = f"/orgs/{setup.org_id}/report-links"
    for body in (
        {"expires_in_days": 91},
        {"expires_in_days": 0},
        {"days": 0},
        {"days": 367},
        {"from": str(today), "days": 7},
        {"to": str(today)},
        {"from": str(today), "to": str(today - timedelta(days=1))},
        {"from": str(today - timedelta(days=400))},
        {"from": str(today), "to": str(today + timedelta(days=1))},
        {"colour": "blue"},
    ):
        response = await api.post(path, json=body)
        assert response.status_code == 422, (body, response.text)
    longest = expect(await api.post(path, json={"expires_in_days": 90}), 201)
    assert date.fromisoformat(longest["expires_at"][:10]) == today + timedelta(days=90)
    fixed = expect(await api.post(path, json={"from": str(today - timedelta(days=9))}), 201)
    assert (fixed["from"], fixed["to"], fixed["days"]) == (
        str(today - timedelta(days=9)),
        str(today),
        None,
    )


async def test_the_page_shows_a_fixed_range_and_selections_through_links(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    setup = await create_org(
        api, await create_partner(api), questions=4, engines=("openai", "anthropic")
    )
    today = clock.today()
    await seed_history(context, setup.org_id, _days(today, 10))
    start = today - timedelta(days=7)
    created = expect(
        await api.post(
            f"/orgs/{setup.org_id}/report-links",
            json={"from": str(start), "to": str(today - timedelta(days=1))},
        ),
        201,
    )
    page = await _page(api, created["url"])
    assert page.status_code == 200
    parsed = _parse(page.text)
    charts = [
        attrs for tag, attrs in parsed.tags if tag == "svg" and "trend" in (attrs["class"] or "")
    ]
    assert len(charts) == 5
    assert {c["data-periods"] for c in charts} == {"7"}
    links = [attrs["href"] for tag, attrs in parsed.tags if tag == "a" and attrs.get("href")]
    assert "?engine=anthropic" in links
    assert "?location=GB" in links

    narrowed = await _page(api, created["url"], engine="anthropic")
    assert narrowed.status_code == 200
    current = [
        a["href"] for tag, a in _parse(narrowed.text).tags if tag == "a" and a.get("aria-current")
    ]
    assert current == ["?engine=anthropic"]
    for params in (
        {"engine": "gemini"},
        {"location": "ZZ"},
        {"engine": "openai", "location": "US"},
    ):
        refused = await _page(api, created["url"], **params)
        assert refused.status_code == 422, params
        assert refused.headers["content-type"].startswith("text/html")


async def test_everything_from_an_answer_or_a_name_is_escaped(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    partner_id = await create_partner(api)
    org = expect(
        await api.post(
            "/orgs",
            json={
                "partner_id": partner_id,
                "name": 'Acme <img src=x onerror="alert(1)">',
                "aliases": ["Acme"],
                "domains": ["acme.example"],
                "competitors": ["<b>Rival</b>"],
            },
        ),
        201,
    )
    org_id = org["id"]
    questions = {"questions": ["Which tool? <script>alert('q')</script>"]}
    expect(await api.put(f"/orgs/{org_id}/questions", json=questions), 200)
    expect(await api.put(f"/orgs/{org_id}/engines", json={"engines": ["openai"]}), 200)
    expect(await api.put(f"/orgs/{org_id}/locations", json={"locations": ["US"]}), 200)

    def answer(name: str, competitor: str, mentioned: bool) -> str:
        return f"<script>alert('answer')</script> Try Acme & {competitor} \"now\"."

    await seed_history(context, org_id, _days(clock.today(), 3), answer=answer, rate=lambda _: 1)
    created = expect(await api.post(f"/orgs/{org_id}/report-links"), 201)
    page = await _page(api, created["url"])
    assert page.status_code == 200
    parsed = _parse(page.text)
    assert not [tag for tag, _ in parsed.tags if tag in ("script", "img", "b")]
    text = "".join(parsed.text)
    assert "<script>alert('answer')</script>" in text
    assert 'Acme <img src=x onerror="alert(1)">' in text
    assert "<b>Rival</b>" in text
    # The org's mention is highlighted, and nothing else is markup.
    assert re.search(r"<mark>Acme</mark> &amp; ", page.text)
    assert "Which tool? <script>alert('q')</script>" in text


async def test_a_link_is_read_and_deleted_like_any_resource(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    setup = await create_org(api, await create_partner(api), questions=3, engines=("openai",))
    await seed_history(context, setup.org_id, _days(clock.today(), 2))
    created = expect(
        await api.post(f"/orgs/{setup.org_id}/report-links", json={"label": "CMO"}), 201
    )
    path = f"/orgs/{setup.org_id}/report-links/{created['id']}"
    read = expect(await api.get(path), 200)
    assert (read["label"], read["status"], "url" in read) == ("CMO", "active", False)
    assert expect(await api.delete(path), 200)["status"] == "revoked"
    assert (await _page(api, created["url"])).status_code == 404
    assert (await api.get(f"/orgs/{setup.org_id}/report-links/{setup.org_id}")).status_code == 404


async def test_a_weekly_report_from_mid_week_counts_its_first_week(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    setup = await create_org(api, await create_partner(api), questions=3, engines=("openai",))
    today = clock.today()
    start = today - timedelta(days=20)
    while start.weekday() != 2:  # a Wednesday: the first ISO week began before the range
        start -= timedelta(days=1)
    await seed_history(context, setup.org_id, _days(today, (today - start).days + 1))
    created = expect(
        await api.post(f"/orgs/{setup.org_id}/report-links", json={"from": str(start)}), 201
    )
    page = await _page(api, created["url"], granularity="week")
    assert page.status_code == 200
    brands = page.text.split("Share of voice per brand: the numbers behind the chart")[1]
    first_row = brands.split("<tbody>")[1].split("</tr>")[0]
    assert f"week of {start.isoformat()}" in first_row
    assert "—" not in first_row, first_row
    refused = await _page(api, created["url"], granularity="month")
    assert refused.status_code == 422


async def test_brands_and_sources_count_the_answers_in_range_and_selection(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    setup = await create_org(api, await create_partner(api), questions=4)
    today = clock.today()
    await seed_history(context, setup.org_id, _days(today, 6))
    start = today - timedelta(days=3)  # the first two days are outside the range
    async with context.sessions() as session:
        org = await session.get_one(Org, uuid.UUID(setup.org_id))
        for engine in (None, "openai"):
            selection = content.Selection(engine=engine, location=None)
            report = await content.build_report(
                session, org, start, today, selection, Granularity.DAY
            )
            runs = dict(
                (
                    await session.execute(
                        select(QuestionRun.id, EvaluationBatch.batch_date)
                        .join(EvaluationBatch, EvaluationBatch.id == QuestionRun.batch_id)
                        .where(
                            EvaluationBatch.org_id == org.id,
                            EvaluationBatch.batch_date >= start,
                            QuestionRun.status == "completed",
                            QuestionRun.surface_present.is_(True),
                            *([QuestionRun.engine_id == engine] if engine else []),
                        )
                    )
                ).all()
            )
            assert runs
            cited = (
                await session.execute(
                    select(RunCitation.run_id, RunCitation.domain, RunCitation.is_org_domain).where(
                        RunCitation.run_id.in_(runs)
                    )
                )
            ).all()
            named = (
                await session.execute(
                    select(RunCompetitor.run_id, RunCompetitor.name).where(
                        RunCompetitor.run_id.in_(runs)
                    )
                )
            ).all()
            mentioned = (
                await session.scalars(
                    select(RunMention.run_id).where(
                        RunMention.run_id.in_(runs),
                        RunMention.mentioned.is_(True),
                        RunMention.negated.is_(False),
                    )
                )
            ).all()
            assert cited
            assert named
            assert mentioned
            # Sources: answers citing each domain, most first and ties by name; all of them.
            by_domain: dict[str, set[uuid.UUID]] = {}
            for run_id, domain, _own in cited:
                if domain is not None:
                    by_domain.setdefault(domain, set()).add(run_id)
            top = sorted(((d, len(r)) for d, r in by_domain.items()), key=lambda i: (-i[1], i[0]))
            assert report.domains is not None
            shown = [(r.domain, r.answers) for r in report.domains.rows]
            assert shown == top[: content.TOP_DOMAINS]
            assert report.domains.answers_with_sources == len({run for run, _, _ in cited})
            assert report.domains.own_answers == len({run for run, _, own in cited if own})
            # Brands: each day's share of the mentions of the org and its tracked competitors.
            assert report.brands is not None
            brands = report.brands.names
            assert brands[0] == org.name
            assert set(brands[1:]) <= set(org.competitors)
            for day, shares in report.brands.rows:
                counts = {org.name: sum(1 for r in mentioned if str(runs[r]) == day)}
                for brand in brands[1:]:
                    counts[brand] = sum(1 for r, n in named if n == brand and str(runs[r]) == day)
                total = sum(counts.values())
                assert shares == [f"{counts[b] / total * 100:.0f}%" for b in brands], day
