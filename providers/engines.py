"""The engines of this process: built once at startup from `Settings`, shared by every call.

Each role is a fallback chain over what is configured, in order of quality:
- STT: Deepgram (when `DEEPGRAM_API_KEY` is set) -> local whisper.
- LLM: the primary model -> `OPENAI_FALLBACK_MODEL` -> the rule-based dialog (in the responder).
- TTS: ElevenLabs WebSocket -> ElevenLabs HTTP -> local Piper -> a pre-rendered apology clip,
  behind a cache of rendered fixed prompts.
Every engine has a circuit breaker in one `BreakerBoard`, so an open breaker skips it for every
call of the process. Local models load in worker threads: `/healthz` answers while they load and
`/readyz` turns 200 only once they are in memory and no configured key was refused.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from providers.settings import Settings
from providers.base import LanguageModel, SpeechToText, TextToSpeech
from providers.breaker import BreakerBoard
from providers.chain import FallbackStt, FallbackTts, GuardedLlm
from providers.tts_cache import CachedTts, RenderedAudioCache

log = logging.getLogger("voicegate.engines")

APOLOGY_TEXT = "Sorry, I'm having some trouble on my end. Could you say that again?"
STARTUP_PROBE_TIMEOUT_SECONDS = 5.0


@dataclass
class Engines:
    settings: Settings
    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None
    llms: list[LanguageModel] = field(default_factory=list)  # primary first; empty = rules only
    speech: object | None = None  # providers.speech_model.SpeechDetector: the model VAD, when it loaded
    speech_pool: ThreadPoolExecutor | None = None  # where its analyses run, off the event loop
    board: BreakerBoard = field(default_factory=BreakerBoard)
    tts_cache: RenderedAudioCache = field(default_factory=RenderedAudioCache)
    problems: dict[str, str] = field(default_factory=dict)  # role/provider -> why it is not ready (no secrets)
    loaded: bool = False
    executors: list[ThreadPoolExecutor] = field(default_factory=list)
    _closers: list = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.loaded and self.stt is not None and self.tts is not None and not self.problems

    @property
    def llm(self) -> LanguageModel | None:
        return self.llms[0] if self.llms else None

    def describe(self) -> dict[str, object]:
        return {
            "stt": getattr(self.stt, "name", None),
            "llm": ">".join(l.name for l in self.llms) or None,
            "tts": getattr(self.tts, "name", None),
            "vad": "energy+silero" if self.speech is not None else "energy",
            "loaded": self.loaded,
            "breakers": self.board.states(),
            "problems": dict(self.problems),
        }

    async def load(self) -> None:
        """Build the chains the settings ask for. Never raises: a failure is recorded in `problems`."""
        settings = self.settings
        whisper = piper = None
        if settings.local_engines:
            try:
                whisper, piper = await self._load_local()
            except Exception as exc:  # a missing extra or a bad model file: say so on /readyz
                log.exception("local engines failed to load")
                self.problems["local"] = f"{type(exc).__name__}: {exc}"
        if settings.model_vad:
            await self._load_speech_model()
        stt_engines: list[SpeechToText] = []
        tts_engines: list[TextToSpeech] = []
        if settings.deepgram_enabled:
            from providers.deepgram_stt import DeepgramStt

            stt_engines.append(DeepgramStt(settings))
        if whisper is not None:
            stt_engines.append(whisper)
        if settings.elevenlabs_enabled:
            from providers.elevenlabs_tts import ElevenLabsHttpTts, ElevenLabsWsTts

            tts_engines += [ElevenLabsWsTts(settings), ElevenLabsHttpTts(settings)]
        apology = b""
        if piper is not None:
            tts_engines.append(piper)
            try:
                apology = await _render(piper, APOLOGY_TEXT)
            except Exception:
                log.exception("rendering the apology clip failed")
        if settings.openai_enabled:
            from providers.openai_llm import OpenAiLlm

            primary = OpenAiLlm(settings)
            self.llms.append(GuardedLlm(primary, self.board.get(f"openai:{primary.name}")))
            self._closers.append(primary.aclose)
            fallback = OpenAiLlm.fallback(settings)
            if fallback is not None:
                self.llms.append(GuardedLlm(fallback, self.board.get(f"openai:{fallback.name}")))
                self._closers.append(fallback.aclose)
            await asyncio.gather(*(l.llm.warm() for l in self.llms))  # connections open before the first call
        if stt_engines:
            self.stt = FallbackStt(stt_engines, self.board)
        else:
            self.problems.setdefault("stt", "no speech-to-text engine: set DEEPGRAM_API_KEY or install the local extra")
        if tts_engines:
            self.tts = CachedTts(FallbackTts(tts_engines, self.board, apology), self.tts_cache)
        else:
            self.problems.setdefault("tts", "no text-to-speech engine: set ELEVENLABS_API_KEY or install the local extra")
        await self._check_keys()
        self.loaded = True

    async def _check_keys(self) -> None:
        """A refused key is a readiness error and a log line at startup, not silence on the first call."""
        settings = self.settings
        if not (settings.deepgram_enabled or settings.openai_api_key or settings.elevenlabs_enabled
                or settings.twilio_rest_enabled):
            return
        from providers.probes import probe_all

        try:
            report = await probe_all(settings, timeout=STARTUP_PROBE_TIMEOUT_SECONDS)
        except Exception:
            log.exception("startup connectivity probe failed")
            return
        for provider, result in report.get("providers", {}).items():
            status = str(result.get("status", ""))
            if status == "auth_failed":
                self.problems[provider] = "credentials refused: check the API key"
                log.error("%s refused the configured credentials; calls will use the fallback engines", provider)
            elif status != "ok":
                log.warning("%s is not reachable at startup: %s", provider, status)

    async def _load_local(self):
        from providers.piper_tts import LocalPiperTts, PiperEngine
        from providers.whisper_stt import LocalWhisperStt, WhisperEngine

        settings = self.settings
        stt_pool = ThreadPoolExecutor(settings.stt_workers, thread_name_prefix="whisper")
        tts_pool = ThreadPoolExecutor(settings.tts_workers, thread_name_prefix="piper")
        self.executors += [stt_pool, tts_pool]
        loop = asyncio.get_running_loop()
        whisper, piper = await asyncio.gather(
            loop.run_in_executor(stt_pool, WhisperEngine.shared, settings.stt_workers, settings.whisper_model),
            loop.run_in_executor(tts_pool, PiperEngine.shared),
        )
        return LocalWhisperStt(whisper, stt_pool), LocalPiperTts(piper, tts_pool)

    async def _load_speech_model(self) -> None:
        """The model VAD. Not a readiness condition: without it every energy onset counts as speech,
        as it did before there was one, and the log says so."""
        try:
            from providers.speech_model import SpeechDetector, SpeechModel

            # One thread: each analysis is a millisecond or two, and a second thread would only compete
            # with the event loop and whisper for the same cores.
            pool = ThreadPoolExecutor(1, thread_name_prefix="speech-model")
            self.executors.append(pool)
            model = await asyncio.get_running_loop().run_in_executor(pool, SpeechModel.shared)
        except Exception as exc:
            log.warning("the model VAD is not available; the energy VAD decides alone",
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            return
        self.speech, self.speech_pool = SpeechDetector(model), pool

    async def prerender(self, texts: list[str], language: str = "en") -> None:
        if isinstance(self.tts, CachedTts) and texts:
            try:
                await self.tts.prerender(texts, language)
            except Exception:
                log.exception("pre-rendering fixed prompts failed; they will render on first use")

    async def aclose(self) -> None:
        for closer in self._closers:
            try:
                await closer()
            except Exception:
                log.warning("closing an engine failed", exc_info=True)
        for pool in self.executors:
            pool.shutdown(wait=False, cancel_futures=True)


async def _render(tts: TextToSpeech, text: str) -> bytes:
    from providers.base import CallInfo

    stream = tts.open_stream(CallInfo("prerender", "prerender"))
    try:
        return b"".join([chunk async for chunk in stream.synthesize(text)])
    finally:
        await stream.close()
