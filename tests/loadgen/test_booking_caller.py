"""The booking benchmark's caller: what it hears in the agent's words, and what it says next.

The agent's words are the dialog's own templates (`dialog.prompts`, filled as the machine fills them), so
the caller is tested against what the gateway really says. The last tests hold whole conversations with
the real state machine, text only (no speech, no STT): with the exact words, every caller of a plan must
end with its slot booked, in a handful of lines, whatever day of the week the call is made.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dialog import prompts
from dialog.machine import Conversation, DialogSettings
from dialog.schedule import say_date, say_time, say_when, slot_start, within_hours
from dialog.slots import Question, extract
from loadgen.booking_caller import (
    MAX_LINES, RECORDED_WORDS, BookingCaller, Line, Persona, Slot, day_phrases, hear, plan_calls, time_phrases,
)

TZ = ZoneInfo("America/New_York")
TODAY = date(2026, 11, 18)  # a Wednesday
TARGET = Slot(date(2026, 11, 24), 14, 30)  # Tuesday 24 November, 2:30 pm
SETTINGS = DialogSettings()


def said(key: str, variant: int = 0, slot: Slot | None = None, **extra: str) -> str:
    """The agent's words for a prompt key, filled as the dialog fills them."""
    slot = slot or TARGET
    start = slot_start(slot.day, datetime.min.time().replace(hour=slot.hour, minute=slot.minute), SETTINGS)
    fields = {"business": "the clinic", "date": say_date(slot.day, TODAY), "time": say_time(slot.hour, slot.minute),
              "when": say_when(start, TODAY), "offer": say_when(start, TODAY), "asked": say_when(start, TODAY),
              "hours": "9 am to 5 pm", "days": "Monday to Friday", "closed": "Saturday", "grid": "30 minutes",
              **extra}
    return prompts.render(key, fields, variant)


def caller(**kw) -> BookingCaller:
    return BookingCaller(Persona(0, kw.pop("target", TARGET), "piper-joe-1.0", **kw))


# ---------------------------------------------------------------- hearing the agent


@pytest.mark.parametrize("key", ["confirm", "reask_confirm", "taken_offer", "hours_offer", "closed_offer",
                                 "past_offer", "offgrid_offer", "race_offer", "store_failed"])
def test_a_slot_put_as_a_question_is_an_offer(key):
    for variant in range(len(prompts.PROMPTS[key])):
        assert hear(said(key, variant), TODAY).offer == TARGET, said(key, variant)


@pytest.mark.parametrize("key, asks", [
    ("greet", "book"), ("reask_greeting", "book"), ("ask_date", "day"), ("reask_date", "day"),
    ("vague_date", "day"), ("need_date", "day"), ("past_date", "day"), ("closed_day", "day"),
    ("invalid_date", "day"), ("no_free", "day"), ("ask_time", "time"), ("reask_time", "time"),
    ("vague_time", "time"), ("need_time", "time"), ("invalid_time", "time"), ("ask_date_for_time", "day"),
    ("change_ask", "day_time"),
])
def test_the_question_asked_is_heard(key, asks):
    for variant in range(len(prompts.PROMPTS[key])):
        heard = hear(said(key, variant), TODAY)
        assert heard.asks == asks and heard.offer is None and not heard.ended, said(key, variant)


@pytest.mark.parametrize("key", ["booked", "goodbye", "ended", "handoff", "transfer"])
def test_the_end_of_the_call_is_heard(key):
    assert hear(said(key), TODAY).ended


def test_what_the_agent_holds_is_heard():
    assert hear(said("ask_time"), TODAY).day == TARGET.day
    assert hear(said("need_time", 1), TODAY).day == TARGET.day
    heard = hear(said("ask_date_for_time", 1), TODAY)
    assert heard.time == (14, 30) and heard.day is None
    # examples and opening hours in a question are not what the agent holds
    assert hear(said("reask_time", 2), TODAY).time is None and hear(said("ask_date", 2), TODAY).day is None
    noon = hear(said("confirm", slot=Slot(TARGET.day, 12, 0)), TODAY)
    assert noon.offer == Slot(TARGET.day, 12, 0)


def test_an_offer_in_the_new_year_is_read_in_the_new_year():
    new_year = Slot(date(2027, 1, 4), 9, 0)
    assert hear(said("confirm", slot=new_year), date(2026, 12, 28)).offer == new_year


# ---------------------------------------------------------------- what it says


def test_opening_styles():
    plain = caller(opening="plain").respond(said("greet"), TODAY)
    assert plain.kind == "opening" and plain.intent == "book" and plain.day is None
    both = caller(opening="both").respond(said("greet"), TODAY)
    assert both.intent == "provide_both" and both.day == TARGET.day and both.time == (14, 30)
    day = caller(opening="day").respond(said("greet"), TODAY)
    assert day.intent == "provide_date" and day.day == TARGET.day and day.time is None


def test_answer_styles_when_asked_for_the_day():
    assert caller(answer="split").respond(said("ask_date"), TODAY).intent == "provide_date"
    assert caller(answer="both").respond(said("ask_date"), TODAY).intent == "provide_both"
    first = caller(answer="time_first")
    line = first.respond(said("ask_date"), TODAY)
    assert line.intent == "provide_time" and line.time == (14, 30)
    # the agent took the time: the day comes next
    assert first.respond(said("ask_date_for_time"), TODAY).intent == "provide_date"


def test_yes_only_to_the_slot_it_wants():
    c = caller()
    assert c.respond(said("confirm"), TODAY).intent == "affirm"
    other_time = c.respond(said("confirm", slot=Slot(TARGET.day, 15, 0)), TODAY)
    assert other_time.intent == "correction" and other_time.time == (14, 30) and other_time.day is None
    other_day = c.respond(said("taken_offer", slot=Slot(date(2026, 11, 25), 14, 30)), TODAY)
    assert other_day.intent == "correction" and other_day.day == TARGET.day and other_day.time is None
    both = c.respond(said("hours_offer", slot=Slot(date(2026, 11, 25), 10, 0)), TODAY)
    assert both.intent == "correction" and (both.day, both.time) == (TARGET.day, (14, 30))


def test_a_wrong_day_or_time_the_agent_holds_is_corrected_with_the_answer():
    wrong_day = Slot(date(2026, 11, 23), 14, 30)
    line = caller().respond(said("ask_time", slot=wrong_day), TODAY)
    assert line.intent == "provide_both" and line.day == TARGET.day
    wrong_time = Slot(TARGET.day, 15, 0)
    line = caller(answer="split").respond(said("ask_date_for_time", slot=wrong_time), TODAY)
    assert line.intent == "provide_both" and line.time == (14, 30)


def test_a_change_of_mind_at_the_read_back():
    decoy = Slot(date(2026, 11, 26), 14, 30)  # Thursday: it says Thursday first, then wants Tuesday
    c = caller(answer="split", decoy=decoy)
    first = c.respond(said("ask_date"), TODAY)
    assert first.day == decoy.day and c.decoy_said
    assert c.respond(said("ask_time", slot=decoy), TODAY).time == (14, 30)
    change = c.respond(said("confirm", slot=decoy), TODAY)
    assert change.intent == "correction" and change.day == TARGET.day
    assert c.respond(said("confirm", variant=1), TODAY).intent == "affirm"


def test_a_re_asked_question_gets_other_words():
    c = caller(answer="split")
    lines = [c.respond(said("reask_date", k % 3), TODAY).text for k in range(4)]
    assert len(set(lines[:3])) == 3
    assert all(extract(t, datetime(2026, 11, 18, 10, tzinfo=TZ), Question.DATE).date == TARGET.day for t in lines)


def test_words_it_cannot_place_get_the_whole_request():
    line = caller().respond("Sure, I can help with that.", TODAY)
    assert line.kind == "restate" and (line.day, line.time) == (TARGET.day, (14, 30))


def test_it_stops_at_a_goodbye_and_gives_up_after_max_lines():
    assert caller().respond(said("goodbye"), TODAY) is None
    c = caller()
    for _ in range(MAX_LINES):
        assert c.respond(said("reask_time"), TODAY) is not None
    assert c.respond(said("reask_time"), TODAY) is None and c.gave_up


def test_a_line_carries_what_a_model_would_record():
    line = caller(opening="both").respond(said("greet"), TODAY)
    assert line.tool_arguments() == {"date": "2026-11-24", "time": "14:30", "intent": "provide_both"}
    assert Line("Yes.", "yes", "affirm").tool_arguments() == {"date": None, "time": None, "intent": "affirm"}


def test_allison_callers_use_only_her_recorded_words():
    persona = Persona(0, Slot(date(2026, 11, 20), 15, 0), "allison-words", opening="both", answer="split",
                      words="allison")
    c = BookingCaller(persona)
    lines = [c.respond(said("greet"), TODAY), c.respond(said("reask_date"), TODAY), c.respond(said("reask_time"), TODAY)]
    assert all(line.in_words(RECORDED_WORDS) for line in lines), [line.text for line in lines]
    assert not c.respond(said("confirm", slot=persona.target), TODAY).in_words(RECORDED_WORDS)  # "yes": another voice


# ---------------------------------------------------------------- phrasings and plans


@pytest.mark.parametrize("offset", range(7))  # the call made on each day of the week
def test_every_phrasing_means_the_day_and_the_time(offset):
    today = TODAY + timedelta(days=offset)
    now = datetime.combine(today, datetime.min.time(), TZ).replace(hour=10)
    for delta in range(1, 14):
        day = today + timedelta(days=delta)
        for words in ("free", "allison"):
            for said_day in day_phrases(day, today, words):
                assert extract(said_day.bare, now, Question.DATE).date == day, (today, said_day)
    for hour in range(9, 17):
        for minute in (0, 30):
            for said_time in time_phrases(hour, minute):
                got = extract(said_time.on, now, Question.TIME).time
                assert got is not None and (got.hour % 12, got.minute) == (hour % 12, minute), said_time


def test_a_plan_has_a_different_bookable_slot_for_every_caller():
    voices = ["piper-joe-1.0", "flite-slt", "allison-words"]
    plan = plan_calls(40, TODAY, voices, seed=3)
    assert plan == plan_calls(40, TODAY, voices, seed=3) and plan != plan_calls(40, TODAY, voices, seed=4)
    slots = [p.target for p in plan] + [p.decoy for p in plan if p.decoy]
    assert len(set(slots)) == len(slots)
    for p in plan:
        start = slot_start(p.target.day, datetime.min.time().replace(hour=p.target.hour, minute=p.target.minute),
                           SETTINGS)
        assert within_hours(start, SETTINGS) and 1 <= (p.target.day - TODAY).days <= 13
        if p.words == "allison":
            assert p.voice == "allison-words" and p.target.minute == 0 and (p.target.day - TODAY).days <= 6
    assert {p.answer for p in plan} == {"both", "split", "time_first"} and any(p.decoy for p in plan)


@pytest.mark.parametrize("offset", range(7))
def test_whole_conversations_with_the_real_dialog_book_every_slot(offset):
    now = datetime(2026, 11, 18, 10, 0, tzinfo=TZ) + timedelta(days=offset, hours=offset % 4)
    lines = []
    for persona in plan_calls(30, now.date(), ["piper-joe-1.0", "allison-words"], seed=offset):
        conversation = Conversation(SETTINGS, None, call_sid=f"CA{persona.call}")
        c = BookingCaller(persona)
        reply = conversation.greet(now)
        booked = None
        while (line := c.respond(reply.text, now.date())) is not None:
            reply = conversation.on_user(line.text, now)
            booked = reply.booking or booked
        assert booked is not None, (persona, [x.text for x in c.lines])
        assert (booked.start.date(), booked.start.hour, booked.start.minute) == (
            persona.target.day, persona.target.hour, persona.target.minute)
        lines.append(len(c.lines))
    assert sum(lines) / len(lines) <= 4.5
