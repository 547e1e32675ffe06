"""scripts/build.sh with recording stand-ins for docker, make and git; and both scripts' help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy_support import ROOT, install_stand_ins, run_script, script_env


@pytest.fixture
def build_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = install_stand_ins(tmp_path / "bin", ("docker", "make", "git"))
    return script_env(bin_dir, tmp_path / "calls") | {"IMAGE_REPOSITORY": "example/senso"}


def test_build_runs_the_tests_then_builds_for_amd64(build_env: dict[str, str]) -> None:
    ran = run_script("build.sh", build_env | {"IMAGE_TAG": "t1"})

    assert ran.returncode == 0, ran.stderr
    assert ran.calls == [
        f"make -C {ROOT} test",
        f"docker buildx build --platform linux/amd64 --file {ROOT}/Dockerfile "
        f"--tag example/senso:t1 --load {ROOT}",
    ]
    assert ran.stdout.splitlines()[-1] == "example/senso:t1"


def test_build_stops_when_the_tests_fail(build_env: dict[str, str]) -> None:
    ran = run_script("build.sh", build_env | {"FAKE_MAKE_STATUS": "1"})

    assert ran.returncode != 0
    assert ran.calls_of("docker") == []


def test_build_tags_with_the_time_or_the_git_sha(build_env: dict[str, str]) -> None:
    by_time = run_script("build.sh", build_env | {"SKIP_TESTS": "true"})
    by_commit = run_script(
        "build.sh",
        build_env
        | {"SKIP_TESTS": "true", "TAG_FROM_GIT": "true", "FAKE_GIT_DIRTY": "1", "PUSH": "true"},
    )

    assert by_time.returncode == by_commit.returncode == 0, by_time.stderr + by_commit.stderr
    assert re.fullmatch(r"example/senso:\d{14}", by_time.stdout.strip())
    assert by_time.calls_of("make") == []
    assert by_commit.stdout.strip() == "example/senso:abc1234-dirty"
    assert by_commit.calls_of("docker")[0].endswith(
        f"--tag example/senso:abc1234-dirty --push {ROOT}"
    )


@pytest.mark.parametrize("script", ["deploy.sh", "build.sh"])
def test_scripts_explain_themselves(build_env: dict[str, str], script: str) -> None:
    ran = run_script(script, build_env, "--help")

    assert ran.returncode == 0
    assert ran.stdout.startswith(f"Usage: scripts/{script}")
    assert ran.calls == []
