"""The emulator's configuration from `senso emulator` options: a JSON file, then flags."""

from __future__ import annotations

from collections.abc import Sequence

from devtools.emulator.config import PROVIDERS, EmulatorConfig, Fault, RateLimitRule


def emulator_config(
    config_json: str | None,
    *,
    latency_ms: int | None,
    rate_limits: Sequence[str],
    error_rate: float | None,
    overload_rate: float | None,
) -> EmulatorConfig:
    config = EmulatorConfig.model_validate_json(config_json) if config_json else EmulatorConfig()
    updates: dict[str, object] = {}
    if latency_ms is not None:
        updates["latency_ms"] = latency_ms
    if rate_limits:
        merged: dict[str, RateLimitRule] = {str(k): v for k, v in config.rate_limits.items()}
        merged.update(_parse_rate_limits(rate_limits))
        updates["rate_limits"] = merged
    faults = list(config.faults)
    if error_rate is not None:
        faults.append(Fault(kind="server_error", rate=error_rate))
    if overload_rate is not None:
        faults.append(Fault(kind="overloaded", rate=overload_rate))
    updates["faults"] = faults
    # Validated again so a flag value out of range is refused like one in the file.
    return EmulatorConfig.model_validate({**config.model_dump(), **updates})


def _parse_rate_limits(values: Sequence[str]) -> dict[str, RateLimitRule]:
    rules: dict[str, RateLimitRule] = {}
    for value in values:
        provider, separator, rpm = value.partition("=")
        if not separator or provider not in PROVIDERS or not rpm.isdigit() or int(rpm) < 1:
            raise ValueError(
                f"--rate-limit {value!r}: expected PROVIDER=RPM with PROVIDER one of "
                f"{', '.join(PROVIDERS)} and RPM a positive whole number"
            )
        rules[provider] = RateLimitRule(requests_per_minute=int(rpm))
    return rules
