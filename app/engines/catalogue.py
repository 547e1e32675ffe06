"""Every engine id an org can be given: who answers, on which surface, from which countries,
what must be set to use it and how it is priced. GET /engines serves this table."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from app.engines.base import Surface
from app.engines.scrapers import SCRAPERS
from app.engines.serp_locations import SERP_LOCATIONS
from app.settings import Settings

_BRIGHTDATA_PRICE = "per snapshot record (BRIGHTDATA_PRICE_PER_RECORD)"


@dataclass(frozen=True, slots=True)
class EngineSpec:
    id: str
    provider: str  # whose API is called
    assistant: str  # what the answers are of
    surface: Surface
    takes_country: bool  # False: the run's country is recorded, not sent
    price_basis: str
    credentials: tuple[str, ...]  # settings (environment variables) that must be set

    def configured(self, settings: Settings) -> bool:
        return all(_is_set(getattr(settings, name.lower())) for name in self.credentials)

    def served_countries(self) -> frozenset[str] | None:
        """The only countries it can be asked from; None when any is fine."""
        return frozenset(SERP_LOCATIONS) if self.id == "google_ai_overview" else None

    def unserved_countries(self, settings: Settings) -> frozenset[str]:
        scraper = SCRAPERS.get(self.id)
        return scraper.unserved(settings) if scraper is not None else frozenset()

    def refuses(self, country: str, settings: Settings) -> bool:
        served = self.served_countries()
        return country in self.unserved_countries(settings) or (
            served is not None and country not in served
        )


def _is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


def _scraper(engine_id: str) -> EngineSpec:
    scraper = SCRAPERS[engine_id]
    return EngineSpec(
        engine_id,
        "brightdata",
        scraper.assistant,
        "scraped_ui",
        scraper.takes_country,
        _BRIGHTDATA_PRICE,
        ("BRIGHTDATA_API_KEY",),
    )


CATALOGUE: dict[str, EngineSpec] = {
    spec.id: spec
    for spec in (
        EngineSpec(
            "openai",
            "openai",
            "OpenAI (search model)",
            "api",
            True,
            "per million input and output tokens",
            ("OPENAI_API_KEY",),
        ),
        EngineSpec(
            "azure_openai",
            "azure_openai",
            "Azure OpenAI",
            "api",
            False,
            "per million input and output tokens",
            ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"),
        ),
        EngineSpec(
            "anthropic",
            "anthropic",
            "Claude",
            "api",
            True,
            "per million input and output tokens, plus per web search",
            ("ANTHROPIC_API_KEY",),
        ),
        _scraper("brightdata_chatgpt"),
        _scraper("brightdata_perplexity"),
        EngineSpec(
            "linkup",
            "linkup",
            "Linkup",
            "api",
            False,
            "per search request (LINKUP_PRICE_PER_REQUEST)",
            ("LINKUP_API_KEY",),
        ),
        EngineSpec(
            "gemini",
            "gemini",
            "Gemini (API, Google Search grounding)",
            "api",
            # The Developer API's Search grounding takes no location: recorded, not applied.
            False,
            "per million input and output tokens (thinking included), plus the grounding fee "
            "per search query or per grounded prompt",
            ("GEMINI_API_KEY",),
        ),
        EngineSpec(
            "perplexity",
            "perplexity",
            "Perplexity (Agent API)",
            "api",
            True,
            "the cost Perplexity reports for each response",
            ("PERPLEXITY_API_KEY",),
        ),
        _scraper("brightdata_gemini"),
        _scraper("brightdata_copilot"),
        _scraper("brightdata_ai_mode"),
        _scraper("brightdata_grok"),
        EngineSpec(
            "google_ai_overview",
            "dataforseo",
            "Google AI Overviews",
            "serp",
            True,
            "the cost DataForSEO reports for each results page",
            ("DATAFORSEO_LOGIN", "DATAFORSEO_PASSWORD"),
        ),
    )
}
ENGINE_IDS: tuple[str, ...] = tuple(CATALOGUE)


def enabled_engine_ids(settings: Settings) -> tuple[str, ...]:
    """ENABLED_ENGINES in catalogue order, or every engine when it is empty."""
    listed = [name.strip() for name in settings.enabled_engines.split(",") if name.strip()]
    if not listed:
        return ENGINE_IDS
    unknown = sorted(set(listed) - set(CATALOGUE))
    if unknown:
        raise ValueError(
            f"ENABLED_ENGINES names unknown engines: {', '.join(unknown)}; "
            f"known: {', '.join(ENGINE_IDS)}"
        )
    return tuple(engine_id for engine_id in ENGINE_IDS if engine_id in listed)


def check_engine_settings(settings: Settings) -> tuple[str, ...]:
    """The enabled engine ids; ValueError when ENABLED_ENGINES names an unknown engine, or
    lists one without credentials in a process that must call it (ENGINE_MODE=real)."""
    enabled = enabled_engine_ids(settings)
    if settings.engine_mode == "real" and settings.enabled_engines.strip():
        unconfigured = [e for e in enabled if not CATALOGUE[e].configured(settings)]
        if unconfigured:
            needs = "; ".join(
                f"{e}: set {' and '.join(CATALOGUE[e].credentials)}" for e in unconfigured
            )
            raise ValueError(f"ENABLED_ENGINES lists engines without credentials ({needs})")
    return enabled
