"""What leaves an engine is stored without NUL, which Postgres text and JSON cannot hold."""

from __future__ import annotations

from decimal import Decimal

from app.engines.base import EngineAnswer, EngineCitation, storable, without_nul


def test_nul_is_dropped_from_every_string_however_deep() -> None:
    raw = {"a\x00": ["x\x00y", ("\x00", 1, None)], "n": {"deep": "z\x00"}, "k": 2.5}
    assert without_nul(raw) == {"a": ["xy", ("", 1, None)], "n": {"deep": "z"}, "k": 2.5}
    assert without_nul("no nul") == "no nul"
    assert without_nul(7) == 7


def test_a_stored_answer_keeps_everything_but_nul() -> None:
    answer = EngineAnswer(
        text="Acme\x00 leads.",
        citations=(EngineCitation("https://acme.com/\x00a", "Acme\x00"), EngineCitation("b")),
        model="m\x00",
        input_tokens=3,
        output_tokens=4,
        cost=Decimal("0.01"),
        latency_ms=5,
        simulated=False,
        surface="scraped_ui",
        searched=True,
        search_queries=("best\x00 crm",),
        raw={"html": "<p>\x00</p>"},
    )
    stored = storable(answer)
    assert (stored.text, stored.model) == ("Acme leads.", "m")
    assert stored.citations == (
        EngineCitation("https://acme.com/a", "Acme"),
        EngineCitation("b", None),
    )
    assert stored.search_queries == ("best crm",)
    assert stored.raw == {"html": "<p></p>"}
    assert (stored.cost, stored.surface, stored.searched) == (Decimal("0.01"), "scraped_ui", True)
