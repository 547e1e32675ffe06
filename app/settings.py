"""Process configuration: every setting comes from the environment (see the README's table)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./senso.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Database
    database_url: SecretStr = SecretStr(EMBEDDED_DATABASE_URL)
    database_pool_size: int = Field(default=10, ge=1)
    database_echo: bool = False

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
    sqs_call_timeout: float = Field(default=10.0, gt=0)

    # Redis (optional)
    redis_url: SecretStr | None = None

    # Worker runtime
    worker_concurrency: int = Field(default=4, ge=1)
    worker_drain_seconds: float = Field(default=90.0, ge=0)
    job_max_attempts: int = Field(default=5, ge=1)
    job_retry_base_seconds: int = Field(default=10, ge=0)
    job_retry_max_seconds: int = Field(default=900, ge=0)
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    stall_after_seconds: int = Field(default=600, ge=1)

    # Evaluation pipeline
    run_concurrency: int = Field(default=8, ge=1)
    run_max_attempts: int = Field(default=3, ge=1)
    run_retry_base_seconds: float = Field(default=1.0, ge=0)
    run_lease_seconds: int = Field(default=300, ge=1)
    max_failed_run_ratio: float = Field(default=0.2, ge=0, le=1)

    # Simulated engine
    simulated_latency_ms: int = Field(default=40, ge=0)
    simulated_failure_rate: float = Field(default=0.0, ge=0, le=1)

    # Defaults for new partners
    default_price_per_run: Decimal = Field(default=Decimal("0.05"), ge=0)

    # Logging
    log_json: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_secret_value().startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
