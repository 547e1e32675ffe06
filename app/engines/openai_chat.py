"""OpenAI and Azure OpenAI: one chat completion per ask, through the official `openai` client.

The client's own retries are off (max_retries=0): the run loop decides whether and when to ask
again, from the EngineError each failure becomes.
"""

from __future__ import annotations

import time
from decimal import Decimal

import openai
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import WebSearchOptions
from pydantic import SecretStr

from app.engines.base import EngineAnswer, EngineCitation, EngineError, EngineRequest
from app.engines.costs import token_cost
from app.engines.failures import connection_error, error_from_response, timeout_error
from app.engines.openai_transport import rate_limited_http_client
from app.engines.ratelimit import RateLimit, RateLimiter, call_limit
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
        try:
            return await self._client.chat.completions.create(
                model=self._model,
                messages=[{"role": "user", "content": request.question}],
                web_search_options=search,
            )
        except openai.APITimeoutError:
            raise timeout_error(self.engine_id, self._timeout) from None
        except openai.APIConnectionError as exc:
            raise connection_error(self.engine_id, exc) from None
        except openai.APIStatusError as exc:
            response = exc.response
            raise error_from_response(
                self.engine_id, exc.status_code, response.headers, response.content
            ) from None

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
            raw={
                "id": completion.id,
                "model": completion.model,
                "finish_reason": choice.finish_reason,
                "usage": usage.model_dump(exclude_none=True) if usage else None,
                "web_search": self._web_search,
            },
        )

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


def _slot_limit(settings: Settings, max_concurrency: int, rpm: int, timeout: float) -> RateLimit:
    return call_limit(
        max_concurrency=max_concurrency,
        requests_per_minute=rpm,
        burst=settings.rate_limit_burst,
        timeout_seconds=timeout,
    )


def _required_key(key: SecretStr | None, variable: str) -> str:
    if key is None:
        raise ValueError(f"{variable} is not set")
    return key.get_secret_value()


class OpenAIEngine(_ChatCompletionsEngine):
    engine_id = "openai"

    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        timeout = settings.openai_timeout_seconds
        super().__init__(
            openai.AsyncOpenAI(
                api_key=_required_key(settings.openai_api_key, "OPENAI_API_KEY"),
                base_url=settings.openai_base_url,
                timeout=timeout,
                max_retries=0,
                http_client=rate_limited_http_client(
                    limiter,
                    self.engine_id,
                    _slot_limit(
                        settings,
                        settings.openai_max_concurrency,
                        settings.openai_requests_per_minute,
                        timeout,
                    ),
                ),
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
        if not settings.azure_openai_endpoint:
            raise ValueError("AZURE_OPENAI_ENDPOINT is not set")
        timeout = settings.azure_openai_timeout_seconds
        deployment = settings.azure_openai_deployment
        super().__init__(
            openai.AsyncAzureOpenAI(
                api_key=_required_key(settings.azure_openai_api_key, "AZURE_OPENAI_API_KEY"),
                azure_endpoint=settings.azure_openai_endpoint,
                azure_deployment=deployment,
                api_version=settings.azure_openai_api_version,
                timeout=timeout,
                max_retries=0,
                http_client=rate_limited_http_client(
                    limiter,
                    self.engine_id,
                    _slot_limit(
                        settings,
                        settings.azure_openai_max_concurrency,
                        settings.azure_openai_requests_per_minute,
                        timeout,
                    ),
                ),
            ),
            model=deployment,
            web_search=False,
            input_price_per_mtok=settings.azure_openai_input_price_per_mtok,
            output_price_per_mtok=settings.azure_openai_output_price_per_mtok,
            timeout=timeout,
        )
