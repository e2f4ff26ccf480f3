"""Local speech-to-text: faster-whisper with whisper tiny.en (int8), off the event loop.

Whisper is a batch model: it transcribes a whole utterance, so this engine ignores the per-frame
audio and works on the utterance the local VAD hands it at the end of speech (pre-roll included).
The model is loaded once per process; transcription runs in a thread pool (CTranslate2 releases the
GIL), so other calls' audio keeps flowing while one utterance is decoded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from audio import mulaw
from audio.resample import int16_to_float32, resample
from providers.base import CallInfo, ProviderError, SttCallback, SttResult
from providers.local_models import WHISPER_FILES, verify_files, whisper_model_dir

log = logging.getLogger("voicegate.stt.whisper")

WHISPER_RATE = 16000
# Utterances shorter than this are clicks or breaths; whisper hallucinates words on them.
MIN_UTTERANCE_SECONDS = 0.15
# Whisper's favourite hallucinations on noise; a caller saying exactly this alone is unlikely.
_HALLUCINATIONS = frozenset({"you", "thank you.", "thanks for watching!", "bye.", "."})


class WhisperEngine:
    _shared: "WhisperEngine | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, workers: int = 2) -> None:
        from faster_whisper import WhisperModel

        directory = whisper_model_dir()
        verify_files(directory, WHISPER_FILES)
        # cpu_threads = cores: one utterance uses the whole box for the shortest latency;
        # num_workers lets that many utterances (from different calls) decode at once.
        self._model = WhisperModel(str(directory), device="cpu", compute_type="int8",
                                   cpu_threads=os.cpu_count() or 1, num_workers=max(1, workers))

    @classmethod
    def shared(cls, workers: int = 2) -> "WhisperEngine":
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls(workers)
            return cls._shared

    def transcribe_mulaw(self, audio: bytes) -> str:
        """Blocking: 8 kHz mu-law in, text out."""
        if len(audio) < MIN_UTTERANCE_SECONDS * 8000:
            return ""
        samples = int16_to_float32(resample(mulaw.decode(audio), 8000, WHISPER_RATE))
        return self.transcribe_float(samples)

    def transcribe_float(self, samples: np.ndarray) -> str:
        segments, _info = self._model.transcribe(
            samples, language="en", beam_size=1, best_of=1, temperature=0.0,
            condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
        )
        text = " ".join(s.text.strip() for s in segments if s.no_speech_prob < 0.8).strip()
        return "" if text.lower() in _HALLUCINATIONS else text


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

    async def transcribe(self, utterance: bytes) -> str:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._engine.transcribe_mulaw, utterance)
        except Exception as exc:
            raise ProviderError("whisper", f"transcription failed: {type(exc).__name__}") from exc

    async def _transcribe(self, utterance: bytes) -> None:
        try:
            text = await self.transcribe(utterance)
        except ProviderError:
            log.exception("local transcription failed")
            text = ""
        if not self._closed:
            self._on_result(SttResult(text=text, is_final=True, end_of_turn=True))

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
