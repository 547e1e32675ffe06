"""`senso worker` as a real process: its environment and its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    stderr: list[str]

    def output(self) -> str:
        return "\n".join(self.stderr[-40:])

    def json_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for raw in self.stderr:
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                raise AssertionError(
                    f"LOG_JSON=true but a stderr line is not JSON: {raw!r}"
                ) from None
            assert isinstance(line, dict), raw
            lines.append(line)
        return lines


def worker_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The process environment of `senso worker`: none of the caller's settings leak in."""
    setting_names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in setting_names}
    env.update(
        {
            "DATABASE_URL": settings.database_url.get_secret_value(),
            "SQS_QUEUE_URL": str(settings.sqs_queue_url),
            "AWS_ENDPOINT_URL": str(settings.aws_endpoint_url),
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            "AWS_DEFAULT_REGION": "us-east-1",
            "SQS_WAIT_SECONDS": "1",
            "SQS_VISIBILITY_TIMEOUT": "30",
            "WORKER_CONCURRENCY": "2",
            "JOB_RETRY_BASE_SECONDS": "1",
            "RECONCILE_INTERVAL_SECONDS": "3600",
            "LOG_JSON": "true",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # At the suite's own priority: a test waits on it while the suite's other process
            # keeps a core busy.
            "WORKER_NICE": "0",
        }
    )
    env.update(overrides)
    return env


@contextlib.asynccontextmanager
async def worker_process(env: Mapping[str, str]) -> AsyncIterator[WorkerProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "senso",
        "worker",
        cwd=REPO_ROOT,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            stderr.append(raw.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(read_stderr())
    try:
        yield WorkerProcess(process, stderr)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await asyncio.wait_for(process.wait(), 10)
        await asyncio.wait_for(reader, 10)
