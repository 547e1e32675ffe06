"""deploy.sh's wait step on deployments moto cannot produce: a rollback, a stuck rollout.

Here `aws` is a script answering from canned describe-services documents shaped like ECS's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import (
    ACCOUNT_ID,
    REGION,
    deploy_config,
    deployment,
    described_services,
    install_stand_ins,
    run_script,
    script_env,
    write_executable,
)

CANNED_AWS = """printf 'aws %s\\n' "$*" >>"$FAKE_CALLS"
revisions=arn:aws:ecs:us-east-1:123456789012:task-definition
case "$1 $2" in
  "ecr describe-repositories")
    printf '%s\\tIMMUTABLE\\n' "$REPOSITORY_URI" ;;
  "logs describe-log-groups") echo "$CLOUDWATCH_LOG_GROUP" ;;
  "ecs register-task-definition") echo "${revisions}/senso:8" ;;
  "ecs update-service") echo "ecs-svc/8" ;;
  "ecs describe-services")
    if [[ " $* " == *" --query "* ]]; then
      echo "${revisions}/senso:7"
    else
      cat "$DESCRIBED_SERVICES"
    fi ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"""

ROLLED_BACK = described_services(
    deployment("ecs-svc/9", "PRIMARY", "senso:7", "COMPLETED"),
    deployment(
        "ecs-svc/8",
        "ACTIVE",
        "senso:8",
        "FAILED",
        reason="ECS deployment circuit breaker: tasks failed to start.",
    ),
    runs="senso:7",
)
ROLLBACK_DONE = described_services(
    deployment("ecs-svc/9", "PRIMARY", "senso:7", "COMPLETED"), runs="senso:7"
)
STUCK = described_services(
    deployment("ecs-svc/8", "PRIMARY", "senso:8", "IN_PROGRESS"),
    deployment("ecs-svc/7", "ACTIVE", "senso:7", "COMPLETED"),
)


@pytest.fixture
def canned_env(tmp_path: Path) -> dict[str, str]:
    """deploy.sh's configuration with an `aws` that answers from canned documents."""
    bin_dir = install_stand_ins(tmp_path / "bin", ("docker", "make"))
    write_executable(bin_dir / "aws", CANNED_AWS)
    env = script_env(bin_dir, tmp_path / "calls")
    return (
        env
        | deploy_config()
        | {
            "REPOSITORY_URI": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/senso",
            "CLOUDWATCH_LOG_GROUP": "/ecs/senso",
            "SKIP_BUILD": "true",
            "IMAGE_TAG": "v8",
            "DESCRIBED_SERVICES": str(tmp_path / "described.json"),
            "WAIT_POLL_SECONDS": "0.1",
        }
    )


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (ROLLED_BACK, "the rollout of senso:8 failed: ECS deployment circuit breaker"),
        (ROLLBACK_DONE, "senso:8 was rolled back or replaced; senso:7 runs"),
    ],
)
def test_a_rolled_back_deployment_is_a_failure(
    canned_env: dict[str, str], document: dict[str, Any], reason: str
) -> None:
    Path(canned_env["DESCRIBED_SERVICES"]).write_text(json.dumps(document))

    ran = run_script("deploy.sh", canned_env)

    assert ran.returncode == 1
    assert f"deployment of senso:8 to senso failed: {reason}" in ran.stderr
    assert "new revision" not in ran.stdout


def test_waiting_gives_up_at_the_timeout(canned_env: dict[str, str]) -> None:
    Path(canned_env["DESCRIBED_SERVICES"]).write_text(json.dumps(STUCK))

    # Bash counts whole seconds: a 1 s deadline may come a moment after it is set, before a
    # second poll (each starts Python) has had its turn. 3 s leave at least 2 for polls.
    ran = run_script("deploy.sh", canned_env | {"WAIT_TIMEOUT_SECONDS": "3"})

    assert ran.returncode == 1
    assert "gave up waiting after 3s: pending: 2/2 tasks running, 2 deployment(s)" in ran.stderr
    assert (
        len(
            [
                c
                for c in ran.calls
                if "describe-services --cluster senso --services senso --output json" in c
            ]
        )
        > 1
    )


def test_wait_false_returns_once_the_service_is_updated(canned_env: dict[str, str]) -> None:
    ran = run_script("deploy.sh", canned_env | {"WAIT": "false"})

    assert ran.returncode == 0, ran.stderr
    assert "--output json" not in " ".join(ran.calls)
    assert ran.output("new revision") == "senso:8"
    assert ran.output("rollback") == (
        "aws ecs update-service --region us-east-1 --cluster senso --service senso "
        "--task-definition senso:7"
    )
