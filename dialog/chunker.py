"""Cut a streaming reply into speakable pieces as the tokens arrive.

The caller should hear the first words as soon as the LLM has produced a speakable first phrase,
not a whole paragraph. So the first piece may end at a clause boundary (a comma, a colon, a dash)
once it is long enough to sound natural on its own ("Sure," or "Alright,"); later pieces end at
sentence boundaries, which give the TTS engine more context for prosody. A sentence boundary is a terminator followed by a
space (so "3.5" and "p.m." inside a sentence do not cut it), except after common abbreviations.
A piece that grows past `max_chars` without any boundary is cut at its last space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Tokens that end with a period but rarely end a sentence when followed by more words.
ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e.", "a.m.", "p.m.",
     "no.", "approx.", "dept.", "ave.", "jan.", "feb.", "mar.", "apr.", "jun.", "jul.", "aug.", "sep.",
     "sept.", "oct.", "nov.", "dec.", "mon.", "tue.", "wed.", "thu.", "fri.", "sat.", "sun."}
)
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:]\s|\s[-\u2013\u2014]\s")


@dataclass(frozen=True)
class ChunkerSettings:
    # "Sure," or "Alright," spoken alone sounds natural and reaches the caller a whole sentence of tokens
    # sooner; "Hi," or "So," alone sounds clipped.
    first_clause_min_chars: int = 4
    max_chars: int = 220  # ~15 s of speech: never hold more than that waiting for a full stop


class SentenceChunker:
    def __init__(self, settings: ChunkerSettings = ChunkerSettings()) -> None:
        self._settings = settings
        self._buffer = ""
        self._emitted = 0

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the pieces that are complete."""
        self._buffer += text
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return out
            if self._speakable(piece):
                out.append(piece.strip())
                self._emitted += 1

    def flush(self) -> list[str]:
        """The stream ended: whatever is left is the last piece."""
        rest, self._buffer = self._buffer.strip(), ""
        if self._speakable(rest):
            self._emitted += 1
            return [rest]
        return []

    def _speakable(self, piece: str) -> bool:
        return any(c.isalnum() for c in piece)  # "..." or "-" alone is nothing to say

    def _next_piece(self) -> str | None:
        buf = self._buffer
        start = 0
        while (match := _SENTENCE_END.search(buf, start)) is not None:
            end = match.end()
            last_word = buf[:match.start() + 1].rsplit(None, 1)[-1].lower() if buf[:match.start() + 1].strip() else ""
            if last_word not in ABBREVIATIONS:
                self._buffer = buf[end:]
                return buf[:end]
            start = end
        if self._emitted == 0:
            for match in _CLAUSE_END.finditer(buf):
                if match.start() >= self._settings.first_clause_min_chars:
                    end = match.end()
                    self._buffer = buf[end:]
                    return buf[:end]
        if len(buf) > self._settings.max_chars:
            cut = buf.rfind(" ", 0, self._settings.max_chars)
            cut = cut if cut > 0 else self._settings.max_chars
            self._buffer = buf[cut:]
            return buf[:cut]
        return None
