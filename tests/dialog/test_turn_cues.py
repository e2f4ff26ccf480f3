"""What a caller's words say about turn-taking: acknowledgements, and thoughts not finished yet."""

from __future__ import annotations

import pytest

from dialog.turn_cues import is_backchannel, is_fragment, sounds_unfinished


@pytest.mark.parametrize("text", [
    "Uh-huh.", "uh huh", "Mm-hmm.", "MMM.", "Hmm.", "mhm", "Yeah.", "yeah yeah", "Okay.", "Okay, okay.", "Right.",
    "Sure.", "Got it.", "I see.", "Mm, okay.", "Yup.", "All right.",
])
def test_acknowledgements_as_engines_write_them_are_backchannels(text):
    assert is_backchannel(text)


@pytest.mark.parametrize("text", [
    "No.", "Wait.", "Stop.", "Hold on.", "Hmm?", "Okay, but what about Tuesday?", "Sure, Tuesday works for me",
    "Actually, yes.", "I have to...", "Sorry?", "Hello?", "", "Yes, book it for Thursday at three please",
])
def test_anything_more_is_not(text):
    assert not is_backchannel(text)


@pytest.mark.parametrize("text", ["I have to...", "We have...", "So I…", "The, uh-", "I think..."])
def test_a_few_words_trailing_off_are_a_fragment(text):
    assert is_fragment(text)


@pytest.mark.parametrize("text", [
    "I have to.", "I'd like to book a...", "Wait, I...", "No...", "On the 16th...", "What about...", "Could I...",
    "Hmm?", "", "...", "I have to go now",
])
def test_a_finished_phrase_a_longer_start_or_a_stop_word_is_not_a_fragment(text):
    assert not is_fragment(text)


@pytest.mark.parametrize("text", [
    "I would like to come in on", "Could I come in on...", "the 16th of", "I need it at half past", "Um, Tuesday and",
    "I want to book an appointment for", "Next", "It's at quarter", "I'd like to book, um",
])
def test_words_ending_mid_thought_sound_unfinished(text):
    assert sounds_unfinished(text)


@pytest.mark.parametrize("text", [
    "Next Tuesday at 3.", "I would like to come in.", "Yes, I would like to.", "I think so.", "Can I come in?",
    "Tuesday.", "That's all, thanks.", "Hold on.", "",
])
def test_finished_sentences_do_not(text):
    assert not sounds_unfinished(text)
