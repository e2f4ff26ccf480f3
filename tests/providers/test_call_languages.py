"""The engines' side of a call in another language (issue 25): what the official SDKs send for it, against
the emulators, and the rendered-audio cache kept apart per language."""

from __future__ import annotations

import pytest
from provider_helpers import send_frames, silence, speech, wait_for

from emulators.deepgram import voiceprint
from emulators.elevenlabs import expected_audio
from emulators.server import EmulatorServer
from providers.base import CallInfo, SpokenLanguage, SttResult
from providers.deepgram_stt import DeepgramStt, language_options, result_language
from providers.elevenlabs_tts import ElevenLabsHttpTts, ElevenLabsWsTts, model_and_code
from providers.settings import Settings
from providers.tts_cache import CachedTts, RenderedAudioCache

pytestmark = pytest.mark.timeout(30)

ALL = "en,es,fr,de,it"


def cloud(emu: EmulatorServer, **extra: str) -> Settings:
    return Settings(deepgram_api_key="dg-test-key", deepgram_base_url=emu.url, openai_api_key="sk-test",
                    elevenlabs_api_key="xi-test-key", elevenlabs_base_url=emu.url, languages=ALL, **extra)


def test_one_language_keeps_the_monolingual_model_more_turn_on_multi() -> None:
    assert language_options(("en",)) == {"language": "en-US"}
    assert language_options(("es",)) == {"language": "es"}
    assert language_options(("en", "es")) == {"language": "multi", "language_hint": ["en", "es"]}


def test_a_results_language_is_the_alternatives_first_else_the_words_majority() -> None:
    assert result_language({"languages": ["es", "en"], "words": []}) == "es"
    words = [{"word": w, "language": lang} for w, lang in (("yes", "en"), ("quiero", "es"), ("una", "es"))]
    assert result_language({"words": words}) == "es"
    assert result_language({"words": [{"word": "hello"}]}) == ""  # monolingual mode says nothing


def test_models_for_other_languages() -> None:
    assert model_and_code("eleven_flash_v2", "eleven_flash_v2_5", "en") == ("eleven_flash_v2", None)
    assert model_and_code("eleven_flash_v2", "eleven_flash_v2_5", "es") == ("eleven_flash_v2_5", "es")
    # A multilingual model that takes no language code (it reads the language from the text).
    assert model_and_code("eleven_multilingual_v2", "eleven_flash_v2_5", "de") == ("eleven_multilingual_v2", None)


async def test_deepgram_multilingual_through_the_sdk(emu: EmulatorServer) -> None:
    text = "[es] Quiero una cita"
    audio = speech("Quiero una cita")
    emu.config.merge({"deepgram": {"voiceprints": {text: voiceprint(audio)}}})
    results: list[SttResult] = []
    stream = DeepgramStt(cloud(emu)).open_stream(CallInfo("CA1", "MZ1"), results.append)
    await stream.start()
    await send_frames(stream.send_audio, audio + silence(600))
    await wait_for(lambda: any(r.end_of_turn and r.text for r in results))
    await stream.close()
    record = emu.log.deepgram[0]
    assert record["query"]["language"] == "multi" and record["language_hint"] == ["en", "es", "fr", "de", "it"]
    final = next(r for r in results if r.end_of_turn and r.text)
    assert final.text == "Quiero una cita" and final.language == "es"


async def test_elevenlabs_speaks_the_calls_language_over_http_and_websocket(emu: EmulatorServer) -> None:
    settings = cloud(emu, elevenlabs_model="eleven_flash_v2")
    call = CallInfo("CA1", "MZ1")
    http = ElevenLabsHttpTts(settings)
    try:
        stream = http.open_stream(call)
        call.language.code = "es"
        audio = b"".join([c async for c in stream.synthesize("Hola.")])
    finally:
        await http.aclose()
    assert audio == expected_audio("Hola.")
    body = next(r for r in emu.log.elevenlabs if r.get("kind") == "http")
    assert body["body"]["language_code"] == "es" and body["model_id"] == "eleven_flash_v2_5"
    assert body["language_code_applied"] and body["multilingual"]

    ws = ElevenLabsWsTts(settings, prewarm=False)
    stream = ws.open_stream(call)  # the call is in Spanish now
    try:
        assert b"".join([c async for c in stream.synthesize("Hola.")]) == expected_audio("Hola.")
        call.language.code = "en"  # the caller went back to English: a socket for it
        assert b"".join([c async for c in stream.synthesize("Hello.")]) == expected_audio("Hello.")
    finally:
        await stream.close()
    sockets = [s for s in emu.log.elevenlabs if s.get("kind") == "multi-stream-input"]
    assert [(s["query"]["model_id"], s["query"].get("language_code")) for s in sockets] == [
        ("eleven_flash_v2_5", "es"), ("eleven_flash_v2", None)]


async def test_rendered_audio_is_cached_per_language(emu: EmulatorServer) -> None:
    cache = RenderedAudioCache()
    tts = CachedTts(ElevenLabsWsTts(cloud(emu), prewarm=False), cache)
    await tts.prerender(["No."], "es")
    assert "es\x00No." in cache and "No." not in cache  # an English call must not get the Spanish "No."
    before = len(emu.log.elevenlabs)
    stream = tts.open_stream(CallInfo("CA1", "MZ1", language=SpokenLanguage("es")))
    try:
        assert b"".join([c async for c in stream.synthesize("No.")]) == expected_audio("No.")
    finally:
        await stream.close()
    assert len(emu.log.elevenlabs) == before  # from the cache: no socket opened
