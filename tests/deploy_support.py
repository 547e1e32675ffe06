"""What the deploy tests run the scripts with: an AWS emulator and recording stand-ins.

moto's server runs in its own process, with MOTO_ECS_SERVICE_RUNNING=1 in its environment
(moto reads it when each service is created; without it services never reach their desired
count). docker, make and git are replaced by scripts that append their command line to a
calls file, and `aws` by one that does so and then runs the real AWS CLI, so a test sees every
call a script made, in order. Also here: the configuration the deploy tests start from, and
describe-services documents shaped like ECS's, for what moto cannot produce (rollbacks).
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from devtools.embedded import moto_server_process

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
VENV_BIN = Path(sys.executable).parent
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret"
TASK_DEFINITION = f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task-definition"

RECORD = 'printf \'%s %s\\n\' "$(basename "$0")" "$*" >>"$FAKE_CALLS"\n'
STAND_INS = {
    "aws": RECORD + 'exec "$REAL_AWS" "$@"\n',
    # `docker login --password-stdin` reads the password; not reading it would break the pipe.
    "docker": RECORD + '[[ " $* " != *" --password-stdin "* ]] || cat >/dev/null\n',
    "make": RECORD + 'exit "${FAKE_MAKE_STATUS:-0}"\n',
    "git": RECORD
    + 'case "$*" in\n'
    + '  *"rev-parse --short HEAD") echo abc1234 ;;\n'
    + '  *"diff --quiet HEAD --") exit "${FAKE_GIT_DIRTY:-0}" ;;\n'
    + "esac\n",
}


@dataclass(frozen=True, slots=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str
    calls: list[str]

    def calls_of(self, program: str) -> list[str]:
        return [call for call in self.calls if call.split(" ", 1)[0] == program]

    def output(self, label: str) -> str:
        """The value of the one `label: value` line of stdout."""
        [line] = [line for line in self.stdout.splitlines() if line.startswith(f"{label}: ")]
        return line.removeprefix(f"{label}: ")


def deploy_config(name: str = "senso") -> dict[str, str]:
    """The required configuration of deploy.sh (and what the renderer reads of it)."""
    return {
        "AWS_REGION": REGION,
        "AWS_ACCOUNT_ID": ACCOUNT_ID,
        "ECR_REPOSITORY": name,
        "ECS_CLUSTER": name,
        "ECS_SERVICE": name,
        "TASK_FAMILY": name,
        "ECS_SUBNET_IDS": "subnet-0a1b2c",
        "ECS_SECURITY_GROUP_IDS": "sg-0a1b2c",
        "EXECUTION_ROLE_ARN": f"{ROLE}/ecsTaskExecutionRole",
        "TASK_ROLE_ARN": f"{ROLE}/senso-task",
        "SQS_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/senso-jobs",
        "DATABASE_URL_SECRET_ARN": f"{SECRET}:senso/database-AbCdEf",
        "API_TOKEN_SECRET_ARN": f"{SECRET}:senso/api-token-AbCdEf",
        "ENABLED_ENGINES": "openai",
        "OPENAI_API_KEY_SECRET_ARN": f"{SECRET}:senso/openai-AbCdEf",
    }


def deployment(
    id_: str, status: str, revision: str, rollout: str, reason: str | None = None
) -> dict[str, Any]:
    """One deployment of a describe-services document; revision is `family:revision`."""
    return {
        "id": id_,
        "status": status,
        "taskDefinition": f"{TASK_DEFINITION}/{revision}",
        "rolloutState": rollout,
        "rolloutStateReason": reason or f"deployment {id_} {rollout.lower()}",
    }


def described_services(
    *deployments: dict[str, Any], runs: str = "senso:8", running: int = 2
) -> dict[str, Any]:
    """`aws ecs describe-services` output: one active service of 2 tasks, running `runs`."""
    return {
        "services": [
            {
                "status": "ACTIVE",
                "taskDefinition": f"{TASK_DEFINITION}/{runs}",
                "desiredCount": 2,
                "runningCount": running,
                "deployments": list(deployments),
            }
        ],
        "failures": [],
    }


def write_executable(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def install_stand_ins(directory: Path, names: tuple[str, ...] = tuple(STAND_INS)) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_executable(directory / name, STAND_INS[name])
    return directory


def script_env(bin_dir: Path, calls_file: Path) -> dict[str, str]:
    """The environment every script runs with: stand-ins first on PATH, then this venv."""
    return {
        "PATH": os.pathsep.join([str(bin_dir), str(VENV_BIN), os.environ.get("PATH", "")]),
        "FAKE_CALLS": str(calls_file),
        "REAL_AWS": str(VENV_BIN / "aws"),
        "PYTHON": sys.executable,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **{name: os.environ[name] for name in ("HOME",) if name in os.environ},
    }


def run_script(name: str, env: dict[str, str], *args: str, timeout: float = 120) -> Ran:
    calls_file = Path(env["FAKE_CALLS"])
    calls_file.write_text("")
    completed = subprocess.run(
        [str(SCRIPTS / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    calls = calls_file.read_text().splitlines()
    return Ran(completed.returncode, completed.stdout, completed.stderr, calls)


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port, with ECS services that reach steady state.

    The server process reads MOTO_ECS_SERVICE_RUNNING from its environment each time a service
    is created: a service then reports that many tasks running.
    """
    with moto_server_process({"MOTO_ECS_SERVICE_RUNNING": "1"}) as url:
        yield url


def load_script(name: str) -> ModuleType:
    """A Python script of scripts/ as a module, to test its functions directly."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
