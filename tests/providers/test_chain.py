"""Breakers and fallback chains around fake engines: the logic, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from providers.base import CallInfo, ProviderAuthError, ProviderError, SttResult
from providers.breaker import BreakerBoard, BreakerState, CircuitBreaker
from providers.chain import FallbackStt, FallbackTts, GuardedLlm, unspoken_rest

CALL = CallInfo("CA1", "MZ1")


def test_breaker_opens_half_opens_and_closes():
    now = [0.0]
    b = CircuitBreaker("x", failure_threshold=2, reset_seconds=10, clock=lambda: now[0])
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    now[0] = 10.0
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow() and not b.allow()  # one trial at a time
    b.record_failure()
    assert b.state is BreakerState.OPEN
    now[0] = 20.0
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.record_failure(fatal=True)  # a refused key opens it at once
    assert b.state is BreakerState.OPEN


class FakeLlm:
    def __init__(self, name, plan):
        self.name = name
        self.plan = list(plan)  # each: an exception to raise first, or a list of chunks
        self.calls = 0

    async def stream(self, messages, *, tools=(), max_tokens=150):
        self.calls += 1
        step = self.plan.pop(0) if self.plan else ["ok"]
        if isinstance(step, Exception):
            raise step
        for chunk in step:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk


async def collect(agen):
    return [x async for x in agen]


async def test_llm_retries_before_first_token_honouring_retry_after():
    llm = FakeLlm("m", [ProviderError("m", "429", status=429, retry_after=0.01), ["Hi", " there"]])
    guarded = GuardedLlm(llm, CircuitBreaker("m"))
    assert await collect(guarded.stream([])) == ["Hi", " there"] and llm.calls == 2


async def test_llm_does_not_retry_after_text_or_long_retry_after():
    llm = FakeLlm("m", [["Hi", ProviderError("m", "drop")]])
    with pytest.raises(ProviderError):
        await collect(GuardedLlm(llm, CircuitBreaker("m")).stream([]))
    assert llm.calls == 1
    llm = FakeLlm("m", [ProviderError("m", "429", status=429, retry_after=30)])
    with pytest.raises(ProviderError):
        await collect(GuardedLlm(llm, CircuitBreaker("m")).stream([]))
    assert llm.calls == 1  # the fallback is faster than waiting 30 s


async def test_open_breaker_fails_fast_without_calling_the_provider():
    breaker = CircuitBreaker("m", failure_threshold=1)
    breaker.record_failure()
    llm = FakeLlm("m", [])
    with pytest.raises(ProviderError, match="circuit open"):
        await collect(GuardedLlm(llm, breaker).stream([]))
    assert llm.calls == 0


class FakeTts:
    def __init__(self, name, behaviour):
        self.name = name
        self.behaviour = behaviour  # "ok" | "fail" | "mid" | "auth"
        self.texts = []

    def open_stream(self, call):
        outer = self

        class Stream:
            async def synthesize(self, text):
                outer.texts.append(text)
                if outer.behaviour == "fail":
                    raise ProviderError(outer.name, "500")
                if outer.behaviour == "auth":
                    raise ProviderAuthError(outer.name)
                if outer.behaviour == "mid":
                    yield b"\x01" * 8000  # one second of it, then the socket drops
                    raise ProviderError(outer.name, "drop", heard_anything=True)
                yield outer.name.encode()

            async def close(self):
                pass

        return Stream()


async def test_tts_falls_back_before_audio_with_the_same_text():
    a, b = FakeTts("a", "fail"), FakeTts("b", "ok")
    stream = FallbackTts([a, b], BreakerBoard()).open_stream(CALL)
    assert await collect(stream.synthesize("Hello there.")) == [b"b"]
    assert b.texts == ["Hello there."]
    assert await collect(stream.synthesize("Again.")) == [b"b"]
    assert a.texts == ["Hello there."]  # the call stays on the engine that works


async def test_tts_mid_sentence_failure_continues_with_the_rest_of_the_text():
    a, b = FakeTts("a", "mid"), FakeTts("b", "ok")
    text = "So that is Tuesday the twenty fourth at three in the afternoon, shall I book it for you?"
    out = await collect(FallbackTts([a, b], BreakerBoard()).open_stream(CALL).synthesize(text))
    assert out[0] == b"\x01" * 8000 and out[1] == b"b"
    rest = b.texts[0]
    assert text.endswith(rest) and 0 < len(rest) < len(text)
    assert rest == unspoken_rest(text, 8000)


async def test_tts_all_failed_plays_the_apology_clip_once():
    board = BreakerBoard()
    stream = FallbackTts([FakeTts("a", "fail"), FakeTts("b", "auth")], board, apology_clip=b"sorry").open_stream(CALL)
    got = []
    with pytest.raises(ProviderError):
        async for chunk in stream.synthesize("Hi."):
            got.append(chunk)
    assert got == [b"sorry"]
    assert board.get("b").state is BreakerState.OPEN  # auth failure: open at once
    with pytest.raises(ProviderError):
        assert await collect(stream.synthesize("Hi.")) == []  # no second clip right away


class FakeStt:
    def __init__(self, name, start_error=None, streaming=True):
        self.name = name
        self.start_error = start_error
        self.streams = []
        self.streaming = streaming

    def open_stream(self, call, on_result):
        outer = self

        class Stream:
            streaming = outer.streaming

            def __init__(self):
                self.on_result = on_result
                self.utterances = []
                self.closed = False

            async def start(self):
                if outer.start_error:
                    raise outer.start_error

            def send_audio(self, mulaw):
                pass

            def end_of_speech(self, utterance):
                self.utterances.append(utterance)

            async def close(self):
                self.closed = True

        stream = Stream()
        self.streams.append(stream)
        return stream


async def test_stt_open_breaker_or_refusal_goes_straight_to_the_next_engine():
    board = BreakerBoard()
    deepgram, whisper = FakeStt("deepgram", start_error=ProviderAuthError("deepgram")), FakeStt("whisper", streaming=False)
    results = []
    stream = FallbackStt([deepgram, whisper], board).open_stream(CALL, results.append)
    await stream.start()
    assert stream.engine == "whisper" and not stream.streaming
    # The refusal opened the breaker: the next call does not even try Deepgram.
    stream2 = FallbackStt([deepgram, whisper], board).open_stream(CALL, results.append)
    await stream2.start()
    assert len(deepgram.streams) == 1 and stream2.engine == "whisper"


async def test_stt_gives_up_mid_call_and_the_unanswered_utterance_is_transcribed_again():
    deepgram, whisper = FakeStt("deepgram"), FakeStt("whisper", streaming=False)
    results: list[SttResult] = []
    stream = FallbackStt([deepgram, whisper], BreakerBoard()).open_stream(CALL, results.append)
    await stream.start()
    dg = deepgram.streams[0]
    dg.on_result(SttResult("next tuesday", False, False))  # interim: passes at once
    dg.on_result(SttResult("next tuesday", True, False))  # final: held until the end of the turn
    assert [r.text for r in results] == ["next tuesday"] and not results[0].is_final
    stream.end_of_speech(b"utterance-audio")
    dg.on_result(SttResult("", True, True, error="socket dropped"))  # gave up before answering
    await asyncio.sleep(0.01)
    assert stream.engine == "whisper" and dg.closed
    assert whisper.streams[0].utterances == [b"utterance-audio"]  # the same words, again, from the audio
    whisper.streams[0].on_result(SttResult("next tuesday at three", True, True))
    assert results[-1] == SttResult("next tuesday at three", True, True)
    assert not any(r.is_final and r.text == "next tuesday" for r in results)  # no half turn from the dead engine


async def test_stt_close_releases_held_words():
    deepgram = FakeStt("deepgram")
    results: list[SttResult] = []
    stream = FallbackStt([deepgram], BreakerBoard()).open_stream(CALL, results.append)
    await stream.start()
    deepgram.streams[0].on_result(SttResult("wait one moment", True, False))
    await stream.close()
    assert results == [SttResult("wait one moment", True, False)]


def test_unspoken_rest_cuts_at_a_word_boundary():
    text = "one two three four five six seven eight nine ten"
    assert unspoken_rest(text, 0) == text
    assert unspoken_rest(text, 8000 * 100) == ""
    rest = unspoken_rest(text, int(8000 * 0.065 * 12))  # ~12 characters played: "one two thre"
    assert rest == "three four five six seven eight nine ten"


async def test_llm_does_not_retry_after_a_timeout():
    from providers.base import ProviderTimeout

    llm = FakeLlm("m", [ProviderTimeout("m", "no first token within 3 s"), ["late"]])
    with pytest.raises(ProviderTimeout):
        await collect(GuardedLlm(llm, CircuitBreaker("m")).stream([]))
    assert llm.calls == 1  # a second wait would double the silence: the fallback answers instead
