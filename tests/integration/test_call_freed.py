"""A finished call is freed by reference counting, not left for the cycle collector.

Every call holds a ring buffer (a quarter of a MB), provider streams, tasks and the connection's
protocol objects. Any reference cycle among them keeps the whole call alive until a full collection,
and the gateway paces those rarely (when the old generation has grown by a quarter): a leak run of
2,000 calls grew its heap by 12 MB in the second thousand that way. Here a cloud call runs through
the real app on uvicorn in this process (with the server's own HTTP and WebSocket protocol classes),
against the provider emulators, with the collector switched off: once the call is over, nothing of
it may be left."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

import pytest
import uvicorn

from gateway.app import create_app
from loadgen.bench import free_port
from providers.settings import Settings
from gateway.direct_receive import DirectReceiveProtocol
from gateway.http_protocol import HttpProtocol
from loadgen.simcaller import CallerTurn, run_call
from tests.support import run_emulators

pytestmark = pytest.mark.timeout(120)

SAID = "Hello, I would like to book an appointment"


class TrackedHttpProtocol(HttpProtocol):
    instances: "weakref.WeakSet[HttpProtocol]" = weakref.WeakSet()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.instances.add(self)


async def test_a_finished_call_leaves_nothing_for_the_cycle_collector(tmp_path):
    with run_emulators("--stt-final-delay", "0.05", "--llm-first-token", "0.05", "--tts-first-byte", "0.05",
                       "--transcript", SAID, "--llm-reply", "Sure. Which day suits you?") as emulators:
        port = free_port()
        env = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "HOST": "127.0.0.1", "PORT": str(port),
               "VOICEGATE_DB": str(tmp_path / "voicegate.db")}
        app = create_app(Settings.from_env(env))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=TrackedHttpProtocol,
                                               ws=DirectReceiveProtocol, log_config=None, lifespan="on"))
        serving = asyncio.create_task(server.serve())
        try:
            gateway = app.state.gateway
            while not (server.started and gateway.engines.ready):  # /readyz's condition: the probes answered
                await asyncio.sleep(0.01)
            calls = gateway.services.calls
            gc.collect()
            gc.disable()
            try:
                caught: list[weakref.ref] = []

                async def catch() -> None:  # the call's objects, while it is up
                    while not calls:
                        await asyncio.sleep(0.005)
                    call = next(iter(calls.values()))
                    caught.extend(weakref.ref(o) for o in (call, call.session, call._stt))

                catcher = asyncio.create_task(catch())
                report = await run_call(f"ws://127.0.0.1:{port}/twilio/media", [CallerTurn(text=SAID)], max_call_s=60)
                assert report.error is None, report
                await catcher
                for _ in range(200):  # the server finishes the call after the caller's `stop`
                    if not calls and all(ref() is None for ref in caught):
                        break
                    await asyncio.sleep(0.01)
                left = [type(ref()).__name__ for ref in caught if ref() is not None]
                assert not left, f"still alive without a collection: {left}"
                assert not list(TrackedHttpProtocol.instances), "the upgraded connection's HTTP protocol"
            finally:
                gc.enable()
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(serving, 10)
