"""The call driver's own defences, with a fake socket: a peer that never reads is closed, not buffered."""

from __future__ import annotations

import asyncio

from starlette.websockets import WebSocketState

from gateway.call import CLOSE_SLOW_CONSUMER, MAX_OUTBOUND_BACKLOG, CallServices, MediaCall
from gateway.config import Settings
from gateway.events import SendMark, StartReply
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
    for i in range(MAX_OUTBOUND_BACKLOG + 10):
        call._send(f"frame {i}")
    await asyncio.sleep(0.05)
    assert ws.closed_with == (CLOSE_SLOW_CONSUMER, "not reading")
    assert call.end_reason == "slow_consumer"
    assert len(call._out) <= MAX_OUTBOUND_BACKLOG  # memory stays bounded
    for task in list(call._tasks):
        task.cancel()


class Records:
    """A WebSocket that takes every frame at once."""

    application_state = WebSocketState.CONNECTED

    async def send_text(self, text: str) -> None:
        pass

    async def close(self, code: int, reason: str = "") -> None:
        pass


class FirstStepResponder:
    """Notes what the call had queued when the reply's first step ran, then waits (as for the LLM)."""

    def __init__(self) -> None:
        self.saw: list[str] | None = None

    async def reply(self, request):
        self.saw = list(self.call._out)
        await asyncio.Event().wait()
        yield ""


async def test_a_reply_starts_in_the_loop_turn_that_asked_for_it_after_all_that_steps_actions():
    """No loop turn between the end of the caller's turn and the LLM request (each one is a wait
    behind everything else that is ready); and the reply never runs in the middle of the actions
    of the core step that started it."""
    services = CallServices(settings=Settings(), engines=None, make_responder=lambda call, snapshot=None: None)
    call = MediaCall(Records(), services, SessionSettings())
    responder = FirstStepResponder()
    responder.call = call
    call._responder = responder

    def step(_event):
        return [StartReply(1, "hello", ()), SendMark("queued after the reply was asked for")]

    call._core(step, None)
    assert responder.saw is not None  # ran before _core returned: no loop turn in between
    assert any("queued after the reply was asked for" in frame for frame in responder.saw)
    for task in list(call._tasks):
        task.cancel()
    await asyncio.gather(*call._tasks, return_exceptions=True)
