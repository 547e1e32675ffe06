"""The BrightData AI scrapers as data: one row per assistant, served by one engine.

Every scraper is the same trigger → progress → snapshot cycle; what differs is the dataset, the
page it starts from, the inputs it takes, the countries it serves and what its records call
their fields. Adding a scraper is adding a row (and, for the emulator, nothing more).
Field names marked unconfirmed in docs/REFERENCE are read leniently: every listed name is tried
in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from app.settings import Settings

# Markdown first (it keeps the answer's links and lists), then the plain text; some AI Mode
# examples call it `answer`.
_ANSWER_FIELDS = ("answer_text_markdown", "answer_text", "answer")
# Where a record lists its sources, best first: Copilot and Perplexity add `sources`, and a
# record without web search may still link pages in its answer.
_CITATION_FIELDS = ("citations", "sources", "links_attached")


@dataclass(frozen=True, slots=True)
class Scraper:
    engine_id: str
    assistant: str  # what a customer calls it
    dataset_id: str
    start_url: str
    takes_country: bool = True  # False: the input has no country; the run's is not applied
    extra_inputs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    unserved_countries: frozenset[str] = frozenset()
    answer_fields: tuple[str, ...] = _ANSWER_FIELDS
    citation_fields: tuple[str, ...] = _CITATION_FIELDS
    # A boolean the record sets when the assistant searched the web.
    searched_field: str | None = None
    # The assistant answers from a web search every time (Perplexity, Google's AI Mode).
    always_searches: bool = False

    def dataset(self, settings: Settings) -> str:
        return settings.brightdata_dataset_ids.get(self.engine_id, self.dataset_id)

    def unserved(self, settings: Settings) -> frozenset[str]:
        listed = settings.brightdata_unserved_countries.get(self.engine_id)
        if listed is None:
            return self.unserved_countries
        return frozenset(country.upper() for country in listed)


SCRAPERS: dict[str, Scraper] = {
    scraper.engine_id: scraper
    for scraper in (
        Scraper(
            "brightdata_chatgpt",
            "ChatGPT",
            "gd_m7aof0k82r803d5bjm",
            "https://chatgpt.com/",
            searched_field="web_search_triggered",
        ),
        Scraper(
            "brightdata_perplexity",
            "Perplexity",
            "gd_m7dhdot1vw9a7gc1n",
            "https://www.perplexity.ai",
            always_searches=True,
        ),
        Scraper(
            "brightdata_gemini",
            "Gemini",
            "gd_mbz66arm2mf9cu856y",
            "https://gemini.google.com/",
            # BrightData's published country list for this scraper lacks these.
            unserved_countries=frozenset({"ES", "IN", "JP"}),
        ),
        Scraper(
            "brightdata_copilot",
            "Microsoft Copilot",
            "gd_m7di5jy6s9geokz8w",
            "https://copilot.microsoft.com/chats",
        ),
        Scraper(
            "brightdata_ai_mode",
            "Google AI Mode",
            "gd_mcswdt6z2elth3zqr2",
            "https://google.com/aimode",
            always_searches=True,
        ),
        Scraper(
            "brightdata_grok",
            "Grok",
            "gd_m8ve0u141icu75ae74",
            "https://grok.com/",
            takes_country=False,
            extra_inputs=MappingProxyType({"web_search": True}),
            searched_field="web_search_triggered",
        ),
    )
}
