"""ElevenLabs WebSocket and HTTP clients against the ElevenLabs emulator, whose audio is checkable."""

from __future__ import annotations

import asyncio

import pytest

from emulators.elevenlabs import expected_audio
from emulators.server import EmulatorServer
from providers.settings import Settings
from providers.base import CallInfo, ProviderAuthError, ProviderError, ProviderTimeout
from providers.elevenlabs_tts import ElevenLabsHttpTts, ElevenLabsWsTts, TtsTimeouts, ws_base_url
from provider_helpers import closed_port

CALL = CallInfo("CA00000000000000000000000000000011", "MZ00000000000000000000000000000011")
FIRST = "Thanks for calling, how can I help you today?"
SECOND = "Your appointment is booked for Tuesday at three."
LONG = "Let me read the whole list of our opening hours for every single day of the coming week to you now."
MEDIUM = "Let me check which times are still open on Tuesday for you."  # ~1 s of audio at 4x real time
FAST = TtsTimeouts(connect=2.0, first_byte=0.6, between_chunks=0.6)


def settings(emu: EmulatorServer | None, key: str = "xi-test-key") -> Settings:
    base = emu.url if emu is not None else f"http://127.0.0.1:{closed_port()}"
    return Settings(elevenlabs_api_key=key, elevenlabs_base_url=base, elevenlabs_voice_id="VOICE123")


async def synth(stream: object, text: str) -> bytes:
    return b"".join([chunk async for chunk in stream.synthesize(text)])  # type: ignore[attr-defined]


def sockets(emu: EmulatorServer, kind: str = "multi-stream-input") -> list[dict]:
    return [r for r in emu.log.elevenlabs if r.get("kind") == kind]


def test_ws_base_url() -> None:
    assert ws_base_url("http://127.0.0.1:9000/") == "ws://127.0.0.1:9000"
    assert ws_base_url("") == "wss://api.elevenlabs.io"


# ---------------------------------------------------------------------- multi-stream-input


async def test_ws_sentence_returns_the_audio_for_it(emu: EmulatorServer) -> None:
    tts = ElevenLabsWsTts(settings(emu), timeouts=FAST)
    stream = tts.open_stream(CALL)
    assert await synth(stream, FIRST) == expected_audio(FIRST)
    await stream.close()
    (record,) = sockets(emu)
    assert record["path"] == "/v1/text-to-speech/VOICE123/multi-stream-input"
    assert record["query"]["output_format"] == "ulaw_8000"
    assert record["query"]["model_id"] == "eleven_flash_v2_5"
    assert record["headers"]["xi-api-key"] is True
    assert record["init"]["text"] == " "
    assert record["init"]["generation_config"]["chunk_length_schedule"] == [50, 90, 120]  # integers
    assert [g["text"].strip() for g in record["generations"]] == [FIRST]
    assert any(m.get("close_context") for m in record["messages"])


async def test_ws_socket_is_reused_across_sentences_and_turns(emu: EmulatorServer) -> None:
    stream = ElevenLabsWsTts(settings(emu), timeouts=FAST).open_stream(CALL)
    assert await synth(stream, FIRST) == expected_audio(FIRST)
    assert await synth(stream, SECOND) == expected_audio(SECOND)
    await asyncio.sleep(0.2)  # a pause between turns
    assert await synth(stream, FIRST) == expected_audio(FIRST)
    await stream.close()
    assert len(sockets(emu)) == 1
    contexts = {g["context_id"] for g in sockets(emu)[0]["generations"]}
    assert len(contexts) == 3  # one context per sentence


async def test_ws_cancel_mid_sentence_discards_its_audio_and_the_next_sentence_works(emu: EmulatorServer) -> None:
    emu.config.tts_realtime_factor = 4.0  # slow enough to cancel mid-sentence
    stream = ElevenLabsWsTts(settings(emu), timeouts=TtsTimeouts(first_byte=3.0, between_chunks=3.0)).open_stream(CALL)
    got: list[bytes] = []
    first_chunk = asyncio.Event()

    async def speak() -> None:
        async for chunk in stream.synthesize(MEDIUM):
            got.append(chunk)
            first_chunk.set()

    task = asyncio.create_task(speak())
    await asyncio.wait_for(first_chunk.wait(), 5.0)
    task.cancel()  # barge-in
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0 < len(b"".join(got)) < len(expected_audio(MEDIUM))
    assert await synth(stream, SECOND) == expected_audio(SECOND)  # no late audio of the cancelled sentence
    await stream.close()
    assert len(sockets(emu)) == 1


async def test_ws_cancel_during_the_handshake_keeps_the_socket(emu: EmulatorServer) -> None:
    stream = ElevenLabsWsTts(settings(emu), timeouts=FAST, prewarm=False).open_stream(CALL)
    task = asyncio.create_task(synth(stream, FIRST))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await synth(stream, SECOND) == expected_audio(SECOND)
    await stream.close()
    assert len(sockets(emu)) == 1


async def test_ws_drop_mid_sentence_then_a_new_socket(emu: EmulatorServer) -> None:
    emu.config.merge({"elevenlabs": {"fault": "drop", "fault_count": 1}})
    stream = ElevenLabsWsTts(settings(emu), timeouts=FAST).open_stream(CALL)
    with pytest.raises(ProviderError) as caught:
        await synth(stream, LONG)
    assert caught.value.heard_anything and not caught.value.retryable
    assert not isinstance(caught.value, ProviderTimeout)
    assert await synth(stream, SECOND) == expected_audio(SECOND)
    await stream.close()
    assert len(sockets(emu)) == 2


async def test_ws_stall_times_out_then_a_new_socket(emu: EmulatorServer) -> None:
    emu.config.merge({"elevenlabs": {"fault": "stall", "fault_count": 1}})
    stream = ElevenLabsWsTts(settings(emu), timeouts=FAST).open_stream(CALL)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeout) as caught:
        await synth(stream, FIRST)
    assert loop.time() - started < 2.0
    assert not caught.value.heard_anything and caught.value.retryable
    assert await synth(stream, SECOND) == expected_audio(SECOND)
    await stream.close()


async def test_ws_server_error_at_handshake(emu: EmulatorServer) -> None:
    emu.config.merge({"elevenlabs": {"fault": "error5xx", "fault_count": 0}})
    stream = ElevenLabsWsTts(settings(emu), timeouts=FAST).open_stream(CALL)
    with pytest.raises(ProviderError) as caught:
        await synth(stream, FIRST)
    assert caught.value.status == 500 and caught.value.retryable
    await stream.close()


async def test_ws_refused_key(emu: EmulatorServer) -> None:
    emu.config.elevenlabs.bad_keys = ["xi-bad-key"]
    stream = ElevenLabsWsTts(settings(emu, key="xi-bad-key"), timeouts=FAST).open_stream(CALL)
    with pytest.raises(ProviderAuthError):
        await synth(stream, FIRST)
    await stream.close()


async def test_ws_unreachable() -> None:
    stream = ElevenLabsWsTts(settings(None), timeouts=FAST).open_stream(CALL)
    with pytest.raises(ProviderError) as caught:
        await synth(stream, FIRST)
    assert caught.value.retryable
    await stream.close()
    await stream.close()


async def test_ws_closed_stream_refuses_work(emu: EmulatorServer) -> None:
    stream = ElevenLabsWsTts(settings(emu), timeouts=FAST).open_stream(CALL)
    await stream.close()
    with pytest.raises(ProviderError):
        await synth(stream, FIRST)


async def test_ws_socket_closed_between_turns_is_reopened(emu: EmulatorServer) -> None:
    stream = ElevenLabsWsTts(settings(emu), timeouts=FAST).open_stream(CALL)
    assert await synth(stream, FIRST) == expected_audio(FIRST)
    await stream._ws.close()  # as the server does to a socket idle past inactivity_timeout  # type: ignore[union-attr]
    assert await synth(stream, SECOND) == expected_audio(SECOND)
    await stream.close()
    assert len(sockets(emu)) == 2


# ---------------------------------------------------------------------- stream-input (single context)


async def test_single_context_mode_one_socket_per_sentence(emu: EmulatorServer) -> None:
    stream = ElevenLabsWsTts(settings(emu), multi_context=False, timeouts=FAST).open_stream(CALL)
    assert await synth(stream, FIRST) == expected_audio(FIRST)
    assert await synth(stream, SECOND) == expected_audio(SECOND)
    await stream.close()
    used = [r for r in sockets(emu, "stream-input") if r["generations"]]
    assert [r["generations"][0]["text"].strip() for r in used] == [FIRST, SECOND]
    assert all(r["query"]["output_format"] == "ulaw_8000" for r in used)


async def test_single_context_closed_spare_is_replaced(emu: EmulatorServer) -> None:
    stream = ElevenLabsWsTts(settings(emu), multi_context=False, timeouts=FAST).open_stream(CALL)
    spare = await stream._spare  # type: ignore[misc]
    await spare.close()  # the server closed the idle spare
    assert await synth(stream, FIRST) == expected_audio(FIRST)
    await stream.close()


async def test_single_context_cancel_then_next_sentence(emu: EmulatorServer) -> None:
    emu.config.tts_realtime_factor = 4.0
    stream = ElevenLabsWsTts(settings(emu), multi_context=False, timeouts=FAST).open_stream(CALL)
    first_chunk = asyncio.Event()

    async def speak() -> None:
        async for _ in stream.synthesize(MEDIUM):
            first_chunk.set()

    task = asyncio.create_task(speak())
    await asyncio.wait_for(first_chunk.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await synth(stream, SECOND) == expected_audio(SECOND)
    await stream.close()


async def test_single_context_drop(emu: EmulatorServer) -> None:
    emu.config.merge({"elevenlabs": {"fault": "drop", "fault_count": 0}})
    stream = ElevenLabsWsTts(settings(emu), multi_context=False, timeouts=FAST).open_stream(CALL)
    with pytest.raises(ProviderError) as caught:
        await synth(stream, LONG)
    assert caught.value.heard_anything
    await stream.close()


# ---------------------------------------------------------------------- HTTP


async def test_http_streams_twilio_frames(emu: EmulatorServer) -> None:
    tts = ElevenLabsHttpTts(settings(emu), timeouts=FAST)
    chunks = [c async for c in tts.open_stream(CALL).synthesize(FIRST)]
    await tts.aclose()
    assert b"".join(chunks) == expected_audio(FIRST)
    assert all(len(c) == 160 for c in chunks[:-1])
    (record,) = emu.log.elevenlabs
    assert record["path"] == "/v1/text-to-speech/VOICE123/stream"
    assert record["query"] == {"optimize_streaming_latency": "3", "output_format": "ulaw_8000"}
    assert record["body"]["text"] == FIRST and record["body"]["model_id"] == "eleven_flash_v2_5"


@pytest.mark.parametrize("fault, error, heard", [
    ("error5xx", ProviderError, False),
    ("stall", ProviderTimeout, False),
    ("drop", ProviderError, True),
])
async def test_http_faults(emu: EmulatorServer, fault: str, error: type[ProviderError], heard: bool) -> None:
    emu.config.merge({"elevenlabs": {"fault": fault, "fault_count": 1}})
    tts = ElevenLabsHttpTts(settings(emu), timeouts=FAST)
    with pytest.raises(error) as caught:
        await synth(tts.open_stream(CALL), LONG)
    assert caught.value.heard_anything is heard
    if fault == "error5xx":
        assert caught.value.status == 500 and caught.value.retryable
    assert await synth(tts.open_stream(CALL), SECOND) == expected_audio(SECOND)
    await tts.aclose()


async def test_http_refused_key(emu: EmulatorServer) -> None:
    emu.config.elevenlabs.bad_keys = ["xi-bad-key"]
    tts = ElevenLabsHttpTts(settings(emu, key="xi-bad-key"), timeouts=FAST)
    with pytest.raises(ProviderAuthError) as caught:
        await synth(tts.open_stream(CALL), FIRST)
    assert "xi-bad-key" not in str(caught.value)
    await tts.aclose()


async def test_http_cancel_mid_sentence(emu: EmulatorServer) -> None:
    emu.config.tts_realtime_factor = 4.0
    tts = ElevenLabsHttpTts(settings(emu), timeouts=FAST)
    stream = tts.open_stream(CALL)
    first_chunk = asyncio.Event()

    async def speak() -> None:
        async for _ in stream.synthesize(MEDIUM):
            first_chunk.set()

    task = asyncio.create_task(speak())
    await asyncio.wait_for(first_chunk.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await synth(stream, SECOND) == expected_audio(SECOND)
    await tts.aclose()
