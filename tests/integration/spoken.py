"""Caller utterances as audio, and the Deepgram emulator's voiceprints of them.

The Deepgram emulator takes its script per connection, so a call whose socket reconnects (a flapping
provider) or whose stream moves to another instance (a hand-over) would hear the script start again.
With voiceprints it transcribes by the audio instead (`emulators.deepgram.voiceprint`): each
utterance is synthesized once here (Piper, as the simulated caller does), the caller sends exactly
those bytes, and the emulator knows them by their frames on any connection, replays included.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

from emulators.deepgram import voiceprint
from loadgen.simcaller import CallerTurn


@lru_cache(maxsize=256)
def audio(text: str) -> bytes:
    from providers.piper_tts import PiperEngine

    return PiperEngine.shared().synthesize_mulaw(text, steady=True)


def voiceprints(texts: Iterable[str]) -> dict[str, list[str]]:
    return {text: voiceprint(audio(text)) for text in set(texts)}


def turns(texts: Sequence[str], **turn_args) -> list[CallerTurn]:
    return [CallerTurn(text=text, audio=audio(text), **turn_args) for text in texts]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _occurrences(needle: list[str], hay: list[str]) -> int:
    n = len(needle)
    return sum(1 for i in range(len(hay) - n + 1) if hay[i:i + n] == needle) if n else 0


def utterance_counts(stored: dict, texts: Sequence[str]) -> dict[str, int]:
    """How many times each utterance's words stand in the stored caller turns (0: lost; 2 or more:
    stored, so answered, twice). Utterances of a script must not contain one another."""
    said = [words(t.get("user_text") or "") for t in stored.get("turns", []) if t.get("user_text")]
    return {text: sum(_occurrences(words(text), s) for s in said) for text in dict.fromkeys(texts)}
