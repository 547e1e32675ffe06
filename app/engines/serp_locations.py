"""The countries the SERP API is asked from: DataForSEO's location code and a language each.

DataForSEO's country-level location codes are 2000 + the ISO 3166-1 numeric code (2276
Germany, 2840 United States), as its locations endpoint lists them. Only countries where
Google serves AI Overviews in the listed language are here; any other is refused when an
org's locations are set, so a run never asks for a page that cannot exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SerpLocation:
    location_code: int
    language_code: str


# fmt: off
SERP_LOCATIONS: dict[str, SerpLocation] = {
    country: SerpLocation(2000 + numeric, language)
    for country, numeric, language in (
        ("AE", 784, "en"), ("AR", 32, "es"), ("AT", 40, "de"), ("AU", 36, "en"),
        ("BE", 56, "nl"), ("BR", 76, "pt"), ("CA", 124, "en"), ("CH", 756, "de"),
        ("CL", 152, "es"), ("CO", 170, "es"), ("CZ", 203, "cs"), ("DE", 276, "de"),
        ("DK", 208, "da"), ("ES", 724, "es"), ("FI", 246, "fi"), ("FR", 250, "fr"),
        ("GB", 826, "en"), ("GR", 300, "el"), ("HK", 344, "zh-TW"), ("HU", 348, "hu"),
        ("ID", 360, "id"), ("IE", 372, "en"), ("IL", 376, "he"), ("IN", 356, "en"),
        ("IT", 380, "it"), ("JP", 392, "ja"), ("KR", 410, "ko"), ("MX", 484, "es"),
        ("MY", 458, "en"), ("NG", 566, "en"), ("NL", 528, "nl"), ("NO", 578, "no"),
        ("NZ", 554, "en"), ("PE", 604, "es"), ("PH", 608, "en"), ("PL", 616, "pl"),
        ("PT", 620, "pt"), ("RO", 642, "ro"), ("SA", 682, "ar"), ("SE", 752, "sv"),
        ("SG", 702, "en"), ("TH", 764, "th"), ("TR", 792, "tr"), ("TW", 158, "zh-TW"),
        ("US", 840, "en"), ("VN", 704, "vi"), ("ZA", 710, "en"),
    )
}
# fmt: on
