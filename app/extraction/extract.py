"""All deterministic facts about one org in one answer (see EXTRACTION.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.extraction.citations import Citation, EngineCitationInput, collect_citations
from app.extraction.document import Document, parse_document
from app.extraction.domains import registrable_domain
from app.extraction.matching import BrandMatch, match_document


@dataclass(frozen=True, slots=True)
class OrgProfile:
    name: str
    aliases: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Extraction:
    mentioned: bool
    mention_count: int
    list_position: int | None
    first_offset: int | None
    snippet: str | None
    citations: tuple[Citation, ...]
    cited_domains: tuple[str, ...]
    org_cited: bool
    # The answer as parsed, for whatever else is matched in it; not one of the facts.
    document: Document = field(repr=False, compare=False)
    competitors: tuple[tuple[str, BrandMatch], ...] = ()  # the tracked ones the answer names

    def facts(self) -> dict[str, object]:
        """The spec's JSON shape."""
        return {
            "mentioned": self.mentioned,
            "mention_count": self.mention_count,
            "list_position": self.list_position,
            "cited_domains": list(self.cited_domains),
            "org_cited": self.org_cited,
        }


def extract(
    org: OrgProfile,
    answer: str,
    engine_citations: Sequence[EngineCitationInput] = (),
    variations: Sequence[str] = (),
    competitors: Sequence[str] = (),
) -> Extraction:
    """engine_citations: URLs, or (url, title) pairs. variations: matched like aliases.
    competitors: tracked brand names, each matched on the same parsed answer."""
    document = parse_document(answer)
    brand = match_document((org.name, *org.aliases, *variations), document)
    named = tuple(
        (name, found)
        for name in competitors
        if (found := match_document((name,), document)).mentioned
    )
    citations = collect_citations(engine_citations, document.markdown.urls)
    cited_domains = sorted({c.domain for c in citations if c.domain is not None})
    org_domains = {registrable_domain(domain) for domain in org.domains} - {None}
    return Extraction(
        mentioned=brand.mentioned,
        mention_count=brand.mention_count,
        list_position=brand.list_position,
        first_offset=brand.first_offset,
        snippet=brand.snippet,
        citations=citations,
        cited_domains=tuple(cited_domains),
        org_cited=not org_domains.isdisjoint(cited_domains),
        document=document,
        competitors=named,
    )
