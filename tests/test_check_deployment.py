"""scripts/check_deployment.py: how deploy.sh tells a steady rollout from a rolled-back one.

moto cannot roll a deployment back, so the decision is tested on describe-services documents
shaped like ECS's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.deploy_support import (
    SCRIPTS,
    TASK_DEFINITION,
    deployment,
    described_services,
    load_script,
)

checker = load_script("check_deployment")
OURS = f"{TASK_DEFINITION}/senso:8"


CASES: dict[str, tuple[Any, str]] = {
    "steady": (
        described_services(deployment("ecs-svc/8", "PRIMARY", "senso:8", "COMPLETED")),
        "succeeded: senso:8 runs 2/2 tasks",
    ),
    "rolling out": (
        described_services(
            deployment("ecs-svc/8", "PRIMARY", "senso:8", "IN_PROGRESS"),
            deployment("ecs-svc/7", "ACTIVE", "senso:7", "COMPLETED"),
        ),
        "pending: 2/2 tasks running, 2 deployment(s), rollout IN_PROGRESS",
    ),
    "tasks still starting": (
        described_services(deployment("ecs-svc/8", "PRIMARY", "senso:8", "IN_PROGRESS"), running=1),
        "pending: 1/2 tasks running",
    ),
    "rollout failed, rolling back": (
        described_services(
            deployment("ecs-svc/9", "PRIMARY", "senso:7", "IN_PROGRESS"),
            deployment("ecs-svc/8", "ACTIVE", "senso:8", "FAILED"),
            runs="senso:7",
        ),
        "failed: the rollout of senso:8 failed: deployment ecs-svc/8 failed",
    ),
    "rollout failed, no rollback": (
        described_services(deployment("ecs-svc/8", "PRIMARY", "senso:8", "FAILED"), running=0),
        "failed: the rollout of senso:8 failed",
    ),
    "rolled back and steady again": (
        described_services(
            deployment("ecs-svc/9", "PRIMARY", "senso:7", "COMPLETED"), runs="senso:7"
        ),
        "failed: senso:8 was rolled back or replaced; senso:7 runs",
    ),
    "replaced by a newer deploy": (
        described_services(
            deployment("ecs-svc/10", "PRIMARY", "senso:9", "IN_PROGRESS"),
            deployment("ecs-svc/8", "ACTIVE", "senso:8", "COMPLETED"),
            runs="senso:9",
        ),
        "failed: senso:8 was rolled back or replaced; senso:9 runs",
    ),
    "superseded": (
        described_services(
            deployment("ecs-svc/10", "PRIMARY", "senso:8", "IN_PROGRESS"),
            deployment("ecs-svc/8", "ACTIVE", "senso:8", "COMPLETED"),
        ),
        "failed: deployment ecs-svc/8 was superseded",
    ),
    "service deleted": (
        {"services": [], "failures": [{"arn": "x", "reason": "MISSING"}]},
        "failed: the service is missing or inactive",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_decision(case: str) -> None:
    described, expected = CASES[case]

    decision: str = checker.decide(described, "ecs-svc/8", OURS)

    assert decision.startswith(expected), decision


def check(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "check_deployment.py"),
            "--deployment-id",
            "ecs-svc/8",
            "--task-definition",
            OURS,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_command_line_reads_describe_services_from_stdin() -> None:
    described, expected = CASES["rolled back and steady again"]

    result = check(json.dumps(described))

    assert result.returncode == 0
    assert result.stdout == expected + "\n"


def test_unreadable_input_is_a_failed_step_not_an_invalid_configuration() -> None:
    result = check("An error occurred (ExpiredTokenException)")

    # deploy.sh passes the status on, and its exit 2 means "the configuration is invalid".
    assert result.returncode == 1
    assert result.stdout == ""
    assert "describe-services output is not JSON" in result.stderr
