"""A reply's audio, held sentence by sentence, and where the caller is in it.

The call core paces a reply out through `audio.framing.OutboundPacer`, which forgets each frame once it
is sent. To stop the agent for an interruption that may turn out false (a cough, a "yeah", its own
echo) and then carry on from where the caller stopped hearing, the core needs more than the pacer has:
the whole audio of the sentences not yet heard, and a map from the frames it sent to positions in the
reply. `ReplyAudio` keeps both, for one reply:

- `sentences[k]` is sentence k's audio as synthesized (it grows as chunks arrive);
- every frame pushed into the pacer is recorded with its (sentence, offset), and every frame the pacer
  releases with the time it plays at the caller (the playout clock: `audio.framing`);
- so `position_at(t)` says which sentence and byte the caller's ear was at, at time t; the heard text
  follows from it, and `resume_point` backs it up to where speaking again sounds natural (the pause
  before the interrupted phrase, or the start of the sentence).

Audio is held only for the reply in progress and dropped with it: nothing is stored.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from audio import mulaw
from audio.framing import FRAME_BYTES, FRAME_SECONDS

SAMPLE_RATE = 8000
# Resume point: a pause in the sentence's own audio at least this long is a phrase boundary (a comma, a
# breath) where the agent can pick up again; shorter gaps are inside words.
PHRASE_GAP_MS = 80
# The pause must start this long before the caller's onset: the words right before it were heard as the
# caller drew breath to speak, and are better said again.
RESUME_BACKOFF_MS = 200
# A 10 ms window this far below the sentence's loudest is a pause.
PAUSE_BELOW_PEAK_DB = 30.0
_GAP_WINDOW = 80  # samples: 10 ms


@dataclass(frozen=True, slots=True)
class Position:
    """A point in the reply: byte `offset` into sentence `sentence`'s audio."""

    sentence: int
    offset: int


@dataclass
class ReplyAudio:
    sentences: list[bytearray] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)
    pushed: list[Position] = field(default_factory=list)  # each frame handed to the pacer, in order
    plays_at: list[float] = field(default_factory=list)  # each released frame's playout start
    feed: Position = Position(0, 0)  # the next audio to hand to the pacer

    def add(self, sentence: int, audio: bytes) -> None:
        while len(self.sentences) <= sentence:
            self.sentences.append(bytearray())
            self.done.append(False)
        self.sentences[sentence].extend(audio)

    def finish(self, sentence: int) -> None:
        self.add(sentence, b"")
        self.done[sentence] = True

    def take_feed(self) -> list[tuple[int, bytes, bool]]:
        """What to push into the pacer now, from the feed position: (sentence, audio, sentence_complete)
        pieces in order. Each frame pushed is recorded; a complete sentence ends on a frame boundary (the
        pacer pads its last frame before the mark)."""
        out: list[tuple[int, bytes, bool]] = []
        while self.feed.sentence < len(self.sentences):
            k, offset = self.feed.sentence, self.feed.offset
            audio = self.sentences[k]
            complete = self.done[k]
            end = len(audio) if complete else offset + (len(audio) - offset) // FRAME_BYTES * FRAME_BYTES
            if end > offset:
                piece = bytes(audio[offset:end])
                self.pushed.extend(Position(k, o) for o in range(offset, end, FRAME_BYTES))
                out.append((k, piece, False))
            if not complete:
                self.feed = Position(k, end)
                break
            out.append((k, b"", True))
            self.feed = Position(k + 1, 0)
        return out

    def released(self, first_plays_at: float, count: int) -> None:
        """The pacer sent `count` more frames of this reply, the first playing at `first_plays_at`."""
        self.plays_at.extend(first_plays_at + i * FRAME_SECONDS for i in range(count))

    def position_at(self, t: float) -> Position | None:
        """Where the caller's ear was at time t: the first frame not yet fully played. None before the
        reply's first frame played."""
        if not self.plays_at or t <= self.plays_at[0]:
            return None
        played = bisect.bisect_right(self.plays_at, t - FRAME_SECONDS)  # frames that finished by t
        if played < len(self.plays_at):
            frame = self.pushed[played]
            partial = int((t - self.plays_at[played]) / FRAME_SECONDS * FRAME_BYTES)
            return Position(frame.sentence, frame.offset + max(0, min(partial, FRAME_BYTES)))
        last = self.pushed[len(self.plays_at) - 1]
        return Position(last.sentence, last.offset + FRAME_BYTES)

    def restart(self, at: Position) -> None:
        """After a `clear`: the pacer's queue is gone, and playback will start again at `at`."""
        self.pushed.clear()
        self.plays_at.clear()
        self.feed = at

    def sentence_seconds(self, k: int) -> float:
        return len(self.sentences[k]) / SAMPLE_RATE if k < len(self.sentences) else 0.0

    def resume_point(self, heard_from: Position | None) -> Position:
        """Where to start again after a false interruption whose onset was at `heard_from`: the start of
        the last phrase-long pause before it (so the interrupted phrase is said whole), else the start
        of its sentence."""
        if heard_from is None:
            return self.feed if not self.plays_at else Position(self.pushed[0].sentence, self.pushed[0].offset)
        k = heard_from.sentence
        if k >= len(self.sentences):
            return Position(k, 0)
        limit = heard_from.offset - RESUME_BACKOFF_MS * SAMPLE_RATE // 1000
        gap = _last_pause_before(bytes(self.sentences[k]), limit)
        return Position(k, gap if gap is not None else 0)


def heard_words(text: str, share: float) -> str:
    """The words of `text` a caller heard when `share` (0..1) of its audio had played: words are taken
    in proportion to their characters, a word counted once its middle has played."""
    words = text.split()
    if share <= 0.0 or not words:
        return ""
    if share >= 1.0:
        return " ".join(words)
    total = sum(len(w) + 1 for w in words)
    out, used = [], 0
    for w in words:
        middle = (used + (len(w) + 1) / 2) / total
        if middle > share:
            break
        out.append(w)
        used += len(w) + 1
    return " ".join(out)


def speech_share(audio: bytes, offset: int) -> float:
    """How much of a sentence's speech lies before `offset`, its leading and trailing silence aside
    (a TTS engine pads both), so the share maps onto the words."""
    if not audio:
        return 0.0
    levels = _window_levels(audio)
    if levels.size == 0:
        return min(1.0, offset / len(audio))
    loud = np.flatnonzero(levels > levels.max() - PAUSE_BELOW_PEAK_DB)
    first, last = loud[0] * _GAP_WINDOW, (loud[-1] + 1) * _GAP_WINDOW
    if last <= first:
        return min(1.0, offset / len(audio))
    return float(min(1.0, max(0.0, (offset - first) / (last - first))))


def _window_levels(audio: bytes) -> np.ndarray:
    pcm = mulaw.decode(audio).astype(np.float64)
    n = len(pcm) // _GAP_WINDOW
    if n == 0:
        return np.zeros(0)
    frames = pcm[: n * _GAP_WINDOW].reshape(n, _GAP_WINDOW)
    power = np.einsum("ij,ij->i", frames, frames) / _GAP_WINDOW
    return 10.0 * np.log10(np.maximum(power, 1.0))


def _last_pause_before(audio: bytes, limit: int) -> int | None:
    """Byte offset where the last pause of at least PHRASE_GAP_MS that ends before `limit` begins (the
    agent resumes at the silence, so it does not start mid-breath), or None."""
    if limit <= 0:
        return None
    levels = _window_levels(audio[:limit])
    if levels.size == 0:
        return None
    quiet = levels < (_window_levels(audio).max() - PAUSE_BELOW_PEAK_DB)
    need = math.ceil(PHRASE_GAP_MS * SAMPLE_RATE / 1000 / _GAP_WINDOW)
    run_end = None
    run = 0
    for i in range(levels.size - 1, -1, -1):
        if quiet[i]:
            run += 1
            if run_end is None:
                run_end = i
            if run >= need:
                # The start of this pause: walk back to where it begins.
                j = i
                while j > 0 and quiet[j - 1]:
                    j -= 1
                if j == 0:
                    return None  # the sentence's leading silence: that is its start
                return j * _GAP_WINDOW // FRAME_BYTES * FRAME_BYTES
        else:
            run, run_end = 0, None
    return None
