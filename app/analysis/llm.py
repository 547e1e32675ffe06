"""The model-backed analyst: one strict structured-output chat completion per question asked.

Calls share the `analysis` rate limit across workers (applied by the client's transport). A
retryable failure (429, 5xx, timeout) is asked again a few times, never sooner than the
provider's Retry-After; what still fails, or answers outside the schema, becomes an
AnalysisError for the caller to record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema
from pydantic import BaseModel, ValidationError

from app.analysis.base import AnalysisError, AnswerAnalysis, VariationResult
from app.analysis.names import normalise_competitors, normalise_variations
from app.analysis.prompts import (
    ANALYSIS_INSTRUCTIONS,
    ANALYSIS_SCHEMA,
    ANSWER_ANALYSIS,
    NAME_VARIATIONS,
    VARIATIONS_INSTRUCTIONS,
    VARIATIONS_SCHEMA,
    AnalysisReply,
    AnswerTask,
    VariationsReply,
    VariationsTask,
)
from app.engines.backoff import backoff_seconds
from app.engines.base import EngineError
from app.engines.costs import token_cost
from app.engines.openai_clients import openai_failures

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3

_Reply = TypeVar("_Reply", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class LlmConfig:
    provider: str  # "openai" or "azure_openai": names the source and the errors
    model: str  # the deployment on Azure
    input_price_per_mtok: Decimal
    output_price_per_mtok: Decimal
    timeout_seconds: float
    retry_base_seconds: float
    retry_max_seconds: float


@dataclass(frozen=True, slots=True)
class _Usage:
    model: str
    input_tokens: int
    output_tokens: int
    cost: Decimal


class LlmAnalyst:
    def __init__(self, client: openai.AsyncOpenAI, config: LlmConfig) -> None:
        self._client = client  # rate limited in its transport (see factory.py)
        self._config = config

    @property
    def source(self) -> str:
        return f"{self._config.provider}:{self._config.model}"

    async def name_variations(self, name: str, aliases: Sequence[str]) -> VariationResult:
        task = VariationsTask(name=name, aliases=list(aliases))
        reply, usage = await self._ask(
            NAME_VARIATIONS, VARIATIONS_SCHEMA, VARIATIONS_INSTRUCTIONS, task, VariationsReply
        )
        return VariationResult(
            names=normalise_variations(reply.variations, name, aliases),
            source=self.source,
            model=usage.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=usage.cost,
        )

    async def analyse_answer(
        self,
        question: str,
        answer: str,
        org_name: str,
        variations: Sequence[str],
        tracked_competitors: Sequence[str],
    ) -> AnswerAnalysis:
        task = AnswerTask(
            question=question,
            answer=answer,
            org=org_name,
            org_names=list(variations),
            tracked_competitors=list(tracked_competitors),
        )
        reply, usage = await self._ask(
            ANSWER_ANALYSIS, ANALYSIS_SCHEMA, ANALYSIS_INSTRUCTIONS, task, AnalysisReply
        )
        return AnswerAnalysis(
            competitors=normalise_competitors(
                reply.competitors, (org_name, *variations), tracked_competitors
            ),
            sentiment=reply.sentiment,
            negated=reply.negated,
            model=usage.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=usage.cost,
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def _ask(
        self,
        schema_name: str,
        schema: dict[str, object],
        instructions: str,
        task: BaseModel,
        reply_type: type[_Reply],
    ) -> tuple[_Reply, _Usage]:
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": instructions},
            {"role": "user", "content": task.model_dump_json()},
        ]
        response_format: ResponseFormatJSONSchema = {
            "type": "json_schema",
            "json_schema": {"name": schema_name, "strict": True, "schema": schema},
        }
        completion = await self._complete_with_retries(messages, response_format)
        return _parsed(completion, reply_type), self._usage(completion)

    async def _complete_with_retries(
        self,
        messages: list[ChatCompletionMessageParam],
        response_format: ResponseFormatJSONSchema,
    ) -> ChatCompletion:
        attempt = 1
        while True:
            try:
                return await self._complete(messages, response_format)
            except EngineError as exc:
                if not exc.retryable or attempt == MAX_ATTEMPTS:
                    raise AnalysisError(f"{exc.reason} (after {attempt} attempt(s))") from None
                logger.info("analysis call failed; retrying", extra={"error": exc.reason})
                await asyncio.sleep(
                    backoff_seconds(
                        attempt,
                        exc.retry_after,
                        base_seconds=self._config.retry_base_seconds,
                        max_seconds=self._config.retry_max_seconds,
                    )
                )
                attempt += 1

    async def _complete(
        self,
        messages: list[ChatCompletionMessageParam],
        response_format: ResponseFormatJSONSchema,
    ) -> ChatCompletion:
        with openai_failures(self._config.provider, self._config.timeout_seconds):
            return await self._client.chat.completions.create(
                model=self._config.model,
                messages=messages,
                response_format=response_format,
                temperature=0,
            )

    def _usage(self, completion: ChatCompletion) -> _Usage:
        usage = completion.usage
        input_tokens = usage.prompt_tokens if usage else 0
        output_tokens = usage.completion_tokens if usage else 0
        return _Usage(
            model=completion.model or self._config.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=token_cost(
                input_tokens,
                output_tokens,
                self._config.input_price_per_mtok,
                self._config.output_price_per_mtok,
            ),
        )


def _parsed(completion: ChatCompletion, reply_type: type[_Reply]) -> _Reply:
    if not completion.choices:
        raise AnalysisError("the analysis response has no choices")
    message = completion.choices[0].message
    if message.content is None:
        raise AnalysisError(f"no analysis returned: {message.refusal or 'empty message'}")
    try:
        return reply_type.model_validate_json(message.content)
    except ValidationError as exc:
        raise AnalysisError(f"the analysis does not match its schema: {exc.errors()[0]}") from None
