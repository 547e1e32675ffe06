"""`senso worker`: one process, one Worker (and the audit queue's consumer when
AUDIT_SQS_QUEUE_URL is set), stopped by SIGTERM or SIGINT; metrics on WORKER_METRICS_PORT; at the
CPU priority WORKER_NICE."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from prometheus_client import start_http_server

from app.context import AppContext
from app.heap import freeze_startup_heap
from app.logging import configure_logging
from app.metrics import REGISTRY
from app.settings import Settings
from worker.audit import AuditConsumer
from worker.runtime import Worker


def lower_priority(nice: int) -> None:
    """Run at Linux nice `nice` at least, never higher. On Linux a nice value belongs to each
    thread, and a thread starts at its creator's: every thread running now is lowered (an
    imported extension may have started one already), and those started later inherit it."""
    tasks = Path("/proc/self/task")
    for thread in [int(task.name) for task in tasks.iterdir()] if tasks.is_dir() else [0]:
        # A thread may end in between: nothing is left to lower.
        with contextlib.suppress(ProcessLookupError):
            if nice > os.getpriority(os.PRIO_PROCESS, thread):
                os.setpriority(os.PRIO_PROCESS, thread, nice)


async def run_worker(settings: Settings) -> None:
    lower_priority(settings.worker_nice)
    configure_logging(settings)
    metrics = (
        None
        if settings.worker_metrics_port is None
        else start_http_server(settings.worker_metrics_port, registry=REGISTRY)
    )
    try:
        async with AppContext.create(settings) as context:
            worker = Worker(context)
            freeze_startup_heap()
            stop = asyncio.Event()

            def request_stop() -> None:
                worker.request_stop()
                stop.set()

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, request_stop)
            # The audit queue is optional: without AUDIT_SQS_QUEUE_URL the worker runs jobs only.
            audit = (
                asyncio.create_task(AuditConsumer(context, settings.audit_sqs_queue_url).run(stop))
                if settings.audit_sqs_queue_url
                else None
            )
            try:
                await worker.run()
            finally:
                stop.set()
                if audit is not None:
                    await audit
    finally:
        if metrics is not None:
            server, thread = metrics
            server.shutdown()
            thread.join(timeout=5)
