"""The call driver with a fake socket: its defences (a peer that never reads is closed, not buffered), and
when and how its frames and tasks go out."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace

from starlette.websockets import WebSocketState

from gateway.call import CLOSE_SLOW_CONSUMER, MAX_OUTBOUND_BACKLOG, MEDIA_FRAMES_PER_MESSAGE, CallServices, MediaCall
from providers.settings import Settings
from gateway.direct_receive import DIRECT_RECEIVE
from dialog.events import SendMark, SendMedia, StartReply
from gateway.logs import call_sid_var
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

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        pass


class FirstStepResponder:
    """Notes what the call had sent when the reply's first step ran, then waits (as for the LLM)."""

    def __init__(self) -> None:
        self.saw: list[str] | None = None

    async def reply(self, request):
        self.saw = list(self.call.ws.sent)
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


class SlowSocket(Records):
    """A WebSocket whose buffer is full for the first frame: that send waits until `room` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.room = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if not self.sent and not self.room.is_set():
            await self.room.wait()
        self.sent.append(text)


async def test_frames_go_out_in_the_turn_they_are_queued_and_in_order_when_a_send_must_wait():
    services = CallServices(settings=Settings(), engines=None, make_responder=lambda call, snapshot=None: None)
    call = MediaCall(Records(), services, SessionSettings())
    call._core(lambda _event: [SendMark("one"), SendMark("two")], None)
    assert [("one" in f, "two" in f) for f in call.ws.sent] == [(True, False), (False, True)]  # no loop turn

    slow = MediaCall(SlowSocket(), services, SessionSettings())
    slow._core(lambda _event: [SendMark("first"), SendMark("second")], None)
    slow._core(lambda _event: [SendMark("third")], None)
    assert slow.ws.sent == [] and len(slow._out) == 2  # the first send waits; the others queue behind it
    slow.ws.room.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert [name for f in slow.ws.sent for name in ("first", "second", "third") if name in f] == \
        ["first", "second", "third"]
    assert not slow._tasks and slow._writing is None


async def test_the_frames_of_one_core_step_go_out_as_one_media_message_marks_in_place():
    services = CallServices(settings=Settings(), engines=None, make_responder=lambda call, snapshot=None: None)
    call = MediaCall(Records(), services, SessionSettings())
    frames = [bytes([n]) * 160 for n in range(4)]
    call._core(lambda _event: [SendMedia(frames[0]), SendMedia(frames[1]), SendMark("m"),
                               SendMedia(frames[2]), SendMedia(frames[3])], None)
    sent = [json.loads(text) for text in call.ws.sent]
    assert [m["event"] for m in sent] == ["media", "mark", "media"]
    assert base64.b64decode(sent[0]["media"]["payload"]) == frames[0] + frames[1]
    assert base64.b64decode(sent[2]["media"]["payload"]) == frames[2] + frames[3]
    assert call._frames_out == 4  # still counted in 20 ms frames

    many = [SendMedia(b"\xff" * 160)] * (MEDIA_FRAMES_PER_MESSAGE + 1)
    call._core(lambda _event: many, None)
    assert [len(base64.b64decode(json.loads(t)["media"]["payload"])) for t in call.ws.sent[3:]] == \
        [160 * MEDIA_FRAMES_PER_MESSAGE, 160]  # a message holds at most MEDIA_FRAMES_PER_MESSAGE


class DirectSocket(Records):
    """A socket whose server hands messages to the app's handler as they arrive (`gateway.direct_receive`):
    `receive()` serves what is queued until the call installs its handler; the test then plays the server."""

    def __init__(self, queued: list[dict]) -> None:
        super().__init__()
        self.queue: asyncio.Queue = asyncio.Queue()
        for message in queued:
            self.queue.put_nowait(message)
        self.handler = None
        self.installed = asyncio.Event()
        self.scope = {"extensions": {DIRECT_RECEIVE: self.install}}
        self.closed_with: tuple[int, str] | None = None

    def install(self, handler) -> None:
        self.handler = handler
        self.installed.set()

    async def receive(self) -> dict:
        return await self.queue.get()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = (code, reason)


class RecordingStt:
    """A streaming STT stream noting each forwarded chunk with the call id it was sent under."""

    streaming = True

    def __init__(self) -> None:
        self.forwarded: list[tuple[bytes, str]] = []

    async def start(self) -> None:
        pass

    def send_audio(self, mulaw: bytes) -> None:
        self.forwarded.append((mulaw, call_sid_var.get()))

    def end_of_speech(self, utterance: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


class SilentResponder:
    async def reply(self, request):
        return
        yield ""

    def snapshot(self) -> dict:
        return {}


class SilentTts:
    async def synthesize(self, text: str):
        return
        yield b""

    async def close(self) -> None:
        pass


def direct_call(queued: list[dict]) -> tuple[MediaCall, RecordingStt]:
    stt = RecordingStt()
    engines = SimpleNamespace(stt=SimpleNamespace(open_stream=lambda info, on_result: stt),
                              tts=SimpleNamespace(open_stream=lambda info: SilentTts()))
    services = CallServices(settings=Settings(), engines=engines,
                            make_responder=lambda call, snapshot=None: SilentResponder())
    return MediaCall(DirectSocket(queued), services, SessionSettings()), stt


def text_message(data: dict) -> dict:
    return {"type": "websocket.receive", "text": json.dumps(data)}


def media(n: int, loud: bool = False) -> dict:
    frame = bytes([0x00, 0x80]) * 80 if loud else bytes([0xFF]) * 160  # full scale, or mu-law silence
    payload = base64.b64encode(frame).decode()
    return text_message({"event": "media", "streamSid": "MZ1", "media": {"chunk": str(n), "payload": payload}})


START = text_message({"event": "start", "streamSid": "MZ1",
                      "start": {"callSid": "CA1", "streamSid": "MZ1", "customParameters": {}}})


async def test_once_started_the_call_takes_each_message_as_it_arrives_in_its_own_context():
    call, stt = direct_call([text_message({"event": "connected"}), START, media(1)])
    running = asyncio.create_task(call.run())
    await asyncio.wait_for(call.ws.installed.wait(), 5)
    for _ in range(3):
        await asyncio.sleep(0)  # the STT stream's start
    for n in range(2, 50):  # the caller speaks: once the VAD hears it, the audio goes to STT as it comes
        assert call.ws.handler(media(n, loud=True)) is True
        if stt.forwarded:
            break  # forwarded inside the handler: no loop turn in between
    assert call_sid_var.get() != "CA1"  # the server's callback (here the test) has no call ids of its own:
    assert stt.forwarded and stt.forwarded[-1][1] == "CA1"  # the handler runs in the call's context
    assert call.ws.handler(text_message({"event": "stop", "streamSid": "MZ1"})) is False  # lets go
    await asyncio.wait_for(running, 5)
    assert call.end_reason == "stop" and "CA1" not in call.services.calls


async def test_a_disconnect_or_a_failure_in_the_handler_ends_only_this_call():
    call, _ = direct_call([START])
    running = asyncio.create_task(call.run())
    await asyncio.wait_for(call.ws.installed.wait(), 5)
    assert call.ws.handler({"type": "websocket.disconnect", "code": 1006}) is False
    await asyncio.wait_for(running, 5)
    assert call.end_reason == "closed"

    broken, _ = direct_call([START])
    running = asyncio.create_task(broken.run())
    await asyncio.wait_for(broken.ws.installed.wait(), 5)

    def fails(raw):
        raise RuntimeError("a bug")

    broken._on_message = fails
    assert broken.ws.handler(media(1)) is False  # never raises into the server's protocol
    await asyncio.wait_for(running, 5)
    assert broken.end_reason == "error" and broken.ws.closed_with is not None


async def test_an_oversized_message_closes_the_call_with_1009():
    call, _ = direct_call([START])
    running = asyncio.create_task(call.run())
    await asyncio.wait_for(call.ws.installed.wait(), 5)
    huge = {"type": "websocket.receive", "text": "x" * (call.services.settings.max_message_bytes + 1)}
    assert call.ws.handler(huge) is False
    await asyncio.wait_for(running, 5)
    assert call.end_reason == "protocol" and call.ws.closed_with[0] == 1009
