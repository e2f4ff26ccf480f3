"""Events into the call core and actions out of it: small frozen dataclasses.

The core (`gateway.session.CallSession`) never awaits anything. The media endpoint and the provider
tasks turn what happens on the network into events, and carry out the actions the core returns.
Every event carries `now` (seconds on the event loop's monotonic clock) so the core's timing logic
is deterministic under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


# ---------------------------------------------------------------- events (network -> core)


@dataclass(frozen=True, slots=True)
class CallStarted:
    now: float
    call_sid: str
    stream_sid: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    history: tuple[Mapping[str, str], ...] = ()  # a resumed call's conversation so far
    resume: bool = False  # the call was cut off and comes back: no greeting, pick up where it was


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """Caller audio: 8 kHz mu-law, any length."""

    now: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class TranscriptReceived:
    """Text from the STT engine.

    `is_final`: this text will not be revised (interim results have it False).
    `end_of_turn`: the engine says the caller finished (Deepgram speech_final / UtteranceEnd /
    from_finalize, or a batch engine's only result).
    """

    now: float
    text: str
    is_final: bool = True
    end_of_turn: bool = True
    # Words were heard but the engine judged them unreliable (a whisper repetition loop): `text` is
    # empty and the caller is asked again, rather than left in silence as after noise.
    unclear: bool = False
    # The language most of the words were in (BCP-47), when the engine says (Deepgram's multilingual
    # mode); "" otherwise. The dialog follows a caller who changes language (dialog.languages).
    language: str = ""


@dataclass(frozen=True, slots=True)
class ReplyDelta:
    """A piece of the agent's reply text as the dialog/LLM produces it."""

    now: float
    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class ReplyDone:
    now: float
    turn_id: int
    hang_up: bool = False  # the dialog ended the conversation: hang up after this reply has played
    transfer_to: str = ""  # the dialog asked to transfer the call once this reply has played


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """Synthesized reply audio for one sentence: 8 kHz mu-law, any length."""

    now: float
    turn_id: int
    sentence: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class SpeechDone:
    now: float
    turn_id: int
    sentence: int


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    now: float
    name: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    now: float
    digit: str


@dataclass(frozen=True, slots=True)
class ProviderFailed:
    """A provider gave up on a turn after its own fallbacks: the core apologises instead of going silent."""

    now: float
    role: str  # "stt" | "llm" | "tts"
    turn_id: int
    error: str


@dataclass(frozen=True, slots=True)
class SpeechAnalyzed:
    """The model VAD's answer to an `AnalyzeSpeech`: speech probability and level of each 32 ms window
    (256 samples at 8 kHz) of the audio asked about, the agent's echo taken out first."""

    now: float
    request_id: int
    probabilities: tuple[float, ...]
    levels_dbfs: tuple[float, ...] = ()
    echo_erle_db: float = 0.0  # how much of the inbound energy was the agent's own echo


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: the core may have frames to send or a timeout to act on."""

    now: float


@dataclass(frozen=True, slots=True)
class CallEnded:
    now: float
    reason: str  # "stop" | "closed" | "hangup" | "timeout" | "error" | ...


Event = (
    CallStarted
    | AudioReceived
    | TranscriptReceived
    | ReplyDelta
    | ReplyDone
    | SpeechAudio
    | SpeechDone
    | MarkEchoed
    | DtmfReceived
    | ProviderFailed
    | SpeechAnalyzed
    | Tick
    | CallEnded
)


# ---------------------------------------------------------------- actions (core -> network)


@dataclass(frozen=True, slots=True)
class SendMedia:
    payload: bytes  # one 160-byte frame of mu-law


@dataclass(frozen=True, slots=True)
class SendMark:
    name: str


@dataclass(frozen=True, slots=True)
class SendClear:
    pass


@dataclass(frozen=True, slots=True)
class ForwardAudio:
    """Caller audio for a streaming STT engine. Only speech goes (with its pre-roll and the trailing
    silence that lets the engine endpoint): a streaming engine bills by the second, and between turns
    it gets KeepAlives instead of silence."""

    audio: bytes


@dataclass(frozen=True, slots=True)
class TranscribeUtterance:
    """The local VAD ended a caller turn. Batch engines transcribe `audio`; streaming engines
    (Deepgram) ignore it and send Finalize, since they already have the audio."""

    turn_id: int
    audio: bytes  # mu-law 8 kHz, from the pre-roll before onset to the end of speech


@dataclass(frozen=True, slots=True)
class AnalyzeSpeech:
    """Ask the model VAD whether `audio` (the caller's mu-law) holds speech, taken at a decision (an
    onset, a re-check, the end of speech under noise), never per frame. `reference` is what played at
    the caller from `max_lag` samples before `audio` starts to its end, for taking the agent's own echo
    out (empty when the agent was not audible). Answered by a `SpeechAnalyzed` with the same id."""

    request_id: int
    audio: bytes
    reference: bytes = b""
    max_lag: int = 0
    # Ring position of the audio's first sample (-1: none): requests on one grid let the model go on
    # from where its last analysis of the call stopped instead of scoring the same audio again.
    start: int = -1


@dataclass(frozen=True, slots=True)
class Interruption:
    """How an interruption of the agent ended, for metrics and the log: "confirmed" (the caller's words
    cancelled the reply), "resumed" (no words followed: noise, a cough), "backchannel" (an "uh-huh": the
    reply went on), "rejected" (the model VAD heard no caller speech, the agent's echo or noise: the
    reply never stopped)."""

    outcome: str
    turn_id: int
    paused_ms: float = 0.0  # how long the agent was silent (0 when it never stopped)


@dataclass(frozen=True, slots=True)
class StartReply:
    """Ask the dialog for the agent's reply to the caller's turn (or to a DTMF digit, or the greeting)."""

    turn_id: int
    user_text: str | None  # None for the greeting and for DTMF-only turns
    history: tuple[Mapping[str, str], ...]  # OpenAI-style messages, what was said and heard so far
    dtmf: str = ""
    reprompt: str = ""  # "apology" when a provider failed and the caller is asked to repeat
    language: str = ""  # the language the STT engine last heard the caller speak ("" when it does not say)


@dataclass(frozen=True, slots=True)
class CancelReply:
    turn_id: int
    # True when the caller heard none of it (they kept talking): the dialog undoes the turn, so the
    # combined utterance is not applied twice. False after a barge-in: what was heard stands.
    rollback: bool = False


@dataclass(frozen=True, slots=True)
class Synthesize:
    turn_id: int
    sentence: int
    text: str


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str
    transfer_to: str = ""


@dataclass(frozen=True, slots=True)
class TurnTimings:
    """Per-turn record for the transcript store, metrics and the latency log line.

    Times are monotonic seconds; durations derived from them are None when a stage did not happen.
    """

    turn_id: int
    user_text: str | None
    agent_text: str  # the reply as planned
    heard_text: str  # what the caller heard (all of it, unless they barged in)
    interrupted: bool
    dtmf: str = ""
    backchannel: bool = False  # an acknowledgement said while the agent talked: recorded, not answered
    speech_ended_at: float | None = None  # when the caller's last word ended (audio position)
    vad_end_at: float | None = None  # when the VAD decided the turn ended
    transcript_at: float | None = None
    reply_started_at: float | None = None
    first_token_at: float | None = None
    first_sentence_at: float | None = None
    first_audio_at: float | None = None  # first synthesized byte of the reply
    first_frame_at: float | None = None  # first reply frame sent to the caller
    reply_done_at: float | None = None

    def split(self) -> dict[str, float | None]:
        """The latency split in milliseconds: vad, stt, llm (first token and first phrase), tts, overhead."""

        def ms(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round((b - a) * 1000.0, 1)

        turn_start = self.transcript_at if self.vad_end_at is None else self.vad_end_at
        stt = ms(self.vad_end_at, self.transcript_at)
        llm_first_token = ms(self.reply_started_at, self.first_token_at)
        llm_first_sentence = ms(self.reply_started_at, self.first_sentence_at)
        tts = ms(self.first_sentence_at, self.first_audio_at)
        total = ms(turn_start, self.first_frame_at)
        overhead = None
        if total is not None:
            overhead = round(total - sum(x for x in (stt, llm_first_sentence, tts) if x is not None), 1)
            if stt is not None and stt < 0:  # streaming STT finished before the VAD: it is not on the path
                overhead = round(total - sum(x for x in (llm_first_sentence, tts) if x is not None), 1)
        return {
            "vad_ms": ms(self.speech_ended_at, self.vad_end_at),
            "stt_ms": stt,
            "llm_first_token_ms": llm_first_token,
            "llm_first_sentence_ms": llm_first_sentence,
            "tts_first_byte_ms": tts,
            "gateway_overhead_ms": overhead,
            "voice_to_voice_ms": ms(self.speech_ended_at, self.first_frame_at),
        }


Action = (
    AnalyzeSpeech
    | Interruption
    | SendMedia
    | SendMark
    | SendClear
    | ForwardAudio
    | TranscribeUtterance
    | StartReply
    | CancelReply
    | Synthesize
    | HangUp
    | TurnTimings
)
