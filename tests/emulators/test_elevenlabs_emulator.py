"""The ElevenLabs emulator: HTTP streaming through the real elevenlabs 2.78 client, the stream-input
WebSockets through websockets + the SDK's message types (PROTOCOLS.md §3)."""

from __future__ import annotations

import asyncio
import base64
import math
import typing
from contextlib import asynccontextmanager
from typing import AsyncIterator

import httpx
import numpy as np
import orjson
import pytest
import websockets
from elevenlabs import VoiceSettings
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError
from elevenlabs.core.unchecked_base_model import construct_type
from elevenlabs.types import (
    AudioOutput,
    AudioOutputMulti,
    CloseConnection,
    FinalOutput,
    FinalOutputMulti,
    GenerationConfig,
    InitializeConnection,
    RealtimeVoiceSettings,
    SendText,
)
from websockets.asyncio.client import connect

from emulators.elevenlabs import audio_chunks, audio_duration_ms, expected_audio
from emulators.server import EmulatorServer

pytestmark = pytest.mark.timeout(30)

VOICE = "VOICE123"


@asynccontextmanager
async def client(emu: EmulatorServer, key: str = "xi-test") -> AsyncIterator[AsyncElevenLabs]:
    # Our own httpx client, so it is closed (the SDK's default one is never closed: ResourceWarning).
    async with httpx.AsyncClient(timeout=10) as http:
        yield AsyncElevenLabs(api_key=key, base_url=emu.url, httpx_client=http)


def ws_url(emu: EmulatorServer, endpoint: str = "stream-input", **query: str) -> str:
    q = {"model_id": "eleven_flash_v2_5", "output_format": "ulaw_8000", **query}
    return f"{emu.ws_url}/v1/text-to-speech/{VOICE}/{endpoint}?" + "&".join(f"{k}={v}" for k, v in q.items())


def test_expected_audio_is_deterministic_speech_like_mulaw() -> None:
    a = expected_audio("Hello caller.")
    assert a == expected_audio("  Hello   caller. ")  # whitespace-normalized
    assert a != expected_audio("Hello caller!")
    assert len(a) == 8 * audio_duration_ms("Hello caller.") == 8 * 860  # 13 chars x 65 ms, whole 20 ms frames
    assert len(set(a)) > 50  # a varying signal, not a constant
    assert expected_audio("") == b""


@pytest.mark.parametrize("output_format", ["ulaw_8000", "alaw_8000", "pcm_16000", "pcm_22050"])
def test_audio_rendered_a_chunk_at_a_time_is_the_expected_audio(output_format: str) -> None:
    """The emulator renders each chunk as it sends it (a whole reply at once held its loop ~2 ms)."""
    for text in ("Hi.", "Booking 7: sure, I can help you with that. Which day would suit you best?", "x" * 600):
        whole = expected_audio(text, output_format)
        for chunk_ms in (20, 50, 100, 250):
            chunks = list(audio_chunks(text, output_format, chunk_ms))
            assert b"".join(chunks) == whole
            width = 1 if output_format in ("ulaw_8000", "alaw_8000") else 2
            rate = 8000 if width == 1 else int(output_format.split("_")[1])
            assert {len(c) for c in chunks[:-1]} <= {rate * chunk_ms // 1000 * width}


def test_expected_audio_fades_in_and_out_at_the_level_it_is_meant_to_have() -> None:
    pcm = expected_audio("A sentence of a reasonable length.", "pcm_8000")
    assert pcm[:2] == b"\x00\x00" and pcm[-2:] == b"\x00\x00"  # 10 ms fades: no click at either end
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    rms_dbfs = 20 * math.log10(math.sqrt(np.mean(samples**2)) / 32768)
    assert -23 < rms_dbfs < -19  # about -20 dBFS, less the syllable envelope's dips


async def test_http_stream_yields_the_expected_audio(emu: EmulatorServer) -> None:
    text = "Hello caller, thanks for calling."
    async with client(emu) as el:
        chunks = [c async for c in el.text_to_speech.stream(
            VOICE, text=text, model_id="eleven_flash_v2_5", output_format="ulaw_8000", optimize_streaming_latency=3,
            voice_settings=VoiceSettings(stability=0.5, similarity_boost=0.75, speed=1.0),
            request_options={"chunk_size": 160})]
    assert b"".join(chunks) == expected_audio(text)
    assert all(len(c) == 160 for c in chunks)
    record = emu.log.elevenlabs[-1]
    assert record["query"] == {"optimize_streaming_latency": "3", "output_format": "ulaw_8000"}
    assert record["headers"]["xi-api-key"] is True
    assert record["body"]["text"] == text and record["body"]["voice_settings"]["stability"] == 0.5
    assert record["first_byte_at"] - record["t"] >= emu.config.tts_first_byte - 0.01
    assert record["audio_bytes"] == len(expected_audio(text))


async def test_http_convert_and_errors(emu: EmulatorServer) -> None:
    async with client(emu) as el, client(emu, "xi-bad") as bad:
        await _convert_and_errors(emu, el, bad)


async def _convert_and_errors(emu: EmulatorServer, el: AsyncElevenLabs, bad: AsyncElevenLabs) -> None:
    audio = b"".join([c async for c in el.text_to_speech.convert(VOICE, text="Goodbye.", output_format="ulaw_8000")])
    assert audio == expected_audio("Goodbye.")
    pcm = b"".join([c async for c in el.text_to_speech.stream(VOICE, text="Goodbye.", output_format="pcm_16000")])
    assert len(pcm) == 2 * 16 * audio_duration_ms("Goodbye.")

    with pytest.raises(ApiError) as info:
        async for _ in el.text_to_speech.stream(VOICE, text="x", output_format="mp3_44100_128"):
            pass
    assert info.value.status_code == 400
    emu.config.merge({"elevenlabs": {"bad_keys": ["xi-bad"], "fault": "error5xx", "fault_count": 1}})
    with pytest.raises(ApiError) as info:
        async for _ in bad.text_to_speech.stream(VOICE, text="x", output_format="ulaw_8000"):
            pass
    assert info.value.status_code == 401 and info.value.body["detail"]["status"] == "invalid_api_key"
    with pytest.raises(ApiError) as info:
        async for _ in el.text_to_speech.stream(VOICE, text="x", output_format="ulaw_8000"):
            pass
    assert info.value.status_code == 500


async def test_http_drop_breaks_the_body(emu: EmulatorServer) -> None:
    emu.config.merge({"elevenlabs": {"fault": "drop"}})
    got = []
    async with client(emu) as el:
        with pytest.raises(httpx.RemoteProtocolError):  # the chunked body never ends properly
            async for chunk in el.text_to_speech.stream(VOICE, text="This sentence will be cut short.",
                                                        output_format="ulaw_8000", request_options={"chunk_size": 160}):
                got.append(chunk)
    assert 0 < len(b"".join(got)) < len(expected_audio("This sentence will be cut short."))


def parse(raw: str | bytes) -> AudioOutput | FinalOutput:
    return construct_type(type_=typing.Union[AudioOutput, FinalOutput], object_=orjson.loads(raw))


async def test_stream_input_generates_on_flush_and_at_the_end(emu: EmulatorServer) -> None:
    init = InitializeConnection(voice_settings=RealtimeVoiceSettings(stability=0.5, similarity_boost=0.8),
                                generation_config=GenerationConfig(chunk_length_schedule=[120, 160, 250, 290]))
    async with connect(ws_url(emu), additional_headers={"xi-api-key": "xi-test"}) as ws:
        await ws.send(init.json(by_alias=True, exclude_none=True))
        await ws.send(SendText(text="Hi there. ", flush=True).json(exclude_none=True))
        first = parse(await ws.recv())
        await ws.send(SendText(text="How are you ").json(exclude_none=True))
        await ws.send(SendText(text="today? ").json(exclude_none=True))
        await ws.send(CloseConnection().json())
        messages = [first] + [parse(raw) async for raw in ws]
    assert isinstance(messages[-1], FinalOutput) and messages[-1].is_final
    audio_msgs = messages[:-1]
    assert all(isinstance(m, AudioOutput) for m in audio_msgs)
    audio = b"".join(base64.b64decode(m.audio) for m in audio_msgs)
    assert audio == expected_audio("Hi there.") + expected_audio("How are you today?")
    chars = "".join("".join(m.normalized_alignment.chars) for m in audio_msgs)
    assert chars == "Hi there.How are you today?"
    assert ws.close_code == 1000

    record = emu.log.elevenlabs[-1]
    assert record["kind"] == "stream-input" and record["query"]["output_format"] == "ulaw_8000"
    assert record["init"]["text"] == " " and record["init"]["generation_config"]["chunk_length_schedule"][0] == 120
    assert [m.get("flush") for m in record["messages"][1:3]] == [True, None]
    assert [(g["text"], g["reason"]) for g in record["generations"]] == [
        ("Hi there. ", "flush"), ("How are you today? ", "end")]
    assert record["first_audio_at"] - record["messages"][1]["t"] >= emu.config.tts_first_byte - 0.01


async def test_stream_input_schedule_threshold_and_key_in_first_message(emu: EmulatorServer) -> None:
    async with connect(ws_url(emu)) as ws:  # no header: the key rides in the first message
        await ws.send(orjson.dumps({"text": " ", "xi_api_key": "xi-test",
                                    "generation_config": {"chunk_length_schedule": [50]}}).decode())
        await ws.send(SendText(text="This first piece is long enough to pass the fifty character threshold. ")
                      .json(exclude_none=True))
        msg = parse(await asyncio.wait_for(ws.recv(), 5))  # generated before the end of input
        assert isinstance(msg, AudioOutput)
        await ws.send(CloseConnection().json())
        rest = [parse(raw) async for raw in ws]
    assert isinstance(rest[-1], FinalOutput)
    record = emu.log.elevenlabs[-1]
    assert record["init"]["xi_api_key"] == "<redacted>"
    assert record["generations"][0]["reason"] == "schedule"


async def test_stream_input_refusals_and_faults(emu: EmulatorServer) -> None:
    emu.config.merge({"elevenlabs": {"bad_keys": ["xi-bad"]}})
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(ws_url(emu), additional_headers={"xi-api-key": "xi-bad"}):
            pass
    assert info.value.response.status_code == 401
    emu.config.merge({"elevenlabs": {"fault": "error5xx", "fault_count": 1}})
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(ws_url(emu), additional_headers={"xi-api-key": "xi-test"}):
            pass
    assert info.value.response.status_code == 500

    emu.config.merge({"elevenlabs": {"fault": "drop", "fault_count": 1}})
    async with connect(ws_url(emu), additional_headers={"xi-api-key": "xi-test"}) as ws:
        await ws.send(InitializeConnection().json(by_alias=True, exclude_none=True))
        await ws.send(SendText(text="A sentence long enough for several chunks of audio. ", flush=True).json())
        assert isinstance(parse(await ws.recv()), AudioOutput)
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await ws.recv()
        assert closed.value.rcvd is None  # cut, no close frame

    emu.config.merge({"elevenlabs": {"fault": "stall", "fault_count": 1}})
    async with connect(ws_url(emu), additional_headers={"xi-api-key": "xi-test"}) as ws:
        await ws.send(InitializeConnection().json(by_alias=True, exclude_none=True))
        await ws.send(SendText(text="Anyone there? ", flush=True).json())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)


async def test_stream_input_inactivity_timeout(emu: EmulatorServer) -> None:
    async with connect(ws_url(emu, inactivity_timeout="0.3"), additional_headers={"xi-api-key": "xi-test"}) as ws:
        await ws.send(InitializeConnection().json(by_alias=True, exclude_none=True))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 3)
    assert ws.close_code == 1008


async def test_multi_stream_input_contexts(emu: EmulatorServer) -> None:
    def parse_multi(raw: str | bytes) -> AudioOutputMulti | FinalOutputMulti:
        data = orjson.loads(raw)
        return construct_type(type_=AudioOutputMulti if "audio" in data else FinalOutputMulti, object_=data)

    async with connect(ws_url(emu, "multi-stream-input"), additional_headers={"xi-api-key": "xi-test"}) as ws:
        send = lambda d: ws.send(orjson.dumps(d).decode())  # noqa: E731
        await send({"text": " ", "context_id": "turn1"})
        await send({"text": "First answer. ", "context_id": "turn1", "flush": True})
        await send({"text": "never flushed ", "context_id": "turn1"})
        await send({"context_id": "turn1", "close_context": True})  # barge-in: the unflushed rest is dropped
        await send({"text": " ", "context_id": "turn2"})
        await send({"text": "", "context_id": "turn2"})  # keep-alive only
        await send({"text": "Second answer. ", "context_id": "turn2", "flush": True})
        await send({"close_socket": True})
        messages = [parse_multi(raw) async for raw in ws]
    by_context: dict[str, bytes] = {}
    finals = []
    for m in messages:
        if isinstance(m, AudioOutputMulti):
            by_context[m.context_id] = by_context.get(m.context_id, b"") + base64.b64decode(m.audio)
        else:
            finals.append(m.context_id)
    assert by_context == {"turn1": expected_audio("First answer."), "turn2": expected_audio("Second answer.")}
    assert finals == ["turn1", "turn2"]
    assert [g["text"] for g in emu.log.elevenlabs[-1]["generations"]] == ["First answer. ", "Second answer. "]
