"""Cleaning the names an analyst returns before they are stored or matched."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from app.engines.base import storable_value
from app.extraction.folding import fold
from app.extraction.matching import NAME_SEPARATORS_RE

MAX_COMPETITORS = 20
MAX_VARIATIONS = 20
MAX_NAME_LENGTH = 200  # the width of the name columns
_MIN_VARIATION_LENGTH = 2

# Markdown emphasis, quotes and list punctuation models leave around a name.
_WRAPPING = " \t\r\n*_`\"'“”‘’.,;:()[]"


def clean_name(raw: str) -> str:
    """`  **Zoho   CRM**, ` -> `Zoho CRM`; empty when nothing name-like is left. A model's JSON
    may carry what Postgres cannot store (NUL, a lone surrogate): made storable too."""
    name = " ".join(storable_value(html.unescape(raw)).split()).strip(_WRAPPING)
    if len(name) > MAX_NAME_LENGTH or not any(char.isalnum() for char in name):
        return ""
    return name


def name_key(name: str) -> str:
    """Equal for spellings that differ only in case, diacritics or separators (`Coca-Cola`,
    `coca cola`)."""
    return " ".join(NAME_SEPARATORS_RE.split(fold(name).casefold())).strip()


def normalise_competitors(
    names: Iterable[str], org_names: Sequence[str], tracked: Sequence[str]
) -> tuple[str, ...]:
    """Cleaned, first spelling kept, tracked ones spelt as configured, the org left out, capped."""
    own = {name_key(name) for name in org_names}
    configured = {name_key(name): name for name in tracked}
    kept: dict[str, str] = {}
    for raw in names:
        name = clean_name(raw)
        key = name_key(name)
        if not name or key in own or key in kept:
            continue
        kept[key] = configured.get(key, name)
        if len(kept) == MAX_COMPETITORS:
            break
    return tuple(kept.values())


def normalise_variations(
    names: Iterable[str], name: str, aliases: Sequence[str]
) -> tuple[str, ...]:
    """Distinct spellings beyond the name and aliases themselves, capped.

    Case is kept and distinguishes spellings: extraction matches a spelling only as it is
    capitalised (or in capitals), so `Hubspot` is a different variation from `HubSpot`.
    """
    known = {" ".join(known.split()) for known in (name, *aliases)}
    kept: dict[str, None] = {}
    for raw in names:
        variation = clean_name(raw)
        if len(variation) < _MIN_VARIATION_LENGTH or variation in known:
            continue
        kept.setdefault(variation)
        if len(kept) == MAX_VARIATIONS:
            break
    return tuple(kept)
