"""Diacritic folding that keeps track of where each folded character came from."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from app.extraction.markdown import MASK
from app.extraction.text import MappedText

# Letters whose diacritic is part of the glyph, so canonical decomposition leaves them alone;
# curly apostrophes fold too so that a possessive is recognised however it is typed.
_UNDECOMPOSABLE = str.maketrans(
    {
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ħ": "h",
        "Ħ": "H",
        "ı": "i",
        "\u2019": "'",
        "\u02bc": "'",
    }
)


@lru_cache(maxsize=4096)
def fold_char(char: str) -> str:
    if char.isascii():
        return char
    # NFD rather than NFKD: compatibility decomposition would turn `™` into letters that glue
    # onto the preceding word and break word boundaries.
    decomposed = unicodedata.normalize("NFD", char.translate(_UNDECOMPOSABLE))
    return "".join(part for part in decomposed if not unicodedata.combining(part))


def fold(text: str) -> str:
    return "".join(fold_char(char) for char in text)


def fold_prose(prose: str) -> MappedText:
    """Fold `prose`, collapsing each masked run to a single `MASK` that still separates words."""
    pieces: list[str] = []
    origin: list[int] = []
    previous_masked = False
    for index, char in enumerate(prose):
        masked = char == MASK
        if masked and previous_masked:
            continue
        previous_masked = masked
        folded = fold_char(char)
        pieces.append(folded)
        origin.extend([index] * len(folded))
    origin.append(len(prose))
    return MappedText("".join(pieces), tuple(origin))
