"""Fallback chains and guarded engines: any implementation of a role, wrapped, never each vendor.

- `GuardedLlm`: a circuit breaker and safe retries around one LLM. A retry happens only before the
  first token (after that the caller has heard the reply start, and a retry would repeat it), only for
  retryable errors, honouring 429 `retry-after`, and only when the wait is short: if the provider asks
  for longer than `max_retry_wait`, the next engine in the chain is the faster answer.
- `FallbackTts`: engines in order (ElevenLabs WebSocket -> ElevenLabs HTTP -> Piper). A failure before
  any audio tries the next engine with the same sentence. A failure mid-sentence continues with the next
  engine from about where the caller stopped hearing (the rest of the sentence, not all of it again),
  and the call stays on that engine. If every engine fails, a pre-rendered apology clip plays.
- `FallbackStt`: engines in order (Deepgram -> local whisper). The first engine whose breaker allows and
  whose connection opens serves the call. If it gives up mid-call, the call moves to the next engine,
  and the utterance it had not answered yet is transcribed again from the audio the core keeps, so no
  caller words are lost. Final transcripts are held until the end of the turn, so a half-delivered turn
  from a failed engine is never mixed with the fallback's transcript of the same words.

An open breaker sends a call straight to the next engine without waiting for the provider's timeout.

A streaming engine that keeps one connection for the call (Deepgram, the ElevenLabs socket) may tell
its chain how that connection holds up, through an `on_health` attribute the chain sets on its
stream: `on_health("dropped")` when the connection was lost without being asked to close (the
breaker counts it, `CircuitBreaker.record_drop`), `on_health("stable")` once it has proved itself (it
delivered a result, or lived long enough). An STT connection that opens is not yet a success: a
flapping provider opens every connection and drops it seconds later, so its breaker's half-open
trial is judged by "stable" or "dropped", not by the handshake.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Mapping, Sequence

from providers.base import (
    CallInfo, LanguageModel, LlmChunk, ProviderAuthError, ProviderError, ProviderTimeout, SpeechToText,
    SttCallback, SttResult, SttStream, TextToSpeech, TtsStream,
)
from providers.breaker import BreakerBoard, BreakerState, CircuitBreaker
from providers.retry import backoff_delay, report

log = logging.getLogger("voicegate.chain")

LLM_MAX_ATTEMPTS = 2  # one retry: a second failure in a row means the fallback model is the faster answer
LLM_MAX_RETRY_WAIT_SECONDS = 1.0  # a caller notices a pause past a second; waiting longer is worse than falling back
SECONDS_PER_CHAR = 0.065  # speaking rate (about 15 characters a second) to find where speech stopped
APOLOGY_REPEAT_SECONDS = 8.0  # the apology clip plays at most once in this window per call


class GuardedLlm:
    def __init__(self, llm: LanguageModel, breaker: CircuitBreaker, max_attempts: int = LLM_MAX_ATTEMPTS,
                 max_retry_wait: float = LLM_MAX_RETRY_WAIT_SECONDS) -> None:
        self.llm = llm
        self.name = llm.name
        self.breaker = breaker
        self.max_attempts = max_attempts
        self.max_retry_wait = max_retry_wait

    async def stream(self, messages: Sequence[Mapping[str, object]], *, tools: Sequence[Mapping[str, object]] = (),
                     max_tokens: int = 150) -> AsyncIterator[LlmChunk]:
        attempt = 0
        while True:
            if not self.breaker.allow():
                report(self.name, "llm", "fallback")
                raise ProviderError(self.name, "circuit open", retryable=False)
            produced = False
            try:
                async for chunk in self.llm.stream(messages, tools=tools, max_tokens=max_tokens):
                    produced = True
                    yield chunk
            except (asyncio.CancelledError, GeneratorExit):
                self.breaker.record_cancelled()
                raise
            except ProviderError as exc:
                self.breaker.record_failure(fatal=isinstance(exc, ProviderAuthError))
                attempt += 1
                wait = exc.retry_after if exc.retry_after is not None else backoff_delay(attempt)
                # A timeout already cost the caller a whole budget of silence: the next engine answers
                # sooner than a second wait on this one.
                if produced or exc.heard_anything or not exc.retryable or isinstance(exc, ProviderTimeout) \
                        or attempt >= self.max_attempts or wait > self.max_retry_wait:
                    raise
                report(self.name, "llm", "retry")
                log.info("retrying LLM", extra={"fields": {"provider": self.name, "wait_s": round(wait, 3),
                                                           "status": exc.status}})
                await asyncio.sleep(wait)
                continue
            self.breaker.record_success()
            return


def unspoken_rest(text: str, spoken_bytes: int, sample_rate: int = 8000) -> str:
    """The part of `text` the caller has not heard yet, given how much audio of it played.
    Cut at a word boundary before the estimate: a repeated word is better than a skipped one."""
    chars = int((spoken_bytes / sample_rate) / SECONDS_PER_CHAR)
    if chars <= 0:
        return text
    if chars >= len(text):
        return ""
    cut = text.rfind(" ", 0, chars + 1)
    return text[cut + 1:] if cut > 0 else text


class FallbackTts:
    def __init__(self, engines: Sequence[TextToSpeech], board: BreakerBoard, apology_clip: bytes = b"") -> None:
        self.engines = list(engines)
        self.board = board
        self.apology_clip = apology_clip
        self.name = ">".join(e.name for e in self.engines)

    def open_stream(self, call: CallInfo) -> "FallbackTtsStream":
        return FallbackTtsStream(self, call)


class FallbackTtsStream:
    def __init__(self, chain: FallbackTts, call: CallInfo) -> None:
        self._chain = chain
        self._call = call
        self._streams: dict[int, TtsStream] = {}
        self._first = 0  # after a failure the call stays on the next engine: no flapping mid-call
        self._apology_at = -APOLOGY_REPEAT_SECONDS

    def _stream(self, index: int) -> TtsStream:
        stream = self._streams.get(index)
        if stream is None:
            stream = self._streams[index] = self._chain.engines[index].open_stream(self._call)
            if hasattr(stream, "on_health"):
                stream.on_health = self._health_of(self._chain.engines[index].name)
        return stream

    def _health_of(self, name: str):
        breaker = self._chain.board.get(name)

        def on_health(event: str) -> None:
            if event == "dropped":
                breaker.record_drop()
                report(name, "tts", "error")
            # "stable" says nothing more than the sentences that succeed on the socket already do

        return on_health

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        remaining = text
        engines = self._chain.engines
        for index in range(self._first, len(engines)):
            engine = engines[index]
            breaker = self._chain.board.get(engine.name)
            if not breaker.allow():
                report(engine.name, "tts", "fallback")
                continue
            report(engine.name, "tts", "request")
            spoken = 0
            try:
                async for chunk in self._stream(index).synthesize(remaining):
                    spoken += len(chunk)
                    yield chunk
            except (asyncio.CancelledError, GeneratorExit):
                breaker.record_cancelled()
                raise
            except Exception as exc:  # any engine error: the next engine takes over
                breaker.record_failure(fatal=isinstance(exc, ProviderAuthError))
                report(engine.name, "tts", "error")
                report(engine.name, "tts", "fallback")
                log.warning("TTS engine failed; falling back", extra={"fields": {
                    "provider": engine.name, "error": type(exc).__name__, "spoken_bytes": spoken}})
                self._first = index + 1
                remaining = unspoken_rest(remaining, spoken)
                if not remaining.strip():
                    return
                continue
            breaker.record_success()
            return
        now = time.monotonic()
        if self._chain.apology_clip and now - self._apology_at >= APOLOGY_REPEAT_SECONDS:
            self._apology_at = now
            yield self._chain.apology_clip
        raise ProviderError("tts", "every TTS engine failed", retryable=False)

    async def close(self) -> None:
        for stream in self._streams.values():
            try:
                await stream.close()
            except Exception:
                log.warning("TTS stream did not close cleanly", exc_info=True)


class FallbackStt:
    def __init__(self, engines: Sequence[SpeechToText], board: BreakerBoard) -> None:
        self.engines = list(engines)
        self.board = board
        self.name = ">".join(e.name for e in self.engines)

    def open_stream(self, call: CallInfo, on_result: SttCallback) -> "FallbackSttStream":
        return FallbackSttStream(self, call, on_result)


class FallbackSttStream:
    def __init__(self, chain: FallbackStt, call: CallInfo, on_result: SttCallback) -> None:
        self._chain = chain
        self._call = call
        self._on_result = on_result
        self._index = -1
        self._stream: SttStream | None = None
        self._held: list[str] = []  # finals of the current turn, released with its end
        self._last_utterance = b""
        self._answered = True  # the last utterance handed to end_of_speech got its end-of-turn result
        self._turn_delivered = False  # an end-of-turn went out since the last end_of_speech
        self._closed = False
        self._switching: asyncio.Task | None = None
        self._held_language = ""  # the language of the last held final that said one (Deepgram's multilingual mode)
        self._holds_trial = False  # this call's connection is its engine's half-open trial, not yet judged

    @property
    def streaming(self) -> bool:
        return bool(getattr(self._stream, "streaming", False))

    @property
    def engine(self) -> str:
        return self._chain.engines[self._index].name if self._stream is not None else ""

    async def start(self) -> None:
        await self._open_from(0)

    async def _open_from(self, first: int) -> None:
        for index in range(first, len(self._chain.engines)):
            engine = self._chain.engines[index]
            breaker = self._chain.board.get(engine.name)
            trial = breaker.state is BreakerState.HALF_OPEN
            if not breaker.allow():
                report(engine.name, "stt", "fallback")
                continue
            report(engine.name, "stt", "request")
            stream = engine.open_stream(self._call, lambda r, i=index: self._on_engine_result(i, r))
            judged_later = hasattr(stream, "on_health")  # by how its connection holds up (module doc)
            if judged_later:
                stream.on_health = lambda event, i=index: self._on_engine_health(i, event)
            try:
                await stream.start()
            except ProviderError as exc:
                breaker.record_failure(fatal=isinstance(exc, ProviderAuthError))
                report(engine.name, "stt", "error")
                report(engine.name, "stt", "fallback")
                log.warning("STT engine failed to start; falling back",
                            extra={"fields": {"provider": engine.name, "error": str(exc)[:200]}})
                await _quiet_close(stream)
                continue
            if not judged_later:
                breaker.record_success()
            self._index, self._stream = index, stream
            self._holds_trial = trial and judged_later
            return
        raise ProviderError("stt", "no speech-to-text engine could start", retryable=False)

    def send_audio(self, mulaw: bytes) -> None:
        if self._stream is not None:
            self._stream.send_audio(mulaw)

    def end_of_speech(self, utterance: bytes) -> None:
        self._last_utterance = utterance
        self._answered = self._turn_delivered
        self._turn_delivered = False
        if self._stream is not None:
            self._stream.end_of_speech(utterance)

    def _on_engine_health(self, index: int, event: str) -> None:
        if self._closed:
            return
        name = self._chain.engines[index].name
        breaker = self._chain.board.get(name)
        if event == "stable":
            if breaker.state is BreakerState.CLOSED or self._holds_trial:  # else a call that predates the trial
                breaker.record_success()
        elif event == "dropped":
            breaker.record_drop()
        else:
            return
        if index == self._index:
            self._holds_trial = False

    def _on_engine_result(self, index: int, result: SttResult) -> None:
        if index != self._index or self._closed:
            return  # a late result from an engine this call has left
        if result.error:
            self._chain.board.get(self._chain.engines[index].name).record_failure()
            self._holds_trial = False
            report(self._chain.engines[index].name, "stt", "error")
            if self._switching is None or self._switching.done():
                self._switching = asyncio.get_running_loop().create_task(self._switch(index, result.error))
            return
        if not result.is_final:
            self._on_result(result)  # interim: feeds barge-in at once
            return
        if result.text:
            self._held.append(result.text)
            self._held_language = result.language or self._held_language
        if result.end_of_turn:
            text = " ".join(self._held)
            self._held.clear()
            language, self._held_language = self._held_language, ""
            self._answered = True
            self._turn_delivered = bool(text)
            self._on_result(SttResult(text, True, True, language=language))

    async def _switch(self, failed: int, reason: str) -> None:
        old = self._stream
        name = self._chain.engines[failed].name
        log.warning("STT engine gave up mid-call; falling back", extra={"fields": {"provider": name, "error": reason}})
        report(name, "stt", "fallback")
        self._stream = None
        self._held.clear()  # the fallback transcribes these words again from the audio
        await _quiet_close(old)
        try:
            await self._open_from(failed + 1)
        except ProviderError as exc:
            self._on_result(SttResult("", True, True, error=str(exc)))
            return
        if not self._answered and self._last_utterance:
            self._stream.end_of_speech(self._last_utterance)

    async def close(self) -> None:
        if self._switching is not None:
            self._switching.cancel()
        await _quiet_close(self._stream)  # its last results (CloseStream flushes them) still arrive
        self._closed = True
        if self._stream is not None and self._holds_trial:
            # A half-open trial the call ended before judging gives its slot back (no verdict).
            self._chain.board.get(self.engine).record_cancelled()
        # The engine's stream calls back into this one (a closure over self): let go of it, so a
        # finished call's streams are freed as soon as the call lets go, not by a full collection.
        self._stream = None
        if self._held:  # words heard but not yet turned into a turn: still the caller's words
            self._on_result(SttResult(" ".join(self._held), True, False))
            self._held.clear()


async def _quiet_close(stream) -> None:
    if stream is None:
        return
    try:
        await stream.close()
    except Exception:
        log.warning("STT stream did not close cleanly", exc_info=True)
