"""The `senso` command as a user runs it: a real process, stdin and stdout."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from app.engines.catalogue import ENGINE_IDS

# Runs processes of its own: never beside another test that does (see pyproject.toml).
pytestmark = pytest.mark.xdist_group("processes")

FIXTURES = Path(__file__).parent / "data" / "extraction_cases.jsonl"
COMMANDS = ("api", "worker", "migrate", "demo", "extract", "emulator", "enqueue-all")


def senso(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "senso", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_extract_reads_json_lines_and_answers_in_order() -> None:
    cases = [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]
    result = senso("extract", stdin=FIXTURES.read_text())
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert outputs == [case["expect"] for case in cases]


def test_extract_reports_a_bad_line_and_goes_on() -> None:
    good = json.dumps({"org": {"name": "Wise"}, "answer": "Wise is cheap.", "citations": []})
    result = senso("extract", stdin=f"{good}\nnot json\n{json.dumps({'answer': 'x'})}\n{good}\n")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    assert (
        lines[0]
        == lines[3]
        == {
            "mentioned": True,
            "mention_count": 1,
            "list_position": None,
            "cited_domains": [],
            "org_cited": False,
        }
    )
    assert lines[1]["error"].startswith("line 2:")
    assert lines[2]["error"].startswith("line 3: org:")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = senso(command, "--help")
    assert result.returncode == 0
    assert f"usage: senso {command}" in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_top_level_help_lists_every_command() -> None:
    result = senso("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert f"    {command}" in result.stdout


def test_api_refuses_to_start_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "API_TOKEN"}
    result = senso("api", env=env)
    assert result.returncode == 2
    assert "API_TOKEN must be set" in result.stderr


def test_demo_runs_the_embedded_default_end_to_end(tmp_path: Path) -> None:
    """`senso demo` with no service configured: SQLite, in-process SQS, simulated engines."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SQS_QUEUE_URL", "AWS_ENDPOINT_URL", "REDIS_URL", "API_TOKEN"}
    }
    args = ("--questions", "3", "--engines", "openai,anthropic", "--timeout", "120")
    result = senso("demo", *args, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "database: embedded SQLite" in out
    assert "queue: in-process SQS endpoint" in out
    assert "→ 202" in out
    # 3 questions × 2 engines × 2 countries, asked twice; 6 earlier days backfilled first.
    assert "2 samples per cell" in out
    assert out.count(": completed, 24 answers") == 6
    assert "24 runs" in out
    assert "admitted: 1.200000 reserved of the balance 92.800000, 91.600000 available" in out
    assert "completed  24/24 completed, 0 failed, 24 charged" in out
    assert "Results (simulated engines)" in out
    assert "2–2 asks per cell; 95% intervals: bootstrap over questions" in out
    assert re.search(r"visibility +\d+% \[\d+%–\d+%\] of answers mention the org", out)
    assert "partner balance now 91.600000 (0.000000 still reserved)" in out
    assert "visibility, last 7 days (95% interval; cells / answers)" in out
    trend = re.findall(r"^  \d{4}-\d{2}-\d{2} +\d+% +\[\d+%–\d+%\]  12 / 24$", out, re.M)
    assert len(trend) == 7, out
    assert "last 3 days against the 3 before:" in out
    # The report link, and a copy of its page to open once the demo has ended.
    assert re.search(r"^report: http://127\.0\.0\.1:\d+/r/[\w-]+\.[\w-]+$", out, re.M), out
    copy = re.search(r"a copy: (\S+\.html)$", out, re.M)
    assert copy is not None, out
    page = Path(copy.group(1)).read_text(encoding="utf-8")
    Path(copy.group(1)).unlink()
    assert "AI visibility report" in page
    assert "Simulated answers." in page


def test_demo_serve_keeps_the_report_link_up_until_interrupted() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SQS_QUEUE_URL", "AWS_ENDPOINT_URL", "REDIS_URL", "API_TOKEN"}
    }
    args = ["--questions", "1", "--engines", "openai", "--locations", "US", "--samples", "1"]
    args += ["--backfill-days", "0", "--serve"]
    process = subprocess.Popen(
        [sys.executable, "-m", "senso", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        url, lines = None, []
        for line in process.stdout:  # ends when the process does, so a failed demo ends it too
            lines.append(line)
            if line.startswith("report: "):
                url = line.split()[1]
            if "press Ctrl-C" in line:
                break
        assert url is not None, "".join(lines)
        # The rest of its output is read on, so a full pipe never holds the process up.
        reader = threading.Thread(target=lines.extend, args=(process.stdout,), daemon=True)
        reader.start()
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200
        assert "AI visibility report" in page.text
        process.send_signal(signal.SIGINT)
        # The worker finishes its long poll and the servers close: seconds, more when loaded.
        assert process.wait(timeout=120) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_demo_with_the_emulator_uses_every_real_engine_client() -> None:
    """`senso demo --emulator`: the providers' wire protocols end to end, still no key."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SQS_QUEUE_URL", "AWS_ENDPOINT_URL", "REDIS_URL", "API_TOKEN"}
    }
    # No --engines: with the emulator the demo asks every engine of the catalogue.
    args: tuple[str, ...] = ("--questions", "1", "--locations", "US", "--emulator")
    args += ("--samples", "1", "--backfill-days", "0")
    result = senso("demo", *args, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "engines: real clients against the engine emulator" in out
    runs = len(ENGINE_IDS)
    assert f"completed  {runs:>2}/{runs} completed, 0 failed, {runs} charged" in out
    assert "Results (real engine clients, answers from the engine emulator)" in out
    for engine in ENGINE_IDS:
        assert f"\n  {engine} " in out, engine


def test_demo_refuses_more_questions_than_it_has() -> None:
    result = senso("demo", "--questions", "9")
    assert result.returncode == 2
    assert "choose 1 to 8" in result.stderr


def test_a_worker_refuses_to_start_with_an_enabled_engine_it_cannot_call() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
        "SQS_QUEUE_URL": "http://127.0.0.1:9/queue/jobs",
        "ENGINE_MODE": "real",
        "ENABLED_ENGINES": "gemini,brightdata_grok",
    }
    result = senso("worker", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "senso worker: ENABLED_ENGINES lists engines without credentials "
        "(gemini: set GEMINI_API_KEY; brightdata_grok: set BRIGHTDATA_API_KEY)"
    )
