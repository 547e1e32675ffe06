"""Settings that point every real engine client, and the LLM analysis, at an engine emulator."""

from __future__ import annotations

from pydantic import SecretStr

# Any non-empty key works; these name what they are in the emulator's request log.
EMULATOR_KEYS = {
    "openai_api_key": "sk-test-openai",
    "azure_openai_api_key": "test-azure-key",
    "anthropic_api_key": "sk-ant-test",
    "brightdata_api_key": "test-brightdata-key",
    "linkup_api_key": "test-linkup-key",
    "gemini_api_key": "test-gemini-key",
    "perplexity_api_key": "pplx-test",
    "dataforseo_login": "test@example.com",
    "dataforseo_password": "test-dataforseo-password",
}


def emulated_engine_settings(emulator_url: str) -> dict[str, object]:
    """Settings overrides: real clients (ENGINE_MODE=real), every base URL on the emulator."""
    return {
        **{name: SecretStr(key) for name, key in EMULATOR_KEYS.items()},
        "engine_mode": "real",
        "openai_base_url": f"{emulator_url}/v1",
        "azure_openai_endpoint": emulator_url,
        "anthropic_base_url": emulator_url,
        "brightdata_base_url": emulator_url,
        "linkup_base_url": f"{emulator_url}/v1",
        "gemini_base_url": emulator_url,
        "perplexity_base_url": emulator_url,
        "dataforseo_base_url": emulator_url,
        # The emulator's snapshots are ready at once: polling at the production pace would
        # only add seconds.
        "brightdata_poll_interval_seconds": 0.05,
        "brightdata_batch_window_seconds": 0.05,
    }
