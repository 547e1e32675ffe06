"""`senso emulator` options: a JSON file, then flags on top; bad values are refused clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from devtools.emulator.config import EmulatorConfig, Fault, RateLimitRule
from devtools.emulator.options import emulator_config
from tests.processes import REPO_ROOT


def test_flags_apply_on_top_of_the_file() -> None:
    file_config = EmulatorConfig(
        latency_ms=100,
        rate_limits={"anthropic": RateLimitRule(requests_per_minute=5)},
        faults=[Fault(kind="auth_wall", provider="brightdata", times=2)],
    )
    config = emulator_config(
        file_config.model_dump_json(),
        latency_ms=7,
        rate_limits=["openai=60", "linkup=30"],
        error_rate=0.1,
        overload_rate=0.05,
    )
    assert config.latency_ms == 7
    assert {p: r.requests_per_minute for p, r in config.rate_limits.items()} == {
        "anthropic": 5,
        "openai": 60,
        "linkup": 30,
    }
    assert [(f.kind, f.rate, f.times) for f in config.faults] == [
        ("auth_wall", 1.0, 2),
        ("server_error", 0.1, None),
        ("overloaded", 0.05, None),
    ]


def test_no_flags_keep_the_file_as_it_is() -> None:
    file_config = EmulatorConfig(latency_ms=3, faults=[Fault(kind="stall", stall_seconds=2)])
    config = emulator_config(
        file_config.model_dump_json(),
        latency_ms=None,
        rate_limits=[],
        error_rate=None,
        overload_rate=None,
    )
    assert config == file_config


@pytest.mark.parametrize("value", ["openai", "openai=", "openai=0", "openai=fast", "bard=10"])
def test_a_bad_rate_limit_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="expected PROVIDER=RPM"):
        emulator_config(
            None, latency_ms=None, rate_limits=[value], error_rate=None, overload_rate=None
        )


def test_an_error_rate_out_of_range_is_refused() -> None:
    with pytest.raises(ValidationError):
        emulator_config(None, latency_ms=None, rate_limits=[], error_rate=1.5, overload_rate=None)


def test_the_command_exits_2_on_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "senso", "emulator", "--rate-limit", "bard=10"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "senso emulator: --rate-limit 'bard=10'" in result.stderr
