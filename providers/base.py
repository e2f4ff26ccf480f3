"""One `typing.Protocol` per provider role, and the one exception tree providers raise.

A call opens one stream per role at its start and closes it at its end:
- `SttStream`: caller audio in (every inbound frame, 8 kHz mu-law), transcripts out through a callback.
- `LanguageModel`: a chat-completion token stream (text deltas and tool calls).
- `TtsStream`: one sentence of text in, 8 kHz mu-law chunks out, in order.

Fallback chains and circuit breakers (`providers.chain`, `providers.breaker`) wrap any implementation
of a role, not each vendor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Mapping, Protocol, Sequence


class ProviderError(Exception):
    """A provider could not do what was asked. `retryable` says whether trying again may help."""

    def __init__(self, provider: str, message: str, *, retryable: bool = True, status: int | None = None,
                 retry_after: float | None = None, heard_anything: bool = False) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        # True once the caller may have heard/seen output from this attempt: retrying would repeat it.
        self.heard_anything = heard_anything


class ProviderTimeout(ProviderError):
    """A phase (connect, first result, between results) took longer than its budget."""


class ProviderAuthError(ProviderError):
    """The key was refused: no retry helps, and readiness should say so."""

    def __init__(self, provider: str, message: str = "credentials refused", *, status: int | None = 401) -> None:
        super().__init__(provider, message, retryable=False, status=status)


@dataclass
class SpokenLanguage:
    """The language the agent speaks on one call, shared by its dialog (which sets it when the caller
    changes language: dialog.languages) and its TTS stream (which reads it at every sentence: a
    multilingual model and `language_code` for ElevenLabs). ISO 639-1."""

    code: str = "en"


@dataclass(frozen=True)
class CallInfo:
    call_sid: str
    stream_sid: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    # Mutable inside a frozen record on purpose: one object per call, seen by every engine's stream.
    language: SpokenLanguage = field(default_factory=SpokenLanguage, compare=False)


@dataclass(frozen=True, slots=True)
class SttResult:
    text: str
    is_final: bool
    end_of_turn: bool
    error: str = ""  # set when the engine gave up (after its own retries): the call apologises
    # Set when the engine heard something but judged it unreliable (a whisper repetition loop, text
    # hallucinated on noise): `text` is then empty; the value names why (whisper_stt.REJECT_REASONS).
    rejected: str = ""
    # The rejected sound was speech the engine could not make out (not noise): the caller is asked again.
    unclear: bool = False
    # The language most of the words were in (BCP-47, e.g. "es"), from an engine that detects it
    # (Deepgram with language=multi); "" when it does not say.
    language: str = ""


SttCallback = Callable[[SttResult], None]


class SttStream(Protocol):
    # True for engines that want the caller's audio as it arrives (Deepgram); batch engines (whisper)
    # get each utterance whole from `end_of_speech` instead.
    streaming: bool

    async def start(self) -> None:
        """Open the connection (a streaming engine opens its socket here, once per call)."""

    def send_audio(self, mulaw: bytes) -> None:
        """Every inbound frame, as it arrives. Must not block: queue and return."""

    def end_of_speech(self, utterance: bytes) -> None:
        """The local VAD ended a turn. Batch engines transcribe `utterance`; streaming ones Finalize."""

    async def close(self) -> None:
        ...


class SpeechToText(Protocol):
    name: str

    def open_stream(self, call: CallInfo, on_result: SttCallback) -> SttStream:
        ...


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """A tool call began (its id and name arrived; the arguments follow): the text before it is
    complete, so a reply can speak its last phrase, or an acknowledgement, while the arguments stream."""

    id: str
    name: str


LlmChunk = str | ToolCallStarted | ToolCall


class LanguageModel(Protocol):
    name: str

    def stream(self, messages: Sequence[Mapping[str, object]], *, tools: Sequence[Mapping[str, object]] = (),
               max_tokens: int = 150) -> AsyncIterator[LlmChunk]:
        """Yield text deltas as they arrive; for each tool call a `ToolCallStarted` as it begins, and
        the `ToolCall` once its arguments are whole."""
        ...


class TtsStream(Protocol):
    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """8 kHz mu-law audio for `text`, in chunks of any size, as soon as each is ready."""
        ...

    async def close(self) -> None:
        ...


class TextToSpeech(Protocol):
    name: str

    def open_stream(self, call: CallInfo) -> TtsStream:
        ...
