"""Local speech-to-text: faster-whisper (tiny.en by default, int8), off the event loop.

Whisper is a batch model: it transcribes a whole utterance, so this engine ignores the per-frame
audio and works on the utterance the local VAD hands it at the end of speech (pre-roll included).
The model is loaded once per process; transcription runs in a thread pool (CTranslate2 releases the
GIL), so other calls' audio keeps flowing while one utterance is decoded.

Whisper fails in known ways, and a failure must never reach the dialog as the caller's words:
- repetition loops: the decoder gets stuck and writes "Come on, come on, ..." to its token limit,
  or "Half half half half half in the morning";
- hallucinations on noise, breath or silence: fluent text nobody said ("Thank you.").
Each utterance is judged after decoding (`judge`); a transcript judged unreliable comes back with
`Transcript.rejected` naming why and no `text`: speech it could not make out (`UNCLEAR_SPEECH`) is
passed on as an unclear turn, which the dialog answers with "didn't catch that", and noise as
nothing; the gateway can count the reason. The checks, cheapest first:
1. too short to be speech (`MIN_UTTERANCE_SECONDS`);
2. faster-whisper's own guards: a window whose no-speech probability is over
   `NO_SPEECH_THRESHOLD` while its average log-probability is under `LOG_PROB_THRESHOLD` is dropped
   by faster-whisper itself ("no_speech" when nothing is left); a kept one over
   `COMPRESSION_RATIO_THRESHOLD` (gzip ratio: loops compress very well) or under
   `REJECT_LOG_PROB` (a guess) is rejected here;
3. the decoder ran into its token budget (`MAX_TOKENS_PER_SECOND`): only a loop writes that much;
4. our own n-gram check (`repeated_ngram`): the same one to four words back to back
   `MIN_LOOP_REPEATS` times or more, which the compression ratio misses in short loops;
5. whisper's favourite phrases on noise, said alone (`_HALLUCINATIONS`), or its subtitle credits
   anywhere ("thank you for watching").
Decoding is greedy at temperature 0 and never conditioned on earlier text: deterministic, the
fastest, and one utterance's loop cannot seed the next.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from audio import mulaw
from audio.resample import int16_to_float32, resample
from providers.base import CallInfo, ProviderError, SttCallback, SttResult
from providers.local_models import DEFAULT_WHISPER_MODEL, load_whisper_model

log = logging.getLogger("voicegate.stt.whisper")

WHISPER_RATE = 16000
TELEPHONE_RATE = 8000
# Utterances shorter than this are clicks or breaths; whisper hallucinates words on them.
MIN_UTTERANCE_SECONDS = 0.15
# faster-whisper's defaults (those of OpenAI's reference decoder), which they were tuned with:
# a gzip ratio over 2.4 is a loop; an average token log-probability under -1 is a guess; a window
# whose no-speech probability is over 0.6 *and* whose text is a guess is silence.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
# A guess alone is not rejected at -1: on the STT corpus (1,806 telephone utterances) a third of the
# transcripts between -1.0 and -1.4 were read right ("10 am", "2.30", "pardon" in robotic voices) and
# rejecting them lost more than it saved. Under -1.5 they are mostly words nobody said.
REJECT_LOG_PROB = -1.5
# Fast speech is ~4 words (~5 tokens) a second; twice that plus a margin for a one-word answer is
# more than any caller says, and a loop reaches it in a fraction of the time the 224-token limit
# would take on a short utterance.
MAX_TOKENS_PER_SECOND = 8.0
MIN_TOKEN_BUDGET = 16
# One to four words repeated back to back this often is a decoder loop; people say "no, no, no" (3).
MIN_LOOP_REPEATS = 4
MAX_LOOP_NGRAM = 4

# Why a transcript was not taken as the caller's words (Transcript.rejected).
TOO_SHORT = "too_short"
NO_SPEECH = "no_speech"
COMPRESSION = "compression_ratio"
LOW_CONFIDENCE = "low_log_prob"
TOKEN_LIMIT = "token_limit"
REPETITION = "repetition"
HALLUCINATION = "hallucination"
REJECT_REASONS = (TOO_SHORT, NO_SPEECH, COMPRESSION, LOW_CONFIDENCE, TOKEN_LIMIT, REPETITION, HALLUCINATION)
# Rejections of speech the decoder could not make out, where the caller should be asked again; the
# others (too short, no speech, a stock phrase on noise) are noise, answered with silence.
UNCLEAR_SPEECH = frozenset({COMPRESSION, LOW_CONFIDENCE, TOKEN_LIMIT, REPETITION})

# Whisper's favourite hallucinations on noise; a caller saying exactly this alone is unlikely.
_HALLUCINATIONS = frozenset({"you", "thank you", "thanks for watching", "bye"})
# Phrases from the video subtitles whisper learned on, which no caller says: on the recordings' babble
# bed tiny.en writes "Thank you for watching this channel."
_SUBTITLE_PHRASES = re.compile(
    r"\b(?:thanks?(?: you)? (?:so much )?for watching|(?:like and )?subscribe|subtitles? by|transcribed by)\b")
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True, slots=True)
class Transcript:
    """One utterance's transcription and the verdict on it."""

    text: str  # the caller's words; "" when nothing reliable was heard
    heard: str = ""  # what whisper wrote, also when rejected (logs, the corpus)
    rejected: str = ""  # one of REJECT_REASONS, or "" when `text` is to be believed
    avg_log_prob: float = 0.0  # the worst window's, for tuning the thresholds
    compression_ratio: float = 0.0  # the worst window's
    no_speech_prob: float = 0.0  # the worst window's


def repeated_ngram(text: str, min_repeats: int = MIN_LOOP_REPEATS, max_n: int = MAX_LOOP_NGRAM) -> bool:
    """True when 1..max_n words recur back to back `min_repeats` times ("come on come on come on come on")."""
    words = _WORD.findall(text.lower())
    for n in range(1, max_n + 1):
        needed = n * min_repeats
        for start in range(0, len(words) - needed + 1):
            gram = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == gram for k in range(1, min_repeats)):
                return True
    return False


def judge(text: str, windows: list[tuple[float, float, float]], hit_token_limit: bool) -> str:
    """The reason to reject `text` ("" to keep it). `windows`: (avg_log_prob, compression_ratio,
    no_speech_prob) of each window faster-whisper kept."""
    if not windows or not _WORD.search(text.lower()):
        return NO_SPEECH  # faster-whisper dropped every window as silence, or only punctuation is left
    if hit_token_limit:
        return TOKEN_LIMIT
    if any(ratio > COMPRESSION_RATIO_THRESHOLD for _, ratio, _ in windows):
        return COMPRESSION
    if repeated_ngram(text):
        return REPETITION
    if any(log_prob < REJECT_LOG_PROB for log_prob, _, _ in windows):
        return LOW_CONFIDENCE
    if " ".join(_WORD.findall(text.lower())) in _HALLUCINATIONS or _SUBTITLE_PHRASES.search(text.lower()):
        return HALLUCINATION
    return ""


class WhisperEngine:
    _shared: "dict[str, WhisperEngine]" = {}
    _shared_lock = threading.Lock()

    def __init__(self, workers: int = 2, model: str = DEFAULT_WHISPER_MODEL) -> None:
        self.model_name = model
        # cpu_threads = cores: one utterance uses the whole box for the shortest latency;
        # num_workers lets that many utterances (from different calls) decode at once.
        self._model = load_whisper_model(model, cpu_threads=os.cpu_count() or 1, num_workers=max(1, workers))

    @classmethod
    def shared(cls, workers: int = 2, model: str = DEFAULT_WHISPER_MODEL) -> "WhisperEngine":
        with cls._shared_lock:
            if model not in cls._shared:
                cls._shared[model] = cls(workers, model)
            return cls._shared[model]

    def transcribe_mulaw(self, audio: bytes) -> str:
        """Blocking: 8 kHz mu-law in, the caller's words out ("" when none were reliably heard)."""
        return self.transcribe_checked(audio).text

    def transcribe_checked(self, audio: bytes) -> Transcript:
        """Blocking: 8 kHz mu-law in, the transcript with its verdict out."""
        if len(audio) < MIN_UTTERANCE_SECONDS * TELEPHONE_RATE:
            return Transcript("", rejected=TOO_SHORT)
        samples = int16_to_float32(resample(mulaw.decode(audio), TELEPHONE_RATE, WHISPER_RATE))
        return self.transcribe_float(samples)

    def transcribe_float(self, samples: np.ndarray) -> Transcript:
        """Blocking: 16 kHz float samples in, the transcript with its verdict out."""
        seconds = len(samples) / WHISPER_RATE
        budget = max(MIN_TOKEN_BUDGET, math.ceil(seconds * MAX_TOKENS_PER_SECOND))
        segments, _info = self._model.transcribe(
            samples, language="en", beam_size=1, best_of=1, temperature=0.0,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD, log_prob_threshold=LOG_PROB_THRESHOLD,
            no_speech_threshold=NO_SPEECH_THRESHOLD, condition_on_previous_text=False,
            without_timestamps=True, vad_filter=False, max_new_tokens=budget,
        )
        kept = list(segments)
        heard = " ".join(s.text.strip() for s in kept).strip()
        windows = [(s.avg_logprob, s.compression_ratio, s.no_speech_prob) for s in kept]
        # A window that used its whole budget ended mid-loop (the end-of-text token would not count).
        hit_limit = any(len(s.tokens) >= budget for s in kept)
        reason = judge(heard, windows, hit_limit)
        return Transcript(
            "" if reason else heard, heard, reason,
            avg_log_prob=min((w[0] for w in windows), default=0.0),
            compression_ratio=max((w[1] for w in windows), default=0.0),
            no_speech_prob=max((w[2] for w in windows), default=0.0),
        )


class LocalWhisperStt:
    """The `SpeechToText` role on the local whisper model."""

    name = "whisper"

    def __init__(self, engine: WhisperEngine, executor: ThreadPoolExecutor) -> None:
        self._engine = engine
        self._executor = executor

    def open_stream(self, call: CallInfo, on_result: SttCallback) -> "WhisperStream":
        return WhisperStream(self._engine, self._executor, on_result)


class WhisperStream:
    def __init__(self, engine: WhisperEngine, executor: ThreadPoolExecutor, on_result: SttCallback) -> None:
        self._engine = engine
        self._executor = executor
        self._on_result = on_result
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    async def start(self) -> None:
        return None

    def send_audio(self, mulaw_audio: bytes) -> None:
        return None  # batch engine: the utterance arrives whole in end_of_speech

    def end_of_speech(self, utterance: bytes) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._transcribe(utterance))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def transcribe(self, utterance: bytes) -> Transcript:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._engine.transcribe_checked, utterance)
        except Exception as exc:
            raise ProviderError("whisper", f"transcription failed: {type(exc).__name__}") from exc

    async def _transcribe(self, utterance: bytes) -> None:
        try:
            result = await self.transcribe(utterance)
        except ProviderError:
            log.exception("local transcription failed")
            result = Transcript("")
        if result.rejected and result.rejected != TOO_SHORT:
            log.info("whisper transcript rejected: %s", result.rejected)
        if not self._closed:
            self._on_result(SttResult(text=result.text, is_final=True, end_of_turn=True, rejected=result.rejected,
                                      unclear=result.rejected in UNCLEAR_SPEECH))

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
