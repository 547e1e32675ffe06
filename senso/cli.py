"""The `senso` command: api, worker, migrate, demo, extract, emulator, enqueue-all."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from collections.abc import Callable, Sequence

from app.settings import Settings, get_settings

DEMO_ENGINES = ("openai", "anthropic", "brightdata_perplexity")
DESCRIPTION = """\
senso — the org-evaluation control plane.

Every setting comes from the environment (DATABASE_URL, API_TOKEN, SQS_QUEUE_URL,
AWS_ENDPOINT_URL, REDIS_URL, LOG_JSON, LOG_LEVEL, …); the README lists them all."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="senso", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    api = commands.add_parser(
        "api",
        help="serve the HTTP API (needs API_TOKEN, DATABASE_URL, SQS_QUEUE_URL)",
        description="Serve the HTTP API with uvicorn. OpenAPI docs at /docs. "
        "Needs API_TOKEN; jobs go to SQS_QUEUE_URL.",
    )
    api.add_argument("--host", help="interface to listen on (default: API_HOST, 0.0.0.0)")
    api.add_argument("--port", type=int, help="port (default: API_PORT, 8080)")
    api.set_defaults(run=_api)

    worker = commands.add_parser(
        "worker",
        help="run the SQS worker (needs DATABASE_URL, SQS_QUEUE_URL)",
        description="Long-poll SQS_QUEUE_URL and run evaluation jobs until SIGTERM/SIGINT, "
        "then drain (no new run is started; runs in flight finish, for up to "
        "WORKER_DRAIN_SECONDS, or are handed back), release the unfinished jobs and exit 0. "
        "Runs at the CPU priority WORKER_NICE (Linux nice, 19 by default), so that an API on "
        "the same host answers first.",
    )
    worker.set_defaults(run=_worker)

    migrate = commands.add_parser(
        "migrate",
        help="upgrade the database schema",
        description="Apply Alembic migrations to DATABASE_URL (Postgres or SQLite).",
    )
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.set_defaults(run=_migrate)

    demo = commands.add_parser(
        "demo",
        help="run the whole flow end to end and print the results",
        description="Seed a demo org, trigger an evaluation through the real HTTP API, let the "
        "real worker run it, poll until it finishes and print a summary with 95% intervals, "
        "a 7-day visibility trend (earlier days are backfilled first) and a report link to "
        "open in a browser (kept up with --serve). With no "
        "DATABASE_URL / SQS_QUEUE_URL it runs embedded: a SQLite file, an in-process SQS "
        "endpoint, simulated engines, no keys. Exit 0 when the batch completed.",
    )
    demo.add_argument(
        "--questions",
        type=_demo_question_count,
        default=6,
        help="questions to ask, 1-8 (default 6)",
    )
    demo.add_argument(
        "--engines",
        help="comma-separated engine ids (default: openai,anthropic,brightdata_perplexity; "
        "with --emulator every engine)",
    )
    demo.add_argument(
        "--locations", default="US,GB", help="comma-separated ISO countries (default: US,GB)"
    )
    demo.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the batch (default 300)"
    )
    demo.add_argument(
        "--emulator",
        action="store_true",
        help="use the real engine clients (and LLM analysis) against an in-process engine "
        "emulator instead of the simulated engines: every provider's wire protocol, no key",
    )
    demo.add_argument(
        "--samples",
        type=_bounded(1, 10),
        default=2,
        help="asks of each (question, engine, country) cell per batch, 1-10 (default 2)",
    )
    demo.add_argument(
        "--backfill-days",
        type=_bounded(0, 30),
        default=6,
        help="earlier simulated days evaluated first so the trend shows a week, 0-30 (default 6)",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="after the demo, keep the API running so the printed report link opens in a "
        "browser, until Ctrl-C",
    )
    demo.add_argument(
        "--port",
        type=_bounded(0, 65535),
        default=0,
        help="the API's loopback port (default 0: a free one)",
    )
    demo.set_defaults(run=_demo)

    extract = commands.add_parser(
        "extract",
        help="deterministic extraction of JSON lines from stdin",
        description='Read one JSON object a line from stdin — {"org": {"name", "aliases", '
        '"domains"}, "answer": "...", "citations": ["url", ...]} — and print, for each, one '
        "JSON line with mentioned, mention_count, list_position, cited_domains, org_cited, "
        'in input order. A line that cannot be read gets an {"error": ...} line instead; '
        "the exit status is then 1.",
    )
    extract.set_defaults(run=_extract)

    enqueue_all = commands.add_parser(
        "enqueue-all",
        help="evaluate every org today (for a scheduled task)",
        description="For every org, create or reuse today's batch exactly as "
        "POST /orgs/{id}/evaluations does and send its job to SQS_QUEUE_URL, at most "
        "--max-per-second jobs a second. Inactive orgs, empty matrices and short balances are "
        "skipped with their reason. Prints one line per org and a summary; exit 1 when an "
        "org failed unexpectedly.",
    )
    enqueue_all.add_argument(
        "--max-per-second",
        type=_positive_float,
        help="jobs sent per second at most (default: ENQUEUE_ALL_MAX_PER_SECOND, 10)",
    )
    enqueue_all.set_defaults(run=_enqueue_all)

    emulator = commands.add_parser(
        "emulator",
        help="serve the engine emulator (fake OpenAI, Azure, Anthropic, BrightData, Linkup, "
        "Gemini, Perplexity, DataForSEO)",
        description="Serve one HTTP server that speaks each engine provider's wire format: "
        "OpenAI /v1/chat/completions, Azure /openai/deployments/{d}/chat/completions, "
        "Anthropic /v1/messages, BrightData /datasets/v3/{trigger,progress,snapshot} (every "
        "scraper's dataset), Linkup /v1/search, Gemini /v1beta/models/{m}:generateContent "
        "with its grounding redirects, Perplexity /v1/agent, DataForSEO "
        "/v3/serp/google/organic/live/advanced. Point the *_BASE_URL / AZURE_OPENAI_ENDPOINT "
        "settings at it. "
        "It logs every request; GET /_emulator/requests returns the log and "
        "PUT /_emulator/config replaces the configuration at run time.",
    )
    emulator.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=8090, help="port (default 8090)")
    emulator.add_argument(
        "--config", type=argparse.FileType("r"), help="JSON file of the emulator configuration"
    )
    emulator.add_argument("--latency-ms", type=int, help="latency added to every provider call")
    emulator.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        metavar="PROVIDER=RPM",
        help="requests per minute per API key, e.g. openai=60 (repeatable); "
        "over it the answer is 429 with Retry-After",
    )
    emulator.add_argument(
        "--error-rate",
        type=float,
        help="share of provider calls answered with HTTP 500 (0-1)",
    )
    emulator.add_argument(
        "--overload-rate",
        type=float,
        help="share of provider calls answered as overloaded: 529 from Anthropic, 503 elsewhere",
    )
    emulator.set_defaults(run=_emulator)
    return parser


def _demo_question_count(value: str) -> int:
    count = int(value)
    if not 1 <= count <= 8:
        raise argparse.ArgumentTypeError("the demo has 8 questions: choose 1 to 8")
    return count


def _api(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.api_token is None:
        print("senso api: API_TOKEN must be set", file=sys.stderr)
        return 2
    if (problem := _engine_settings_problem(settings)) is not None:
        print(f"senso api: {problem}", file=sys.stderr)
        return 2
    import uvicorn

    from app.api.app import create_app
    from app.api.edge_wiring import server_options
    from app.logging import configure_logging

    configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
        **server_options(settings),
    )
    return 0


def _worker(_args: argparse.Namespace) -> int:
    from worker.main import run_worker

    settings = get_settings()
    if not settings.sqs_queue_url:
        print("senso worker: SQS_QUEUE_URL must be set", file=sys.stderr)
        return 2
    if (problem := _engine_settings_problem(settings)) is not None:
        print(f"senso worker: {problem}", file=sys.stderr)
        return 2
    asyncio.run(run_worker(settings))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade
    from app.db.session import create_engine
    from app.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await upgrade(engine, args.revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"database upgraded to {args.revision}")
    return 0


def _devtools_missing(command: str) -> int | None:
    """`demo` and `emulator` are development tools: a source checkout has them, the image not."""
    if importlib.util.find_spec("devtools") is None:
        print(
            f"senso {command}: the development tools (package devtools) are not installed; "
            "run it from a source checkout (make demo)",
            file=sys.stderr,
        )
        return 2
    return None


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, not {value}")
        return value

    return parse


def _demo(args: argparse.Namespace) -> int:
    if (missing := _devtools_missing("demo")) is not None:
        return missing
    from devtools.demo import DemoOptions, run_demo

    options = DemoOptions(
        questions=args.questions,
        engines=_demo_engines(args.engines, emulator=args.emulator),
        locations=[c.strip() for c in args.locations.split(",") if c.strip()],
        timeout=args.timeout,
        emulator=args.emulator,
        samples=args.samples,
        backfill_days=args.backfill_days,
        serve=args.serve,
        port=args.port,
    )
    try:
        return asyncio.run(run_demo(options))
    except KeyboardInterrupt:  # how --serve ends
        return 0


def _engine_settings_problem(settings: Settings) -> str | None:
    """Refused at start, so a misconfigured container fails its deployment instead of
    accepting orgs it cannot serve."""
    from app.engines.catalogue import check_engine_settings

    try:
        check_engine_settings(settings)
    except ValueError as exc:
        return str(exc)
    return None


def _demo_engines(listed: str | None, *, emulator: bool) -> list[str]:
    if listed is not None:
        return [e.strip() for e in listed.split(",") if e.strip()]
    if emulator:
        # The emulator speaks every provider's protocol: the demo asks every engine.
        from app.engines.catalogue import ENGINE_IDS

        return list(ENGINE_IDS)
    return list(DEMO_ENGINES)


def _extract(_args: argparse.Namespace) -> int:
    from senso.extract import extract_lines

    return extract_lines(sys.stdin, sys.stdout)


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return number


def _enqueue_all(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.sqs_queue_url:
        print("senso enqueue-all: SQS_QUEUE_URL must be set", file=sys.stderr)
        return 2

    from app.context import AppContext
    from app.evaluations.schedule import OrgResult, enqueue_all, summary_line
    from app.logging import configure_logging

    configure_logging(settings)

    def report(result: OrgResult) -> None:
        print(result.line(), flush=True)

    async def run() -> list[OrgResult]:
        async with AppContext.create(settings) as context:
            return await enqueue_all(
                context,
                per_second=args.max_per_second or settings.enqueue_all_max_per_second,
                on_result=report,
            )

    results = asyncio.run(run())
    print(summary_line(results))
    return 1 if any(result.outcome == "failed" for result in results) else 0


def _emulator(args: argparse.Namespace) -> int:
    if (missing := _devtools_missing("emulator")) is not None:
        return missing
    from pydantic import ValidationError

    from app.logging import configure_logging
    from devtools.emulator.options import emulator_config
    from devtools.emulator.server import run_emulator

    configure_logging(get_settings())
    try:
        config = emulator_config(
            args.config.read() if args.config else None,
            latency_ms=args.latency_ms,
            rate_limits=args.rate_limit,
            error_rate=args.error_rate,
            overload_rate=args.overload_rate,
        )
    except (ValueError, ValidationError) as exc:
        print(f"senso emulator: {exc}", file=sys.stderr)
        return 2
    run_emulator(config, args.host, args.port)
    return 0
