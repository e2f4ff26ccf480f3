"""Word error rate of a transcript against what was spoken, for comparing STT models on the corpus.

Counted by `loadgen.wer` (its docstring says how), the implementation the turn-taking benchmark
counts with too; the corpus keeps a hyphen between digits ("2-3") as one word.
"""

from __future__ import annotations

from loadgen.wer import word_errors, words

__all__ = ["word_errors", "words"]
