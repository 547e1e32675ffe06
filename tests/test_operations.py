"""What operators run next to the service: the queue template and the evaluate-org script."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx

from app.context import AppContext
from app.settings import Settings
from devtools.embedded import run_worker_task
from tests.conftest import API_TOKEN
from tests.factories import create_org, create_partner

ROOT = Path(__file__).resolve().parent.parent


def test_queue_template_leaves_the_worker_room_before_the_dlq() -> None:
    template = json.loads((ROOT / "infra" / "sqs-queues.cfn.json").read_text())
    parameters = template["Parameters"]
    queue = template["Resources"]["JobQueue"]["Properties"]
    defaults = Settings()
    assert parameters["MaxReceiveCount"]["Default"] > defaults.job_max_attempts
    assert parameters["VisibilityTimeout"]["Default"] == defaults.sqs_visibility_timeout
    assert queue["ReceiveMessageWaitTimeSeconds"] == defaults.sqs_wait_seconds
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["DeadLetterQueue", "Arn"]
    }


async def test_evaluate_org_script_triggers_and_waits(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, questions=2)
    env = {
        **os.environ,
        "SENSO_URL": str(api.base_url).rstrip("/"),
        "API_TOKEN": API_TOKEN,
        "POLL_SECONDS": "0.2",
        "TIMEOUT_SECONDS": "60",
    }
    async with run_worker_task(context):
        process = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "evaluate-org.sh"),
            setup.org_id,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    assert lines[0].endswith(f": {setup.runs} runs, existing=False")
    assert lines[-1] == f"completed {setup.runs}/{setup.runs} completed, 0 failed"


async def test_evaluate_org_script_fails_on_an_unknown_org(api: httpx.AsyncClient) -> None:
    env = {**os.environ, "SENSO_URL": str(api.base_url).rstrip("/"), "API_TOKEN": API_TOKEN}
    process = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "evaluate-org.sh"),
        "00000000-0000-0000-0000-000000000000",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode != 0
    assert b'"error":"not_found"' in stdout + stderr


def test_readme_documents_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        default = field.default
        if name == "database_url":
            shown = "`sqlite+aiosqlite:///./senso.db`"
        elif default is None:
            shown = "—"
        else:
            shown = f"`{str(default).lower() if isinstance(default, bool) else default}`"
        assert f"| `{name.upper()}` | {shown} |" in readme, name


def test_readme_quick_start_is_the_two_make_targets() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    assert [line.split("#")[0].strip() for line in quick_start.splitlines()[1:]] == [
        "make demo",
        "make test",
    ]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
