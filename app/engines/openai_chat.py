"""OpenAI and Azure OpenAI: one chat completion per ask, through the official `openai` client.

The client's own retries are off (max_retries=0): the run loop decides whether and when to ask
again, from the EngineError each failure becomes.
"""

from __future__ import annotations

import time
from decimal import Decimal

import openai
from openai.types.chat import ChatCompletion
from openai.types.chat.chat_completion_message import Annotation
from openai.types.chat.completion_create_params import WebSearchOptions

from app.engines.base import EngineAnswer, EngineCitation, EngineError, EngineRequest
from app.engines.costs import token_cost
from app.engines.openai_clients import openai_client, openai_failures
from app.engines.ratelimit import RateLimiter, call_limit
from app.settings import Settings


class _ChatCompletionsEngine:
    engine_id: str
    batch_size = 1

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        web_search: bool,
        input_price_per_mtok: Decimal,
        output_price_per_mtok: Decimal,
        timeout: float,
    ) -> None:
        self._client = client
        self._model = model
        self._web_search = web_search
        self._input_price = input_price_per_mtok
        self._output_price = output_price_per_mtok
        self._timeout = timeout

    async def ask(self, request: EngineRequest) -> EngineAnswer:
        started = time.monotonic()
        completion = await self._complete(request)
        latency_ms = round((time.monotonic() - started) * 1000)
        return self._answer(completion, latency_ms)

    async def _complete(self, request: EngineRequest) -> ChatCompletion:
        search: WebSearchOptions | openai.Omit = openai.omit
        if self._web_search:
            search = {
                "user_location": {
                    "type": "approximate",
                    "approximate": {"country": request.location},
                }
            }
        with openai_failures(self.engine_id, self._timeout):
            return await self._client.chat.completions.create(
                model=self._model,
                messages=[{"role": "user", "content": request.question}],
                web_search_options=search,
            )

    def _answer(self, completion: ChatCompletion, latency_ms: int) -> EngineAnswer:
        if not completion.choices:
            raise EngineError(f"{self.engine_id}: the response has no choices", retryable=False)
        choice = completion.choices[0]
        message = choice.message
        if message.content is None:
            # A refusal or a content filter: asking the same question again gets the same.
            raise EngineError(
                f"{self.engine_id}: no answer text (finish_reason={choice.finish_reason})",
                retryable=False,
            )
        usage = completion.usage
        input_tokens = usage.prompt_tokens if usage else 0
        output_tokens = usage.completion_tokens if usage else 0
        return EngineAnswer(
            text=message.content,
            citations=_citations(completion),
            model=completion.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=token_cost(input_tokens, output_tokens, self._input_price, self._output_price),
            latency_ms=latency_ms,
            simulated=False,
            surface="api",
            searched=self._searched(message.annotations),
            raw={
                "id": completion.id,
                "model": completion.model,
                "finish_reason": choice.finish_reason,
                "usage": usage.model_dump(exclude_none=True) if usage else None,
                "web_search": self._web_search,
            },
        )

    def _searched(self, annotations: list[Annotation] | None) -> bool | None:
        """Citations are a search's results; without the search option it cannot search; with
        it and no citation, the API does not say whether it searched."""
        if not self._web_search:
            return False
        return True if any(a.type == "url_citation" for a in annotations or ()) else None

    async def aclose(self) -> None:
        await self._client.close()


def _citations(completion: ChatCompletion) -> tuple[EngineCitation, ...]:
    """The message's url_citation annotations, one per URL, in the order they first appear."""
    found: dict[str, EngineCitation] = {}
    for annotation in completion.choices[0].message.annotations or ():
        if annotation.type != "url_citation":
            continue
        cited = annotation.url_citation
        found.setdefault(cited.url, EngineCitation(cited.url, cited.title or None))
    return tuple(found.values())


class OpenAIEngine(_ChatCompletionsEngine):
    engine_id = "openai"

    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        timeout = settings.openai_timeout_seconds
        super().__init__(
            openai_client(
                settings,
                "openai",
                limiter=limiter,
                limiter_name=self.engine_id,
                limit=call_limit(
                    max_concurrency=settings.openai_max_concurrency,
                    requests_per_minute=settings.openai_requests_per_minute,
                    burst=settings.rate_limit_burst,
                    timeout_seconds=timeout,
                ),
                timeout=timeout,
            ),
            model=settings.openai_model,
            web_search=settings.openai_web_search,
            input_price_per_mtok=settings.openai_input_price_per_mtok,
            output_price_per_mtok=settings.openai_output_price_per_mtok,
            timeout=timeout,
        )


class AzureOpenAIEngine(_ChatCompletionsEngine):
    """Azure's chat completions take no web search option: answers come from the model alone."""

    engine_id = "azure_openai"

    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        timeout = settings.azure_openai_timeout_seconds
        deployment = settings.azure_openai_deployment
        super().__init__(
            openai_client(
                settings,
                "azure_openai",
                limiter=limiter,
                limiter_name=self.engine_id,
                limit=call_limit(
                    max_concurrency=settings.azure_openai_max_concurrency,
                    requests_per_minute=settings.azure_openai_requests_per_minute,
                    burst=settings.rate_limit_burst,
                    timeout_seconds=timeout,
                ),
                timeout=timeout,
                azure_deployment=deployment,
            ),
            model=deployment,
            web_search=False,
            input_price_per_mtok=settings.azure_openai_input_price_per_mtok,
            output_price_per_mtok=settings.azure_openai_output_price_per_mtok,
            timeout=timeout,
        )
