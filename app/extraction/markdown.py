"""Just enough markdown parsing to know which text is prose and which URLs an answer links to.

Every pass works on a copy of the text in which the spans already claimed (code, link targets,
URLs) are overwritten by `MASK` characters of the same length, so offsets never shift and a later
pass cannot find anything inside an earlier one's span.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

MASK = "\ufffc"

_FENCE_OPEN_RE = re.compile(r"^[ \t]*(?P<fence>`{3,}(?=[^`]*$)|~{3,})")
_FENCE_CLOSE_RE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*$")
_BACKTICKS_RE = re.compile(r"`+")
_LINK_RE = re.compile(
    r"\[(?P<label>[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\]"
    r"(?P<target>\(\s*+(?:<(?P<angled>[^<>\n]*)>"
    r"|(?P<bare>[^\s()<>]*+(?:\([^\s()<>]*+\)[^\s()<>]*+)*+))"
    r"(?:\s++(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*+\))"
)
_AUTOLINK_RE = re.compile(r"<(?P<url>[A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>]*)>")
_URL_CHARS = rf"[^\s<>\[\]\"`|{MASK}]"
_BARE_URL_RE = re.compile(
    rf"(?<![^\W_])https?://(?:\[[0-9A-Fa-f:.]+\]{_URL_CHARS}*|{_URL_CHARS}+)", re.IGNORECASE
)
_HTTP_RE = re.compile(r"https?://", re.IGNORECASE)
_WHITESPACE_RE = re.compile(r"\s+")


class Fence(Enum):
    OUTSIDE = "outside"
    OPENING = "opening"  # holds code, yet lays out (indents, ends lists) like any other line
    INSIDE = "inside"  # body and closing line: no markdown structure at all


@dataclass(frozen=True, slots=True)
class Line:
    start: int
    text: str  # without its line break
    fence: Fence

    @property
    def is_blank(self) -> bool:
        return not self.text.strip()


@dataclass(frozen=True, slots=True)
class LinkedUrl:
    start: int
    url: str  # as written, trailing punctuation included
    label: str | None  # a markdown link's visible text


@dataclass(frozen=True, slots=True)
class Markdown:
    prose: str  # the parsed text with code, link targets and URLs masked out, same length
    lines: tuple[Line, ...]
    urls: tuple[LinkedUrl, ...]  # http(s) URLs in order of appearance


def parse_markdown(text: str) -> Markdown:
    lines, fences = _split_lines(text)
    code = [*fences, *_inline_code_spans(text, lines)]
    masked = _mask(text, code)
    links, claimed = _find_links(text, masked)
    masked = _mask(masked, claimed)
    autolinks, claimed = _find_autolinks(masked)
    masked = _mask(masked, claimed)
    bare_urls, claimed = _find_bare_urls(masked)
    masked = _mask(masked, claimed)
    urls = sorted([*links, *autolinks, *bare_urls], key=lambda linked: linked.start)
    return Markdown(prose=masked, lines=lines, urls=tuple(urls))


def _split_lines(text: str) -> tuple[tuple[Line, ...], list[tuple[int, int]]]:
    """The lines of `text`, and the spans of its fenced code blocks (fence lines included)."""
    lines: list[Line] = []
    fences: list[tuple[int, int]] = []
    open_fence: str | None = None
    fence_start = 0
    start = 0
    for raw in text.split("\n"):
        body = raw.rstrip("\r")
        end = start + len(raw)
        if open_fence is None:
            opening = _FENCE_OPEN_RE.match(body)
            lines.append(Line(start, body, Fence.OPENING if opening else Fence.OUTSIDE))
            if opening:
                open_fence, fence_start = opening["fence"], start
        else:
            lines.append(Line(start, body, Fence.INSIDE))
            if _closes(open_fence, body):
                fences.append((fence_start, end))
                open_fence = None
        start = end + 1
    if open_fence is not None:
        fences.append((fence_start, len(text)))
    return tuple(lines), fences


def _closes(fence: str, line: str) -> bool:
    closing = _FENCE_CLOSE_RE.match(line)
    if closing is None:
        return False
    return closing["fence"][0] == fence[0] and len(closing["fence"]) >= len(fence)


def _inline_code_spans(text: str, lines: Sequence[Line]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for start, end in _paragraphs(lines):
        spans.extend((start + a, start + b) for a, b in _code_spans_in(text[start:end]))
    return spans


def _paragraphs(lines: Sequence[Line]) -> Iterable[tuple[int, int]]:
    """Runs of non-blank lines outside fences: code spans cross neither blank lines nor fences."""
    run: list[Line] = []
    for line in (*lines, None):
        if line is not None and not line.is_blank and line.fence is Fence.OUTSIDE:
            run.append(line)
        elif run:
            yield run[0].start, run[-1].start + len(run[-1].text)
            run = []


def _code_spans_in(chunk: str) -> list[tuple[int, int]]:
    """CommonMark code spans: a backtick run closed by the next run of the same length.

    Runs without a closer are literal backticks. Queues of runs per length keep this linear.
    """
    runs = [(m.start(), m.end()) for m in _BACKTICKS_RE.finditer(chunk)]
    runs_by_length: dict[int, deque[int]] = defaultdict(deque)
    for index, (start, end) in enumerate(runs):
        runs_by_length[end - start].append(index)
    spans: list[tuple[int, int]] = []
    index = 0
    while index < len(runs):
        start, end = runs[index]
        closers = runs_by_length[end - start]
        while closers and closers[0] <= index:
            closers.popleft()
        if closers:
            spans.append((start, runs[closers[0]][1]))
            index = closers[0] + 1
        else:
            index += 1
    return spans


def _find_links(text: str, masked: str) -> tuple[list[LinkedUrl], list[tuple[int, int]]]:
    """Links found in `masked` (so none inside code); labels read from `text`, code included."""
    found: list[LinkedUrl] = []
    claimed: list[tuple[int, int]] = []
    for match in _LINK_RE.finditer(masked):
        claimed.append(match.span("target"))
        group = "angled" if match["angled"] is not None else "bare"
        if _HTTP_RE.match(match[group]):
            label = _WHITESPACE_RE.sub(" ", text[slice(*match.span("label"))]).strip()
            found.append(LinkedUrl(match.start(group), match[group], label or None))
    return found, claimed


def _find_autolinks(masked: str) -> tuple[list[LinkedUrl], list[tuple[int, int]]]:
    found: list[LinkedUrl] = []
    claimed: list[tuple[int, int]] = []
    for match in _AUTOLINK_RE.finditer(masked):
        claimed.append(match.span())
        if _HTTP_RE.match(match["url"]):
            found.append(LinkedUrl(match.start("url"), match["url"], None))
    return found, claimed


def _find_bare_urls(masked: str) -> tuple[list[LinkedUrl], list[tuple[int, int]]]:
    matches = list(_BARE_URL_RE.finditer(masked))
    found = [LinkedUrl(match.start(), match.group(), None) for match in matches]
    return found, [match.span() for match in matches]


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = MASK * (end - start)
    return "".join(chars)
