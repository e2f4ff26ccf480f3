"""The call driver's own defences, with a fake socket: a peer that never reads is closed, not buffered."""

from __future__ import annotations

import asyncio

from starlette.websockets import WebSocketState

from gateway.call import CLOSE_SLOW_CONSUMER, MAX_OUTBOUND_BACKLOG, CallServices, MediaCall
from gateway.config import Settings
from gateway.session import SessionSettings


class NeverReads:
    """A WebSocket whose peer stopped reading: every send blocks forever."""

    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.closed_with: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = (code, reason)


async def test_a_peer_that_never_reads_is_closed_with_a_clear_code():
    ws = NeverReads()
    services = CallServices(settings=Settings(), engines=None, make_responder=lambda call, snapshot=None: None)
    call = MediaCall(ws, services, SessionSettings())
    writer = asyncio.get_running_loop().create_task(call._writer())
    for i in range(MAX_OUTBOUND_BACKLOG + 10):
        call._send(f"frame {i}")
    await asyncio.sleep(0.05)
    assert ws.closed_with == (CLOSE_SLOW_CONSUMER, "not reading")
    assert call.end_reason == "slow_consumer"
    assert len(call._out) <= MAX_OUTBOUND_BACKLOG  # memory stays bounded
    writer.cancel()
    for task in list(call._tasks):
        task.cancel()
