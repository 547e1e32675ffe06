"""The URLs an answer cites: the engine's own citations, then links found in its text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.extraction.domains import registrable_domain
from app.extraction.markdown import LinkedUrl

EngineCitationInput = str | tuple[str, str | None]

# Punctuation that ends a sentence or wraps a URL far more often than it ends one.
_TRAILING_PUNCTUATION = frozenset(".,:;!?'\"*_~")
_CLOSERS = {")": "(", "]": "["}


@dataclass(frozen=True, slots=True)
class Citation:
    url: str
    domain: str | None
    rank: int
    title: str | None
    source: str  # "engine" or "text"


@dataclass(frozen=True, slots=True)
class _Found:
    url: str
    title: str | None
    source: str


def collect_citations(
    engine_citations: Sequence[EngineCitationInput], text_urls: Iterable[LinkedUrl]
) -> tuple[Citation, ...]:
    """Engine citations first, then text URLs; a repeated URL keeps its first rank."""
    by_url: dict[str, _Found] = {}
    for found in (*_from_engine(engine_citations), *_from_text(text_urls)):
        kept = by_url.setdefault(found.url, found)
        if kept.title is None and found.title is not None:
            by_url[found.url] = _Found(kept.url, found.title, kept.source)
    return tuple(
        Citation(found.url, registrable_domain(found.url), rank, found.title, found.source)
        for rank, found in enumerate(by_url.values(), start=1)
    )


def clean_url(url: str) -> str:
    """Drop trailing punctuation, and closing brackets the URL never opened."""
    unopened = {
        closer: url.count(closer) - url.count(opener) for closer, opener in _CLOSERS.items()
    }
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _TRAILING_PUNCTUATION:
            end -= 1
        elif unopened.get(last, 0) > 0:
            unopened[last] -= 1
            end -= 1
        else:
            break
    return url[:end]


def _from_engine(engine_citations: Sequence[EngineCitationInput]) -> Iterable[_Found]:
    for citation in engine_citations:
        url, title = (citation, None) if isinstance(citation, str) else citation
        url = url.strip()
        if url:
            yield _Found(url, (title or "").strip() or None, "engine")


def _from_text(text_urls: Iterable[LinkedUrl]) -> Iterable[_Found]:
    for linked in text_urls:
        url = clean_url(linked.url)
        if _has_host(url):
            yield _Found(url, linked.label, "text")


def _has_host(url: str) -> bool:
    try:
        return bool(urlsplit(url).netloc)
    except ValueError:
        return False
