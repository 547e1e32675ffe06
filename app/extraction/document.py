"""An answer parsed once, shared by mention matching and citation collection."""

from __future__ import annotations

from dataclasses import dataclass

from app.extraction.folding import fold_prose
from app.extraction.markdown import Markdown, parse_markdown
from app.extraction.text import MappedText, decode_entities


@dataclass(frozen=True, slots=True)
class Document:
    answer: str
    decoded: MappedText  # entities decoded, mapped back to `answer`
    markdown: Markdown  # parsed from `decoded.text`; its offsets are offsets in it
    folded: MappedText  # the searchable prose, folded once for every brand matched in it


def parse_document(answer: str) -> Document:
    decoded = decode_entities(answer)
    markdown = parse_markdown(decoded.text)
    return Document(
        answer=answer, decoded=decoded, markdown=markdown, folded=fold_prose(markdown.prose)
    )
