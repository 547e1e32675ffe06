"""An offline stand-in for every AI engine: deterministic, realistic answers with no network.

Answers are markdown in the shapes real assistants produce (ranked lists, bullets, links, bare
URLs, possessives, aliases, engine-side citations) so that extraction is exercised as it would
be in production. Everything is drawn from a `random.Random` seeded by sha256 of the question,
engine and location, so a stored answer can always be reproduced byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from app.countries import COUNTRY_NAMES
from app.engines.base import (
    BrandContext,
    EngineAnswer,
    EngineCitation,
    EngineError,
    EngineRequest,
)
from app.engines.catalogue import CATALOGUE, ENGINE_IDS
from app.engines.costs import token_cost

_ORG_ABSENT_RATE = 0.25
_LATENCY_JITTER = 0.25
# Real engines bill a system prompt and chat framing on top of the question itself.
_PROMPT_OVERHEAD_TOKENS = 12
_CHARS_PER_TOKEN = 4
# A float holds 53 bits exactly: more could round a draw up to 1.0, and rate 1 must always fail.
_FAILURE_DRAW_BITS = 53
_FAILURE_DRAW_SPACE = 1 << _FAILURE_DRAW_BITS

_FALLBACK_COMPETITORS: tuple[str, ...] = (
    "Northwind Labs",
    "Contoso Systems",
    "Fabrikam Cloud",
    "Bluepeak Software",
    "Tailspin Analytics",
    "Lumen Harbor",
    "Brightline Suite",
    "Orbital Works",
)

_DESCRIPTIONS: tuple[str, ...] = (
    "a strong all-rounder with a generous free tier",
    "popular with small teams for its quick setup",
    "best known for its reporting and analytics",
    "integrates with most accounting and email tools",
    "priced competitively for growing businesses",
    "well regarded for responsive customer support",
    "flexible automation and workflow features",
    "enterprise-grade, though pricier than most",
    "a clean interface that needs little training",
    "solid mobile apps for teams on the move",
)

_DETAILS: tuple[str, ...] = (
    "Free trial: 14 days",
    "Offers EU data hosting",
    "Native integrations with common email and chat tools",
    "Per-seat pricing with annual discounts",
    "Open API and webhooks",
)

_REVIEW_SITES: tuple[tuple[str, str], ...] = (
    ("https://www.g2.com/categories/{slug}", "Best {topic} | G2"),
    ("https://www.capterra.com/{slug}-software/", "{topic} software reviews | Capterra"),
    ("https://www.trustradius.com/{slug}", "{topic}: compare top products | TrustRadius"),
)

# Subdomains under multi-label public suffixes, so that domain normalisation has work to do.
_NEWS_SITES: tuple[tuple[str, str], ...] = (
    ("https://news.techpulse.co.uk/analysis/{slug}", "The {topic} market in {country} | TechPulse"),
    ("https://markets.dailyledger.com.au/{slug}", "Who leads in {topic}? | Daily Ledger"),
    ("https://tech.businessweekly.de/ratgeber/{slug}", "{topic}: a buyer's guide | BW Tech"),
)

_SITE_PATHS: tuple[str, ...] = ("", "pricing", "features", "product/overview", "customers")

_INTROS: tuple[str, ...] = (
    "Here are some of the most recommended options for {topic} in {country}:",
    "Based on reviews and market presence in {country}, these stand out for {topic}:",
    "If you're evaluating {topic}, buyers in {country} most often shortlist the following:",
    "There is no single best choice for {topic}, but in {country} these names come up most:",
)

_ORG_CLOSINGS: tuple[str, ...] = (
    "{org}'s onboarding is often cited as the reason teams in {country} pick it.",
    "If local support matters most, {org} deserves a closer look.",
    "{org} tends to suit teams that want to get started without a consultant.",
    "Reviewers in {country} rate {org}'s value for money highly.",
)

_GENERIC_CLOSINGS: tuple[str, ...] = (
    "Most of these offer free trials, so shortlist two or three and test them with real data.",
    "Pricing and local support vary, so check which vendors have a presence in {country}.",
    "The right choice depends on your budget, team size and existing tools.",
)

_LEADING_QUESTION_WORDS = re.compile(
    r"^(?:(?:what|which|who|is|are|the|best|top|good|most|recommended|some)\s+)+", re.IGNORECASE
)
# The topic is the noun phrase before the verb: "CRM" in "Which CRM do startups use?".
_TRAILING_CLAUSE = re.compile(
    r"\s+(?:do|does|should|can|could|would|will|is|are|that|to)\s.*$", re.IGNORECASE
)
_COUNTRIES_READ_WITH_ARTICLE = frozenset(
    {"United States", "United Kingdom", "United Arab Emirates", "Netherlands"}
)


@dataclass(frozen=True, slots=True)
class _Style:
    """How one engine tends to write, so answers differ recognisably between engines."""

    model: str
    input_price_per_mtok: Decimal
    output_price_per_mtok: Decimal
    returns_citations: bool
    numbers_sources: bool
    separator: str
    bullet_rate: float
    detail_rate: float
    table_rate: float


_STYLES: dict[str, _Style] = {
    "openai": _Style(
        model="simulated-gpt-4o",
        input_price_per_mtok=Decimal("2.5"),
        output_price_per_mtok=Decimal("10"),
        returns_citations=False,
        numbers_sources=False,
        separator=" \u2013 ",
        bullet_rate=0.2,
        detail_rate=0.2,
        table_rate=0.0,
    ),
    "azure_openai": _Style(
        model="simulated-azure-gpt-4o",
        input_price_per_mtok=Decimal("2.5"),
        output_price_per_mtok=Decimal("10"),
        returns_citations=False,
        numbers_sources=False,
        separator=": ",
        bullet_rate=0.3,
        detail_rate=0.1,
        table_rate=0.0,
    ),
    "anthropic": _Style(
        model="simulated-claude-sonnet",
        input_price_per_mtok=Decimal("3"),
        output_price_per_mtok=Decimal("15"),
        returns_citations=True,
        numbers_sources=False,
        separator=" — ",
        bullet_rate=0.1,
        detail_rate=0.4,
        table_rate=0.0,
    ),
    "brightdata_chatgpt": _Style(
        model="simulated-chatgpt-web",
        input_price_per_mtok=Decimal("1.5"),
        output_price_per_mtok=Decimal("1.5"),
        returns_citations=True,
        numbers_sources=False,
        separator=" \u2013 ",
        bullet_rate=0.2,
        detail_rate=0.2,
        table_rate=0.4,
    ),
    "brightdata_perplexity": _Style(
        model="simulated-perplexity-sonar",
        input_price_per_mtok=Decimal("1"),
        output_price_per_mtok=Decimal("1"),
        returns_citations=True,
        numbers_sources=True,
        separator=": ",
        bullet_rate=0.3,
        detail_rate=0.1,
        table_rate=0.0,
    ),
    "gemini": _Style(
        model="simulated-gemini-flash",
        input_price_per_mtok=Decimal("0.5"),
        output_price_per_mtok=Decimal("3"),
        returns_citations=True,
        numbers_sources=False,
        separator=": ",
        bullet_rate=0.5,
        detail_rate=0.3,
        table_rate=0.2,
    ),
    "perplexity": _Style(
        model="simulated-perplexity-sonar-api",
        input_price_per_mtok=Decimal("1"),
        output_price_per_mtok=Decimal("1"),
        returns_citations=True,
        numbers_sources=True,
        separator=" - ",
        bullet_rate=0.2,
        detail_rate=0.2,
        table_rate=0.1,
    ),
    "brightdata_gemini": _Style(
        model="simulated-gemini-web",
        input_price_per_mtok=Decimal("1.5"),
        output_price_per_mtok=Decimal("1.5"),
        returns_citations=True,
        numbers_sources=False,
        separator=" \u2013 ",
        bullet_rate=0.4,
        detail_rate=0.3,
        table_rate=0.3,
    ),
    "brightdata_copilot": _Style(
        model="simulated-copilot-web",
        input_price_per_mtok=Decimal("1.5"),
        output_price_per_mtok=Decimal("1.5"),
        returns_citations=True,
        numbers_sources=True,
        separator=": ",
        bullet_rate=0.1,
        detail_rate=0.2,
        table_rate=0.0,
    ),
    "brightdata_ai_mode": _Style(
        model="simulated-google-ai-mode",
        input_price_per_mtok=Decimal("1.5"),
        output_price_per_mtok=Decimal("1.5"),
        returns_citations=True,
        numbers_sources=False,
        separator=" — ",
        bullet_rate=0.6,
        detail_rate=0.1,
        table_rate=0.0,
    ),
    "brightdata_grok": _Style(
        model="simulated-grok-web",
        input_price_per_mtok=Decimal("1.5"),
        output_price_per_mtok=Decimal("1.5"),
        returns_citations=True,
        numbers_sources=False,
        separator=" - ",
        bullet_rate=0.3,
        detail_rate=0.4,
        table_rate=0.1,
    ),
    "google_ai_overview": _Style(
        model="simulated-google-ai-overview",
        input_price_per_mtok=Decimal("1"),
        output_price_per_mtok=Decimal("1"),
        returns_citations=True,
        numbers_sources=False,
        separator=": ",
        bullet_rate=0.7,
        detail_rate=0.0,
        table_rate=0.0,
    ),
    "linkup": _Style(
        model="simulated-linkup-standard",
        input_price_per_mtok=Decimal("0.5"),
        output_price_per_mtok=Decimal("1.5"),
        returns_citations=True,
        numbers_sources=False,
        separator=" - ",
        bullet_rate=0.4,
        detail_rate=0.2,
        table_rate=0.0,
    ),
}


@dataclass(frozen=True, slots=True)
class _Entry:
    """One brand as it appears in an answer's ranked list."""

    name: str
    domain: str
    is_org: bool


@dataclass(frozen=True, slots=True)
class _Setting:
    """What the answer is about, phrased for running text and for URLs."""

    topic: str
    country: str
    slug: str


class SimulatedEngine:
    """Answers as engine `engine_id` would, offline, deterministically per question and place."""

    def __init__(self, engine_id: str, *, latency_ms: int, failure_rate: float) -> None:
        if engine_id not in ENGINE_IDS:
            raise ValueError(f"unknown engine id {engine_id!r}; expected one of {ENGINE_IDS}")
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        if not 0 <= failure_rate <= 1:
            raise ValueError(f"failure_rate must be within [0, 1], got {failure_rate}")
        self.engine_id = engine_id
        self.batch_size = 1
        self._style = _STYLES[engine_id]
        self._latency_ms = latency_ms
        self._failure_rate = failure_rate

    async def ask(self, request: EngineRequest) -> EngineAnswer:
        started = time.perf_counter()
        # A repeated ask draws its own answer, as a real engine's would differ.
        repeat = () if request.sample == 1 else (str(request.sample),)
        seed = _digest("answer", request.question, self.engine_id, request.location, *repeat)
        rng = random.Random(seed)
        await asyncio.sleep(_jittered_seconds(self._latency_ms, rng))
        if _draw_failure(request, self.engine_id) < self._failure_rate:
            raise EngineError("simulated transient failure", retryable=True)
        text, citations = _compose(request, self._style, rng)
        input_tokens = len(request.question) // _CHARS_PER_TOKEN + _PROMPT_OVERHEAD_TOKENS
        output_tokens = max(1, round(len(text) / _CHARS_PER_TOKEN))
        return EngineAnswer(
            text=text,
            citations=citations,
            model=self._style.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=token_cost(
                input_tokens,
                output_tokens,
                self._style.input_price_per_mtok,
                self._style.output_price_per_mtok,
            ),
            latency_ms=round((time.perf_counter() - started) * 1000),
            simulated=True,
            surface=CATALOGUE[self.engine_id].surface,
            searched=bool(citations) if self._style.returns_citations else False,
            raw={"simulated": True, "seed": seed[:16].hex(), "engine_id": self.engine_id},
        )

    async def aclose(self) -> None:
        """Nothing to release: the simulation holds no connections."""


def _digest(*parts: str) -> bytes:
    # A unit separator, which questions and codes do not contain, keeps ("ab", "c") and
    # ("a", "bc") apart.
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def _draw_failure(request: EngineRequest, engine_id: str) -> float:
    """A uniform draw in [0, 1) that changes with the attempt, so a retry can succeed."""
    seed = _digest("failure", request.question, engine_id, request.location, str(request.attempt))
    return (int.from_bytes(seed[:8], "big") >> (64 - _FAILURE_DRAW_BITS)) / _FAILURE_DRAW_SPACE


def _jittered_seconds(latency_ms: int, rng: random.Random) -> float:
    factor = 1 + rng.uniform(-_LATENCY_JITTER, _LATENCY_JITTER)
    return latency_ms * factor / 1000


def _compose(
    request: EngineRequest, style: _Style, rng: random.Random
) -> tuple[str, tuple[EngineCitation, ...]]:
    setting = _setting(request.question, request.location)
    entries = _line_up(request.brand, rng)
    citations = _citations(request.brand, entries, setting, style, rng)
    blocks = [_intro(setting, style, rng), "\n".join(_ranked_list(entries, style, citations, rng))]
    if rng.random() < style.table_rate:
        blocks.append(_table(entries))
    closing = _closing(request.brand, entries, setting, rng)
    if closing:
        blocks.append(closing)
    return "\n\n".join(blocks), citations


def _setting(question: str, location: str) -> _Setting:
    name = COUNTRY_NAMES.get(location, location)
    country = f"the {name}" if name in _COUNTRIES_READ_WITH_ARTICLE else name
    topic = _topic(question, name, location)
    return _Setting(topic=topic, country=country, slug=_slug(topic, "-"))


def _topic(question: str, country_name: str, location: str) -> str:
    topic = question.strip().rstrip("?!. ")
    topic = _TRAILING_CLAUSE.sub("", _LEADING_QUESTION_WORDS.sub("", topic))
    # The intro names the country itself; keeping the question's own "in Germany" would repeat it.
    in_country = rf"\s+in\s+(?:the\s+)?(?:{re.escape(country_name)}|{re.escape(location)})$"
    topic = re.sub(in_country, "", topic, flags=re.IGNORECASE).strip()
    return topic or question.strip()


def _slug(text: str, separator: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return separator.join(re.findall(r"[a-z0-9]+", folded)[:6])


def _brand_domain(name: str) -> str:
    # Brands styled as domains (monday.com) already are one.
    if re.fullmatch(r"[a-z0-9-]+(?:\.[a-z]{2,})+", name):
        return name
    return f"{_slug(name, '')}.com"


def _line_up(brand: BrandContext, rng: random.Random) -> list[_Entry]:
    size = rng.randint(3, 6)
    org_included = rng.random() >= _ORG_ABSENT_RATE
    rivals = _rival_names(brand, size - 1 if org_included else size, rng)
    entries = [_Entry(name, _brand_domain(name), is_org=False) for name in rivals]
    if org_included:
        entries.insert(rng.randint(0, len(entries)), _org_entry(brand, rng))
    return entries


def _rival_names(brand: BrandContext, count: int, rng: random.Random) -> list[str]:
    own_names = {n.casefold() for n in (brand.name, *brand.aliases)}
    known = [c for c in dict.fromkeys(brand.competitors) if c.casefold() not in own_names]
    invented = [c for c in _FALLBACK_COMPETITORS if c.casefold() not in own_names]
    chosen = rng.sample(known, min(count, len(known)))
    return chosen + rng.sample(invented, count - len(chosen))


def _org_entry(brand: BrandContext, rng: random.Random) -> _Entry:
    name = rng.choice(brand.aliases) if brand.aliases and rng.random() < 0.3 else brand.name
    domain = rng.choice(brand.domains) if brand.domains else _brand_domain(brand.name)
    return _Entry(name, domain, is_org=True)


def _site_url(domain: str, rng: random.Random) -> str:
    host = domain if domain.startswith("www.") else f"www.{domain}"
    return f"https://{host}/{rng.choice(_SITE_PATHS)}"


def _citations(
    brand: BrandContext,
    entries: list[_Entry],
    setting: _Setting,
    style: _Style,
    rng: random.Random,
) -> tuple[EngineCitation, ...]:
    if not style.returns_citations:
        return ()
    fields = {"slug": setting.slug, "topic": setting.topic, "country": setting.country}
    third_party = [
        EngineCitation(url.format(**fields), title.format(**fields))
        for url, title in (*_REVIEW_SITES, *_NEWS_SITES)
    ]
    third_party += [
        EngineCitation(_site_url(e.domain, rng), e.name) for e in entries if not e.is_org
    ]
    chosen = rng.sample(third_party, rng.randint(2, 4))
    if brand.domains and rng.random() < _org_citation_rate(entries):
        chosen.append(EngineCitation(_site_url(rng.choice(brand.domains), rng), brand.name))
    rng.shuffle(chosen)
    return tuple(chosen)


def _org_citation_rate(entries: list[_Entry]) -> float:
    # Engines sometimes cite a vendor's page without naming the vendor in their prose.
    return 0.6 if any(e.is_org for e in entries) else 0.15


def _intro(setting: _Setting, style: _Style, rng: random.Random) -> str:
    intro = rng.choice(_INTROS).format(topic=setting.topic, country=setting.country)
    if style.numbers_sources:
        return f"{intro.removesuffix(':')} [1]:"
    return intro


def _ranked_list(
    entries: list[_Entry],
    style: _Style,
    citations: tuple[EngineCitation, ...],
    rng: random.Random,
) -> list[str]:
    bulleted = rng.random() < style.bullet_rate
    descriptions = rng.sample(_DESCRIPTIONS, len(entries))
    lines: list[str] = []
    for index, (entry, description) in enumerate(zip(entries, descriptions, strict=True), 1):
        marker = "-" if bulleted else f"{index}."
        line = f"{marker} **{entry.name}**{style.separator}{description}"
        if rng.random() < 0.2:
            line += f" ([{entry.name}]({_site_url(entry.domain, rng)}))"
        if style.numbers_sources and citations:
            line += f" [{rng.randint(1, len(citations))}]"
        lines.append(line)
        if rng.random() < style.detail_rate:
            lines.append(f"{' ' * (len(marker) + 1)}- {rng.choice(_DETAILS)}")
    return lines


def _table(entries: list[_Entry]) -> str:
    rows = [f"| {e.name} | {e.domain} |" for e in entries[:3]]
    return "\n".join(["| Option | Website |", "| --- | --- |", *rows])


def _closing(
    brand: BrandContext, entries: list[_Entry], setting: _Setting, rng: random.Random
) -> str | None:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.6 and any(e.is_org for e in entries):
        closing = rng.choice(_ORG_CLOSINGS).format(org=brand.name, country=setting.country)
    else:
        closing = rng.choice(_GENERIC_CLOSINGS).format(country=setting.country)
    if rng.random() < 0.3:
        # Ends in a full stop on purpose: a bare URL followed by punctuation is common.
        closing += f" Independent reviews: https://www.g2.com/categories/{setting.slug}."
    return closing
