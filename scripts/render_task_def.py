#!/usr/bin/env python3
"""Render an ECS task-definition template from the environment and validate it offline.

  render_task_def.py render TEMPLATE                 print the RegisterTaskDefinition input (JSON)
  render_task_def.py render --worker-alone TEMPLATE  the same for the worker as a service of its
                                                     own: its container alone (see worker_alone)

Placeholders sit inside the template's JSON strings: ${NAME} (required) or ${NAME:-default}.
Values replace them after the template is parsed, so quotes, `$` and backslashes arrive
intact. An environment entry or secret whose value renders empty is left out, so the app's
default applies. Every SENSO_<SETTING> variable becomes <SETTING> in each container's
environment. The result is checked with botocore's validator of the RegisterTaskDefinition
input, then for what it does not check: enum values, ranges, Fargate's rules (the cpu/memory
pair among them) and the worker's drain period. Exit 2 lists every problem.

Standard library and botocore only: it runs with the python that carries the AWS CLI.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
PASSTHROUGH_PREFIX = "SENSO_"
SECRET_SETTINGS = (
    "DATABASE_URL",
    "API_TOKEN",
    "REDIS_URL",
    "REPORT_SIGNING_KEY",
    "DATAFORSEO_LOGIN",
    "DATAFORSEO_PASSWORD",
)

# Engine id → what a worker needs set to call it: app.engines.catalogue's credentials (a test
# keeps the two equal; this script imports botocore only).
ENGINE_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "azure_openai": ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "brightdata_chatgpt": ("BRIGHTDATA_API_KEY",),
    "brightdata_perplexity": ("BRIGHTDATA_API_KEY",),
    "linkup": ("LINKUP_API_KEY",),
    "gemini": ("GEMINI_API_KEY",),
    "perplexity": ("PERPLEXITY_API_KEY",),
    "brightdata_gemini": ("BRIGHTDATA_API_KEY",),
    "brightdata_copilot": ("BRIGHTDATA_API_KEY",),
    "brightdata_ai_mode": ("BRIGHTDATA_API_KEY",),
    "brightdata_grok": ("BRIGHTDATA_API_KEY",),
    "google_ai_overview": ("DATAFORSEO_LOGIN", "DATAFORSEO_PASSWORD"),
}
NON_SECRET_CREDENTIALS = frozenset({"AZURE_OPENAI_ENDPOINT"})

# Fargate's task sizes: cpu units → allowed memory (MiB).
FARGATE_SIZES: dict[int, range | tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
    8192: range(16384, 61440 + 1, 4096),
    16384: range(32768, 122880 + 1, 8192),
}
HEALTH_CHECK_RANGES = {"interval": (5, 300), "timeout": (2, 60), "retries": (1, 10)}
HEALTH_CHECK_START_PERIOD = (0, 300)
FARGATE_MAX_STOP_TIMEOUT = 120
ECS_DEFAULT_STOP_TIMEOUT = 30
RESTART_ATTEMPT_PERIOD = (60, 1800)
# The app's default SQS_WAIT_SECONDS (app/settings.py): a stopping worker first waits for the
# long poll under way, then drains, so both must fit in the stop timeout.
APP_SQS_WAIT_SECONDS = 20
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:(secretsmanager|ssm):[a-z0-9-]+:\d{12}:\S+$")
FAMILY = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
WORKER = "worker"
# What ties the worker to the API container it runs beside in the sidecar task.
SIDECAR_ONLY = ("dependsOn", "restartPolicy")


class TaskDefinitionError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def render(template: Any, env: Mapping[str, str]) -> Any:
    """The template with its placeholders replaced, empty entries dropped, SENSO_* added."""
    missing: list[str] = []
    document = _substitute(template, env, missing)
    if missing:
        names = ", ".join(sorted(set(missing)))
        raise TaskDefinitionError([f"variables not set: {names}"])
    passthrough = _passthrough(env)
    for container in document.get("containerDefinitions", []):
        environment = [e for e in container.get("environment", []) if e.get("value") != ""]
        environment = [e for e in environment if e.get("name") not in passthrough]
        environment += [{"name": k, "value": v} for k, v in sorted(passthrough.items())]
        container["environment"] = environment
        if "secrets" in container:
            container["secrets"] = [s for s in container["secrets"] if s.get("valueFrom") != ""]
    return document


def worker_alone(document: Any) -> Any:
    """The rendered task definition cut down to the worker as a service of its own.

    Only the `worker` container is kept, essential (the task is the worker), without what ties
    it to the API beside it: dependsOn, and restartPolicy (ECS replaces a stopped task).
    The family becomes <family>-worker.
    """
    containers = document.get("containerDefinitions", [])
    workers = [c for c in containers if c.get("name") == WORKER]
    if len(workers) != 1:
        raise TaskDefinitionError([f"the template needs exactly one container named {WORKER}"])
    worker = {key: value for key, value in workers[0].items() if key not in SIDECAR_ONLY}
    worker["essential"] = True
    family = document.get("family", "")
    return {**document, "family": f"{family}-{WORKER}", "containerDefinitions": [worker]}


def _substitute(node: Any, env: Mapping[str, str], missing: list[str]) -> Any:
    if isinstance(node, dict):
        return {key: _substitute(value, env, missing) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, env, missing) for item in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        # Set to empty counts as unset, as in deploy.sh.
        if env.get(name, ""):
            return env[name]
        if default is None:
            missing.append(name)
        return default or ""

    return PLACEHOLDER.sub(value, node)


def _passthrough(env: Mapping[str, str]) -> dict[str, str]:
    settings = {
        name.removeprefix(PASSTHROUGH_PREFIX): value
        for name, value in env.items()
        if name.startswith(PASSTHROUGH_PREFIX) and value != ""
    }
    secrets = [n for n in settings if n in SECRET_SETTINGS or n.endswith("_API_KEY")]
    if secrets:
        raise TaskDefinitionError(
            [
                f"{PASSTHROUGH_PREFIX}{name}: a secret goes in as a Secrets Manager ARN "
                f"({name}_SECRET_ARN), never as a value"
                for name in sorted(secrets)
            ]
        )
    return settings


def validate(document: Any) -> None:
    problems = list(_botocore_problems(document))
    if not problems:
        # The checks below read the shape botocore has just vouched for.
        problems += _enum_problems(document)
        problems += _fargate_problems(document)
        for container in document["containerDefinitions"]:
            problems += _container_problems(container)
        problems += _dependency_problems(document["containerDefinitions"])
        problems += _engine_problems(document["containerDefinitions"])
    if problems:
        raise TaskDefinitionError(problems)


@functools.cache
def _input_shape() -> Any:
    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def _botocore_problems(document: Any) -> list[str]:
    if not isinstance(document, dict):
        return ["the task definition must be a JSON object"]
    report = ParamValidator().validate(document, _input_shape())
    if not report.has_errors():
        return []
    # One line per problem.
    lines: list[str] = report.generate_report().splitlines()
    return lines


def _enum_problems(document: dict[str, Any]) -> list[str]:
    return list(_walk_enums(document, _input_shape(), "taskDefinition"))


def _walk_enums(value: Any, shape: Any, path: str) -> Iterator[str]:
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if name in value:
                yield from _walk_enums(value[name], member, f"{path}.{name}")
    elif shape.type_name == "list":
        for index, item in enumerate(value):
            yield from _walk_enums(item, shape.member, f"{path}[{index}]")
    elif shape.type_name == "map":
        for key, item in value.items():
            yield from _walk_enums(item, shape.value, f"{path}.{key}")
    elif (enum := getattr(shape, "enum", None)) and value not in enum:
        yield f"{path}: {value!r} is not one of {', '.join(enum)}"


def fargate_size_problem(cpu: str, memory: str) -> str | None:
    if not (cpu.isdigit() and memory.isdigit()):
        return f"cpu {cpu!r} and memory {memory!r} must be whole numbers (cpu units, MiB)"
    allowed = FARGATE_SIZES.get(int(cpu))
    if allowed is None:
        return f"Fargate has no task size with cpu {cpu}; choose one of {sorted(FARGATE_SIZES)}"
    if int(memory) not in allowed:
        choices = (
            f"{allowed[0]}-{allowed[-1]} in steps of {allowed.step}"
            if isinstance(allowed, range)
            else ", ".join(map(str, allowed))
        )
        return f"Fargate does not run cpu {cpu} with memory {memory}; with cpu {cpu}: {choices}"
    return None


def _fargate_problems(document: dict[str, Any]) -> list[str]:
    problems = []
    if not FAMILY.match(document["family"]):
        problems.append(f"family {document['family']!r}: letters, digits, - and _ only")
    if document.get("networkMode") != "awsvpc":
        problems.append("networkMode must be awsvpc on Fargate")
    if document.get("requiresCompatibilities") != ["FARGATE"]:
        problems.append('requiresCompatibilities must be ["FARGATE"]')
    platform = document.get("runtimePlatform", {})
    if (platform.get("operatingSystemFamily"), platform.get("cpuArchitecture")) != (
        "LINUX",
        "X86_64",
    ):
        problems.append("runtimePlatform must be LINUX / X86_64: the image is built linux/amd64")
    size = fargate_size_problem(document.get("cpu", ""), document.get("memory", ""))
    if size:
        problems.append(size)
    for role in ("executionRoleArn", "taskRoleArn"):
        if not ROLE_ARN.match(document.get(role, "")):
            problems.append(f"{role} {document.get(role, '')!r} is not an IAM role ARN")
    return problems


def _container_problems(container: dict[str, Any]) -> list[str]:
    where = f"container {container.get('name', '(no name)')}"
    problems = []
    image = container.get("image", "")
    if not image or any(c.isspace() for c in image):
        problems.append(f"{where}: image {image!r} is not an image reference")
    for mapping in container.get("portMappings", []):
        port = mapping.get("containerPort", 0)
        if not 1 <= port <= 65535:
            problems.append(f"{where}: containerPort {port} is outside 1-65535")
        if mapping.get("hostPort", port) != port:
            problems.append(f"{where}: hostPort must equal containerPort with awsvpc")
    health = container.get("healthCheck")
    if health is not None:
        limits = {**HEALTH_CHECK_RANGES, "startPeriod": HEALTH_CHECK_START_PERIOD}
        for field, (low, high) in limits.items():
            if field in health and not low <= health[field] <= high:
                problems.append(
                    f"{where}: healthCheck.{field} {health[field]} is outside {low}-{high}"
                )
    stop_timeout = container.get("stopTimeout", ECS_DEFAULT_STOP_TIMEOUT)
    if not 0 <= stop_timeout <= FARGATE_MAX_STOP_TIMEOUT:
        problems.append(
            f"{where}: stopTimeout {stop_timeout} is outside 0-{FARGATE_MAX_STOP_TIMEOUT} (Fargate)"
        )
    period = container.get("restartPolicy", {}).get("restartAttemptPeriod")
    if period is not None and not RESTART_ATTEMPT_PERIOD[0] <= period <= RESTART_ATTEMPT_PERIOD[1]:
        low, high = RESTART_ATTEMPT_PERIOD
        problems.append(
            f"{where}: restartPolicy.restartAttemptPeriod {period} is outside {low}-{high}"
        )
    problems += _variable_problems(where, container)
    problems += _log_problems(where, container)
    if container.get("command", [])[:1] == ["worker"]:
        problems += _drain_problems(where, container, stop_timeout)
    return problems


def _variable_problems(where: str, container: dict[str, Any]) -> list[str]:
    problems = []
    names = [e.get("name", "") for e in container.get("environment", [])]
    names += [s["name"] for s in container.get("secrets", [])]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: {name} is set more than once")
    for secret in container.get("secrets", []):
        if not SECRET_ARN.match(secret["valueFrom"]):
            problems.append(
                f"{where}: secret {secret['name']} valueFrom {secret['valueFrom']!r} is not a "
                "Secrets Manager or SSM parameter ARN"
            )
    return problems


def _log_problems(where: str, container: dict[str, Any]) -> list[str]:
    logging = container.get("logConfiguration")
    if logging is None or logging["logDriver"] != "awslogs":
        return []
    options = logging.get("options", {})
    required = ("awslogs-group", "awslogs-region", "awslogs-stream-prefix")
    return [f"{where}: awslogs needs the option {key}" for key in required if not options.get(key)]


def _drain_problems(where: str, container: dict[str, Any], stop_timeout: int) -> list[str]:
    environment = {e.get("name"): e.get("value", "") for e in container.get("environment", [])}
    try:
        drain = float(environment["WORKER_DRAIN_SECONDS"])
        wait = float(environment.get("SQS_WAIT_SECONDS", APP_SQS_WAIT_SECONDS))
    except KeyError:
        return [f"{where}: the worker must set WORKER_DRAIN_SECONDS below its stopTimeout"]
    except ValueError:
        return [f"{where}: WORKER_DRAIN_SECONDS and SQS_WAIT_SECONDS must be numbers"]
    if drain + wait >= stop_timeout:
        return [
            f"{where}: WORKER_DRAIN_SECONDS {drain:g} + SQS_WAIT_SECONDS {wait:g} must stay below "
            f"stopTimeout {stop_timeout}, or ECS kills the worker before it releases its jobs"
        ]
    return []


def _engine_problems(containers: list[dict[str, Any]]) -> list[str]:
    """Every container serves the same ENABLED_ENGINES, and one that calls the providers
    (ENGINE_MODE=real) has each enabled engine's credentials: caught here, at deploy time,
    rather than by a worker that refuses to start."""
    problems: list[str] = []
    lists: set[str] = set()
    for container in containers:
        where = f"container {container.get('name')!r}"
        environment = {e["name"]: e["value"] for e in container.get("environment", [])}
        if "ENABLED_ENGINES" not in environment:
            continue
        lists.add(environment["ENABLED_ENGINES"])
        engines = [e.strip() for e in environment["ENABLED_ENGINES"].split(",") if e.strip()]
        unknown = sorted(set(engines) - set(ENGINE_CREDENTIALS))
        if unknown:
            problems.append(f"{where}: ENABLED_ENGINES names unknown engines: {', '.join(unknown)}")
        if environment.get("ENGINE_MODE") != "real":
            continue
        provided = set(environment) | {s["name"] for s in container.get("secrets", [])}
        for engine in engines:
            missing = [c for c in ENGINE_CREDENTIALS.get(engine, ()) if c not in provided]
            if missing:
                needs = ", ".join(
                    f"{c}_SECRET_ARN" if c not in NON_SECRET_CREDENTIALS else f"SENSO_{c}"
                    for c in missing
                )
                problems.append(f"{where}: engine {engine!r} is enabled but {needs} is not set")
    if len(lists) > 1:
        problems.append("ENABLED_ENGINES differs between containers")
    return problems


def _dependency_problems(containers: list[dict[str, Any]]) -> list[str]:
    by_name = {c.get("name"): c for c in containers}
    problems = []
    if None in by_name:
        problems.append("every container needs a name")
    if len(by_name) != len(containers):
        problems.append("container names must be unique")
    if not any(c.get("essential", True) for c in containers):
        problems.append("at least one container must be essential")
    for container in containers:
        for dependency in container.get("dependsOn", []):
            target = by_name.get(dependency["containerName"])
            if target is None:
                problems.append(
                    f"container {container.get('name')}: dependsOn names no container "
                    f"{dependency['containerName']!r}"
                )
            elif dependency["condition"] == "HEALTHY" and "healthCheck" not in target:
                problems.append(
                    f"container {container.get('name')}: dependsOn {target['name']} HEALTHY "
                    f"needs a healthCheck on {target['name']}"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    render_command = commands.add_parser("render", help="print the rendered task definition")
    render_command.add_argument(
        "--worker-alone", action="store_true", help="the worker alone, family <family>-worker"
    )
    render_command.add_argument("template", type=Path)
    args = parser.parse_args(argv)

    try:
        template = json.loads(args.template.read_text())
        document = render(template, os.environ)
        if args.worker_alone:
            document = worker_alone(document)
        validate(document)
    except json.JSONDecodeError as exc:
        print(f"{args.template}: not JSON: {exc}", file=sys.stderr)
        return 2
    except TaskDefinitionError as exc:
        print(f"invalid task definition ({args.template}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
