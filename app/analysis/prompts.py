"""What the analyst sends a model and what it accepts back: the wire contract of both calls.

The user message is a JSON document (`VariationsTask` / `AnswerTask`), so that the data cannot
be mistaken for instructions and the engine emulator can read it back to reply in kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from app.analysis.base import Sentiment

NAME_VARIATIONS = "name_variations"
ANSWER_ANALYSIS = "answer_analysis"

VARIATIONS_INSTRUCTIONS = """\
You list the ways an organisation's name is written in text about it: common short forms, the \
name without its legal form, spellings with different spacing or capitalisation, well-known \
abbreviations and former names. The user message is JSON with the organisation's `name` and \
known `aliases`. Leave out the name and aliases themselves, and any spelling that is also an \
ordinary word or the name of something else, since each variation is matched in answers as \
the organisation. Reply with the variations only."""

ANALYSIS_INSTRUCTIONS = """\
You analyse an AI assistant's answer for a brand-visibility report. The user message is JSON \
with the `question` asked, the `answer`, the organisation (`org`, and `org_names`: other ways \
it is written) and the `tracked_competitors`. Report:
- competitors: every other company, product or brand the answer names or recommends as an \
option, in order of first appearance, as the brand is usually written (a tracked competitor \
spelt as in `tracked_competitors`); never the organisation itself.
- sentiment: the answer's tone towards the organisation (positive, neutral or negative); null \
when the organisation is not mentioned or only as in `negated`.
- negated: true when the organisation is named only to say nothing is known about it ("I could \
not find information about X", "I'm not familiar with X"), else false."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariationsTask(_Message):
    task: Literal["name_variations"] = "name_variations"
    name: str
    aliases: list[str]


class AnswerTask(_Message):
    task: Literal["answer_analysis"] = "answer_analysis"
    question: str
    answer: str
    org: str
    org_names: list[str]
    tracked_competitors: list[str]


class VariationsReply(_Message):
    variations: list[str]


class AnalysisReply(_Message):
    competitors: list[str]
    sentiment: Sentiment | None
    negated: bool


# Strict structured output: every property required, none other allowed (extra="forbid").
VARIATIONS_SCHEMA: dict[str, object] = VariationsReply.model_json_schema()
ANALYSIS_SCHEMA: dict[str, object] = AnalysisReply.model_json_schema()


def read_task(messages: Iterable[Mapping[str, Any]]) -> VariationsTask | AnswerTask | None:
    """The task in the last user message of a request, if it is one of ours."""
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    if not users or not isinstance(users[-1], str):
        return None
    for task in (VariationsTask, AnswerTask):
        try:
            return task.model_validate_json(users[-1])
        except ValidationError:
            continue
    return None
