"""Text hygiene at the two edges of the dialog.

Caller text (a transcript) is bounded and cleaned before it reaches the LLM: control characters,
square brackets and runs of whitespace go, and the length is capped, so a hostile or broken STT
stream cannot inflate a prompt, nor pass itself off as one of the gateway's own bracketed notes in
the conversation ("[pressed 5]", "[the caller pressed 5]"): speech has no brackets. Reply text is
cleaned before TTS: an LLM writes for screens (markdown, links, lists, emoji), and a phone caller
must never hear "asterisk asterisk" or a URL read out letter by letter.
"""

from __future__ import annotations

import re
import unicodedata

MAX_CALLER_TEXT_CHARS = 2000  # ~2 minutes of speech; an utterance is capped at 30 s anyway

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
_WS = re.compile(r"\s+")
_BRACKETS = re.compile(r"[\[\]]")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\b[\w.-]+\.(?:com|org|net|io|ai|dev|co|us|uk)(?:/\S*)?\b")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_HTML = re.compile(r"</?[a-zA-Z][^>]*>")
_CODE = re.compile(r"`{1,3}([^`]*)`{1,3}")
_MD_MARKS = re.compile(r"(\*\*|__|\*|_{1,2}(?=\w)|~~|^#{1,6}\s*|^>\s*|^\s*[-*+]\s+|^\s*\d+[.)]\s+)", re.M)
_LEFTOVER = re.compile(r"[*#`|<>{}\[\]\\^~]")


def clean_caller_text(text: str, max_chars: int = MAX_CALLER_TEXT_CHARS) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _WS.sub(" ", text).strip()
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars)
        text = text[: cut if cut > max_chars // 2 else max_chars]
    return text


def clean_for_speech(text: str) -> str:
    """What a TTS engine should read aloud of `text`."""
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _HTML.sub(" ", text)
    text = _CODE.sub(r"\1", text)
    text = _EMAIL.sub("the email address", text)
    text = _URL.sub("the link", text)
    text = _MD_MARKS.sub("", text)
    text = _LEFTOVER.sub(" ", text)
    # Emoji and other pictographs (So: "Symbol, other") are not speech.
    text = "".join(c for c in text if unicodedata.category(c) != "So")
    text = _WS.sub(" ", text).strip()
    return re.sub(r"\s+([,.!?;:])", r"\1", text)
