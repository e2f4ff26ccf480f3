"""The offline intent classifier, table-driven."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from dialog.intents import Intent, ParsedTurn, classify
from dialog.slots import TimeOfDay

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))

CASES: list[tuple[str, Intent]] = [
    ("yes", Intent.AFFIRM), ("Yes.", Intent.AFFIRM), ("yep", Intent.AFFIRM), ("yeah", Intent.AFFIRM),
    ("sure", Intent.AFFIRM), ("that's right", Intent.AFFIRM), ("That's right!", Intent.AFFIRM),
    ("correct", Intent.AFFIRM), ("sounds good", Intent.AFFIRM), ("perfect", Intent.AFFIRM),
    ("yes please book it", Intent.AFFIRM), ("okay", Intent.AFFIRM), ("go ahead", Intent.AFFIRM),
    ("no problem", Intent.AFFIRM), ("yes thanks, bye", Intent.AFFIRM), ("uh huh", Intent.AFFIRM),
    ("no", Intent.DENY), ("No.", Intent.DENY), ("nope", Intent.DENY), ("not really", Intent.DENY),
    ("that's wrong", Intent.DENY), ("that's not right", Intent.DENY), ("no thanks", Intent.DENY),
    ("that doesn't work", Intent.DENY), ("Actually, I don't need an appointment anymore, thanks.", Intent.DENY),
    ("No, I was just calling to ask about something else entirely.", Intent.DENY),
    # Whisper under babble for "I'd like to book the fourteenth at eleven" and "...this Friday at half past one":
    ("Hi, I hope you're working. I do not agree.", Intent.UNKNOWN),
    ("I'm looking for the idea that I don't want to play.", Intent.UNKNOWN),
    ("actually make it Wednesday", Intent.CORRECTION), ("no, 4 pm", Intent.CORRECTION),
    ("change the time to 5", Intent.CORRECTION), ("can we do Thursday instead", Intent.CORRECTION),
    ("not Tuesday, Wednesday", Intent.CORRECTION), ("change the time", Intent.CORRECTION),
    ("can we do a different day", Intent.CORRECTION),
    ("can you repeat that", Intent.REPEAT), ("say that again", Intent.REPEAT), ("what?", Intent.REPEAT),
    ("pardon", Intent.REPEAT), ("Sorry?", Intent.REPEAT), ("I didn't catch that", Intent.REPEAT),
    ("goodbye", Intent.GOODBYE), ("bye", Intent.GOODBYE), ("that's all", Intent.GOODBYE),
    ("hang up", Intent.GOODBYE), ("ok bye", Intent.GOODBYE), ("no thanks, bye", Intent.GOODBYE),
    ("see you then", Intent.GOODBYE), ("I'd like to see you on the eleventh", Intent.PROVIDE_DATE),
    ("That's all. Thank you.", Intent.GOODBYE), ("Okay, bye. Have a nice day.", Intent.GOODBYE),
    ("Bye. Oh wait, can I book another appointment?", Intent.BOOK),
    # Whisper under babble, for "I'd like to book December eleventh at half past one in the afternoon":
    ("See you in the whole December, will see you soon. I'd like to do December all night.", Intent.PROVIDE_DATE),
    ("I'd like to book an appointment", Intent.BOOK), ("I want to schedule a visit", Intent.BOOK),
    ("do you have any availability", Intent.BOOK), ("I need to see the doctor", Intent.BOOK),
    ("next Tuesday", Intent.PROVIDE_DATE), ("the fifth of December", Intent.PROVIDE_DATE),
    ("at 3 pm", Intent.PROVIDE_TIME), ("half past two", Intent.PROVIDE_TIME), ("3.", Intent.PROVIDE_TIME),
    ("next Tuesday at 3", Intent.PROVIDE_BOTH), ("I'd like to come in tomorrow at 10 am", Intent.PROVIDE_BOTH),
    ("", Intent.UNKNOWN), ("I have 2 kids", Intent.UNKNOWN), ("hello?", Intent.UNKNOWN),
    ("I don't know", Intent.UNKNOWN), ("the weather is nice", Intent.UNKNOWN), ("next week", Intent.UNKNOWN),
    ("the 32nd", Intent.UNKNOWN),
]


@pytest.mark.parametrize(("text", "intent"), CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_classify(text: str, intent: Intent) -> None:
    assert classify(text, NOW).intent is intent


def test_slots_ride_along() -> None:
    turn = classify("actually make it Wednesday at 4 pm", NOW)
    assert turn == ParsedTurn(Intent.CORRECTION, date(2026, 11, 25), TimeOfDay(16, 0))


def test_a_yes_with_slots_is_kept() -> None:
    turn = classify("yes, Tuesday at 3", NOW)
    assert turn.intent is Intent.PROVIDE_BOTH and turn.affirm


@pytest.mark.parametrize(("text", "clear"), [
    ("change the time", {"time"}), ("can we do a different day", {"date"}),
    ("change the date and time", {"date", "time"}),
])
def test_correction_without_a_value_names_what_to_clear(text: str, clear: set[str]) -> None:
    assert classify(text, NOW).clear == clear


def test_flags_ride_along_on_unknown() -> None:
    assert classify("sometime next week", NOW).vague_date
    assert classify("the 32nd", NOW).invalid_date
    assert classify("at 25:00", NOW).invalid_time
