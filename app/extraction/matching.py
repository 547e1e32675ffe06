"""Finding and counting a brand's mentions in an answer."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from app.extraction.document import Document, parse_document
from app.extraction.folding import fold
from app.extraction.lists import item_positions

# Inside a name, one hyphen or one run of spaces (at most one line break: a soft wrap, not a new
# paragraph) stands for any separator, so `Coca Cola` = `Coca-Cola` but `Coca\n- Cola` is not.
_SEPARATOR = r"(?:[\-\u2010\u2011]|[^\S\n]*+\n[^\S\n]*+|[^\S\n]++)"
# What separates a name's words when names are compared: `Coca-Cola` = `Coca Cola`.
NAME_SEPARATORS_RE = re.compile(r"[\s\-\u2010\u2011]+")
# Boundaries are "no letter or digit" rather than `\b`, so `_Acme_` and `C++` match as written.
_NOT_AFTER_ALNUM = r"(?<![^\W_])"
# The only suffix allowed is a possessive 's: `Ramp's` matches, `Ramps` and `Ramp'd` do not.
_NO_SUFFIX = r"(?![^\W_])(?!'(?!s(?![^\W_]))[^\W_])"
SNIPPET_LENGTH = 200


@dataclass(frozen=True, slots=True)
class BrandMatch:
    mention_count: int
    list_position: int | None
    first_offset: int | None
    snippet: str | None

    @property
    def mentioned(self) -> bool:
        return self.mention_count > 0


@dataclass(frozen=True, slots=True)
class _NamePattern:
    regex: re.Pattern[str]
    key: str  # the folded name without separators, as capitalised by its owner

    def occurrences(self, text: str) -> Iterable[tuple[int, int]]:
        for match in self.regex.finditer(text):
            written = NAME_SEPARATORS_RE.sub("", match.group())
            if written == self.key or written == written.upper():
                yield match.span()


def match_brand(names: Sequence[str], answer: str) -> BrandMatch:
    """Mentions of a brand known by these names (name first, then aliases/variations)."""
    return match_document(names, parse_document(answer))


def match_document(names: Sequence[str], document: Document) -> BrandMatch:
    found = _found(names, document)
    if not found:
        return BrandMatch(0, None, None, None)
    first_start, first_end = document.decoded.source_span(*found[0])
    return BrandMatch(
        mention_count=len(found),
        list_position=_first_list_position(document, [start for start, _ in found]),
        first_offset=first_start,
        snippet=_snippet(document.answer, first_start, first_end),
    )


def mention_spans(names: Sequence[str], answer: str) -> list[tuple[int, int]]:
    """Each mention of the brand as (start, end) offsets into `answer` as given: what a page
    highlights, found as `match_brand` counts them."""
    document = parse_document(answer)
    return [document.decoded.source_span(*span) for span in _found(names, document)]


def _found(names: Sequence[str], document: Document) -> list[tuple[int, int]]:
    """The mentions' spans in the document's decoded text, leftmost-longest."""
    folded = document.folded
    patterns = _compile(tuple(names))
    candidates = [span for pattern in patterns for span in pattern.occurrences(folded.text)]
    return [folded.source_span(start, end) for start, end in _non_overlapping(candidates)]


def mentions(names: Sequence[str], folded: str) -> bool:
    """Whether `folded` (text already `fold`ed, as `Document.folded` is) names the brand: what
    `match_document(...).mentioned` says of a document whose folded prose it is."""
    for pattern in _compile(tuple(names)):
        for _ in pattern.occurrences(folded):
            return True
    return False


def name_spans(names: Sequence[str], folded: str) -> list[tuple[int, int]]:
    """Where any of `names` is written in `folded` in any capitalisation (what a phrase about
    the brand may name it as), leftmost-longest: an alias inside a longer name is not apart."""
    return _non_overlapping(
        match.span()
        for pattern in _compile(tuple(names))
        for match in pattern.regex.finditer(folded)
    )


# The names of the orgs a worker has in flight and of their competitors, with room to spare;
# bounded low so that a worker's heap levels off after a few dozen orgs, not a thousand.
@lru_cache(maxsize=256)
def _compile(names: tuple[str, ...]) -> tuple[_NamePattern, ...]:
    return tuple(
        _NamePattern(re.compile(_regex_source(tokens), re.IGNORECASE), "".join(tokens))
        for tokens in _token_sets(names)
    )


def _token_sets(names: Iterable[str]) -> list[tuple[str, ...]]:
    """Each name's folded words, once per distinct spelling, skipping names without any."""
    token_sets: dict[tuple[str, ...], None] = {}
    for name in names:
        tokens = tuple(token for token in NAME_SEPARATORS_RE.split(fold(name)) if token)
        if tokens:
            token_sets.setdefault(tokens)
    return list(token_sets)


def _regex_source(tokens: Sequence[str]) -> str:
    return _NOT_AFTER_ALNUM + _SEPARATOR.join(map(re.escape, tokens)) + _NO_SUFFIX


def _non_overlapping(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Leftmost-longest: an alias inside a longer name's match is part of that one mention."""
    chosen: list[tuple[int, int]] = []
    for start, end in sorted(spans, key=lambda span: (span[0], -span[1])):
        if not chosen or start >= chosen[-1][1]:
            chosen.append((start, end))
    return chosen


def _first_list_position(document: Document, mention_starts: Iterable[int]) -> int | None:
    lines = document.markdown.lines
    line_starts = [line.start for line in lines]
    positions = item_positions(lines)
    for start in mention_starts:
        position = positions[bisect_right(line_starts, start) - 1]
        if position is not None:
            return position
    return None


def _snippet(answer: str, start: int, end: int) -> str:
    """About `SNIPPET_LENGTH` characters of the answer centred on the mention."""
    context = max(0, SNIPPET_LENGTH - (end - start))
    window_start = max(0, start - context // 2)
    window_end = end + context - (start - window_start)
    return " ".join(answer[window_start:window_end].split())
