"""`senso worker`: one process, one Worker, stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

from app.context import AppContext
from app.logging import configure_logging
from app.settings import Settings
from worker.runtime import Worker


async def run_worker(settings: Settings) -> None:
    configure_logging(settings)
    async with AppContext.create(settings) as context:
        worker = Worker(context)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.request_stop)
        await worker.run()
