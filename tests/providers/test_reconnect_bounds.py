"""Flapping providers (issue 23, items 2 and 3): breakers that count connection drops, reconnects
bounded per call, replays that never bring back words already answered, an LLM pool that lets go
of idle connections after one went silent. Against the emulators' real sockets where there is one."""

from __future__ import annotations

import asyncio

import pytest

from emulators.deepgram import voiceprint
from emulators.server import EmulatorServer
from providers.base import CallInfo, ProviderError, SttResult
from providers.breaker import BreakerBoard, BreakerState, CircuitBreaker
from providers.chain import FallbackStt
from providers.deepgram_stt import DeepgramOptions, DeepgramStt
from providers.elevenlabs_tts import ElevenLabsWsTts, TtsTimeouts
from providers.http_pool import SparePool
from providers.settings import Settings
from provider_helpers import FRAME, silence, speech, wait_for

CALL = CallInfo("CA00000000000000000000000000000023", "MZ00000000000000000000000000000023")
FIRST = "I would like to book an appointment"
SECOND = "next Tuesday at three in the afternoon"


# ---------------------------------------------------------------------- the breaker


def test_drops_in_a_window_open_the_breaker_whatever_succeeds_between() -> None:
    now = [0.0]
    b = CircuitBreaker("x", failure_threshold=3, reset_seconds=10, clock=lambda: now[0], drop_window_seconds=30)
    for _ in range(2):
        b.record_drop()
        b.record_success()  # the flapping socket served a request between its drops
        now[0] += 5
    assert b.state is BreakerState.CLOSED
    b.record_drop()
    assert b.state is BreakerState.OPEN and not b.allow()
    now[0] += 10
    assert b.allow()  # the half-open trial
    b.record_drop()  # its connection dropped too
    assert b.state is BreakerState.OPEN
    now[0] += 10
    assert b.allow()
    b.record_success()  # a trial connection that holds closes it, and forgets the drops
    assert b.state is BreakerState.CLOSED
    b.record_drop()
    b.record_drop()
    assert b.state is BreakerState.CLOSED


def test_drops_further_apart_than_the_window_do_not_add_up() -> None:
    now = [0.0]
    b = CircuitBreaker("x", failure_threshold=3, clock=lambda: now[0], drop_window_seconds=30)
    for _ in range(6):
        b.record_drop()
        now[0] += 20
    assert b.state is BreakerState.CLOSED


# ---------------------------------------------------------------------- the STT chain


class HealthStream:
    """An engine stream that reports how its connection holds up, as DeepgramStream does."""

    streaming = True

    def __init__(self) -> None:
        self.on_health = None

    async def start(self) -> None:
        pass

    def send_audio(self, mulaw: bytes) -> None:
        pass

    def end_of_speech(self, utterance: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


class HealthEngine:
    name = "flappy"

    def __init__(self) -> None:
        self.streams: list[HealthStream] = []

    def open_stream(self, call, on_result):
        self.streams.append(HealthStream())
        return self.streams[-1]


class Batch:
    name = "batch"
    streaming = False

    def open_stream(self, call, on_result):
        stream = HealthStream()
        del stream.on_health  # a batch engine reports nothing: judged by its start
        stream.streaming = False
        return stream


async def test_stt_chain_judges_a_connection_by_how_it_holds_not_by_its_handshake() -> None:
    board = BreakerBoard(failure_threshold=3, reset_seconds=60)
    engine = HealthEngine()
    chain = FallbackStt([engine, Batch()], board)
    calls = [chain.open_stream(CALL, lambda r: None) for _ in range(3)]
    for call in calls:
        await call.start()
    breaker = board.get("flappy")
    assert all(c.engine == "flappy" for c in calls) and breaker.state is BreakerState.CLOSED
    for stream in engine.streams:
        stream.on_health("dropped")  # each call's socket dropped once: three drops in the window
    assert breaker.state is BreakerState.OPEN
    late = chain.open_stream(CALL, lambda r: None)
    await late.start()
    assert late.engine == "batch"  # a new call skips the flapping provider
    breaker._opened_at -= 60  # the reset period has passed
    trial = chain.open_stream(CALL, lambda r: None)
    await trial.start()
    assert trial.engine == "flappy" and breaker.state is BreakerState.HALF_OPEN
    other = chain.open_stream(CALL, lambda r: None)
    await other.start()
    assert other.engine == "batch", "one trial at a time: the handshake alone closes nothing"
    engine.streams[-1].on_health("stable")
    assert breaker.state is BreakerState.CLOSED
    for stream in [*calls, late, trial, other]:
        await stream.close()


# ---------------------------------------------------------------------- Deepgram


def make_stt(emu: EmulatorServer, **options) -> DeepgramStt:
    opts = DeepgramOptions(**{"connect_timeout": 2.0, "close_timeout": 1.0, **options})
    return DeepgramStt(Settings(deepgram_api_key="dg-test-key", deepgram_base_url=emu.url), opts)


async def send(stream, audio: bytes, batch: int = 5 * FRAME, speed: float = 5.0) -> None:
    """Audio in 100 ms messages, as the call core forwards voiced audio, faster than real time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, offset in enumerate(range(0, len(audio), batch)):
        stream.send_audio(audio[offset:offset + batch])
        delay = start + (i + 1) * (batch / 8000) / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def test_a_flapping_socket_is_given_up_past_the_reconnect_bound(emu: EmulatorServer) -> None:
    emu.config.merge({"deepgram": {"fault": "flap", "fault_count": 0, "flap_after": [0.3]}})
    results: list[SttResult] = []
    stream = make_stt(emu, reconnects_per_window=2, reconnect_window=30.0).open_stream(CALL, results.append)
    health: list[str] = []
    stream.on_health = health.append
    await stream.start()
    await wait_for(lambda: any(r.error for r in results), timeout=10)
    await stream.close()
    (error,) = [r for r in results if r.error]
    assert "flapping" in error.error
    assert stream.reconnects == 2  # two reconnects in the window, then the third drop ends it
    assert health == ["dropped"] * 3
    assert len(emu.log.deepgram) == 3 and all(c["closed_by"] == "server-drop" for c in emu.log.deepgram)


def _frames(audio: bytes) -> bytes:
    """Whole 20 ms frames, as a phone line carries audio (the last one padded with silence)."""
    return audio + silence(20)[: -len(audio) % FRAME]


async def test_words_already_answered_are_not_answered_again_after_a_replay(emu: EmulatorServer) -> None:
    first, second = _frames(speech(FIRST)), _frames(speech(SECOND))
    emu.config.merge({"deepgram": {"voiceprints": {FIRST: voiceprint(first), SECOND: voiceprint(second)},
                                   "fault": "flap", "fault_count": 1, "flap_after": [2.0]}})
    results: list[SttResult] = []
    stream = make_stt(emu).open_stream(CALL, results.append)
    await stream.start()
    # The first utterance in one message with the silence after it: its final ends inside the message,
    # and the replay buffer, trimmed in whole messages, keeps all of it.
    stream.send_audio(first + silence(200))
    await send(stream, silence(600))
    await wait_for(lambda: any(r.end_of_turn and r.text for r in results))
    # The socket is cut while the caller is silent (the agent talks); the replay re-sends the first
    # utterance, which the emulator, like a real engine, transcribes again.
    await wait_for(lambda: len(emu.log.deepgram) == 2 and any(
        t["is_final"] and t["transcript"] for t in emu.log.deepgram[1]["transcripts"]), timeout=10)
    await send(stream, second + silence(600))
    await wait_for(lambda: sum(1 for r in results if r.end_of_turn and r.text) == 2, timeout=10)
    await stream.close()
    replayed = [t["transcript"] for t in emu.log.deepgram[1]["transcripts"] if t["is_final"] and t["transcript"]]
    assert replayed[0] == FIRST, replayed  # the replay's final: words already answered
    # It is not delivered: each utterance once, and no interim of old words (a false barge-in).
    assert [r.text for r in results if r.is_final and r.text] == [FIRST, SECOND]
    after_first = results[[r.end_of_turn and bool(r.text) for r in results].index(True) + 1:]
    assert all(set(r.text.split()) <= set(SECOND.split()) for r in after_first if r.text), after_first
    assert stream.replayed_words_dropped >= len(FIRST.split())


# ---------------------------------------------------------------------- ElevenLabs


async def test_an_elevenlabs_socket_dropping_again_and_again_moves_the_call_on(emu: EmulatorServer) -> None:
    emu.config.merge({"elevenlabs": {"fault": "flap", "fault_count": 0, "flap_after": 0.25}})
    settings = Settings(elevenlabs_api_key="xi-test-key", elevenlabs_base_url=emu.url, elevenlabs_voice_id="V",
                        provider_reconnects_per_window=2, provider_reconnect_window_seconds=30.0)
    tts = ElevenLabsWsTts(settings, timeouts=TtsTimeouts(connect=2.0, first_byte=1.0, between_chunks=1.0),
                          prewarm=False)
    stream = tts.open_stream(CALL)
    health: list[str] = []
    stream.on_health = health.append
    spoken = 0
    with pytest.raises(ProviderError, match="flapping"):
        for _ in range(6):
            async for chunk in stream.synthesize("Okay."):
                spoken += len(chunk)
            await wait_for(lambda: stream.drops > len(health) - 1 and stream._ws is None, timeout=3)
    await stream.close()
    assert spoken > 0 and health == ["dropped"] * 3 and stream.connections == 3


# ---------------------------------------------------------------------- the LLM's pool


async def test_a_failed_request_closes_the_idle_connections_and_pauses_spares(emu: EmulatorServer) -> None:
    pool = SparePool(f"{emu.url}/v1", connect_timeout=1.0, spares=2)
    pool()
    pool.top_up()
    await pool.settled()
    assert pool.handed == 2
    pool.connection_failed()  # a request on one of them went silent: the others may be dead too
    assert pool.dropped_idle == 2
    pool.top_up()
    await pool.settled()
    assert pool.handed == 2, "no spares while a failed path is paused"
    await pool.aclose()
