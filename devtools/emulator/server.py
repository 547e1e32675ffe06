"""Serving the emulator: in the foreground (`senso emulator`) or on a thread (the tests)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType

import uvicorn

from devtools.emulator.app import create_emulator_app
from devtools.emulator.config import EmulatorConfig
from devtools.emulator.state import EmulatorState

_START_TIMEOUT_SECONDS = 10.0


def run_emulator(config: EmulatorConfig, host: str, port: int) -> None:
    uvicorn.run(create_emulator_app(config), host=host, port=port, log_config=None)


class EmulatorServer:
    """The emulator on a free loopback port, on its own thread and event loop, so that the
    timing it imposes does not depend on the event loop of the code under test."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._app = create_emulator_app(config)
        # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (no 40 ms ACK waits).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(self._app, log_level="warning", log_config=None, lifespan="off")
        )
        self._thread = threading.Thread(target=self._serve, name="engine-emulator", daemon=True)

    @property
    def state(self) -> EmulatorState:
        state: EmulatorState = self._app.state.emulator
        return state

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> EmulatorServer:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the engine emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=_START_TIMEOUT_SECONDS)
        self._socket.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
