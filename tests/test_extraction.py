"""Deterministic extraction: the worked examples of EXTRACTION.md plus one case per rule."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app.extraction import (
    BrandMatch,
    Citation,
    OrgProfile,
    extract,
    match_brand,
    registrable_domain,
)
from app.extraction import domains as domains_module
from app.extraction.citations import EngineCitationInput
from app.extraction.document import parse_document
from app.extraction.matching import mentions

CASES_PATH = Path(__file__).parent / "data" / "extraction_cases.jsonl"


def _load_cases() -> list[dict[str, Any]]:
    with CASES_PATH.open(encoding="utf-8") as cases:
        return [json.loads(line) for line in cases if line.strip()]


@pytest.mark.parametrize("case", _load_cases(), ids=lambda case: str(case["id"]))
def test_worked_example(case: dict[str, Any]) -> None:
    org = OrgProfile(
        name=case["org"]["name"],
        aliases=tuple(case["org"]["aliases"]),
        domains=tuple(case["org"]["domains"]),
    )
    assert extract(org, case["answer"], case["citations"]).facts() == case["expect"]


def count(answer: str, *names: str) -> int:
    return match_brand(names, answer).mention_count


def position(answer: str, *names: str) -> int | None:
    return match_brand(names, answer).list_position


def citations(answer: str, engine: Sequence[EngineCitationInput] = ()) -> tuple[Citation, ...]:
    return extract(OrgProfile("Nobody"), answer, engine).citations


def cited_urls(answer: str) -> list[str]:
    return [citation.url for citation in citations(answer)]


# Rule 1: what is searched.


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param("```\nAcme install\n```\nNothing else.", 0, id="backtick-fence"),
        pytest.param("~~~python\nAcme()\n~~~\n", 0, id="tilde-fence"),
        pytest.param("````\n```\nAcme\n```\n````\nAcme", 1, id="longer-fence-wraps-shorter"),
        pytest.param("Intro\n```\nAcme never closed", 0, id="unclosed-fence-runs-to-end"),
        pytest.param("1. Setup:\n   ```\n   Acme\n   ```\n2. Acme", 1, id="fence-in-list-item"),
        pytest.param("Run `Acme --help` first.", 0, id="inline-code"),
        pytest.param("Run ``Acme ` x`` first.", 0, id="double-backtick-code"),
        pytest.param("A lone ` backtick, then Acme.", 1, id="unclosed-backtick-is-literal"),
        pytest.param("`start\n\nAcme`", 1, id="code-span-never-crosses-blank-line"),
        pytest.param("A ``` and Acme\n```\ncode\n```", 1, id="code-span-never-crosses-fence"),
        pytest.param("Acme`code`", 1, id="mention-next-to-code"),
        pytest.param("See [the Acme docs](https://example.com/x).", 1, id="link-text-searched"),
        pytest.param("See [docs](https://example.com/Acme).", 0, id="link-target-not-searched"),
        pytest.param("See [guide](/Acme/guide).", 0, id="relative-link-target"),
        pytest.param("See https://example.com/Acme/ now.", 0, id="bare-url-not-searched"),
        pytest.param("See <https://example.com/Acme>.", 0, id="autolink-not-searched"),
        pytest.param("See [https://example.com/Acme](https://x.org).", 0, id="url-as-link-text"),
        pytest.param("Visit Acme.com/pricing today.", 1, id="bare-domain-is-text"),
    ],
)
def test_what_is_searched(answer: str, expected: int) -> None:
    assert count(answer, "Acme") == expected


def test_html_entities_are_decoded_first() -> None:
    assert count("Carriers: AT&amp;T and Verizon.", "AT&T") == 1
    assert count("Nestl&eacute; and Nestl&#233; and Nestl&#xE9;", "Nestlé") == 3
    assert count("AT&T stays AT&T without entities", "AT&T") == 2


def test_offsets_refer_to_the_original_answer() -> None:
    answer = "&lt;b&gt; and &amp; then Acme"
    match = match_brand(["Acme"], answer)
    assert match.first_offset == answer.index("Acme")
    assert match.snippet == answer


def test_url_inside_code_is_not_a_citation() -> None:
    assert citations("Try `curl https://api.acme.io/v1`.\n```\nhttps://acme.io\n```") == ()


# Rule 2: matching.


@pytest.mark.parametrize(
    ("answer", "name", "expected"),
    [
        pytest.param("Nestle and NESTLÉ and Nestlé", "Nestlé", 3, id="diacritics-in-name"),
        pytest.param("Nestlé makes coffee", "Nestle", 1, id="diacritics-in-text"),
        pytest.param("Nestle\u0301 makes coffee", "Nestlé", 1, id="decomposed-accent"),
        pytest.param("Ørsted builds wind farms", "Orsted", 1, id="stroke-letter"),
        pytest.param("Coca Cola, Coca-Cola and Coca\u2011Cola", "Coca-Cola", 3, id="hyphen=space"),
        pytest.param("Coca-Cola or Coca Cola", "Coca Cola", 2, id="space=hyphen"),
        pytest.param("Coca\nCola", "Coca Cola", 1, id="soft-line-break"),
        pytest.param("Coca\n\nCola", "Coca Cola", 0, id="not-across-paragraphs"),
        pytest.param("- Coca\n- Cola", "Coca Cola", 0, id="not-across-list-items"),
        pytest.param("CocaCola", "Coca Cola", 0, id="separator-required"),
        pytest.param("Stripe's API and Stripe\u2019s docs", "Stripe", 2, id="possessive"),
        pytest.param("Stripes and Striped and Stripe2", "Stripe", 0, id="other-suffix"),
        pytest.param("Stripe'd payments", "Stripe", 0, id="other-apostrophe-suffix"),
        pytest.param("Use Ramp, not ramping or Ramps.", "Ramp", 1, id="ramp"),
        pytest.param("NotStripe and XStripe", "Stripe", 0, id="prefix"),
        pytest.param("Stripe. (Stripe) 'Stripe' Stripe-based", "Stripe", 4, id="punctuation"),
        pytest.param("**Acme** and _Acme_ and __Acme__", "Acme", 3, id="emphasis"),
        pytest.param("C++ and C# and C+", "C++", 1, id="symbol-name"),
        pytest.param("Open monday.com now", "monday.com", 1, id="dotted-name"),
    ],
)
def test_matching(answer: str, name: str, expected: int) -> None:
    assert count(answer, name) == expected


def test_aliases_and_variations_match_like_the_name() -> None:
    org = OrgProfile("Wise", aliases=("TransferWise",))
    extraction = extract(org, "TransferWise, then Wise Payments Ltd", variations=["Wise Payments"])
    assert extraction.mention_count == 2


@pytest.mark.parametrize(
    "answer",
    [
        "Try Coca\u2011Cola or Pepsi.",
        "coca cola is everywhere.",  # not as its owner capitalises it
        "COCA COLA, in capitals.",
        "Coca-Colas",
        "See [the site](https://coca-cola.com/Coca-Cola) or `Coca-Cola`.",
        "Coca-\u0301Cola &amp; Coke",
    ],
)
def test_mentions_agrees_with_matching(answer: str) -> None:
    names = ("Coca-Cola", "Coke")
    document = parse_document(answer)
    expected = match_brand(names, answer).mentioned
    assert mentions(names, document.folded.text) is expected


def test_the_extraction_keeps_the_parsed_answer_out_of_its_facts() -> None:
    extraction = extract(OrgProfile("Acme"), "1. **Acme**")
    assert extraction.document.answer == "1. **Acme**"
    assert "document" not in extraction.facts()


def test_empty_names_are_ignored() -> None:
    assert match_brand(["", "  ", "-"], "Anything at all - here") == BrandMatch(0, None, None, None)


# Rule 3: case.


@pytest.mark.parametrize(
    ("answer", "name", "expected"),
    [
        pytest.param("Take notes in notion, or in Notion.", "Notion", 1, id="lowercase-word"),
        pytest.param("RAMP and Ramp, not rAMP", "Ramp", 2, id="all-caps"),
        pytest.param("NESTLÉ", "Nestlé", 1, id="all-caps-with-accent"),
        pytest.param("Hubspot, HubSpot, HUBSPOT", "HubSpot", 2, id="inner-capital"),
        pytest.param("Hubspot crm, HubSpot CRM", "HubSpot CRM", 1, id="multi-word"),
        pytest.param("COCA-COLA and coca-cola", "Coca Cola", 1, id="all-caps-hyphenated"),
        pytest.param("monday.com, MONDAY.COM, Monday.com", "monday.com", 2, id="lowercase-brand"),
        pytest.param("IBM and Ibm and ibm", "IBM", 1, id="acronym"),
    ],
)
def test_capitalisation(answer: str, name: str, expected: int) -> None:
    assert count(answer, name) == expected


def test_each_alias_keeps_its_own_capitalisation() -> None:
    assert count("monday.com and Monday.com and MONDAY.com", "Monday.com", "monday.com") == 2


# Rule 4: counting.


def test_alias_inside_name_counts_once() -> None:
    assert count("Acme Analytics leads; Acme also sells.", "Acme Analytics", "Acme") == 2


def test_overlapping_aliases_take_the_longest_leftmost_match() -> None:
    assert count("Acme Analytics", "Acme", "Acme Analytics", "Analytics") == 1
    assert count("Acme Analytics Analytics", "Acme", "Acme Analytics", "Analytics") == 2


def test_repeated_names_count_once() -> None:
    assert count("Acme", "Acme", "Acme", "ACME") == 1


def test_first_mention_offset_and_snippet() -> None:
    answer = "x " * 300 + "Acme\n\n   rocks " + "y " * 300
    match = match_brand(["Acme"], answer)
    assert match.mentioned
    assert match.first_offset == 600
    assert match.snippet is not None
    assert "Acme rocks" in match.snippet
    assert len(match.snippet) <= 200


def test_no_mention() -> None:
    match = match_brand(["Acme"], "Nothing here.")
    assert not match.mentioned
    assert (match.first_offset, match.snippet, match.list_position) == (None, None, None)


# Rule 5: position.


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param("1. Foo\n2. Bar\n3. Acme", 3, id="numbered-dot"),
        pytest.param("1) Foo\n2) Bar\n3) Acme", 3, id="numbered-paren"),
        pytest.param("- Foo\n- Bar\n- Acme", 3, id="dash"),
        pytest.param("* Foo\n* Bar\n* Acme", 3, id="star"),
        pytest.param("+ Foo\n+ Bar\n+ Acme", 3, id="plus"),
        pytest.param("5. Foo\n6. Acme", 2, id="index-not-written-number"),
        pytest.param("1. Foo\n1. Bar\n1. Acme", 3, id="repeated-numbers"),
        pytest.param("1. Foo\n\n2. Bar\n\n3. Acme", 3, id="blank-lines-between-items"),
        pytest.param("- A\n  - x\n  - Acme\n- B", 2, id="nested-item"),
        pytest.param("- A\n    - x\n        - y\n        - Acme\n- B", 2, id="deeply-nested"),
        pytest.param("- A\n- B\n\t- x\n\t- Acme", 2, id="tab-nested"),
        pytest.param("1. A\n2. Acme\n   - x\n   - y\n3. C", 2, id="parent-of-nested"),
        pytest.param("1. A\n   - x\n   - y\n   Acme too.\n2. B", 1, id="continued-after-nest"),
        pytest.param("1. A\n2. B\n   Also Acme.\n3. C", 2, id="continuation"),
        pytest.param("1. A\n2. B\n\n   Also Acme.\n3. C", 2, id="continuation-after-blank"),
        pytest.param(" 1. A\n2. Acme", 2, id="sibling-off-by-one-column"),
        pytest.param("1. A\n2. B\n\nText.\n\n1. Acme", 1, id="new-list-after-paragraph"),
        pytest.param("1. A\n2. B\n- Acme", 1, id="marker-change-starts-new-list"),
        pytest.param("- A\n- B\nAcme is great.", None, id="unindented-line-ends-list"),
        pytest.param("- A\n***\n- Acme", 1, id="thematic-break-ends-list"),
        pytest.param("Acme first.\n\n- Foo\n- Acme", 2, id="first-mention-in-a-list"),
        pytest.param("**Acme** leads.\n*Acme* too.", None, id="emphasis-is-not-a-bullet"),
        pytest.param("## 1. Acme\n\n# Acme", None, id="headings"),
        pytest.param("- A\n- B\n## Acme", None, id="heading-ends-list"),
        pytest.param("| # | Tool |\n|---|---|\n| 1 | Acme |", None, id="table-rows"),
        pytest.param("1. Setup:\n   ```\n   - x\n   - y\n   ```\n2. Acme", 2, id="fenced-items"),
        pytest.param("-Acme\n1.Acme", None, id="marker-needs-a-space"),
    ],
)
def test_list_position(answer: str, expected: int | None) -> None:
    assert count(answer, "Acme") > 0
    assert position(answer, "Acme") == expected


def test_position_skips_mentions_in_code() -> None:
    assert position("- `Acme`\n- Acme", "Acme") == 2


# Rule 6: citations.


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param("See https://a.com/x.", ["https://a.com/x"], id="full-stop"),
        pytest.param("https://a.com/x, https://b.com/y;", ["https://a.com/x", "https://b.com/y"]),
        pytest.param("Go: https://a.com/x:", ["https://a.com/x"], id="colon"),
        pytest.param("(see https://a.com/x).", ["https://a.com/x"], id="unopened-paren"),
        pytest.param("Wow https://a.com/x!?", ["https://a.com/x"], id="exclamation"),
        pytest.param("**https://a.com/x**", ["https://a.com/x"], id="bold"),
        pytest.param(
            "(https://en.wikipedia.org/wiki/Acme_(company))",
            ["https://en.wikipedia.org/wiki/Acme_(company)"],
            id="balanced-paren-kept",
        ),
        pytest.param("See https://a.com/search?q=1&x=2.", ["https://a.com/search?q=1&x=2"]),
        pytest.param("https://a.com/?q=a&amp;b", ["https://a.com/?q=a&b"], id="entity-in-url"),
        pytest.param("[docs](https://a.com/d)", ["https://a.com/d"], id="markdown-link"),
        pytest.param('[docs](https://a.com/d "Docs")', ["https://a.com/d"], id="link-with-title"),
        pytest.param("[docs](<https://a.com/d>)", ["https://a.com/d"], id="angled-target"),
        pytest.param(
            "[w](https://en.wikipedia.org/wiki/A_(b))",
            ["https://en.wikipedia.org/wiki/A_(b)"],
            id="link-target-with-parens",
        ),
        pytest.param("<https://a.com/d>.", ["https://a.com/d"], id="autolink"),
        pytest.param("<mailto:sales@acme.io>", [], id="mailto-autolink"),
        pytest.param("acme.com/docs and www.acme.com", [], id="bare-domain"),
        pytest.param("ftp://files.acme.com/x", [], id="other-scheme"),
        pytest.param("HTTPS://A.com/X", ["HTTPS://A.com/X"], id="upper-case-scheme"),
        pytest.param("| https://a.com | https://b.com |", ["https://a.com", "https://b.com"]),
        pytest.param("[1]: https://a.com/ref", ["https://a.com/ref"], id="reference-definition"),
        pytest.param("https://", [], id="no-host"),
    ],
)
def test_text_citation_urls(answer: str, expected: list[str]) -> None:
    assert cited_urls(answer) == expected


def test_citation_ranks_titles_and_sources() -> None:
    answer = "See [B home](https://b.com/x), then https://c.com and https://a.com/."
    engine: list[EngineCitationInput] = ["https://a.com/", ("https://b.com/x", None), " "]
    assert citations(answer, engine) == (
        Citation("https://a.com/", "a.com", 1, None, "engine"),
        Citation("https://b.com/x", "b.com", 2, "B home", "engine"),
        Citation("https://c.com", "c.com", 3, None, "text"),
    )


def test_engine_titles_and_text_order() -> None:
    answer = "<https://z.com/1> then [Y](https://y.com/2) then https://x.com/3"
    found = citations(answer, [("https://w.com/0", " W site ")])
    assert [(c.rank, c.url, c.title, c.source) for c in found] == [
        (1, "https://w.com/0", "W site", "engine"),
        (2, "https://z.com/1", None, "text"),
        (3, "https://y.com/2", "Y", "text"),
        (4, "https://x.com/3", None, "text"),
    ]


def test_citations_without_registrable_domain() -> None:
    answer = "Local: http://127.0.0.1:8000/x and http://localhost:3000 and http://[::1]:80/"
    extraction = extract(OrgProfile("Acme"), answer)
    assert [citation.domain for citation in extraction.citations] == [None, None, None]
    assert extraction.cited_domains == ()


def test_cited_domains_are_sorted_and_distinct() -> None:
    answer = "https://news.bbc.co.uk/a https://www.bbc.co.uk/b https://cloud.google.com/c"
    engine = ["https://WWW.Google.COM/"]
    assert extract(OrgProfile("Acme"), answer, engine).cited_domains == ("bbc.co.uk", "google.com")


@pytest.mark.parametrize(
    ("url_or_host", "expected"),
    [
        ("news.bbc.co.uk", "bbc.co.uk"),
        ("cloud.google.com", "google.com"),
        ("https://WWW.Example.COM/path?q=1", "example.com"),
        ("https://user:pw@shop.acme.io:8443/x", "acme.io"),
        ("acme.com/docs", "acme.com"),
        ("acme.com.", "acme.com"),
        ("acme.io.evil.net", "evil.net"),
        ("https://xn--bcher-kva.de/", "bücher.de"),
        ("https://BÜCHER.de", "bücher.de"),
        ("http://127.0.0.1:8000/", None),
        ("localhost", None),
        ("http://[::1]/", None),
        ("http://[::1/", None),
        ("", None),
        ("acme.invalidtld", None),
        # Longer than DNS allows (a label of 63 at most, a name of 253): no site, and no column
        # of ours would hold it.
        (f"https://{'a' * 63}.com/x", f"{'a' * 63}.com"),
        (f"https://{'a' * 64}.com/x", None),
        (f"https://{'.'.join(['a' * 50] * 5)}.com/x", None),
    ],
)
def test_registrable_domain(url_or_host: str, expected: str | None) -> None:
    assert registrable_domain(url_or_host) == expected


def test_suffix_list_never_touches_network_or_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLDEXTRACT_CACHE", str(tmp_path / "tld"))
    domains_module._suffix_extractor.cache_clear()
    try:
        assert registrable_domain("https://news.bbc.co.uk/") == "bbc.co.uk"
    finally:
        domains_module._suffix_extractor.cache_clear()
    assert list(tmp_path.iterdir()) == []


# Rule 7: own citation.


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://docs.acme.io/start", True),
        ("https://ACME.io", True),
        ("https://acme.io.evil.net/login", False),
        ("https://notacme.io/", False),
        ("https://acme.com/", False),
    ],
)
def test_org_cited(url: str, expected: bool) -> None:
    org = OrgProfile("Acme", domains=("acme.io",))
    assert extract(org, f"Source: {url}").org_cited is expected
    assert extract(org, "No links.", [url]).org_cited is expected


def test_org_domains_are_normalised() -> None:
    org = OrgProfile("Acme", domains=("https://www.Acme.io/",))
    assert extract(org, "See https://blog.acme.io/post").org_cited


def test_facts_shape() -> None:
    org = OrgProfile("Acme", aliases=("Acme Corp",), domains=("acme.io",))
    answer = "1. Foo\n2. **Acme Corp** ([site](https://acme.io))\n\nAcme's docs: https://b.co.uk/x."
    extraction = extract(org, answer)
    assert extraction.facts() == {
        "mentioned": True,
        "mention_count": 2,
        "list_position": 2,
        "cited_domains": ["acme.io", "b.co.uk"],
        "org_cited": True,
    }
    assert extraction.first_offset == answer.index("Acme Corp")
    assert extraction.citations[0] == Citation("https://acme.io", "acme.io", 1, "site", "text")


def test_extract_matches_tracked_competitors_on_the_same_answer() -> None:
    answer = "1. **Salesforce** leads.\n2. HubSpot\n3. Pipedrive's pipeline view\n\nZoho is absent."
    result = extract(
        OrgProfile(name="HubSpot"), answer, competitors=("Salesforce", "Pipedrive", "Freshsales")
    )
    assert result.list_position == 2
    named = {name: (found.mention_count, found.list_position) for name, found in result.competitors}
    assert named == {"Salesforce": (1, 1), "Pipedrive": (1, 3)}
