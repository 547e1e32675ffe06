"""The `senso` command: api, worker, migrate, demo, extract."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from app.settings import get_settings

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
        "then drain for up to WORKER_DRAIN_SECONDS and exit 0.",
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
        "real worker run it, poll until it finishes and print a summary. With no "
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
        default="openai,anthropic,brightdata_perplexity",
        help="comma-separated engine ids (default: openai,anthropic,brightdata_perplexity)",
    )
    demo.add_argument(
        "--locations", default="US,GB", help="comma-separated ISO countries (default: US,GB)"
    )
    demo.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the batch (default 300)"
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
    return parser


def _demo_question_count(value: str) -> int:
    count = int(value)
    if not 1 <= count <= 8:
        raise argparse.ArgumentTypeError("the demo has 8 questions: choose 1 to 8")
    return count


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.app import create_app
    from app.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)
    if settings.api_token is None:
        print("senso api: API_TOKEN must be set", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )
    return 0


def _worker(_args: argparse.Namespace) -> int:
    from worker.main import run_worker

    settings = get_settings()
    if not settings.sqs_queue_url:
        print("senso worker: SQS_QUEUE_URL must be set", file=sys.stderr)
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


def _demo(args: argparse.Namespace) -> int:
    from app.demo import DemoOptions, run_demo

    options = DemoOptions(
        questions=args.questions,
        engines=[e.strip() for e in args.engines.split(",") if e.strip()],
        locations=[c.strip() for c in args.locations.split(",") if c.strip()],
        timeout=args.timeout,
    )
    return asyncio.run(run_demo(options))


def _extract(_args: argparse.Namespace) -> int:
    from app.cli_extract import extract_lines

    return extract_lines(sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
