"""What leaves an engine is stored as Postgres text and JSON can hold it: without NUL, and
with a lone surrogate replaced by U+FFFD."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import String

from app.db.models import QuestionRun
from app.engines.base import MODEL_WIDTH, EngineAnswer, EngineCitation, storable, storable_value


def test_nul_is_dropped_from_every_string_however_deep() -> None:
    raw = {"a\x00": ["x\x00y", ("\x00", 1, None)], "n": {"deep": "z\x00"}, "k": 2.5}
    assert storable_value(raw) == {"a": ["xy", ("", 1, None)], "n": {"deep": "z"}, "k": 2.5}
    assert storable_value("no nul") == "no nul"
    assert storable_value(7) == 7


def test_a_lone_surrogate_is_replaced_and_a_whole_character_kept() -> None:
    # What JSON's "\ud83d" escape decodes to without its pair; "😀" decodes whole.
    assert storable_value("cut \ud83d here, \udc00 there, 😀 whole") == (
        "cut \ufffd here, \ufffd there, 😀 whole"
    )
    assert storable_value({"k\ud800": ["\udfff\x00"]}) == {"k\ufffd": ["\ufffd"]}
    # UTF-8, what the driver sends Postgres, now takes it.
    assert storable_value("\ud83d").encode("utf-8") == b"\xef\xbf\xbd"


def test_a_stored_answer_keeps_everything_but_what_postgres_cannot_hold() -> None:
    answer = EngineAnswer(
        text="Acme\x00 leads \ud83d.",
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
    assert (stored.text, stored.model) == ("Acme leads \ufffd.", "m")
    assert stored.citations == (
        EngineCitation("https://acme.com/a", "Acme"),
        EngineCitation("b", None),
    )
    assert stored.search_queries == ("best crm",)
    assert stored.raw == {"html": "<p></p>"}
    assert (stored.cost, stored.surface, stored.searched) == (Decimal("0.01"), "scraped_ui", True)


def test_a_model_name_longer_than_its_column_is_cut_to_it() -> None:
    column = QuestionRun.__table__.c.model.type
    assert isinstance(column, String)
    assert column.length == MODEL_WIDTH
    answer = EngineAnswer(
        text="Acme leads.",
        citations=(),
        model="m" * 150,
        input_tokens=0,
        output_tokens=0,
        cost=Decimal(0),
        latency_ms=1,
        simulated=False,
        surface="api",
        searched=None,
    )
    assert storable(answer).model == "m" * MODEL_WIDTH
