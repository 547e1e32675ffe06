from __future__ import annotations

import pytest

from app.countries import COUNTRY_NAMES, ISO_3166_ALPHA2, normalise_country


def test_lists_every_officially_assigned_code() -> None:
    assert len(ISO_3166_ALPHA2) == 249
    assert all(len(code) == 2 and code.isalpha() and code.isupper() for code in ISO_3166_ALPHA2)


@pytest.mark.parametrize("code", ["AX", "BQ", "CW", "SS", "SX", "XK", "EU", "UK", "AN", "YU"])
def test_contains_current_codes_and_no_reserved_or_withdrawn_ones(code: str) -> None:
    assigned = {"AX", "BQ", "CW", "SS", "SX"}
    assert (code in ISO_3166_ALPHA2) == (code in assigned)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("DE", "DE"), ("de", "DE"), (" Us ", "US"), ("gB\n", "GB"), ("zw", "ZW")],
)
def test_normalise_accepts_known_codes_case_insensitively(raw: str, expected: str) -> None:
    assert normalise_country(raw) == expected


@pytest.mark.parametrize("raw", ["XX", "UK", "USA", "", "  ", "D", "EU", "U S"])
def test_normalise_rejects_anything_else(raw: str) -> None:
    with pytest.raises(ValueError, match="is not an ISO 3166-1 alpha-2 country code") as caught:
        normalise_country(raw)
    assert f"'{raw}'" in str(caught.value)


def test_country_names_cover_common_markets_with_valid_codes() -> None:
    assert len(COUNTRY_NAMES) >= 35
    assert set(COUNTRY_NAMES) <= ISO_3166_ALPHA2
    assert COUNTRY_NAMES["DE"] == "Germany"
    assert COUNTRY_NAMES["GB"] == "United Kingdom"
