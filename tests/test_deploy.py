"""scripts/deploy.sh run for real: the AWS CLI against moto's ECS, ECR and CloudWatch Logs.

docker and make are recording stand-ins (there is no Docker engine here); everything else is
the real thing: the script, the renderer, the AWS CLI and the emulator's APIs.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from mypy_boto3_ecr import ECRClient
from mypy_boto3_ecs import ECSClient
from mypy_boto3_logs import CloudWatchLogsClient

from tests.deploy_support import (
    ACCOUNT_ID,
    REGION,
    ROOT,
    SECRET,
    Ran,
    deploy_config,
    install_stand_ins,
    load_script,
    moto_server,
    run_script,
    script_env,
)

# Its deploys run scripts and a moto server, with nothing timed but their 120 s bound: a group
# of their own, beside the "processes" group rather than after it on the same test process.
pytestmark = pytest.mark.xdist_group("deploy")

revision = load_script("check_deployment").revision
REGISTRY = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com"
# Characters a shell or a naive JSON template would mangle.
AWKWARD_VALUE = "say \"hi\" & 'bye' $HOME `id` ${TASK_FAMILY} back\\slash \\n ünï"
AWKWARD_ARN = f"{SECRET}:senso/redis+url=a.b@c_d-AbCdEf:url::"
TARGET_GROUP = (
    f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT_ID}:targetgroup/senso/0123456789abcdef"
)


@dataclass(frozen=True, slots=True)
class Aws:
    endpoint: str
    ecs: ECSClient
    ecr: ECRClient
    logs: CloudWatchLogsClient
    subnets: str
    security_group: str


@dataclass(frozen=True, slots=True)
class Deployed:
    env: dict[str, str]
    ran: Ran
    service: dict[str, Any]


@pytest.fixture(scope="module")
def aws() -> Iterator[Aws]:
    with moto_server() as endpoint:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        ec2 = session.client("ec2", endpoint_url=endpoint)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24")["Subnet"]["SubnetId"]
            for n in (1, 2)
        ]
        group = ec2.create_security_group(GroupName="senso", Description="tasks", VpcId=vpc)
        yield Aws(
            endpoint=endpoint,
            ecs=session.client("ecs", endpoint_url=endpoint),
            ecr=session.client("ecr", endpoint_url=endpoint),
            logs=session.client("logs", endpoint_url=endpoint),
            subnets=",".join(subnets),
            security_group=group["GroupId"],
        )


def deploy_env(aws: Aws, directory: Path) -> dict[str, str]:
    """A complete configuration naming a cluster, service and repository of its own."""
    name = f"senso-{uuid.uuid4().hex[:8]}"
    aws.ecs.create_cluster(clusterName=name)
    env = script_env(install_stand_ins(directory / "bin"), directory / "calls")
    return (
        env
        | deploy_config(name)
        | {
            "AWS_ENDPOINT_URL": aws.endpoint,
            "ECS_SUBNET_IDS": aws.subnets,
            "ECS_SECURITY_GROUP_IDS": aws.security_group,
            "SKIP_BUILD": "true",
            "IMAGE_TAG": "v1",
            "WAIT_POLL_SECONDS": "0.2",
            "WAIT_TIMEOUT_SECONDS": "60",
        }
    )


@pytest.fixture
def env(aws: Aws, tmp_path: Path) -> dict[str, str]:
    return deploy_env(aws, tmp_path)


def deploy(env: dict[str, str], **changes: str | None) -> Ran:
    """Run deploy.sh; a change to None unsets the variable."""
    merged = {**env, **changes}
    return run_script("deploy.sh", {k: v for k, v in merged.items() if v is not None})


def describe_service(aws: Aws, env: dict[str, str], name: str | None = None) -> dict[str, Any]:
    described = aws.ecs.describe_services(
        cluster=env["ECS_CLUSTER"], services=[name or env["ECS_SERVICE"]]
    )
    [service] = described["services"]
    return dict(service)


def task_definition(aws: Aws, revision: str) -> dict[str, Any]:
    return dict(aws.ecs.describe_task_definition(taskDefinition=revision)["taskDefinition"])


@pytest.fixture(scope="module")
def first(aws: Aws, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """A first deploy that tests and builds: image tag from the clock, no AWS_ACCOUNT_ID (the
    image is the URI create-repository returns)."""
    env = deploy_env(aws, tmp_path_factory.mktemp("first"))
    ran = deploy(
        env,
        AWS_ACCOUNT_ID=None,
        SKIP_BUILD=None,
        IMAGE_TAG=None,
        TARGET_GROUP_ARN=TARGET_GROUP,
        REDIS_URL_SECRET_ARN=AWKWARD_ARN,
        SENSO_OPENAI_MODEL=AWKWARD_VALUE,
    )
    assert ran.returncode == 0, ran.stderr
    return Deployed(env, ran, describe_service(aws, env))


@pytest.fixture(scope="module")
def second(aws: Aws, first: Deployed) -> Deployed:
    """The same service deployed again, with the image the first deploy pushed."""
    image = task_definition(aws, f"{first.env['TASK_FAMILY']}:1")["containerDefinitions"][0]
    env = first.env | {"IMAGE_TAG": image["image"].rsplit(":", 1)[1]}
    ran = deploy(env)
    assert ran.returncode == 0, ran.stderr
    return Deployed(env, ran, describe_service(aws, env))


def test_first_deploy_creates_repository_log_group_and_service(aws: Aws, first: Deployed) -> None:
    env, family = first.env, first.env["TASK_FAMILY"]
    # The repository's URI comes from ECR (create-repository), not from the account id.
    assert not [call for call in first.ran.calls_of("aws") if call.startswith("aws sts ")]
    [repository] = aws.ecr.describe_repositories(repositoryNames=[env["ECR_REPOSITORY"]])[
        "repositories"
    ]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert "warning" not in first.ran.stderr
    [group] = aws.logs.describe_log_groups(logGroupNamePrefix=f"/ecs/{family}")["logGroups"]
    assert (group["logGroupName"], group.get("retentionInDays")) == (f"/ecs/{family}", 30)

    service = first.service
    assert revision(service["taskDefinition"]) == f"{family}:1"
    assert (service["desiredCount"], service["launchType"]) == (1, "FARGATE")
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert network["subnets"] == aws.subnets.split(",")
    assert network["securityGroups"] == [aws.security_group]
    assert network["assignPublicIp"] == "DISABLED"
    assert service["loadBalancers"] == [
        {"targetGroupArn": TARGET_GROUP, "containerName": "api", "containerPort": 8080}
    ]
    assert first.ran.output("new revision") == f"{family}:1"
    assert first.ran.output("previous revision") == "none (the service was created)"


def test_first_deploy_builds_and_pushes_the_image_it_deploys(aws: Aws, first: Deployed) -> None:
    definition = task_definition(aws, f"{first.env['TASK_FAMILY']}:1")
    images = {c["image"] for c in definition["containerDefinitions"]}
    [image] = images
    [repository] = aws.ecr.describe_repositories(repositoryNames=[first.env["ECR_REPOSITORY"]])[
        "repositories"
    ]
    assert re.fullmatch(rf"{re.escape(repository['repositoryUri'])}:\d{{14}}", image)
    assert re.fullmatch(rf"{REGISTRY}/{first.env['ECR_REPOSITORY']}:\d{{14}}", image)
    assert first.ran.calls_of("docker") == [
        f"docker login --username AWS --password-stdin {REGISTRY}",
        f"docker buildx build --platform linux/amd64 --file {ROOT}/Dockerfile --tag {image} "
        f"--push {ROOT}",
    ]


def test_first_deploy_runs_the_tests_once_before_changing_anything(first: Deployed) -> None:
    # build.sh is told SKIP_TESTS=true: deploy.sh ran them already.
    assert first.ran.calls_of("make") == [f"make -C {ROOT} test"]
    calls = [" ".join(call.split()[:3]) for call in first.ran.calls]
    assert calls.index(f"make -C {ROOT}") < calls.index("aws ecr create-repository")


def test_task_definition_runs_the_api_and_its_worker(aws: Aws, first: Deployed) -> None:
    env = first.env
    definition = task_definition(aws, f"{env['TASK_FAMILY']}:1")
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert definition["networkMode"] == "awsvpc"
    assert definition["runtimePlatform"] == {
        "cpuArchitecture": "X86_64",
        "operatingSystemFamily": "LINUX",
    }
    assert (definition["cpu"], definition["memory"]) == ("512", "1024")
    assert definition["executionRoleArn"] == env["EXECUTION_ROLE_ARN"]
    assert definition["taskRoleArn"] == env["TASK_ROLE_ARN"]
    api, worker = definition["containerDefinitions"]

    assert (api["name"], api["essential"], api["command"]) == ("api", True, ["api"])
    assert api["portMappings"][0]["containerPort"] == 8080
    health = api["healthCheck"]
    assert health["command"][:2] == ["CMD", "python"]
    assert "http://127.0.0.1:8080/healthz" in health["command"][-1]
    assert (worker["name"], worker["essential"], worker["command"]) == (
        "worker",
        False,
        ["worker"],
    )
    assert worker["stopTimeout"] == 120
    assert worker["dependsOn"] == [{"containerName": "api", "condition": "HEALTHY"}]
    assert worker["restartPolicy"]["enabled"] is True
    worker_environment = {e["name"]: e["value"] for e in worker["environment"]}
    assert float(worker_environment["WORKER_DRAIN_SECONDS"]) < worker["stopTimeout"]
    assert worker_environment["ENGINE_MODE"] == "real", "never simulated answers in production"

    for container, stream in ((api, "ecs-api"), (worker, "ecs-worker")):
        assert container["logConfiguration"] == {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": f"/ecs/{env['TASK_FAMILY']}",
                "awslogs-region": REGION,
                "awslogs-stream-prefix": stream,
            },
        }
        environment = {e["name"]: e["value"] for e in container["environment"]}
        assert environment["SQS_QUEUE_URL"] == env["SQS_QUEUE_URL"]
        assert environment["LOG_JSON"] == "true"
        # The API refuses an org any engine the worker would not serve: one list for both.
        assert environment["ENABLED_ENGINES"] == env["ENABLED_ENGINES"]
    assert {s["name"]: s["valueFrom"] for s in api["secrets"]} == {
        "DATABASE_URL": env["DATABASE_URL_SECRET_ARN"],
        "API_TOKEN": env["API_TOKEN_SECRET_ARN"],
        "REDIS_URL": AWKWARD_ARN,
    }
    # Unset provider keys are left out rather than sent empty.
    assert {s["name"]: s["valueFrom"] for s in worker["secrets"]} == {
        "DATABASE_URL": env["DATABASE_URL_SECRET_ARN"],
        "REDIS_URL": AWKWARD_ARN,
        "OPENAI_API_KEY": env["OPENAI_API_KEY_SECRET_ARN"],
    }


def test_values_with_special_characters_arrive_intact(aws: Aws, first: Deployed) -> None:
    definition = task_definition(aws, f"{first.env['TASK_FAMILY']}:1")
    for container in definition["containerDefinitions"]:
        environment = {e["name"]: e["value"] for e in container["environment"]}
        assert environment["OPENAI_MODEL"] == AWKWARD_VALUE
        assert {s["name"]: s["valueFrom"] for s in container["secrets"]}["REDIS_URL"] == AWKWARD_ARN


def test_second_deploy_registers_revision_2_and_its_rollback_works(
    aws: Aws, second: Deployed
) -> None:
    family = second.env["TASK_FAMILY"]
    assert revision(second.service["taskDefinition"]) == f"{family}:2"
    assert second.ran.output("new revision") == f"{family}:2"
    assert second.ran.output("previous revision") == f"{family}:1"
    aws_calls = [" ".join(call.split()[:3]) for call in second.ran.calls_of("aws")]
    assert "aws ecs update-service" in aws_calls
    assert not {"aws ecs create-service", "aws ecr create-repository"} & set(aws_calls)
    assert second.ran.calls_of("docker") == []  # SKIP_BUILD=true builds nothing
    assert second.ran.calls_of("make") == []  # nor tests anything
    assert "warning" not in second.ran.stderr  # the repository's tags are IMMUTABLE

    rollback = shlex.split(second.ran.output("rollback"))
    subprocess.run(rollback, env=second.env, check=True, capture_output=True, timeout=60)
    # moto keeps the name as given; ECS would answer with the ARN.
    assert revision(describe_service(aws, second.env)["taskDefinition"]) == f"{family}:1"


def test_missing_variables_are_named_together(env: dict[str, str]) -> None:
    ran = deploy(env, ECR_REPOSITORY=None, ECS_CLUSTER="", TASK_ROLE_ARN=None, SQS_QUEUE_URL=None)

    assert ran.returncode == 2
    assert (
        "missing required variables: ECR_REPOSITORY ECS_CLUSTER TASK_ROLE_ARN SQS_QUEUE_URL"
        in ran.stderr
    )
    assert ran.calls == []


def test_a_cpu_memory_pair_fargate_refuses_stops_before_any_aws_call(
    env: dict[str, str],
) -> None:
    ran = deploy(env, AWS_ACCOUNT_ID=None, TASK_CPU="256", TASK_MEMORY="4096")

    assert ran.returncode == 2
    assert "Fargate does not run cpu 256 with memory 4096" in ran.stderr
    assert ran.calls == []


def test_an_invalid_task_definition_stops_before_any_aws_call(env: dict[str, str]) -> None:
    ran = deploy(env, SENSO_WORKER_DRAIN_SECONDS="110")

    assert ran.returncode == 2
    assert "WORKER_DRAIN_SECONDS 110 + SQS_WAIT_SECONDS 20 must stay below stopTimeout 120" in (
        ran.stderr
    )
    assert ran.calls == []


def test_dry_run_prints_the_plan_and_changes_nothing(aws: Aws, env: dict[str, str]) -> None:
    # No repository, no AWS_ACCOUNT_ID: the image's registry is the caller's account, from STS.
    ran = deploy(env, DRY_RUN="true", SKIP_BUILD=None, IMAGE_TAG="v2", AWS_ACCOUNT_ID=None)

    assert ran.returncode == 0, ran.stderr
    rendered, end = json.JSONDecoder().raw_decode(ran.stdout)
    assert rendered["family"] == env["TASK_FAMILY"]
    image = f"{REGISTRY}/{env['ECR_REPOSITORY']}:v2"
    assert {c["image"] for c in rendered["containerDefinitions"]} == {image}
    planned = [
        line.removeprefix("would run: ").split()[:3]
        for line in ran.stdout[end:].splitlines()
        if line
    ]
    assert planned == [
        ["make", "-C", str(ROOT)],
        ["aws", "ecr", "create-repository"],
        ["aws", "logs", "create-log-group"],
        ["aws", "logs", "put-retention-policy"],
        ["aws", "ecr", "get-login-password"],
        ["env", f"IMAGE_REPOSITORY={image.rsplit(':', 1)[0]}", "IMAGE_TAG=v2"],
        ["aws", "ecs", "register-task-definition"],
        ["aws", "ecs", "create-service"],
    ]
    assert "PUSH=true SKIP_TESTS=true" in ran.stdout  # build.sh does not test again
    assert "aws sts get-caller-identity --query Account --output text" in ran.calls
    assert all(
        call.split()[2].startswith(("describe-", "get-caller-identity"))
        for call in ran.calls_of("aws")
    ), ran.calls
    assert ran.calls_of("docker") == []

    repositories = aws.ecr.describe_repositories()["repositories"]
    assert env["ECR_REPOSITORY"] not in {r["repositoryName"] for r in repositories}
    assert (
        aws.logs.describe_log_groups(logGroupNamePrefix=f"/ecs/{env['TASK_FAMILY']}")["logGroups"]
        == []
    )
    assert (
        aws.ecs.list_task_definitions(familyPrefix=env["TASK_FAMILY"])["taskDefinitionArns"] == []
    )
    missing = aws.ecs.describe_services(cluster=env["ECS_CLUSTER"], services=[env["ECS_SERVICE"]])
    assert [f["reason"] for f in missing["failures"]] == ["MISSING"]


def test_worker_mode_service_deploys_the_worker_alone(aws: Aws, first: Deployed) -> None:
    ran = deploy(
        first.env, WORKER_MODE="service", IMAGE_TAG="v1", SKIP_BUILD=None, SKIP_TESTS="true"
    )

    assert ran.returncode == 0, ran.stderr
    family = f"{first.env['TASK_FAMILY']}-worker"
    service = describe_service(aws, first.env, f"{first.env['ECS_SERVICE']}-worker")
    assert revision(service["taskDefinition"]) == f"{family}:1"
    [worker] = task_definition(aws, f"{family}:1")["containerDefinitions"]
    assert (worker["name"], worker["essential"], worker["command"]) == ("worker", True, ["worker"])
    assert worker["stopTimeout"] == 120
    assert "dependsOn" not in worker
    assert worker["logConfiguration"]["options"]["awslogs-stream-prefix"] == "ecs-worker"
    assert ran.output("new revision") == f"{family}:1"
    assert ran.calls_of("make") == []  # SKIP_TESTS=true
    assert ran.calls_of("docker")[-1].startswith("docker buildx build")


def test_failing_tests_stop_the_deploy_before_any_change(aws: Aws, env: dict[str, str]) -> None:
    ran = deploy(env, SKIP_BUILD=None, IMAGE_TAG="v3", FAKE_MAKE_STATUS="1")

    assert ran.returncode == 1
    assert "the tests failed (nothing was changed)" in ran.stderr
    assert ran.calls_of("make") == [f"make -C {ROOT} test"]
    assert ran.calls_of("docker") == []
    assert all(call.split()[2].startswith("describe-") for call in ran.calls_of("aws")), ran.calls
    repositories = aws.ecr.describe_repositories()["repositories"]
    assert env["ECR_REPOSITORY"] not in {r["repositoryName"] for r in repositories}


def test_a_mutable_repository_is_used_with_a_warning(aws: Aws, env: dict[str, str]) -> None:
    created = aws.ecr.create_repository(
        repositoryName=env["ECR_REPOSITORY"], imageTagMutability="MUTABLE"
    )
    uri = created["repository"]["repositoryUri"]

    ran = deploy(env, DRY_RUN="true", AWS_ACCOUNT_ID=None)

    assert ran.returncode == 0, ran.stderr
    assert f"deploy.sh: warning: ECR repository {env['ECR_REPOSITORY']} has MUTABLE" in ran.stderr
    rendered, _ = json.JSONDecoder().raw_decode(ran.stdout)
    assert {c["image"] for c in rendered["containerDefinitions"]} == {f"{uri}:v1"}
    # describe-repositories named the repository's URI: no account id needed.
    assert not [call for call in ran.calls_of("aws") if call.startswith("aws sts ")]
    assert "create-repository" not in ran.stdout


def test_readme_documents_every_deploy_variable(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    deployment = readme.split("## Deploying to AWS ECS", 1)[1].split("\n## ", 1)[0]
    help_lines = run_script(
        "deploy.sh", script_env(tmp_path, tmp_path / "calls"), "--help"
    ).stdout.splitlines()
    names = r"[A-Z][A-Z0-9_]+(?:, [A-Z][A-Z0-9_]+)*"
    listed = [re.match(rf"  ({names})(?:,?\s|,?$)", line) for line in help_lines]
    variables = {name for m in listed if m for name in m.group(1).split(", ")}
    assert {"AWS_REGION", "TASK_MEMORY", "LINKUP_API_KEY_SECRET_ARN", "DRY_RUN"} <= variables
    for variable in sorted(variables):
        assert f"`{variable}`" in deployment, variable
