"""Run the emulators in-process: `async with running_emulators() as emu: ... emu.url ...`.

uvicorn runs as a task on the caller's event loop, on a socket bound before it starts (so port 0
gives a free port known up front). It never installs signal handlers here: the host process owns
those. On exit, stalled handlers are released first, then uvicorn shuts down, waiting at most
`GRACEFUL_SHUTDOWN` seconds for connections a client left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

import uvicorn

from emulators.app import EmulatorApp, build_app
from emulators.arrival import StampedHttpProtocol, StampedWebSocketProtocol
from emulators.common import EmulatorState
from emulators.config import EmulatorConfig, EmulatorLog

GRACEFUL_SHUTDOWN = 2.0  # seconds; stalls are released at once, this only bounds misbehaving clients


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # embedded: signals belong to the host process (pytest, a benchmark)


@dataclass
class EmulatorServer:
    app: EmulatorApp
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def state(self) -> EmulatorState:
        return self.app.emulator

    @property
    def config(self) -> EmulatorConfig:
        return self.app.emulator.config

    @property
    def log(self) -> EmulatorLog:
        return self.app.emulator.log

    def reset(self) -> None:
        from emulators.app import reset

        reset(self.state)


def uvicorn_config(app: EmulatorApp, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
        http=StampedHttpProtocol, ws=StampedWebSocketProtocol,  # sansio WebSockets, httptools HTTP
        ws_max_size=1 << 20,
        ws_ping_interval=None,  # Deepgram/ElevenLabs do not ping; the SDKs' own keepalives are what is tested
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def running_emulators(config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                            port: int = 0) -> AsyncIterator[EmulatorServer]:
    app = build_app(config)
    sock = bind(host, port)
    server = _QuietServer(uvicorn_config(app, host, port))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="emulators")
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise its error
                raise RuntimeError("emulator server exited during startup")
            await asyncio.sleep(0.01)
        yield EmulatorServer(app, host, sock.getsockname()[1])
    finally:
        app.emulator.stopping.set()
        server.should_exit = True
        try:
            await asyncio.wait_for(task, GRACEFUL_SHUTDOWN + 5)
        except asyncio.TimeoutError:
            task.cancel()
        finally:
            sock.close()
