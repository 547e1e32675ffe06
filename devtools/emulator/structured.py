"""Replies to structured-output requests (`response_format: json_schema`).

The analysis calls (`name_variations`, `answer_analysis`) are answered as the simulated analyst
would answer the task in the request's user message, so a run analysed through the emulator
gets the same competitors, sentiment and negation as one analysed offline. A schema the
emulator does not recognise gets the smallest instance that satisfies it.
"""

from __future__ import annotations

from typing import Any

from app.analysis.prompts import (
    ANSWER_ANALYSIS,
    NAME_VARIATIONS,
    AnalysisReply,
    AnswerTask,
    VariationsReply,
    VariationsTask,
    read_task,
)
from app.analysis.reading import read_answer
from app.analysis.spellings import rule_variations


def structured_reply(
    schema_name: str, schema: dict[str, Any], messages: list[dict[str, Any]]
) -> dict[str, Any]:
    task = read_task(messages)
    if schema_name == NAME_VARIATIONS and isinstance(task, VariationsTask):
        reply = VariationsReply(variations=list(rule_variations(task.name, task.aliases)))
        return reply.model_dump(mode="json")
    if schema_name == ANSWER_ANALYSIS and isinstance(task, AnswerTask):
        reading = read_answer(task.answer, (task.org, *task.org_names), task.tracked_competitors)
        return AnalysisReply(
            competitors=list(reading.competitors),
            sentiment=reading.sentiment,
            negated=reading.negated,
        ).model_dump(mode="json")
    instance = minimal_instance(schema)
    return instance if isinstance(instance, dict) else {}


def minimal_instance(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: minimal_instance(sub) for name, sub in properties.items()}
    if kind == "array":
        return []
    if kind == "string":
        return ""
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None
