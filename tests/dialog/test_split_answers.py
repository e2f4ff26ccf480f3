"""Answers the dialog reads in context: halves of an answer split by a pause, times with no hour.

A caller who pauses mid-phrase is transcribed as two turns ("On the third." / "Of January."); the
second half completes what the call holds. The question being answered is the classifier's context.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest

from dialog.machine import QUESTIONS, Conversation, DialogSettings, Intent, State
from dialog.slots import Question
from dialog.store import Store

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # a Wednesday
# Open around the clock, every day: the hours checks would otherwise answer 2 am with an offer.
ALWAYS_OPEN = DialogSettings(open_hour=0, close_hour=24, open_weekdays=(0, 1, 2, 3, 4, 5, 6))


@pytest.fixture
def conv() -> Iterator[Conversation]:
    with Store(":memory:") as store:
        c = Conversation(ALWAYS_OPEN, store, "CA1")
        c.greet(NOW)
        c.on_user("I'd like to book an appointment", NOW)
        yield c


def test_the_month_completes_the_day(conv: Conversation) -> None:
    assert conv.on_user("On the eighth.", NOW).slots["date"] == "2026-12-08"
    reply = conv.on_user("Of January.", NOW)  # asked for a time meanwhile: still the day's other half
    assert reply.slots["date"] == "2027-01-08" and reply.state is State.COLLECT_TIME
    assert "January 8th" in reply.text


def test_the_half_of_day_completes_the_time(conv: Conversation) -> None:
    conv.on_user("Friday", NOW)
    assert conv.on_user("At eleven.", NOW).slots["time"] == "11:00"  # read as the morning
    reply = conv.on_user("P.M.", NOW)
    assert reply.slots == {"date": "2026-11-20", "time": "23:00"} and reply.prompt_key == "confirm"
    assert conv.on_user("no, at two", NOW).slots["time"] == "14:00"  # read as the afternoon
    reply = conv.on_user("In the morning.", NOW)
    assert reply.slots["time"] == "02:00" and reply.prompt_key == "confirm"


def test_a_half_with_nothing_to_complete_is_asked_about(conv: Conversation) -> None:
    reply = conv.on_user("Of December.", NOW)  # no day held: which day in December?
    assert (reply.state, reply.prompt_key, reply.intent) == (State.FALLBACK, "vague_date", Intent.UNKNOWN)
    conv.on_user("Friday", NOW)
    reply = conv.on_user("After lunch.", NOW)
    assert (reply.state, reply.prompt_key) == (State.FALLBACK, "vague_time")
    assert reply.intent is Intent.UNKNOWN  # not understood as a slot: an LLM, when configured, may read it
    reply = conv.on_user("Two thirty.", NOW)
    assert reply.slots == {"date": "2026-11-20", "time": "14:30"} and reply.prompt_key == "confirm"


def test_the_question_being_answered_is_the_context(conv: Conversation) -> None:
    assert QUESTIONS[State.COLLECT_DATE] is Question.DATE and QUESTIONS[State.COLLECT_TIME] is Question.TIME
    assert conv.on_user("16", NOW).slots["date"] == "2026-12-16"  # "Which day?" -> the 16th
    assert conv.on_user("230", NOW).slots["time"] == "14:30"  # "What time?" -> 2:30
