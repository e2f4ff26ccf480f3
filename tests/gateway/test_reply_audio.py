"""A reply's held audio: what went to the pacer, where the caller's ear is, where to resume, what was heard."""

from __future__ import annotations

import numpy as np

from audio import mulaw
from gateway.reply_audio import Position, ReplyAudio, heard_words, speech_share


def voiced(seconds: float) -> bytes:
    t = np.arange(int(seconds * 8000)) / 8000
    return mulaw.encode((np.sin(2 * np.pi * 200 * t) * 6000).astype(np.int16))


def quiet(seconds: float) -> bytes:
    return mulaw.silence(int(seconds * 8000))


def test_feed_hands_whole_frames_then_the_padded_tail_with_the_sentence_end():
    audio = ReplyAudio()
    audio.add(0, b"\x10" * 500)
    pieces = audio.take_feed()
    assert pieces == [(0, b"\x10" * 480, False)]
    audio.add(0, b"\x10" * 100)
    audio.finish(0)
    pieces = audio.take_feed()
    assert pieces == [(0, b"\x10" * 120, False), (0, b"", True)]
    assert [p.offset for p in audio.pushed] == [0, 160, 320, 480]
    assert audio.feed == Position(1, 0)


def test_position_follows_the_playout_clock():
    audio = ReplyAudio()
    audio.add(0, b"\x10" * 1600)
    audio.finish(0)
    audio.add(1, b"\x11" * 1600)
    audio.finish(1)
    audio.take_feed()
    audio.released(100.0, 20)  # all 20 frames, the first playing at t=100
    assert audio.position_at(99.0) is None
    assert audio.position_at(100.1) == Position(0, 800)
    assert audio.position_at(100.25) == Position(1, 400)
    assert audio.position_at(101.0) == Position(1, 1600)


def test_resume_point_is_the_pause_before_the_interrupted_phrase():
    audio = ReplyAudio()
    sentence = quiet(0.1) + voiced(0.8) + quiet(0.15) + voiced(1.0)
    audio.add(0, sentence)
    audio.finish(0)
    pause = (800 + 6400) // 160 * 160
    assert audio.resume_point(Position(0, len(sentence) - 2000)) == Position(0, pause)
    # Interrupted in the first phrase: the sentence from its start (the leading silence is no pause).
    assert audio.resume_point(Position(0, 3000)) == Position(0, 0)


def test_heard_words_by_share_of_the_speech():
    text = "We have openings on Monday and Tuesday"
    assert heard_words(text, 0.0) == ""
    assert heard_words(text, 1.0) == text
    assert heard_words(text, 0.5) == "We have openings on"
    sentence = quiet(0.5) + voiced(1.0) + quiet(0.5)
    assert speech_share(sentence, 4000) == 0.0  # still in the leading silence
    assert abs(speech_share(sentence, 8000) - 0.5) < 0.02
    assert speech_share(sentence, len(sentence)) == 1.0
