"""Rule-based reading of an answer: competitors, sentiment and negation, without a model.

It reads answers the way the simulated engine and most assistants write them: brands lead list
items in bold or as a link (`1. **Mixpanel** – …`, `- [Heap](…): …`); tone is carried by a few
evaluative words near the org's name; "I could not find information about X" names X without
saying anything about it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.analysis.base import Sentiment
from app.analysis.names import normalise_competitors
from app.extraction.document import Document, parse_document
from app.extraction.folding import fold, fold_prose
from app.extraction.markdown import Fence
from app.extraction.matching import match_document, mentions, name_spans

_LEAD_NAME_RE = re.compile(
    r"^[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t]+"
    r"(?:\*\*(?P<bold>[^*\n]{1,120}?)\*\*|__(?P<underlined>[^_\n]{1,120}?)__"
    r"|\[(?P<linked>[^\]\n]{1,120})\]\()"
)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")

_NEGATIVE_PHRASES = (
    "not recommended", "expensive", "pricier", "pricey", "costly", "overpriced", "lacks",
    "lacking", "limited", "poor", "weak", "complaints", "outdated", "clunky", "difficult",
    "hard to", "slow", "buggy", "unreliable", "criticised", "criticized", "steep learning curve",
    "downside", "drawback", "frustrating", "avoid",
)  # fmt: skip
_POSITIVE_PHRASES = (
    "best", "leading", "leader", "strong", "popular", "recommended", "excellent", "great",
    "generous", "well regarded", "well-regarded", "highly", "reliable", "solid", "clean",
    "flexible", "stands out", "standout", "praised", "favourite", "favorite", "easy to use",
    "intuitive", "competitively", "closer look", "trusted", "powerful", "responsive",
)  # fmt: skip


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, phrases)) + r")(?![\w-])")


_NEGATIVE_RE = _phrase_pattern(_NEGATIVE_PHRASES)
_POSITIVE_RE = _phrase_pattern(_POSITIVE_PHRASES)

# `{org}` stands for any of the org's names. Each pattern covers the phrase and the name, so
# blanking its matches leaves only the mentions that say something about the org.
_NEGATIONS = (
    r"(?:could not|couldn't|cannot|can not|can't|did not|didn't|(?:was|were|am) unable to)"
    r" (?:find|locate|identify) (?:any )?(?:{qualifier} )?{topic} (?:about|on|regarding|for|of)"
    r" {subject}",
    r"(?:i'm|i am|i was) not (?:aware of|familiar with) {subject}",
    r"(?:not familiar with|unfamiliar with|no knowledge of|never heard of) {subject}",
    r"no (?:{qualifier} )?{topic} (?:is )?(?:available )?(?:about|on|regarding) {subject}",
    r"(?:do not|don't|does not|doesn't) have (?:any )?(?:{qualifier} )?{topic}"
    r" (?:about|on|regarding) {subject}",
    r"{org}(?:'s)? (?:does not|doesn't|did not|didn't|do not|don't) (?:appear|show up|feature)",
    r"{org} (?:is not|isn't|was not|wasn't) (?:mentioned|listed|included|among|one of)",
)
_QUALIFIER = r"(?:reliable|specific|public|verifiable|relevant|much|detailed|current)"
_TOPIC = r"(?:information|info|details|data|mentions?|results|evidence)"
_SUBJECT = (
    r"(?:(?:a|an|the) )?(?:(?:company|product|brand|tool|vendor|platform|service) )?"
    r"(?:(?:called|named) )?[\"']?{org}"
)


# The negating phrases match the org's names masked in the text, so they are compiled once:
# compiled with each org's names written in, they cost about 12 ms an org, and a worker sees
# most orgs once a day. The mask is private-use characters, which no name folds to.
_ORG_START, _ORG_REST = "\ue000", "\ue001"
_ORG = f"{_ORG_START}{_ORG_REST}*+"
_UNMASK = str.maketrans({_ORG_START: " ", _ORG_REST: " "})
_NEGATION_RES = tuple(
    re.compile(
        template.format(
            qualifier=_QUALIFIER, topic=_TOPIC, subject=_SUBJECT.format(org=_ORG), org=_ORG
        ),
        re.IGNORECASE,
    )
    for template in _NEGATIONS
)


@dataclass(frozen=True, slots=True)
class Reading:
    competitors: tuple[str, ...]
    sentiment: Sentiment | None
    negated: bool


def read_answer(answer: str, org_names: Sequence[str], tracked: Sequence[str]) -> Reading:
    """org_names: the name first, then every other way it is written."""
    names = tuple(org_names)
    document = parse_document(answer)
    org = match_document(names, document)
    negated = org.mentioned and _negated(answer, names)
    competitors = normalise_competitors(_named_brands(document, tracked), names, tracked)
    if not org.mentioned or negated:
        return Reading(competitors, None, negated)
    return Reading(competitors, _sentiment(document, names), negated=False)


def _named_brands(document: Document, tracked: Sequence[str]) -> list[str]:
    """List items' lead names and tracked brands found, in order of first appearance."""
    found: list[tuple[int, str]] = []
    origin = document.decoded.origin
    for line in document.markdown.lines:
        lead = _LEAD_NAME_RE.match(line.text) if line.fence is Fence.OUTSIDE else None
        if lead is not None:
            group = next(g for g in ("bold", "underlined", "linked") if lead[g] is not None)
            found.append((origin[line.start + lead.start(group)], lead[group]))
    for name in tracked:
        match = match_document((name,), document)
        if match.first_offset is not None:
            found.append((match.first_offset, name))
    return [name for _, name in sorted(found, key=lambda item: item[0])]


def _sentiment(document: Document, names: tuple[str, ...]) -> Sentiment:
    score = sum(
        _tone(sentence) for sentence, prose in _sentences(document) if mentions(names, fold(prose))
    )
    if score > 0:
        return "positive"
    return "negative" if score < 0 else "neutral"


def _sentences(document: Document) -> Iterable[tuple[str, str]]:
    """Each sentence outside code, and its prose: the same span with code and URLs masked."""
    for line in document.markdown.lines:
        if line.fence is Fence.OUTSIDE and not line.is_blank:
            text = line.text
            prose = document.markdown.prose[line.start : line.start + len(text)]
            start = 0
            for gap in _SENTENCE_END_RE.finditer(text):
                yield text[start : gap.start()], prose[start : gap.start()]
                start = gap.end()
            yield text[start:], prose[start:]


def _tone(sentence: str) -> int:
    text = fold(sentence).casefold()
    negatives = len(_NEGATIVE_RE.findall(text))
    # Blanked first, so that "not recommended" does not also count as "recommended".
    positives = len(_POSITIVE_RE.findall(_NEGATIVE_RE.sub(" ", text)))
    return positives - negatives


def _negated(answer: str, names: tuple[str, ...]) -> bool:
    """Whether no mention of the org is left once every negating phrase is blanked out."""
    folded = fold_prose(answer)
    masked = _masked(folded.text, names)
    spans = [
        folded.source_span(*match.span())
        for pattern in _NEGATION_RES
        for match in pattern.finditer(masked)
    ]
    if not spans:
        return False
    blanked = list(answer)
    for start, end in spans:
        blanked[start:end] = " " * (end - start)
    return not mentions(names, parse_document("".join(blanked)).folded.text)


def _masked(folded: str, names: tuple[str, ...]) -> str:
    """`folded` with each of the org's names replaced by the mask `_ORG` matches, to the
    same length, so that offsets into it are offsets into `folded`."""
    text = folded.translate(_UNMASK)
    # Pieces joined once: a string rebuilt per mention grew with the answer's length times its
    # mentions (seconds for a long scraped page).
    pieces: list[str] = []
    done = 0
    for start, end in name_spans(names, text):  # sorted, not overlapping
        pieces += (text[done:start], _ORG_START, _ORG_REST * (end - start - 1))
        done = end
    pieces.append(text[done:])
    return "".join(pieces)
