"""Rule-made name variations, for when no model is asked.

Conservative on purpose: a variation that matches something other than the org counts mentions
that are not there, which is worse than missing a rare spelling. Matching already covers case
in capitals, diacritics, hyphen-for-space and possessives, so no rule repeats those. The rules,
applied to the name and to each alias:

1. Without a trailing legal form (`Acme, Inc.` -> `Acme`; `Acme Pty Ltd` -> `Acme`) and without a
   leading `The` when two words or more remain (`The Home Depot` -> `Home Depot`); never shorter
   than three characters.
2. Capitalised words run together (`Acme Analytics` -> `AcmeAnalytics`), as in handles and
   hashtags.
3. `&` and `and` for each other (`Johnson & Johnson` <-> `Johnson and Johnson`).
4. The initials of three capitalised words or more (`International Business Machines` ->
   `IBM`); two-letter initials name too many other things to be used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from app.analysis.names import normalise_variations

_LEGAL_FORMS = frozenset(
    {
        "Inc", "Inc.", "Incorporated", "Ltd", "Ltd.", "Limited", "LLC", "L.L.C.", "LLP", "PLC",
        "plc", "Corp", "Corp.", "Corporation", "Co", "Co.", "Company", "GmbH", "AG", "SA", "S.A.",
        "SAS", "S.A.S.", "SARL", "SRL", "S.r.l.", "SpA", "S.p.A.", "BV", "B.V.", "NV", "N.V.",
        "Oy", "Oyj", "AB", "ASA", "ApS", "A/S", "KK", "K.K.", "Pty", "Pty.", "Pte", "Pte.",
        "Ltda", "Ltda.",
    }
)  # fmt: skip
_CONNECTIVES = frozenset({"of", "and", "&", "the", "for", "de", "la", "du", "der", "und"})
_MIN_INITIALS = 3
_MIN_LENGTH = 3


def rule_variations(name: str, aliases: Sequence[str]) -> tuple[str, ...]:
    made: list[str] = []
    for written in (name, *aliases):
        core = _without_legal_form(written.split())
        made.append(" ".join(core))
        made.extend(_joined(core))
        made.extend(_ampersand_swapped(core))
        made.extend(_initials(core))
    return normalise_variations(
        (variation for variation in made if len(variation) >= _MIN_LENGTH), name, aliases
    )


def _without_legal_form(words: list[str]) -> list[str]:
    core = list(words)
    while len(core) > 1 and core[-1] in _LEGAL_FORMS:
        core.pop()
        core[-1] = core[-1].rstrip(",")
    if len(core) > 2 and core[0] == "The":
        core.pop(0)
    return core


def _joined(words: list[str]) -> Iterable[str]:
    if len(words) > 1 and all(word.isalnum() and not word[0].islower() for word in words):
        yield "".join(words)


def _ampersand_swapped(words: list[str]) -> Iterable[str]:
    if "&" in words:
        yield " ".join("and" if word == "&" else word for word in words)
    if "and" in words:
        yield " ".join("&" if word == "and" else word for word in words)


def _initials(words: list[str]) -> Iterable[str]:
    significant = [word for word in words if word.casefold() not in _CONNECTIVES]
    if len(significant) < _MIN_INITIALS:
        return
    if all(re.fullmatch(r"[A-Z][a-z]+", word) for word in significant):
        yield "".join(word[0] for word in significant)
