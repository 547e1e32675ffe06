"""Process configuration: every setting comes from the environment (see the README's table)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./senso.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Database
    database_url: SecretStr = SecretStr(EMBEDDED_DATABASE_URL)
    database_pool_size: int = Field(default=10, ge=1)
    database_echo: bool = False
    # A database that is down or frozen answers 503 within these, never hangs a request.
    database_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    database_statement_timeout_seconds: float = Field(default=30.0, gt=0)
    database_pool_timeout_seconds: float = Field(default=5.0, gt=0)

    # API
    api_token: SecretStr | None = None
    api_host: str = "0.0.0.0"  # noqa: S104 - the API listens on every interface in its container
    api_port: int = Field(default=8080, ge=1, le=65535)

    # Queue
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    sqs_queue_url: str | None = None
    sqs_wait_seconds: int = Field(default=20, ge=0, le=20)
    sqs_max_messages: int = Field(default=10, ge=1, le=10)
    sqs_visibility_timeout: int = Field(default=120, ge=5, le=43200)
    sqs_call_timeout: float = Field(default=2.0, gt=0)
    sqs_call_attempts: int = Field(default=2, ge=1, le=5)
    sqs_dlq_url: str | None = None

    # Redis (optional): shared rate limits across processes
    redis_url: SecretStr | None = None
    redis_key_prefix: str = "senso"

    # Worker runtime
    worker_concurrency: int = Field(default=4, ge=1)
    worker_drain_seconds: float = Field(default=90.0, ge=0)
    # `senso worker` lowers its own CPU priority to this Linux nice value at start: a backlog is
    # throughput work, and on a host it shares with the API the API's requests go first. (In an
    # ECS task each container has a CPU share of its own; there this changes nothing.)
    worker_nice: int = Field(default=19, ge=0, le=19)
    job_max_attempts: int = Field(default=5, ge=1)
    job_timeout_seconds: float = Field(default=3600.0, gt=0)
    job_max_redrives: int = Field(default=10, ge=1)
    job_retry_base_seconds: int = Field(default=10, ge=0)
    job_retry_max_seconds: int = Field(default=900, ge=0)
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    stall_after_seconds: int = Field(default=600, ge=1)
    loop_max_failures: int = Field(default=3, ge=1)

    # Evaluation pipeline
    run_concurrency: int = Field(default=8, ge=1)
    run_max_attempts: int = Field(default=3, ge=1)
    run_retry_base_seconds: float = Field(default=1.0, ge=0)
    run_retry_max_seconds: float = Field(default=60.0, ge=0)
    run_lease_seconds: float = Field(default=300.0, ge=1)
    max_failed_run_ratio: float = Field(default=0.2, ge=0, le=1)

    # Engines: which client serves each engine id
    engine_mode: Literal["auto", "real", "simulated"] = "auto"
    # Comma-separated engine ids this deployment serves, the same in the API and the worker
    # (empty: every engine). The API refuses any other for an org; with ENGINE_MODE=real the
    # worker refuses to start when one of them has no credentials.
    enabled_engines: str = ""

    # Shared rate limits (Redis when REDIS_URL is set, else per process)
    rate_limit_burst: int = Field(default=1, ge=1)

    # OpenAI
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-search-preview"
    openai_web_search: bool = True
    openai_input_price_per_mtok: Decimal = Field(default=Decimal("2.50"), ge=0)
    openai_output_price_per_mtok: Decimal = Field(default=Decimal("10.00"), ge=0)
    openai_timeout_seconds: float = Field(default=60.0, gt=0)
    openai_max_concurrency: int = Field(default=8, ge=1)
    openai_requests_per_minute: int = Field(default=500, ge=1)

    # Azure OpenAI
    azure_openai_api_key: SecretStr | None = None
    azure_openai_endpoint: str | None = None
    azure_openai_deployment: str = "gpt-4o"
    azure_openai_api_version: str = "2024-10-21"
    azure_openai_input_price_per_mtok: Decimal = Field(default=Decimal("2.50"), ge=0)
    azure_openai_output_price_per_mtok: Decimal = Field(default=Decimal("10.00"), ge=0)
    azure_openai_timeout_seconds: float = Field(default=60.0, gt=0)
    azure_openai_max_concurrency: int = Field(default=8, ge=1)
    azure_openai_requests_per_minute: int = Field(default=300, ge=1)

    # Anthropic
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_model: str = "claude-sonnet-4-5"
    anthropic_version: str = "2023-06-01"
    anthropic_max_tokens: int = Field(default=2048, ge=1)
    anthropic_web_search: bool = True
    anthropic_web_search_max_uses: int = Field(default=3, ge=1)
    anthropic_input_price_per_mtok: Decimal = Field(default=Decimal("3.00"), ge=0)
    anthropic_output_price_per_mtok: Decimal = Field(default=Decimal("15.00"), ge=0)
    anthropic_price_per_web_search: Decimal = Field(default=Decimal("0.01"), ge=0)
    anthropic_timeout_seconds: float = Field(default=90.0, gt=0)
    anthropic_max_concurrency: int = Field(default=8, ge=1)
    anthropic_requests_per_minute: int = Field(default=50, ge=1)

    # BrightData Web Scraper API (every brightdata_* engine; the scrapers are rows of
    # app.engines.scrapers.SCRAPERS)
    brightdata_api_key: SecretStr | None = None
    brightdata_base_url: str = "https://api.brightdata.com"
    # engine id → dataset id, JSON: replaces a row's dataset when BrightData publishes a new one.
    brightdata_dataset_ids: dict[str, str] = {}
    # engine id → countries it does not serve, JSON: replaces the row's list.
    brightdata_unserved_countries: dict[str, list[str]] = {}
    brightdata_price_per_record: Decimal = Field(default=Decimal("0.0015"), ge=0)
    brightdata_batch_size: int = Field(default=20, ge=1, le=20)
    brightdata_batch_window_seconds: float = Field(default=0.5, ge=0)
    brightdata_poll_interval_seconds: float = Field(default=5.0, gt=0)
    brightdata_snapshot_timeout_seconds: float = Field(default=900.0, gt=0)
    brightdata_timeout_seconds: float = Field(default=30.0, gt=0)
    brightdata_max_concurrency: int = Field(default=10, ge=1)
    brightdata_requests_per_minute: int = Field(default=60, ge=1)

    # Linkup
    linkup_api_key: SecretStr | None = None
    linkup_base_url: str = "https://api.linkup.so/v1"
    linkup_depth: Literal["fast", "standard", "deep"] = "standard"
    linkup_price_per_request: Decimal = Field(default=Decimal("0.005"), ge=0)
    linkup_timeout_seconds: float = Field(default=60.0, gt=0)
    linkup_max_concurrency: int = Field(default=5, ge=1)
    linkup_requests_per_minute: int = Field(default=60, ge=1)

    # Gemini API (generateContent with the Google Search tool)
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    gemini_model: str = "gemini-3-flash-preview"
    gemini_input_price_per_mtok: Decimal = Field(default=Decimal("0.50"), ge=0)
    # Output includes the model's thinking tokens, which Google bills as output.
    gemini_output_price_per_mtok: Decimal = Field(default=Decimal("3.00"), ge=0)
    # Gemini 3 bills grounding per search query it ran, Gemini 2.5 per grounded prompt.
    gemini_grounding_fee_basis: Literal["per_query", "per_prompt"] = "per_query"
    gemini_grounding_fee: Decimal = Field(default=Decimal("0.014"), ge=0)
    gemini_timeout_seconds: float = Field(default=60.0, gt=0)
    gemini_max_concurrency: int = Field(default=8, ge=1)
    gemini_requests_per_minute: int = Field(default=150, ge=1)
    # Grounding chunks link through expiring redirects; each is followed this far, this fast.
    gemini_redirect_timeout_seconds: float = Field(default=5.0, gt=0)
    gemini_redirect_max_hops: int = Field(default=3, ge=1, le=10)
    gemini_redirect_cache_size: int = Field(default=10_000, ge=0)

    # Perplexity Agent API (web_search tool)
    perplexity_api_key: SecretStr | None = None
    perplexity_base_url: str = "https://api.perplexity.ai"
    perplexity_model: str = "perplexity/sonar"
    perplexity_search_context_size: Literal["low", "medium", "high"] = "medium"
    perplexity_timeout_seconds: float = Field(default=60.0, gt=0)
    perplexity_max_concurrency: int = Field(default=8, ge=1)
    perplexity_requests_per_minute: int = Field(default=50, ge=1)

    # Google AI Overviews through DataForSEO's SERP API (google_ai_overview)
    dataforseo_login: SecretStr | None = None
    dataforseo_password: SecretStr | None = None
    dataforseo_base_url: str = "https://api.dataforseo.com"
    # Google loads many AI Overviews after the page; without this they would look absent.
    dataforseo_load_async_ai_overview: bool = True
    dataforseo_timeout_seconds: float = Field(default=60.0, gt=0)
    dataforseo_max_concurrency: int = Field(default=10, ge=1)
    dataforseo_requests_per_minute: int = Field(default=1000, ge=1)

    # LLM-assisted analysis: name variations and one structured call per answer
    analysis_provider: Literal["auto", "openai", "azure_openai", "simulated"] = "auto"
    analysis_model: str = "gpt-4o-mini"
    answer_analysis_enabled: bool = True
    analysis_input_price_per_mtok: Decimal = Field(default=Decimal("0.15"), ge=0)
    analysis_output_price_per_mtok: Decimal = Field(default=Decimal("0.60"), ge=0)
    analysis_timeout_seconds: float = Field(default=60.0, gt=0)
    analysis_max_concurrency: int = Field(default=8, ge=1)
    analysis_requests_per_minute: int = Field(default=500, ge=1)

    # Simulated engine
    simulated_latency_ms: int = Field(default=40, ge=0)
    simulated_failure_rate: float = Field(default=0.0, ge=0, le=1)

    # Webhooks: delivery to partners' endpoints
    # Lets endpoints use http and loopback addresses: local use and the tests only.
    webhook_allow_insecure_urls: bool = False
    # One attempt, all in: resolving the host, connecting, sending, the response's status line.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Waits before each retry of a failed attempt (s, m, h suffixes); then the delivery fails.
    webhook_retry_schedule: str = "5s,5m,30m,2h,5h,10h,10h"
    # The longest delay a retry message carries (SQS allows 900 s): a longer wait is re-sent.
    webhook_max_delay_seconds: int = Field(default=900, ge=1, le=900)
    # A due delivery whose message has not been acted on for this long is sent again.
    webhook_resend_after_seconds: int = Field(default=120, ge=1)

    # Defaults for new partners
    default_price_per_run: Decimal = Field(default=Decimal("0.05"), ge=0)

    # Scheduled enqueue (senso enqueue-all)
    enqueue_all_max_per_second: float = Field(default=10.0, gt=0)

    # Logging
    log_json: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # The edge: request limits, per-principal rate limits, CORS, hosts, security headers
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    max_header_bytes: int = Field(default=16_384, ge=1024)
    rate_limit_requests: int = Field(default=600, ge=1)
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    rate_limit_anonymous_requests: int = Field(default=120, ge=1)
    rate_limit_exempt_operator: bool = False
    auth_failure_limit: int = Field(default=10, ge=1)
    auth_failure_window_seconds: int = Field(default=300, ge=1)
    # Comma-separated lists (see the properties below).
    cors_allowed_origins: str | None = None
    cors_allowed_headers: str = "Authorization,Content-Type,X-Request-ID"
    trusted_hosts: str = "*"
    hsts_max_age_seconds: int = Field(default=0, ge=0)

    # API keys
    api_key_rotation_grace_seconds: int = Field(default=86_400, ge=0)

    # Batch size: what one trigger may ask, and what an org's matrix may hold
    max_runs_per_batch: int = Field(default=5_000, ge=1)
    max_questions_per_org: int = Field(default=200, ge=1)
    max_engines_per_org: int = Field(default=20, ge=1)
    max_countries_per_org: int = Field(default=50, ge=1)

    # Audit queue: events other services write to the trail (the worker consumes it when set)
    audit_sqs_queue_url: str | None = None
    audit_sqs_max_messages: int = Field(default=10, ge=1, le=10)
    audit_sqs_wait_seconds: int = Field(default=20, ge=0, le=20)
    audit_sqs_visibility_timeout: int = Field(default=60, ge=5, le=43200)

    # Report links (GET /r/{token}): the HMAC key that signs them; without one, a key made
    # when the process starts, so links stop working when it restarts (set it in production,
    # the same in every API process).
    report_signing_key: SecretStr | None = None
    # Where the links point (scheme, host, path prefix); default: the address the link was
    # asked for at.
    public_base_url: str | None = None
    report_link_default_days: int = Field(default=30, ge=1, le=90)

    # Prometheus metrics
    metrics_require_token: bool = True
    metrics_cache_seconds: float = Field(default=60.0, gt=0)
    metrics_low_balance_threshold: Decimal = Field(default=Decimal("10"), ge=0)
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @property
    def cors_origins(self) -> list[str]:
        return _items(self.cors_allowed_origins)

    @property
    def cors_headers(self) -> list[str]:
        return _items(self.cors_allowed_headers)

    @property
    def trusted_host_patterns(self) -> list[str]:
        return _items(self.trusted_hosts)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _valid_retry_schedule(cls, value: str) -> str:
        parse_durations(value)
        return value

    @property
    def webhook_retry_delays(self) -> tuple[int, ...]:
        """Seconds to wait after each failed attempt, in order."""
        return parse_durations(self.webhook_retry_schedule)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_secret_value().startswith("sqlite")


def _items(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_durations(text: str) -> tuple[int, ...]:
    """Durations such as `5s,5m,2h` in seconds, (5, 300, 7200); a bare number is seconds."""
    durations = []
    for item in text.split(","):
        item = item.strip().lower()
        value, unit = (item[:-1], item[-1]) if item[-1:] in _UNITS else (item, "s")
        if not value.isdigit() or int(value) <= 0:
            raise ValueError(f"{item!r} is not a duration such as 30s, 5m or 2h")
        durations.append(int(value) * _UNITS[unit])
    return tuple(durations)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
