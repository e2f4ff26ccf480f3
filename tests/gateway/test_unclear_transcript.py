"""A transcript the STT engine judged unreliable: speech it could not make out is re-asked, noise is not.

Whisper's repetition loops come back from the engine as an empty, `unclear` transcript
(providers/whisper_stt.py); the call answers them with the dialog's "didn't catch that" instead of
silence, and never with the looping text as the caller's words.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from dialog.events import StartReply, TranscribeUtterance, TranscriptReceived
from dialog.machine import Conversation, DialogSettings, State
from tests.gateway.session_helpers import Driver, finish_greeting, of, silence_frames, speech_frames

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))


def _spoken_turn(d: Driver) -> None:
    finish_greeting(d)
    d.audio(silence_frames(0.5))
    d.audio(speech_frames(1.2))
    (utterance,) = of(TranscribeUtterance, d.audio(silence_frames(0.8)))
    assert utterance.audio


def test_unclear_speech_gets_an_empty_turn_for_the_dialog_to_re_ask() -> None:
    d = Driver()
    _spoken_turn(d)
    (start,) = of(StartReply, d.feed(TranscriptReceived(d.now, "", unclear=True)))
    assert start.user_text == "" and start.reprompt == ""


def test_noise_the_engine_rejected_is_still_answered_with_silence() -> None:
    d = Driver()
    _spoken_turn(d)
    assert of(StartReply, d.feed(TranscriptReceived(d.now, ""))) == []


def test_the_dialog_answers_an_empty_turn_with_didnt_catch_that() -> None:
    conv = Conversation(DialogSettings(), None, "CA1")
    conv.greet(NOW)
    conv.on_user("I'd like to book an appointment", NOW)
    reply = conv.on_user("", NOW)
    assert reply.state is State.FALLBACK and reply.prompt_key == "reask_date"
    assert "didn't catch" in reply.text
