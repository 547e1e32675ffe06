"""Text whose characters remember where they came from, and HTML entity decoding."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


@dataclass(frozen=True, slots=True)
class MappedText:
    """A derived text plus, for each of its characters, the offset in the source it came from.

    `origin` has one extra trailing entry (the source length) so that the end of any span maps
    to the source as well: the source span of `text[a:b]` is `origin[a]:origin[b]`.
    """

    text: str
    origin: tuple[int, ...]

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        return self.origin[start], self.origin[end]


def decode_entities(source: str) -> MappedText:
    """Decode `&amp;`-style entities; only terminated ones, so prose like `AT&T` stays as is."""
    pieces: list[str] = []
    origin: list[int] = []
    done = 0
    for match in _ENTITY_RE.finditer(source):
        decoded = html.unescape(match.group())
        if decoded == match.group():
            continue
        pieces.append(source[done : match.start()])
        origin.extend(range(done, match.start()))
        pieces.append(decoded)
        origin.extend([match.start()] * len(decoded))
        done = match.end()
    pieces.append(source[done:])
    origin.extend(range(done, len(source) + 1))
    return MappedText("".join(pieces), tuple(origin))
