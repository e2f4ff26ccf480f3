"""The Deepgram emulator driven by the real deepgram-sdk 7.16 client (PROTOCOLS.md §1)."""

from __future__ import annotations

import asyncio
import time
import warnings
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.core.events import EventType
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.types import (
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from emu_helpers import piper_speech, send_paced, silence, tone_speech
from websockets.exceptions import ConnectionClosedError

from emulators.server import EmulatorServer

with warnings.catch_warnings():
    # deepgram-sdk 7.16 imports websockets.exceptions.InvalidStatusCode, deprecated in websockets 14+
    # and not covered by pyproject's filters; importing it here once, quietly, caches the module.
    warnings.simplefilter("ignore", DeprecationWarning)
    import deepgram.listen.v1.client  # noqa: F401

pytestmark = pytest.mark.timeout(30)

LISTEN = dict(model="nova-3", encoding="mulaw", sample_rate=8000, channels=1, interim_results=True,
              endpointing=300, utterance_end_ms=1000, vad_events=True, smart_format=True, punctuate=True,
              language="en-US")


def client(emu: EmulatorServer, key: str = "test-key") -> AsyncDeepgramClient:
    env = DeepgramClientEnvironment(base=emu.url, production=emu.ws_url, agent=emu.ws_url, agent_rest=emu.url)
    return AsyncDeepgramClient(api_key=key, environment=env)


class Listener:
    """Collects what `start_listening` emits, with arrival times."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, Any]] = []
        self.errors: list[Exception] = []
        self.closed = asyncio.Event()

    def on_message(self, msg: Any) -> None:
        self.messages.append((time.time(), msg))

    def on_error(self, exc: Exception) -> None:
        self.errors.append(exc)

    def on_close(self, _: Any) -> None:
        self.closed.set()

    def of(self, cls: type) -> list[Any]:
        return [m for _, m in self.messages if isinstance(m, cls)]

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, m in self.messages:
                if pred(m):
                    return m
            await asyncio.sleep(0.01)
        raise AssertionError("no matching message")


@asynccontextmanager
async def listening(emu: EmulatorServer, **options: Any) -> AsyncIterator[tuple[Any, Listener]]:
    dg = client(emu)
    async with dg.listen.v1.connect(**{**LISTEN, **options}) as conn:
        listener = Listener()
        conn.on(EventType.MESSAGE, listener.on_message)
        conn.on(EventType.ERROR, listener.on_error)
        conn.on(EventType.CLOSE, listener.on_close)
        task = asyncio.create_task(conn.start_listening())
        try:
            yield conn, listener
        finally:
            if not task.done():
                await conn._websocket.close()
            await asyncio.wait_for(task, 5)


async def test_speech_gets_scripted_interim_final_and_utterance_end(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"script": ["Hello there.", "Next Tuesday at three."]}})
    audio = (silence(200) + tone_speech("hello there how are you") + silence(600)
             + tone_speech("next tuesday at three") + silence(600))
    async with listening(emu) as (conn, listener):
        await send_paced(conn.send_media, audio)
        await listener.wait_for(lambda m: isinstance(m, ListenV1UtteranceEnd) and m.last_word_end > 2.0)
        await conn.send_close_stream()
        await asyncio.wait_for(listener.closed.wait(), 5)

    msgs = [m for _, m in listener.messages]
    assert not listener.errors
    assert isinstance(msgs[0], ListenV1SpeechStarted)
    assert isinstance(msgs[-1], ListenV1Metadata)
    assert msgs[-1].duration == pytest.approx(len(audio) / 8000, abs=0.03)
    finals = [m for m in listener.of(ListenV1Results) if m.is_final]
    assert [f.channel.alternatives[0].transcript for f in finals] == ["Hello there.", "Next Tuesday at three."]
    assert all(f.speech_final and not f.from_finalize for f in finals)
    words = finals[0].channel.alternatives[0].words
    assert [w.word for w in words] == ["hello", "there"]
    assert [w.punctuated_word for w in words] == ["Hello", "there."]
    assert finals[0].start == pytest.approx(0.2, abs=0.05)
    assert finals[0].metadata.model_info.arch == "nova-3"
    interims = [m for m in listener.of(ListenV1Results) if not m.is_final]
    assert len(interims) >= 4
    assert all("Hello there.".startswith(i.channel.alternatives[0].transcript)
               or "Next Tuesday at three.".startswith(i.channel.alternatives[0].transcript) for i in interims)
    kinds = [type(m).__name__ for m in msgs]
    # Per utterance: SpeechStarted, interims, the final, then UtteranceEnd.
    first_final = kinds.index("ListenV1Results", kinds.index("ListenV1SpeechStarted"))
    assert kinds.count("ListenV1SpeechStarted") == 2 and kinds.count("ListenV1UtteranceEnd") == 2
    assert first_final > 0

    record = emu.log.deepgram[-1]
    assert record["query"]["encoding"] == "mulaw" and record["query"]["interim_results"] == "true"
    assert record["headers"]["authorization"] is True
    assert record["headers"]["user-agent"].startswith("deepgram-sdk/")
    assert record["audio_bytes"] == len(audio)
    assert len(record["close_streams"]) == 1
    assert [t["transcript"] for t in record["transcripts"] if t["is_final"]] == ["Hello there.", "Next Tuesday at three."]
    # The final comes stt_final_delay after the end of speech was detected.
    for speech, final in zip(record["speech"], [t for t in record["transcripts"] if t["is_final"]]):
        assert final["t"] - speech["end_at"] >= emu.config.stt_final_delay - 0.01


async def test_real_speech_is_one_utterance(emu: EmulatorServer) -> None:
    text = "I would like to book an appointment for tomorrow morning."
    audio = await asyncio.to_thread(piper_speech, text)
    emu.config.merge({"deepgram": {"script": [text]}})
    async with listening(emu) as (conn, listener):
        await send_paced(conn.send_media, silence(300) + audio + silence(500), speed=8.0)
        final = await listener.wait_for(lambda m: isinstance(m, ListenV1Results) and m.speech_final)
        await listener.wait_for(lambda m: isinstance(m, ListenV1UtteranceEnd))
    assert final.channel.alternatives[0].transcript == text
    assert final.duration == pytest.approx(len(audio) / 8000, abs=0.4)
    assert len(emu.log.deepgram[-1]["speech"]) == 1


async def test_finalize_answers_from_finalize_once(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"script": ["Book me in."]}})
    async with listening(emu, endpointing=1500) as (conn, listener):
        await send_paced(conn.send_media, silence(100) + tone_speech("book me in please"))
        sent = time.time()
        await conn.send_finalize()
        final = await listener.wait_for(lambda m: isinstance(m, ListenV1Results) and m.is_final)
        answered = next(t for t, m in listener.messages if m is final)
        assert final.from_finalize and not final.speech_final
        assert final.channel.alternatives[0].transcript == "Book me in."
        assert emu.config.stt_final_delay - 0.01 <= answered - sent < 2.0
        await send_paced(conn.send_media, silence(1700), speed=10)  # the detector now ends the utterance
        await listener.wait_for(lambda m: isinstance(m, ListenV1UtteranceEnd))
        await conn.send_finalize()  # nothing pending: an empty from_finalize final
        await listener.wait_for(lambda m: isinstance(m, ListenV1Results) and m.channel.alternatives[0].transcript == "")
    finals = [m for m in listener.of(ListenV1Results) if m.is_final and m.channel.alternatives[0].transcript]
    assert len(finals) == 1  # the same utterance is never finalized twice
    assert len(emu.log.deepgram[-1]["finalizes"]) == 2


async def test_keepalive_is_recorded_and_idle_closes_with_net0001(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"idle_timeout": 0.6}})
    async with listening(emu) as (conn, listener):
        for _ in range(5):  # 0.75 s of keepalives: longer than the idle timeout
            await conn.send_keep_alive()
            await asyncio.sleep(0.15)
        assert not listener.closed.is_set()
        await asyncio.wait_for(listener.closed.wait(), 3)
    assert not listener.messages  # KeepAlive gets no reply
    (error,) = listener.errors
    assert isinstance(error, ConnectionClosedError)
    assert error.rcvd is not None and error.rcvd.code == 1011 and "NET-0001" in error.rcvd.reason
    record = emu.log.deepgram[-1]
    assert len(record["keepalives"]) == 5
    assert record["closed_by"] == "server"
    assert record["closed_at"] - record["keepalives"][-1] >= 0.55


async def test_bad_key_is_refused_with_401(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"bad_keys": ["bad-key"]}})
    with pytest.raises(ApiError) as info:
        async with client(emu, "bad-key").listen.v1.connect(**LISTEN):
            pass
    assert info.value.status_code == 401
    assert emu.log.deepgram[-1]["status"] == 401


async def test_refuse_and_error5xx_faults_honour_fault_count(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"fault": "refuse", "fault_count": 1}})
    with pytest.raises(ApiError) as info:
        async with client(emu).listen.v1.connect(**LISTEN):
            pass
    assert info.value.status_code == 401
    async with client(emu).listen.v1.connect(**LISTEN) as conn:  # the fault was used up
        await conn.send_close_stream()
    emu.config.merge({"deepgram": {"fault": "error5xx", "fault_count": 0}})
    for _ in range(2):
        with pytest.raises(ApiError) as info:
            async with client(emu).listen.v1.connect(**LISTEN):
                pass
        assert info.value.status_code == 500
    assert emu.config.deepgram.fault == "error5xx"


async def test_drop_cuts_the_socket_mid_utterance(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"fault": "drop", "drop_after": 0.2}})
    async with listening(emu) as (conn, listener):
        try:
            await send_paced(conn.send_media, tone_speech("this call is about to drop out") + silence(500), speed=2)
        except Exception:
            pass  # sending into a dead socket
        await asyncio.wait_for(listener.closed.wait(), 3)
    assert listener.of(ListenV1SpeechStarted)
    assert not [m for m in listener.of(ListenV1Results) if m.is_final]
    (error,) = listener.errors
    assert isinstance(error, ConnectionClosedError) and error.rcvd is None  # no close frame
    assert emu.log.deepgram[-1]["closed_by"] == "server-drop"


async def test_stall_says_nothing_but_stays_open(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"fault": "stall"}})
    async with listening(emu) as (conn, listener):
        await send_paced(conn.send_media, tone_speech("hello") + silence(500), speed=10)
        await asyncio.sleep(0.4)
        await conn.send_keep_alive()  # still open
        assert not listener.messages and not listener.closed.is_set()
    assert emu.log.deepgram[-1]["fault"] == "stall"
    assert emu.log.deepgram[-1]["speech"]  # speech was still detected, just never answered
