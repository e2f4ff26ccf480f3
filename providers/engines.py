"""The engines of this process: built once at startup from `Settings`, shared by every call.

Local models load in worker threads so `/healthz` answers while they load and `/readyz` turns 200
only once they are in memory. Cloud engines are configured by their keys.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gateway.config import Settings
from providers.base import LanguageModel, SpeechToText, TextToSpeech
from providers.tts_cache import CachedTts, RenderedAudioCache

log = logging.getLogger("voicegate.engines")


@dataclass
class Engines:
    settings: Settings
    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None
    llm: LanguageModel | None = None
    tts_cache: RenderedAudioCache = field(default_factory=RenderedAudioCache)
    problems: dict[str, str] = field(default_factory=dict)  # role -> why it is not ready (no secrets)
    loaded: bool = False
    executors: list[ThreadPoolExecutor] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.loaded and self.stt is not None and self.tts is not None and not self.problems

    def describe(self) -> dict[str, object]:
        return {
            "stt": getattr(self.stt, "name", None),
            "llm": getattr(self.llm, "name", None),
            "tts": getattr(self.tts, "name", None),
            "loaded": self.loaded,
            "problems": dict(self.problems),
        }

    async def load(self) -> None:
        """Load what the settings ask for. Never raises: a failure is recorded in `problems`."""
        settings = self.settings
        if settings.local_engines:
            try:
                await self._load_local()
            except Exception as exc:  # a missing extra or a bad model file: say so on /readyz
                log.exception("local engines failed to load")
                self.problems["local"] = f"{type(exc).__name__}: {exc}"
        self.loaded = True

    async def _load_local(self) -> None:
        from providers.piper_tts import LocalPiperTts, PiperEngine
        from providers.whisper_stt import LocalWhisperStt, WhisperEngine

        settings = self.settings
        stt_pool = ThreadPoolExecutor(settings.stt_workers, thread_name_prefix="whisper")
        tts_pool = ThreadPoolExecutor(settings.tts_workers, thread_name_prefix="piper")
        self.executors += [stt_pool, tts_pool]
        loop = asyncio.get_running_loop()
        whisper, piper = await asyncio.gather(
            loop.run_in_executor(stt_pool, WhisperEngine.shared, settings.stt_workers),
            loop.run_in_executor(tts_pool, PiperEngine.shared),
        )
        if self.stt is None:
            self.stt = LocalWhisperStt(whisper, stt_pool)
        if self.tts is None:
            self.tts = CachedTts(LocalPiperTts(piper, tts_pool), self.tts_cache)

    async def prerender(self, texts: list[str]) -> None:
        if isinstance(self.tts, CachedTts) and texts:
            try:
                await self.tts.prerender(texts)
            except Exception:
                log.exception("pre-rendering fixed prompts failed; they will render on first use")

    def close(self) -> None:
        for pool in self.executors:
            pool.shutdown(wait=False, cancel_futures=True)
