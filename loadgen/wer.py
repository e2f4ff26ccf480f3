"""Word error rate of a transcript against what was spoken: the STT corpus (tests/dialog/corpus) and the
turn-taking benchmark (loadgen.turn_taking_verdicts) count it here, the one way.

Both sides go through the slot extractor's own `normalize` (lower case, number words to digits,
"p.m." to "pm") and then digit groups are joined ("2 30", "2:30", "230" are one word "230"), so a
model is not charged for writing a time one of the ways people write it. What is left is counted
as whisper's own evaluations do: substitutions + deletions + insertions over the spoken words.
"""

from __future__ import annotations

import re

from dialog.slots import normalize

__all__ = ["wer", "word_errors", "words"]

_DIGIT_GROUPS = re.compile(r"(?<=\d)[ :](?=\d)")


def words(text: str, split_hyphens: bool = False) -> list[str]:
    """The words counted. `split_hyphens`: a hyphen `normalize` left between digits ("2-3") parts them
    into two words, as the turn-taking benchmark counts; the corpus keeps "2-3" one word."""
    joined = _DIGIT_GROUPS.sub("", normalize(text or "")).replace("'", "")
    return (joined.replace("-", " ") if split_hyphens else joined).split()


def word_errors(spoken: str, heard: str, split_hyphens: bool = False) -> tuple[int, int]:
    """(edits, spoken words): the word-level edit distance and the reference length."""
    ref, hyp = words(spoken, split_hyphens), words(heard, split_hyphens)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def wer(spoken: str, heard: str, split_hyphens: bool = False) -> float:
    e, n = word_errors(spoken, heard, split_hyphens)
    return e / max(n, 1)
