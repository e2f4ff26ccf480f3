"""Word error rate of a transcript against what was spoken, for comparing STT models on the corpus.

Both sides go through the slot extractor's own `normalize` (lower case, number words to digits,
"p.m." to "pm") and then digit groups are joined ("2 30", "2:30", "230" are one word "230"), so a
model is not charged for writing a time one of the ways people write it. What is left is counted
as whisper's own evaluations do: substitutions + deletions + insertions over the spoken words.
"""

from __future__ import annotations

import re

from dialog.slots import normalize

_DIGIT_GROUPS = re.compile(r"(?<=\d)[ :](?=\d)")


def words(text: str) -> list[str]:
    return _DIGIT_GROUPS.sub("", normalize(text)).replace("'", "").split()


def word_errors(spoken: str, heard: str) -> tuple[int, int]:
    """(edits, spoken words): the word-level edit distance and the reference length."""
    ref, hyp = words(spoken), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)
