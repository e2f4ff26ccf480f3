"""DeepgramStt against the Deepgram emulator: real speech in, the SDK's own socket code, the wire checked."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata

import pytest
from deepgram.core.unchecked_base_model import construct_type
from deepgram.listen.v1.socket_client import V1SocketClientResponse

from emulators.server import EmulatorServer
from providers.settings import Settings
from providers import retry
from providers.base import CallInfo, ProviderAuthError, ProviderError, SttResult
from providers.deepgram_stt import DeepgramOptions, DeepgramStream, DeepgramStt, ReplayBuffer, deepgram_environment
from provider_helpers import closed_port, send_frames, silence, speech, wait_for

UTTERANCE = "I would like to book an appointment for tomorrow."
CALL = CallInfo("CA0000000000000000000000000000test", "MZ0000000000000000000000000000test")


def make_stt(emu: EmulatorServer | None, key: str = "dg-test-key", **options: object) -> DeepgramStt:
    base = emu.url if emu is not None else f"ws://127.0.0.1:{closed_port()}"  # http form: ws derived
    opts = DeepgramOptions(**{"connect_timeout": 2.0, "close_timeout": 1.0, **options})  # type: ignore[arg-type]
    return DeepgramStt(Settings(deepgram_api_key=f"  {key}\n", deepgram_base_url=base), opts)


def open_stream(stt: DeepgramStt) -> tuple[DeepgramStream, list[SttResult]]:
    results: list[SttResult] = []
    return stt.open_stream(CALL, results.append), results


def finals(results: list[SttResult]) -> list[SttResult]:
    return [r for r in results if r.is_final and r.text]


# ---------------------------------------------------------------------- pure parts


def test_environment_derives_ws_and_http_from_one_url() -> None:
    env = deepgram_environment("ws://127.0.0.1:9001/")
    assert (env.base, env.production, env.agent_rest) == ("http://127.0.0.1:9001", "ws://127.0.0.1:9001",
                                                          "http://127.0.0.1:9001")
    env = deepgram_environment("https://dg.example.com/proxy")
    assert (env.base, env.production) == ("https://dg.example.com/proxy", "wss://dg.example.com/proxy")
    assert deepgram_environment("").production == "wss://api.deepgram.com"


def test_replay_buffer_replays_unfinalized_audio_after_rewind() -> None:
    buf = ReplayBuffer(limit=1000)
    for i in range(5):
        buf.append(bytes([i]) * 100)
    assert buf.take_unsent(250) == bytes([0]) * 100 + bytes([1]) * 100
    assert buf.take_unsent(100) == bytes([2]) * 100
    buf.finalize_upto(250)  # a final covered the first 250 bytes: only whole chunks go
    assert (buf.start, buf.size) == (200, 300)
    buf.rewind()
    assert buf.take_unsent(10_000) == bytes([2]) * 100 + bytes([3]) * 100 + bytes([4]) * 100
    assert not buf.has_unsent()


def test_replay_buffer_is_bounded() -> None:
    buf = ReplayBuffer(limit=300)
    for i in range(10):
        buf.append(bytes([i]) * 100)
    assert buf.size == 300 and buf.start == 700
    assert buf.dropped == 700  # never sent, then dropped by the bound
    assert buf.take_unsent(100) == bytes([7]) * 100


def test_messages_with_missing_fields_and_unknown_types_are_tolerated() -> None:
    stt = DeepgramStt(Settings(deepgram_api_key="k", deepgram_base_url="ws://127.0.0.1:1"))
    stream, results = open_stream(stt)
    parse = lambda d: construct_type(type_=V1SocketClientResponse, object_=d)  # noqa: E731
    for message in [
        None, b"\x00", {"type": "Whatever"}, parse({"type": "SpeechStarted", "channel": [0], "timestamp": 0.1}),
        parse({"type": "Results"}),  # no channel, no flags
        parse({"type": "Results", "is_final": True, "channel": {"alternatives": []}}),
        parse({"type": "Results", "is_final": False, "channel": {"alternatives": [{"transcript": "hel"}]}}),
        parse({"type": "Results", "is_final": True, "from_finalize": True,
               "channel": {"alternatives": [{"transcript": "hello"}]}}),
        parse({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 0.9}),
        parse({"type": "Error", "description": "bad"}),
    ]:
        stream._handle(message)
    assert results == [SttResult("hel", False, False), SttResult("hello", True, True), SttResult("", True, True)]


# ---------------------------------------------------------------------- against the emulator


async def test_speech_gives_interim_final_and_end_of_turn(emu: EmulatorServer) -> None:
    emu.config.deepgram.script = [UTTERANCE]
    audio = speech(UTTERANCE)
    stream, results = open_stream(make_stt(emu))
    await stream.start()
    await send_frames(stream.send_audio, audio + silence(600))
    await wait_for(lambda: any(r.end_of_turn for r in results))
    await stream.close()

    interims = [r for r in results if not r.is_final]
    assert interims and all(r.text and not r.end_of_turn for r in interims)
    assert UTTERANCE.startswith(interims[0].text)
    assert finals(results)[0] == SttResult(UTTERANCE, True, True)
    record = emu.log.deepgram[0]
    assert record["query"] == {
        "model": "nova-3", "encoding": "mulaw", "sample_rate": "8000", "channels": "1", "interim_results": "true",
        "endpointing": "300", "utterance_end_ms": "1000", "vad_events": "true", "smart_format": "true",
        "punctuate": "true", "language": "en-US",
    }
    assert record["headers"]["authorization"] is True  # the emulator logs presence, never the key
    # The emulator, like any websockets server, would accept permessage-deflate: none is offered, so
    # no zlib runs on the audio.
    assert "sec-websocket-extensions" not in record["headers"]
    assert record["audio_bytes"] == len(audio) + len(silence(600))
    assert len(emu.log.deepgram) == 1  # one socket for the call


async def test_opening_a_socket_reads_no_package_metadata(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK asks importlib.metadata for its own version on every socket it opens (file I/O on the
    # event loop at each call's start); the client computes its headers once instead.
    stt = make_stt(emu)
    lookups: list[str] = []
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: lookups.append(name) or real_version(name))
    for _ in range(2):
        stream, _ = open_stream(stt)
        await stream.start()
        await stream.close()
    assert lookups == []
    assert [r["headers"]["user-agent"] for r in emu.log.deepgram] == [f"deepgram-sdk/{real_version('deepgram-sdk')}"] * 2
    assert all(r["headers"]["authorization"] is True for r in emu.log.deepgram)


async def test_keepalive_only_while_no_audio_flows(emu: EmulatorServer) -> None:
    stream, _ = open_stream(make_stt(emu, keepalive_seconds=0.2))
    await stream.start()
    await asyncio.sleep(0.7)  # silence on the line: the gateway sends nothing
    await send_frames(stream.send_audio, silence(600), speed=1.0)  # audio flowing in real time
    await stream.close()
    record = emu.log.deepgram[0]
    keepalives = record["keepalives"]
    assert len(keepalives) >= 2
    during_audio = [t for t in keepalives if record["first_audio_at"] + 0.05 < t < record["last_audio_at"]]
    assert during_audio == []
    assert record["closed_by"] == "server"  # CloseStream, not the NET-0001 idle timeout


async def test_end_of_speech_sends_finalize_and_gets_a_from_finalize_final(emu: EmulatorServer) -> None:
    emu.config.deepgram.script = [UTTERANCE]
    emu.config.deepgram.default_endpointing_ms = 300
    stream, results = open_stream(make_stt(emu))
    await stream.start()
    await send_frames(stream.send_audio, speech(UTTERANCE))  # no trailing silence: endpointing cannot fire
    stream.end_of_speech(b"ignored: Deepgram already has the audio")
    await wait_for(lambda: any(r.end_of_turn for r in results))
    await stream.close()
    record = emu.log.deepgram[0]
    assert len(record["finalizes"]) == 1
    assert [t["from_finalize"] for t in record["transcripts"] if t["is_final"]][0] is True
    assert finals(results)[0] == SttResult(UTTERANCE, True, True)


async def test_close_sends_close_stream_and_is_idempotent(emu: EmulatorServer) -> None:
    stream, results = open_stream(make_stt(emu))
    await stream.start()
    await stream.close()
    await stream.close()
    record = emu.log.deepgram[0]
    assert len(record["close_streams"]) == 1
    assert (record["closed_by"], record["close_code"]) == ("server", 1000)
    stream.send_audio(silence(20))  # after close: ignored, no error
    stream.end_of_speech(b"")
    assert results == []


async def test_audio_goes_out_in_the_call_that_hands_it_over_and_in_order_when_it_must_wait(
        emu: EmulatorServer) -> None:
    """With the sender idle and the socket taking writes, `send_audio` writes the frame itself (the
    frame that completes a pause reaches Deepgram without waiting a loop turn); while the socket's
    buffer is full, frames are left to the sender, whose send waits for the drain, and all arrive in
    order."""
    stream, results = open_stream(make_stt(emu))
    await stream.start()
    await asyncio.sleep(0.05)  # the sender has nothing to do and waits
    frames = [bytes([i]) * 160 for i in range(1, 9)]
    stream.send_audio(frames[0])
    stream.send_audio(frames[1])
    assert not stream._buffer.has_unsent()  # both written before this step yielded to the loop
    ws = stream._conn._websocket
    ws.pause_writing()  # what the transport does when the write buffer passes its high-water mark
    for frame in frames[2:5]:
        stream.send_audio(frame)
    assert stream._buffer.has_unsent()  # left to the sender, whose `send` waits for the drain
    await asyncio.sleep(0.05)
    ws.resume_writing()
    for frame in frames[5:]:
        stream.send_audio(frame)
    await wait_for(lambda: not stream._buffer.has_unsent())
    await asyncio.sleep(0.05)
    await stream.close()
    record = emu.log.deepgram[0]
    assert record["audio_bytes"] == 8 * 160
    metadata = next(e for e in record["sent"] if e["type"] == "Metadata")
    assert metadata["sha256"] == hashlib.sha256(b"".join(frames)).hexdigest()


async def test_refused_key_is_an_auth_error_not_retried(emu: EmulatorServer) -> None:
    emu.config.deepgram.bad_keys = ["dg-bad-key"]
    stream, results = open_stream(make_stt(emu, key="dg-bad-key"))
    with pytest.raises(ProviderAuthError) as caught:
        await stream.start()
    assert caught.value.status == 401 and not caught.value.retryable
    assert "dg-bad-key" not in str(caught.value)
    assert len(results) == 1 and results[0].error and results[0].end_of_turn
    await asyncio.sleep(0.3)
    assert len(emu.log.deepgram) == 1  # one handshake: a refused key is not retried
    await stream.close()


async def test_a_drop_mid_utterance_reconnects_and_replays(emu: EmulatorServer) -> None:
    events: list[tuple[str, str, str]] = []
    retry.on_provider_event = lambda *e: events.append(e)
    try:
        emu.config.deepgram.script = [UTTERANCE]
        emu.config.merge({"deepgram": {"fault": "drop", "fault_count": 1, "drop_after": 0.3}})
        stt = make_stt(emu)
        stream, results = open_stream(stt)
        await stream.start()
        await send_frames(stream.send_audio, speech(UTTERANCE) + silence(600))
        await wait_for(lambda: any(r.end_of_turn and r.text for r in results))
        await stream.close()
    finally:
        retry.on_provider_event = None
    assert [r.text for r in finals(results)] == [UTTERANCE]
    assert not any(r.error for r in results)
    first, second = emu.log.deepgram
    assert first["closed_by"] == "server-drop"
    # The replay re-sent the utterance's start: the new socket heard the whole utterance.
    assert second["speech"] and second["speech"][0]["audio_start"] < 0.5
    assert second["audio_bytes"] > len(speech(UTTERANCE)) // 2
    assert stream.reconnects == 1
    assert stt.counters.retries == 1 and stt.counters.errors == 1 and stt.counters.requests == 2
    assert ("deepgram", "stt", "retry") in events


async def test_an_unanswered_finalize_is_a_stall_and_reconnects(emu: EmulatorServer) -> None:
    emu.config.deepgram.script = [UTTERANCE]
    emu.config.merge({"deepgram": {"fault": "stall", "fault_count": 1}})
    stream, results = open_stream(make_stt(emu, result_timeout=0.4))
    await stream.start()
    await send_frames(stream.send_audio, speech(UTTERANCE))
    stream.end_of_speech(b"")
    await wait_for(lambda: any(r.end_of_turn and r.text for r in results))
    await stream.close()
    assert finals(results)[0] == SttResult(UTTERANCE, True, True)
    assert len(emu.log.deepgram) == 2
    assert len(emu.log.deepgram[1]["finalizes"]) == 1  # asked again on the new socket


async def test_gives_up_after_bounded_attempts_with_one_error_result(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"fault": "error5xx", "fault_count": 0}})
    stream, results = open_stream(make_stt(emu, max_connect_attempts=3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderError) as caught:
        await stream.start()
    elapsed = loop.time() - started
    assert not isinstance(caught.value, ProviderAuthError)
    assert len(emu.log.deepgram) == 3
    assert 0.1 <= elapsed < 3.0  # backoff between attempts, never a tight loop
    assert [r.error != "" for r in results] == [True]
    await stream.close()


async def test_unreachable_endpoint_gives_up(emu: EmulatorServer) -> None:
    stream, results = open_stream(make_stt(None, max_connect_attempts=2))
    with pytest.raises(ProviderError):
        await stream.start()
    assert len(results) == 1 and "failed" in results[0].error
    await stream.close()


async def test_audio_sent_before_start_is_not_lost(emu: EmulatorServer) -> None:
    emu.config.deepgram.script = [UTTERANCE]
    stream, results = open_stream(make_stt(emu))
    audio = speech(UTTERANCE) + silence(600)
    stream.send_audio(audio[:8000])  # the first second arrives while the socket is still opening
    await stream.start()
    await send_frames(stream.send_audio, audio[8000:])
    await wait_for(lambda: any(r.end_of_turn and r.text for r in results))
    await stream.close()
    assert emu.log.deepgram[0]["audio_bytes"] == len(audio)


async def test_an_unanswered_finalize_after_speech_final_is_not_a_stall(emu: EmulatorServer) -> None:
    # Deepgram answers a Finalize only when audio is buffered: silence then is normal.
    emu.config.deepgram.script = [UTTERANCE]
    emu.config.deepgram.finalize_empty_reply = False
    stream, results = open_stream(make_stt(emu, result_timeout=0.3))
    await stream.start()
    await send_frames(stream.send_audio, speech(UTTERANCE) + silence(600))
    await wait_for(lambda: any(r.end_of_turn and r.text for r in results))
    stream.end_of_speech(b"")  # the local VAD ends the turn after Deepgram already did
    await asyncio.sleep(0.6)
    await stream.close()
    assert len(emu.log.deepgram) == 1 and stream.reconnects == 0
    assert len(emu.log.deepgram[0]["finalizes"]) == 1


async def test_text_messages_are_handed_over_as_they_are_parsed_and_fragments_keep_their_order():
    """A Deepgram result reaches its handler in `data_received`, without a loop turn for a reader
    task; a message in fragments (and whatever follows it until it is whole) still goes in order
    through recv()."""
    from websockets.client import ClientProtocol
    from websockets.frames import Frame, Opcode
    from websockets.uri import parse_uri

    from providers.deepgram_stt import DispatchingConnection

    class Transport(asyncio.Transport):
        def set_write_buffer_limits(self, high=None, low=None):
            pass

    conn = DispatchingConnection(ClientProtocol(parse_uri("ws://127.0.0.1:1/v1/listen")))
    conn.connection_made(Transport())
    conn.response = object()  # past the handshake
    handed: list[str] = []
    conn.process_event(Frame(Opcode.TEXT, b'{"type": "Results"}'))  # no handler yet: queued
    conn.on_text = handed.append
    conn.process_event(Frame(Opcode.TEXT, b'{"type": "UtteranceEnd"}'))
    assert handed == ['{"type": "UtteranceEnd"}']
    conn.process_event(Frame(Opcode.TEXT, b'{"type": "Meta', fin=False))
    conn.process_event(Frame(Opcode.CONT, b'data"}', fin=True))
    conn.process_event(Frame(Opcode.TEXT, b'{"type": "SpeechStarted"}'))
    assert handed == ['{"type": "UtteranceEnd"}', '{"type": "SpeechStarted"}']
    assert await conn.recv() == '{"type": "Results"}'
    assert await conn.recv() == '{"type": "Metadata"}'
