"""Rendered-audio cache in front of any TTS engine.

The dialog's fixed prompts (the greeting, "what day works for you?", the goodbye) are the same text
on every call: render them once, at startup for the known ones, and every later call starts them
with no TTS wait. Only short texts are kept, in an LRU bounded by bytes, keyed by the text exactly
and the call's language (a different voice or engine is a different cache): "No." is not said the same
way by the Spanish voice, so a call in another language has its own entries (`cache_key`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import AsyncIterator

from providers.base import CallInfo, SpokenLanguage, TextToSpeech, TtsStream

MAX_CACHED_TEXT_CHARS = 160  # longer texts are LLM prose, unlikely to repeat word for word
MAX_CACHE_BYTES = 4 * 1024 * 1024  # ~9 minutes of 8 kHz mu-law: every fixed prompt (~1 minute) and common phrases


def cache_key(text: str, language: str) -> str:
    """English texts are keyed by themselves (as they always were); another language's carry its code."""
    return text if language == "en" else f"{language}\x00{text}"


class RenderedAudioCache:
    def __init__(self, max_bytes: int = MAX_CACHE_BYTES) -> None:
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> bytes | None:
        audio = self._entries.get(text)
        if audio is None:
            self.misses += 1
            return None
        self._entries.move_to_end(text)
        self.hits += 1
        return audio

    def put(self, text: str, audio: bytes) -> None:
        if len(text) > MAX_CACHED_TEXT_CHARS or not audio or text in self._entries:
            return
        self._entries[text] = audio
        self._bytes += len(audio)
        while self._bytes > self._max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self._bytes -= len(old)

    def __contains__(self, text: str) -> bool:
        return text in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class CachedTts:
    """`TextToSpeech` that answers from `cache` when it can and fills it when it cannot."""

    def __init__(self, inner: TextToSpeech, cache: RenderedAudioCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name

    def open_stream(self, call: CallInfo) -> "CachedStream":
        return CachedStream(self.inner.open_stream(call), self.cache, call.language)

    async def prerender(self, texts: list[str], language: str = "en") -> None:
        spoken = SpokenLanguage(language)
        stream = self.inner.open_stream(CallInfo("prerender", "prerender", language=spoken))
        try:
            for text in texts:
                key = cache_key(text, language)
                if key not in self.cache:
                    self.cache.put(key, b"".join([chunk async for chunk in stream.synthesize(text)]))
        finally:
            await stream.close()


class CachedStream:
    def __init__(self, inner: TtsStream, cache: RenderedAudioCache, language: SpokenLanguage | None = None) -> None:
        self._inner = inner
        self._cache = cache
        self._language = language or SpokenLanguage()  # the call's, read at each sentence

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        key = cache_key(text, self._language.code)
        cached = self._cache.get(key)
        if cached is not None:
            yield cached
            return
        parts: list[bytes] = []
        async for chunk in self._inner.synthesize(text):
            parts.append(chunk)
            yield chunk
        self._cache.put(key, b"".join(parts))

    async def close(self) -> None:
        await self._inner.close()
