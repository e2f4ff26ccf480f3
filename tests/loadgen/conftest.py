"""Fixtures for the load generator's tests: the tiny fake gateway (test_simcaller's) on a real socket."""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import serve

from tests.loadgen.test_simcaller import FakeGateway


@pytest.fixture
async def fake_gateway() -> AsyncIterator[Callable[..., Awaitable[FakeGateway]]]:
    """Starts a FakeGateway(**kwargs) on a free port of 127.0.0.1 per call; all are closed after the test."""
    servers = []

    async def start(**kwargs) -> FakeGateway:  # type: ignore[no-untyped-def]
        fake = FakeGateway(**kwargs)
        server = await serve(fake.handler, "127.0.0.1", 0, compression=None)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}/twilio/media"
        return fake

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
