"""The sentence chunker: pieces come out as soon as they are speakable, and never mid-abbreviation."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from dialog.chunker import ChunkerSettings, SentenceChunker


def stream(text: str, step: int = 3, settings: ChunkerSettings = ChunkerSettings()) -> list[str]:
    chunker = SentenceChunker(settings)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += chunker.push(text[i:i + step])
    return out + chunker.flush()


def test_sentences_are_emitted_as_they_complete():
    chunker = SentenceChunker()
    assert chunker.push("Sure. What ") == ["Sure."]
    assert chunker.push("day works") == []
    assert chunker.push(" for you? I") == ["What day works for you?"]
    assert chunker.flush() == ["I"]


def test_first_piece_may_end_at_a_clause_once_long_enough():
    assert stream("Thanks for calling the clinic today, I can help you book a visit. Bye.") == [
        "Thanks for calling the clinic today,", "I can help you book a visit.", "Bye."]
    # "Sure," goes out alone, a sentence of tokens before the full stop; "Hi," is too short to.
    assert stream("Sure, I can do that.") == ["Sure,", "I can do that."]
    assert stream("Hi, I can do that.") == ["Hi, I can do that."]
    # Only the first piece is cut at a clause; later ones wait for the sentence end.
    assert stream("Hello there. Tuesday works, and so does Wednesday afternoon, if you prefer.")[1] == (
        "Tuesday works, and so does Wednesday afternoon, if you prefer.")


@pytest.mark.parametrize("text", [
    "Your visit is at 3 p.m. on Tuesday.",
    "Dr. Smith will see you.",
    "It costs 3.50 dollars.",
    "We open at 9 a.m. sharp.",
])
def test_abbreviations_and_decimals_do_not_cut(text):
    assert stream(text, step=1) == [text]


def test_terminator_needs_following_space_so_stream_end_flushes():
    chunker = SentenceChunker()
    assert chunker.push("Goodbye!") == []
    assert chunker.flush() == ["Goodbye!"]


def test_runaway_text_is_cut_at_a_space():
    text = "word " * 100
    pieces = stream(text, settings=ChunkerSettings(max_chars=50))
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_punctuation_only_is_dropped():
    assert stream("... ") == []


@given(st.text(alphabet=st.sampled_from(list("abc .,!?'-\n")), max_size=300), st.integers(1, 20))
def test_no_words_are_lost_or_reordered(text, step):
    pieces = stream(text, step=step)
    letters = lambda s: "".join(c for c in s if c.isalnum())  # noqa: E731
    assert letters("".join(pieces)) == letters(text)
    assert all(p == p.strip() and p for p in pieces)
