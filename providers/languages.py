"""Which languages calls can be held in, from `LANGUAGES` and the engines configured.

`LANGUAGES` lists ISO 639-1 codes, the first the default (the greeting's language). The dialog has
prompts, date formats and question words for `SUPPORTED` (dialog.languages, dialog.prompts_i18n).

A call can leave the default language only on the cloud path: Deepgram (nova-3's multilingual mode
tells each result's language), an LLM (the offline rules read English only, so a caller in another
language is understood by the model and its tool call) and ElevenLabs (a multilingual model with
`language_code`). Offline there is no voice for another language in a pinned package (Piper's is
English; PyPI has no other pinned voice) and whisper tiny.en is English only: the offline default is
English, and says so at startup and in /readyz (`available`).
"""

from __future__ import annotations

SUPPORTED = ("en", "es", "fr", "de", "it")


def base_code(tag: str) -> str:
    """'es-419' -> 'es', 'en-US' -> 'en': the BCP-47 primary subtag, lower case."""
    return tag.strip().split("-")[0].split("_")[0].lower()


def parse_languages(raw: str) -> tuple[str, ...]:
    """LANGUAGES: comma-separated codes, the first the default. ValueError names a code not supported."""
    codes: list[str] = []
    for part in raw.split(","):
        if not part.strip():
            continue
        code = base_code(part)
        if code not in SUPPORTED:
            raise ValueError(f"{part.strip()!r} is not a supported language (supported: {', '.join(SUPPORTED)})")
        if code not in codes:
            codes.append(code)
    if not codes:
        raise ValueError("no language given")
    return tuple(codes)


def available(configured: tuple[str, ...], *, deepgram: bool, llm: bool, elevenlabs: bool) -> tuple[tuple[str, ...], str]:
    """(the languages calls may be held in, why fewer than configured: "" when all are)."""
    if configured == ("en",):
        return configured, ""
    missing = [name for name, ok in (("DEEPGRAM_API_KEY", deepgram), ("an LLM (OPENAI_API_KEY)", llm),
                                     ("ELEVENLABS_API_KEY", elevenlabs)) if not ok]
    if not missing:
        return configured, ""
    return ("en",), ("calls are held in English only: other languages need Deepgram, an LLM and ElevenLabs "
                     f"(missing: {', '.join(missing)}); the offline engines (whisper tiny.en, the rule-based "
                     "dialog, Piper's English voice) speak English")
