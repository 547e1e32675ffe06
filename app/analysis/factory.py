"""Which analyst a process uses, from ANALYSIS_PROVIDER and the credentials it finds."""

from __future__ import annotations

from typing import Literal

from app.analysis.base import Analyst
from app.analysis.simulated import SimulatedAnalyst
from app.engines.ratelimit import RateLimiter
from app.settings import Settings

Provider = Literal["openai", "azure_openai", "simulated"]
LIMITER_NAME = "analysis"


def analysis_provider(settings: Settings) -> Provider:
    """`auto`: OpenAI with an OpenAI key, else Azure OpenAI when configured, else simulated."""
    if settings.analysis_provider != "auto":
        return settings.analysis_provider
    if settings.openai_api_key is not None:
        return "openai"
    if settings.azure_openai_api_key is not None and settings.azure_openai_endpoint:
        return "azure_openai"
    return "simulated"


def create_analyst(settings: Settings, limiter: RateLimiter) -> Analyst:
    provider = analysis_provider(settings)
    if provider == "simulated":
        return SimulatedAnalyst()
    # Imported here: the openai package takes most of a second to import, which a process
    # that never calls a model (simulated analysis, the API) should not pay at every start.
    from app.analysis.llm import LlmAnalyst, LlmConfig
    from app.engines.openai_clients import openai_client
    from app.engines.ratelimit import call_limit

    timeout = settings.analysis_timeout_seconds
    # No Azure deployment is fixed here: ANALYSIS_MODEL, named in each call, is the deployment.
    client = openai_client(
        settings,
        provider,
        limiter=limiter,
        limiter_name=LIMITER_NAME,
        limit=call_limit(
            max_concurrency=settings.analysis_max_concurrency,
            requests_per_minute=settings.analysis_requests_per_minute,
            burst=settings.rate_limit_burst,
            timeout_seconds=timeout,
        ),
        timeout=timeout,
    )
    config = LlmConfig(
        provider=provider,
        model=settings.analysis_model,
        input_price_per_mtok=settings.analysis_input_price_per_mtok,
        output_price_per_mtok=settings.analysis_output_price_per_mtok,
        timeout_seconds=settings.analysis_timeout_seconds,
        retry_base_seconds=settings.run_retry_base_seconds,
        retry_max_seconds=settings.run_retry_max_seconds,
    )
    return LlmAnalyst(client, config)
