"""ENGINE_MODE: which client answers each engine id."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.clock import SystemClock
from app.engines.anthropic import AnthropicEngine
from app.engines.brightdata import BrightDataEngine
from app.engines.catalogue import ENGINE_IDS
from app.engines.openai_chat import AzureOpenAIEngine, OpenAIEngine
from app.engines.ratelimit import LocalRateLimiter
from app.engines.registry import EngineRegistry
from app.engines.simulated import SimulatedEngine
from app.errors import InvalidInputError
from app.settings import Settings
from devtools.emulator.wiring import emulated_engine_settings


async def test_auto_serves_real_clients_where_keys_are_set_and_simulates_the_rest() -> None:
    settings = Settings(
        openai_api_key=SecretStr("sk-x"), brightdata_api_key=SecretStr("bd-x"), engine_mode="auto"
    )
    registry = EngineRegistry(settings, LocalRateLimiter(SystemClock()))
    try:
        assert registry.engine_ids == ENGINE_IDS
        assert isinstance(registry.get("openai"), OpenAIEngine)
        assert isinstance(registry.get("brightdata_chatgpt"), BrightDataEngine)
        assert isinstance(registry.get("brightdata_perplexity"), BrightDataEngine)
        for simulated in ("azure_openai", "anthropic", "linkup"):
            assert isinstance(registry.get(simulated), SimulatedEngine), simulated
    finally:
        await registry.aclose()


async def test_real_refuses_engines_without_credentials_naming_what_to_set() -> None:
    settings = Settings(anthropic_api_key=SecretStr("sk-ant-x"), engine_mode="real")
    registry = EngineRegistry(settings, LocalRateLimiter(SystemClock()))
    try:
        assert registry.engine_ids == ("anthropic",)
        assert isinstance(registry.get("anthropic"), AnthropicEngine)
        with pytest.raises(InvalidInputError, match=r"set AZURE_OPENAI_API_KEY and AZURE_OPENAI"):
            registry.get("azure_openai")
        with pytest.raises(InvalidInputError) as refused:
            registry.validate(["anthropic", "openai", "gpt-9"])
        assert str(refused.value) == (
            "unknown engine 'gpt-9'; engine 'openai' is not configured (set OPENAI_API_KEY); "
            "available: anthropic"
        )
        assert registry.validate(["anthropic", "anthropic"]) == ["anthropic"]
    finally:
        await registry.aclose()


async def test_simulated_never_calls_a_provider_even_with_keys() -> None:
    settings = Settings.model_validate(
        {**emulated_engine_settings("http://127.0.0.1:9"), "engine_mode": "simulated"}
    )
    registry = EngineRegistry(settings, LocalRateLimiter(SystemClock()))
    try:
        assert all(isinstance(registry.get(e), SimulatedEngine) for e in ENGINE_IDS)
    finally:
        await registry.aclose()


async def test_every_engine_is_real_when_every_key_is_set() -> None:
    registry = EngineRegistry(
        Settings.model_validate(emulated_engine_settings("http://127.0.0.1:9")),
        LocalRateLimiter(SystemClock()),
    )
    try:
        assert isinstance(registry.get("azure_openai"), AzureOpenAIEngine)
        assert not any(isinstance(registry.get(e), SimulatedEngine) for e in ENGINE_IDS)
    finally:
        await registry.aclose()
