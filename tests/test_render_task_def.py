"""scripts/render_task_def.py: rendering without evaluation, and the offline validation."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.engines.catalogue import CATALOGUE
from app.settings import Settings
from tests.deploy_support import ACCOUNT_ID, REGION, ROOT, SCRIPTS, deploy_config, load_script

renderer = load_script("render_task_def")
TEMPLATE = ROOT / "infra" / "ecs-task-def.json.template"
# deploy.sh's configuration, with what deploy.sh adds before it renders.
ENV = deploy_config() | {
    "TASK_CPU": "1024",
    "TASK_MEMORY": "2048",
    "CONTAINER_NAME": "api",
    "IMAGE_URI": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/senso:20250101120000",
    "CLOUDWATCH_LOG_GROUP": "/ecs/senso",
    "CLOUDWATCH_STREAM_PREFIX": "ecs",
}


def rendered(**env: str) -> dict[str, Any]:
    document: dict[str, Any] = renderer.render(json.loads(TEMPLATE.read_text()), ENV | env)
    return document


def render_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "render_task_def.py"), "render", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def problems_of(document: dict[str, Any]) -> list[str]:
    try:
        renderer.validate(document)
    except renderer.TaskDefinitionError as exc:
        problems: list[str] = exc.problems
        return problems
    return []


def environment(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["environment"]}


def secrets(container: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["valueFrom"] for s in container["secrets"]}


def test_the_template_renders_into_a_valid_task_definition() -> None:
    document = rendered()

    assert problems_of(document) == []
    assert "${" not in json.dumps(document)


def test_the_worker_alone_is_the_sidecar_worker_made_essential() -> None:
    sidecar = rendered()

    document = renderer.worker_alone(sidecar)

    assert problems_of(document) == []
    assert document["family"] == "senso-worker"
    [alone] = document["containerDefinitions"]
    assert (alone["name"], alone["essential"], alone["command"]) == ("worker", True, ["worker"])
    assert "dependsOn" not in alone
    assert "restartPolicy" not in alone
    # Everything else is the sidecar task's: the same size, roles, image, environment, logs.
    kept = {k: v for k, v in worker(sidecar).items() if k not in {"dependsOn", "restartPolicy"}}
    assert document == sidecar | {
        "family": "senso-worker",
        "containerDefinitions": [kept | {"essential": True}],
    }
    assert sidecar == rendered(), "the sidecar task definition is left as it was"


def test_the_command_line_renders_the_worker_alone() -> None:
    result = render_command("--worker-alone", str(TEMPLATE), env=ENV)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["family"] == "senso-worker"
    assert [c["name"] for c in document["containerDefinitions"]] == ["worker"]


def test_values_arrive_as_they_are_never_evaluated() -> None:
    awkward = "a \"quoted\" 'word', $HOME, ${TASK_FAMILY}, `id`, back\\slash\nnew line"

    document = rendered(SQS_QUEUE_URL=awkward)

    for container in document["containerDefinitions"]:
        assert environment(container)["SQS_QUEUE_URL"] == awkward


def test_the_command_line_prints_json_any_shell_value_survives(tmp_path: Path) -> None:
    awkward = 'it\'s "$(rm -rf /)" \\ ${X}'
    result = render_command(str(TEMPLATE), env=ENV | {"SENSO_OPENAI_MODEL": awkward})

    assert result.returncode == 0, result.stderr
    api, worker = json.loads(result.stdout)["containerDefinitions"]
    assert environment(api)["OPENAI_MODEL"] == environment(worker)["OPENAI_MODEL"] == awkward


def test_every_missing_variable_is_named() -> None:
    env = {k: v for k, v in ENV.items() if k not in {"IMAGE_URI", "TASK_ROLE_ARN"}}

    with pytest.raises(renderer.TaskDefinitionError) as raised:
        renderer.render(json.loads(TEMPLATE.read_text()), env)

    assert raised.value.problems == ["variables not set: IMAGE_URI, TASK_ROLE_ARN"]


def test_unset_optional_secrets_are_left_out_and_set_ones_kept() -> None:
    redis = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:redis-AbCdEf"
    openai = "arn:aws:ssm:eu-west-1:123456789012:parameter/senso/openai"

    api, worker = rendered(REDIS_URL_SECRET_ARN=redis, OPENAI_API_KEY_SECRET_ARN=openai)[
        "containerDefinitions"
    ]

    assert secrets(api) == {
        "DATABASE_URL": ENV["DATABASE_URL_SECRET_ARN"],
        "API_TOKEN": ENV["API_TOKEN_SECRET_ARN"],
        "REDIS_URL": redis,
    }
    assert secrets(worker) == {
        "DATABASE_URL": ENV["DATABASE_URL_SECRET_ARN"],
        "REDIS_URL": redis,
        "OPENAI_API_KEY": openai,
    }


def test_senso_settings_reach_every_container_once() -> None:
    api, worker = rendered(SENSO_LOG_LEVEL="DEBUG", SENSO_WORKER_DRAIN_SECONDS="60")[
        "containerDefinitions"
    ]

    assert environment(api)["LOG_LEVEL"] == environment(worker)["LOG_LEVEL"] == "DEBUG"
    assert [e["name"] for e in worker["environment"]].count("WORKER_DRAIN_SECONDS") == 1
    assert environment(worker)["WORKER_DRAIN_SECONDS"] == "60"


@pytest.mark.parametrize("name", ["SENSO_DATABASE_URL", "SENSO_API_TOKEN", "SENSO_OPENAI_API_KEY"])
def test_a_secret_is_never_accepted_as_a_plain_setting(name: str) -> None:
    with pytest.raises(renderer.TaskDefinitionError) as raised:
        rendered(**{name: "s3cr3t"})

    [problem] = raised.value.problems
    assert problem.startswith(f"{name}: a secret goes in as a Secrets Manager ARN")


def test_the_drain_bound_uses_the_apps_long_poll() -> None:
    assert Settings().sqs_wait_seconds == renderer.APP_SQS_WAIT_SECONDS


Change = Callable[[dict[str, Any]], None]


def api(document: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = document["containerDefinitions"][0]
    return container


def worker(document: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = document["containerDefinitions"][1]
    return container


INVALID: dict[str, tuple[Change, str]] = {
    "unknown key": (
        lambda d: api(d).update(healthcheck={}),
        'Unknown parameter in containerDefinitions[0]: "healthcheck"',
    ),
    "wrong type": (lambda d: worker(d).update(stopTimeout="120"), "Invalid type for parameter"),
    "enum value": (
        lambda d: worker(d)["dependsOn"][0].update(condition="READY"),
        "dependsOn[0].condition: 'READY' is not one of START, COMPLETE, SUCCESS, HEALTHY",
    ),
    "log driver": (
        lambda d: api(d)["logConfiguration"].update(logDriver="cloudwatch"),
        "logDriver: 'cloudwatch' is not one of",
    ),
    "health interval": (
        lambda d: api(d)["healthCheck"].update(interval=3),
        "container api: healthCheck.interval 3 is outside 5-300",
    ),
    "health timeout": (
        lambda d: api(d)["healthCheck"].update(timeout=61),
        "healthCheck.timeout 61 is outside 2-60",
    ),
    "health retries": (
        lambda d: api(d)["healthCheck"].update(retries=0),
        "healthCheck.retries 0 is outside 1-10",
    ),
    "health start period": (
        lambda d: api(d)["healthCheck"].update(startPeriod=301),
        "healthCheck.startPeriod 301 is outside 0-300",
    ),
    "stop timeout": (
        lambda d: worker(d).update(stopTimeout=121),
        "container worker: stopTimeout 121 is outside 0-120 (Fargate)",
    ),
    "restart period": (
        lambda d: worker(d)["restartPolicy"].update(restartAttemptPeriod=30),
        "restartPolicy.restartAttemptPeriod 30 is outside 60-1800",
    ),
    "port": (
        lambda d: api(d)["portMappings"][0].update(containerPort=70000),
        "containerPort 70000 is outside 1-65535",
    ),
    "host port": (
        lambda d: api(d)["portMappings"][0].update(hostPort=80),
        "hostPort must equal containerPort with awsvpc",
    ),
    "task size": (
        lambda d: d.update(cpu="256", memory="4096"),
        "Fargate does not run cpu 256 with memory 4096; with cpu 256: 512, 1024, 2048",
    ),
    "network mode": (lambda d: d.update(networkMode="bridge"), "networkMode must be awsvpc"),
    "launch type": (
        lambda d: d.update(requiresCompatibilities=["EC2"]),
        'requiresCompatibilities must be ["FARGATE"]',
    ),
    "architecture": (
        lambda d: d["runtimePlatform"].update(cpuArchitecture="ARM64"),
        "runtimePlatform must be LINUX / X86_64",
    ),
    "role": (
        lambda d: d.update(executionRoleArn="ecsTaskExecutionRole"),
        "executionRoleArn 'ecsTaskExecutionRole' is not an IAM role ARN",
    ),
    "family": (lambda d: d.update(family="senso prod"), "family 'senso prod'"),
    "dependency": (
        lambda d: worker(d)["dependsOn"][0].update(containerName="web"),
        "container worker: dependsOn names no container 'web'",
    ),
    "healthy without a check": (
        lambda d: api(d).pop("healthCheck"),
        "dependsOn api HEALTHY needs a healthCheck on api",
    ),
    "secret value": (
        lambda d: api(d)["secrets"][0].update(valueFrom="postgresql://u:p@db/senso"),
        "secret DATABASE_URL valueFrom 'postgresql://u:p@db/senso' is not a Secrets Manager",
    ),
    "duplicate variable": (
        lambda d: api(d)["environment"].append({"name": "LOG_JSON", "value": "false"}),
        "container api: LOG_JSON is set more than once",
    ),
    "drain past the stop timeout": (
        lambda d: worker(d).update(stopTimeout=100),
        "WORKER_DRAIN_SECONDS 90 + SQS_WAIT_SECONDS 20 must stay below stopTimeout 100",
    ),
    "no drain setting": (
        lambda d: worker(d).update(environment=[]),
        "the worker must set WORKER_DRAIN_SECONDS below its stopTimeout",
    ),
    "log stream prefix": (
        lambda d: api(d)["logConfiguration"]["options"].pop("awslogs-stream-prefix"),
        "container api: awslogs needs the option awslogs-stream-prefix",
    ),
    "nothing essential": (
        lambda d: api(d).update(essential=False),
        "at least one container must be essential",
    ),
}


@pytest.mark.parametrize("case", INVALID)
def test_validation_refuses(case: str) -> None:
    change, expected = INVALID[case]
    document = copy.deepcopy(rendered())
    change(document)

    problems = problems_of(document)

    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("256", "512"), ("256", "2048"), ("512", "4096"), ("4096", "30720"), ("16384", "122880")],
)
def test_fargate_sizes_it_allows(cpu: str, memory: str) -> None:
    assert renderer.fargate_size_problem(cpu, memory) is None


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("256", "4096"), ("1024", "1024"), ("2048", "4500"), ("300", "1024"), ("1 vCPU", "2 GB")],
)
def test_fargate_sizes_it_refuses(cpu: str, memory: str) -> None:
    assert renderer.fargate_size_problem(cpu, memory) is not None


def test_the_command_line_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    document = rendered()
    document.update(cpu="256", memory="4096", networkMode="bridge")
    template = tmp_path / "broken.json.template"
    template.write_text(json.dumps(document))

    result = render_command(str(template), env=ENV)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "  - networkMode must be awsvpc on Fargate" in result.stderr
    assert "  - Fargate does not run cpu 256 with memory 4096" in result.stderr


def test_an_enabled_engine_needs_its_credentials_on_the_worker() -> None:
    document = rendered(ENABLED_ENGINES="openai,gemini,google_ai_overview,azure_openai,gpt-9")

    with pytest.raises(renderer.TaskDefinitionError) as raised:
        renderer.validate(document)

    worker = "container 'worker'"
    assert raised.value.problems == [
        "container 'api': ENABLED_ENGINES names unknown engines: gpt-9",
        f"{worker}: ENABLED_ENGINES names unknown engines: gpt-9",
        f"{worker}: engine 'gemini' is enabled but GEMINI_API_KEY_SECRET_ARN is not set",
        f"{worker}: engine 'google_ai_overview' is enabled but DATAFORSEO_LOGIN_SECRET_ARN, "
        "DATAFORSEO_PASSWORD_SECRET_ARN is not set",
        f"{worker}: engine 'azure_openai' is enabled but AZURE_OPENAI_API_KEY_SECRET_ARN, "
        "SENSO_AZURE_OPENAI_ENDPOINT is not set",
    ]


def test_the_renderers_engines_are_the_catalogues() -> None:
    assert {
        engine_id: spec.credentials for engine_id, spec in CATALOGUE.items()
    } == renderer.ENGINE_CREDENTIALS
