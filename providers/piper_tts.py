"""Local text-to-speech: Piper with the en_US-joe-medium voice, resampled to 8 kHz mu-law.

The voice is loaded once per process and shared by every call. Synthesis runs in a thread pool
(onnxruntime releases the GIL), so audio of other calls keeps flowing while a sentence renders.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

import numpy as np

from audio import mulaw
from audio.resample import resample
from providers.base import CallInfo, ProviderError
from providers.local_models import PIPER_FILES, piper_voice_dir, verify_files

PIPER_RATE = 22050
TELEPHONE_RATE = 8000


class PiperEngine:
    """The loaded voice. `synthesize_mulaw` is blocking: call it from a worker thread."""

    _shared: "PiperEngine | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, length_scale: float | None = None) -> None:
        from piper import PiperVoice, SynthesisConfig

        directory = piper_voice_dir()
        verify_files(directory, PIPER_FILES)
        self._voice = PiperVoice.load(directory / PIPER_FILES[0].name, config_path=directory / PIPER_FILES[1].name)
        self._config = SynthesisConfig(length_scale=length_scale)
        # No sampling noise: the same text gives the same audio every time. The simulated caller uses it
        # so a test's spoken words do not change from one run to the next.
        self._steady = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
        self.sample_rate = int(self._voice.config.sample_rate)

    @classmethod
    def shared(cls) -> "PiperEngine":
        """The process-wide voice, loaded on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def synthesize_pcm(self, text: str, steady: bool = False) -> np.ndarray:
        """int16 samples at the voice's own rate (22.05 kHz)."""
        config = self._steady if steady else self._config
        chunks = [c.audio_int16_array for c in self._voice.synthesize(text, syn_config=config)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def iter_mulaw(self, text: str, steady: bool = False):
        """8 kHz mu-law, one piece per sentence Piper finds in `text` (it splits on punctuation)."""
        for chunk in self._voice.synthesize(text, syn_config=self._steady if steady else self._config):
            yield mulaw.encode(resample(chunk.audio_int16_array, self.sample_rate, TELEPHONE_RATE))

    def synthesize_mulaw(self, text: str, steady: bool = False) -> bytes:
        return b"".join(self.iter_mulaw(text, steady))


class LocalPiperTts:
    """The `TextToSpeech` role on the local Piper voice."""

    name = "piper"

    def __init__(self, engine: PiperEngine, executor: ThreadPoolExecutor) -> None:
        self._engine = engine
        self._executor = executor

    def open_stream(self, call: CallInfo) -> "PiperStream":
        return PiperStream(self._engine, self._executor)


class PiperStream:
    def __init__(self, engine: PiperEngine, executor: ThreadPoolExecutor) -> None:
        self._engine = engine
        self._executor = executor

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            audio = await loop.run_in_executor(self._executor, self._engine.synthesize_mulaw, text)
        except Exception as exc:  # onnxruntime errors are not ours to classify: the chain falls back
            raise ProviderError("piper", f"synthesis failed: {type(exc).__name__}") from exc
        if audio:
            yield audio

    async def close(self) -> None:
        return None
