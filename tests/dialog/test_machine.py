"""The appointment state machine: every table row, corrections in each state, retries and handoff,
validation re-asks, nearest-slot offers, DTMF, and snapshot/restore mid-call."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest

from dialog import prompts
from dialog.intents import SLOT_INTENTS
from dialog.machine import (
    ASKING, CHECKS, DEFAULT, REASK, TRANSITIONS, Check, Conversation, DialogReply, DialogSettings, Intent,
    State,
)
from dialog.slots import TimeOfDay
from dialog.store import Store

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 18, 10, 0, tzinfo=NY)  # Wednesday 10 am
FRI = date(2026, 11, 20)
THREE = TimeOfDay(15, 0)
SETTINGS = DialogSettings()


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=NY)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(":memory:") as s:
        yield s


def restored(state: State, store: Store | None, *, day: date | None = None, time: TimeOfDay | None = None,
             resume: State | None = None, last_key: str = "ask_date", retries: int = 0,
             settings: DialogSettings = SETTINGS) -> Conversation:
    """A conversation put straight into `state` with the given slots (as another process would)."""
    return Conversation.restore({
        "version": 1, "state": state.value, "resume": (resume or state).value,
        "date": day.isoformat() if day else None, "time": time.hhmm() if time else None,
        "retries": retries, "booking": None, "call_sid": "CA1", "caller": "+15551234567",
        "last": {"text": f"the last thing said ({last_key})", "state": state.value, "intent": "unknown",
                 "prompt_key": last_key, "hang_up": state is State.TERMINAL, "transfer_to": ""},
    }, settings, store)


def talk(conv: Conversation, *lines: str, now: datetime = NOW) -> DialogReply:
    reply = None
    for line in lines:
        reply = conv.on_user(line, now)
    assert reply is not None
    return reply


def new_call(store: Store | None, settings: DialogSettings = SETTINGS) -> Conversation:
    conv = Conversation(settings, store, "CA1", "+15551234567")
    conv.greet(NOW)
    return conv


# ---------------------------------------------------------------- the table itself


def _slots_for(state: State) -> dict[str, object]:
    if state is State.CONFIRMATION:
        return {"day": FRI, "time": THREE}
    if state is State.COLLECT_TIME:
        return {"day": FRI}
    return {}


def _drive(state: State, key_intent: Intent, store: Store) -> tuple[Conversation, DialogReply]:
    """Feed `state` a turn that the machine keys as `key_intent` (rule 1 for slot turns)."""
    if key_intent in (Intent.PROVIDE_DATE, Intent.PROVIDE_TIME, Intent.PROVIDE_BOTH):
        conv = restored(state, store)  # nothing known yet, so the key is what the turn carries
        day = FRI if key_intent is not Intent.PROVIDE_TIME else None
        time = THREE if key_intent is not Intent.PROVIDE_DATE else None
        return conv, conv.on_slots(day, time, key_intent, NOW)
    if key_intent is Intent.CORRECTION and state is not State.TERMINAL:
        conv = restored(state, store, day=FRI)  # "change the date" clears the only slot known
        return conv, conv.on_user("change the date", NOW)
    conv = restored(state, store, **_slots_for(state))  # type: ignore[arg-type]
    return conv, conv.on_slots(None, None, key_intent, NOW)


@pytest.mark.parametrize(("pair", "target"), list(TRANSITIONS.items()),
                         ids=[f"{s.name}-{i.name}" for s, i in TRANSITIONS])
def test_every_transition(pair: tuple[State, Intent], target: tuple[State, str], store: Store) -> None:
    state, intent = pair
    next_state, key = target
    conv, reply = _drive(state, intent, store)
    assert reply.state is next_state is conv.state
    if key == "repeat":
        assert reply.text == "the last thing said (ask_date)" and reply.intent is Intent.REPEAT
    else:
        assert reply.prompt_key == key
    assert reply.hang_up is (next_state is State.TERMINAL)
    if key == "booked":
        assert reply.booking is not None and reply.booking.start == at(20, 15)
        assert [b.start for b in store.list_bookings()] == [at(20, 15)]


MISSING = [(s, i) for s in ASKING for i in Intent if (s, i) not in TRANSITIONS]


def test_the_table_covers_what_it_should() -> None:
    assert {s for s, _ in TRANSITIONS} == {*ASKING, State.TERMINAL}  # FALLBACK reads as the re-asked state
    assert all((State.TERMINAL, i) in TRANSITIONS for i in Intent)
    for s in ASKING:
        for i in (*SLOT_INTENTS, Intent.REPEAT, Intent.GOODBYE, Intent.UNKNOWN):
            assert (s, i) in TRANSITIONS
    # Every question has a row for every intent (a yes while a time is asked for says what is still
    # needed); DEFAULT only guards an intent added later without rows.
    assert not MISSING
    assert all(DEFAULT[s] == (State.FALLBACK, REASK[s]) for s in ASKING)


@pytest.mark.parametrize(("state", "line", "key", "needed"), [
    (State.COLLECT_TIME, "Yes, that's all correct.", "need_time", "Friday, November 20th"),
    (State.COLLECT_TIME, "No.", "need_time", "Friday, November 20th"),
    (State.COLLECT_DATE, "Yes, that's right.", "need_date", "day"),
    (State.COLLECT_DATE, "nope", "need_date", "day"),
])
def test_a_yes_or_no_to_a_question_not_asked_says_what_is_still_needed(
        state: State, line: str, key: str, needed: str, store: Store) -> None:
    conv = restored(state, store, **_slots_for(state))  # type: ignore[arg-type]
    first = talk(conv, line)
    assert (first.state, first.prompt_key) == (State.FALLBACK, key)
    assert needed in first.text and first.text.count("?") + first.text.count(".") == 1  # one sentence
    second = talk(conv, line)
    assert second.prompt_key == key and second.text != first.text  # other words, not the same louder
    third = talk(conv, line)  # and not forever: the misunderstandings run out into a handoff
    assert third.state is State.TERMINAL and third.prompt_key == "handoff"
    # Whatever the call held is still there for the next answer.
    assert conv.slots["date"] == ("2026-11-20" if state is State.COLLECT_TIME else None)


def test_after_not_being_asked_the_answer_still_books(store: Store) -> None:
    conv = restored(State.COLLECT_TIME, store, day=FRI)
    assert talk(conv, "Yes, that's all correct.").prompt_key == "need_time"
    assert talk(conv, "230 in the afternoon would be great.").prompt_key == "confirm"
    assert talk(conv, "Yes, that's all correct.").prompt_key == "booked"


@pytest.mark.parametrize(("state", "line", "expected"), [
    (State.GREETING, "yes", (State.COLLECT_DATE, "ask_date")),
    (State.COLLECT_DATE, "Friday", (State.COLLECT_TIME, "ask_time")),
    (State.COLLECT_TIME, "3 pm", (State.CONFIRMATION, "confirm")),
    (State.CONFIRMATION, "yes", (State.TERMINAL, "booked")),
])
def test_after_a_re_ask_the_answer_is_read_against_the_question(
        state: State, line: str, expected: tuple[State, str], store: Store) -> None:
    conv = restored(state, store, **_slots_for(state))  # type: ignore[arg-type]
    reply = talk(conv, "blah blah")
    assert reply.state is State.FALLBACK and reply.prompt_key == REASK[state]
    reply = talk(conv, line)
    assert (reply.state, reply.prompt_key) == expected


def test_every_check_leads_to_a_state_and_a_prompt() -> None:
    for state, key in CHECKS.values():
        assert isinstance(state, State) and key in prompts.PROMPTS
    for _, key in TRANSITIONS.values():
        assert key == "repeat" or key in prompts.PROMPTS


# ---------------------------------------------------------------- whole calls


def test_a_whole_call(store: Store) -> None:
    conv = Conversation(SETTINGS, store, "CA1", "+15551234567")
    greeting = conv.greet(NOW)
    assert greeting.state is State.GREETING and "the clinic" in greeting.text
    assert talk(conv, "Hi, I'd like to book an appointment").prompt_key == "ask_date"
    reply = talk(conv, "next Tuesday")
    assert reply.state is State.COLLECT_TIME and "Tuesday, November 24th" in reply.text
    reply = talk(conv, "three pm")
    assert reply.state is State.CONFIRMATION
    assert reply.text.startswith("So that's Tuesday, November 24th at 3 pm. Shall I book it?")
    reply = talk(conv, "yes please")
    assert reply.state is State.TERMINAL and reply.hang_up and reply.prompt_key == "booked"
    assert reply.booking is not None and reply.booking.start == at(24, 15) and reply.booking.call_sid == "CA1"
    assert "Tuesday, November 24th at 3 pm" in reply.text and "goodbye" in reply.text.lower()
    assert [b.caller for b in store.list_bookings()] == ["+15551234567"]
    after = talk(conv, "thanks, bye")
    assert after.state is State.TERMINAL and after.hang_up and after.booking is None


def test_both_slots_in_the_first_sentence(store: Store) -> None:
    reply = talk(new_call(store), "Can I come in next Tuesday at 3?")
    assert reply.intent is Intent.PROVIDE_BOTH and reply.prompt_key == "confirm"
    assert reply.slots == {"date": "2026-11-24", "time": "15:00"}


def test_time_first_then_date(store: Store) -> None:
    conv = new_call(store)
    reply = talk(conv, "do you have anything at 10 am")
    assert (reply.state, reply.prompt_key) == (State.COLLECT_DATE, "ask_date_for_time")
    reply = talk(conv, "thursday")
    assert reply.prompt_key == "confirm" and reply.slots == {"date": "2026-11-19", "time": "10:00"}


def test_no_at_the_greeting_ends_politely(store: Store) -> None:
    reply = talk(new_call(store), "no thanks")
    assert reply.state is State.TERMINAL and reply.hang_up and reply.prompt_key == "goodbye"


def test_goodbye_in_confirmation_books_nothing(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm")
    reply = talk(conv, "goodbye")
    assert reply.state is State.TERMINAL and reply.booking is None and store.list_bookings() == []


def test_a_yes_repeating_the_slot_books_it(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm")
    reply = talk(conv, "yes, Friday at 3")
    assert reply.state is State.TERMINAL and reply.booking is not None


def test_without_a_store_the_booking_is_in_the_reply() -> None:
    conv = new_call(None)
    talk(conv, "Friday at 3 pm")
    reply = talk(conv, "yes")
    assert reply.booking is not None and reply.booking.id == 0 and reply.booking.start == at(20, 15)


# ---------------------------------------------------------------- corrections in each state


def test_correction_at_the_greeting(store: Store) -> None:
    reply = talk(new_call(store), "actually, Thursday at 2")
    assert reply.intent is Intent.CORRECTION and reply.prompt_key == "confirm"
    assert reply.slots == {"date": "2026-11-19", "time": "14:00"}


def test_correction_while_collecting_the_date(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "at 3")
    reply = talk(conv, "no, make it 4 pm")
    assert (reply.state, reply.intent) == (State.COLLECT_DATE, Intent.CORRECTION)
    assert reply.slots == {"date": None, "time": "16:00"}


def test_correction_while_collecting_the_time(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "tuesday")
    reply = talk(conv, "actually make it Friday")
    assert (reply.state, reply.prompt_key) == (State.COLLECT_TIME, "ask_time")
    assert reply.slots == {"date": "2026-11-20", "time": None}


def test_corrections_in_confirmation_keep_the_other_slot(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "next Tuesday at 3")
    reply = talk(conv, "actually make it Wednesday")
    assert reply.state is State.CONFIRMATION and reply.intent is Intent.CORRECTION
    assert reply.slots == {"date": "2026-11-25", "time": "15:00"}
    assert reply.text.startswith("No problem.")
    reply = talk(conv, "no, 4 pm")
    assert reply.slots == {"date": "2026-11-25", "time": "16:00"} and reply.prompt_key == "confirm"
    reply = talk(conv, "change the time to 5")
    assert reply.state is State.CONFIRMATION and reply.slots["time"] == "16:30"  # 5 pm is closing: offer
    assert reply.prompt_key == "hours_offer"


def test_naming_what_to_change_asks_for_it(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm")
    reply = talk(conv, "can we change the time")
    assert (reply.state, reply.prompt_key) == (State.COLLECT_TIME, "ask_time")
    talk(conv, "2 pm")
    reply = talk(conv, "a different day please")
    assert (reply.state, reply.prompt_key) == (State.COLLECT_DATE, "ask_date_for_time")
    assert reply.slots == {"date": None, "time": "14:00"}


def test_correction_during_fallback(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm")
    assert talk(conv, "hmm").state is State.FALLBACK
    reply = talk(conv, "actually Thursday")
    assert reply.state is State.CONFIRMATION and reply.slots == {"date": "2026-11-19", "time": "15:00"}


def test_deny_in_confirmation_keeps_the_slots_as_defaults(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm")
    reply = talk(conv, "no")
    assert (reply.state, reply.prompt_key) == (State.COLLECT_DATE, "change_ask")
    reply = talk(conv, "4 pm")
    assert reply.prompt_key == "confirm" and reply.slots == {"date": "2026-11-20", "time": "16:00"}


# ---------------------------------------------------------------- retries and handoff


def test_retries_run_out_into_a_polite_handoff(store: Store) -> None:
    conv = new_call(store)
    texts = [talk(conv, "blah").text, talk(conv, "blah blah").text]
    assert conv.state is State.FALLBACK and texts[0] != texts[1]  # re-asked in other words
    reply = talk(conv, "mmm")
    assert reply.state is State.TERMINAL and reply.prompt_key == "handoff" and reply.hang_up
    assert reply.transfer_to == ""


def test_handoff_transfers_when_a_number_is_set(store: Store) -> None:
    settings = DialogSettings(transfer_number="+15550001111", max_retries=1)
    conv = new_call(store, settings)
    talk(conv, "blah")
    reply = talk(conv, "blah")
    assert reply.state is State.TERMINAL and reply.prompt_key == "transfer"
    assert reply.transfer_to == "+15550001111" and not reply.hang_up
    again = talk(conv, "hello?")
    assert again.state is State.TERMINAL and again.transfer_to == "+15550001111"


def test_zero_retries_hands_off_at_once(store: Store) -> None:
    reply = talk(new_call(store, DialogSettings(max_retries=0)), "blah")
    assert reply.state is State.TERMINAL and reply.prompt_key == "handoff"


def test_an_understood_turn_resets_the_count(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "blah", "blah", "yes")  # two misses, then understood
    assert conv.state is State.COLLECT_DATE
    talk(conv, "blah", "blah")
    assert conv.state is State.FALLBACK


def test_repeat_does_not_count_as_a_misunderstanding(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "blah", "blah")
    reply = talk(conv, "what?")
    assert reply.intent is Intent.REPEAT and reply.state is not State.TERMINAL
    assert talk(conv, "Friday").prompt_key == "ask_time"


def test_provider_failure_apologises_and_re_asks(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday")
    reply = conv.on_failure(NOW)
    assert reply.state is State.COLLECT_TIME and reply.prompt_key == "failure"
    assert reply.text.startswith("Sorry") and "What time would you like on Friday, November 20th?" in reply.text
    conv.on_failure(NOW)
    assert conv.on_failure(NOW).state is State.TERMINAL  # failures count toward the retries


def test_vague_and_impossible_answers_get_specific_re_asks(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "yes")
    assert talk(conv, "sometime next week").prompt_key == "vague_date"
    assert talk(conv, "the 32nd").prompt_key == "invalid_date"
    conv = new_call(store)
    talk(conv, "friday")
    assert talk(conv, "at 25:00").prompt_key == "invalid_time"


# ---------------------------------------------------------------- validation


def test_a_past_date_is_re_asked(store: Store) -> None:
    conv = new_call(store)
    reply = talk(conv, "yesterday at 3")
    assert (reply.state, reply.prompt_key) == (State.COLLECT_DATE, "past_date")
    assert reply.slots == {"date": None, "time": "15:00"}
    assert talk(conv, "friday").prompt_key == "confirm"


def test_a_closed_day_without_a_time_is_re_asked(store: Store) -> None:
    reply = talk(new_call(store), "saturday")
    assert (reply.state, reply.prompt_key) == (State.COLLECT_DATE, "closed_day")
    assert "closed on Saturdays" in reply.text and "Monday to Friday" in reply.text


def test_a_closed_day_with_a_time_offers_the_same_time_on_an_open_day(store: Store) -> None:
    reply = talk(new_call(store), "sunday at 10 am")
    assert (reply.state, reply.prompt_key) == (State.CONFIRMATION, "closed_offer")
    assert reply.slots == {"date": "2026-11-23", "time": "10:00"}
    assert "Monday, November 23rd at 10 am" in reply.text


def test_outside_hours_offers_the_nearest_open_time(store: Store) -> None:
    conv = new_call(store)
    reply = talk(conv, "Friday at 7 pm")
    assert (reply.state, reply.prompt_key) == (State.CONFIRMATION, "hours_offer")
    assert "We're open Monday to Friday, 9 am to 5 pm" in reply.text
    assert reply.slots == {"date": "2026-11-20", "time": "16:30"}
    assert talk(conv, "yes").booking is not None


def test_earlier_today_offers_the_next_free_time(store: Store) -> None:
    reply = talk(new_call(store), "today at 9 am")
    assert reply.prompt_key == "past_offer" and reply.slots == {"date": "2026-11-18", "time": "10:30"}


def test_off_the_grid_offers_the_nearest_slot(store: Store) -> None:
    reply = talk(new_call(store), "Friday at 3:15 pm")
    assert reply.prompt_key == "offgrid_offer" and reply.slots["time"] == "15:30"
    assert "every 30 minutes" in reply.text


def test_an_unsaid_meridiem_is_read_against_the_hours(store: Store) -> None:
    assert talk(new_call(store), "Friday at 9").slots["time"] == "09:00"
    evening = DialogSettings(open_hour=17, close_hour=22)
    assert talk(new_call(store, evening), "Friday at 9").slots["time"] == "21:00"


def test_a_taken_slot_offers_the_nearest_free_one(store: Store) -> None:
    store.book(at(20, 15), "CAx", "")
    reply = talk(new_call(store), "Friday at 3 pm")
    assert reply.prompt_key == "taken_offer" and reply.state is State.CONFIRMATION
    assert reply.text.startswith(
        "Sorry, 3 pm is taken. The nearest free time is Friday, November 20th at 3:30 pm.")


def test_the_nearest_free_slot_may_be_earlier(store: Store) -> None:
    for hour, minute in ((15, 0), (15, 30), (16, 0)):
        store.book(at(20, hour, minute), "CAx", "")
    reply = talk(new_call(store), "Friday at 3 pm")
    assert reply.slots["time"] == "14:30"  # 30 minutes before beats 90 minutes after


def test_no_free_slot_asks_for_another_day(store: Store) -> None:
    tiny = DialogSettings(open_hour=9, close_hour=10, slot_minutes=60, open_weekdays=(0, 1, 2, 3, 4, 5, 6))
    tomorrow = datetime(2026, 11, 19, 9, tzinfo=NY)
    for offset in range(40):  # the one daily slot, from tomorrow to well past the search window
        store.book(tomorrow + timedelta(days=offset), "CAx", "")
    reply = talk(new_call(store, tiny), "Friday at 9 am")
    assert (reply.state, reply.prompt_key) == (State.COLLECT_DATE, "no_free")
    assert reply.slots == {"date": None, "time": "09:00"}


# ---------------------------------------------------------------- DTMF


def test_dtmf_1_confirms(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm")
    reply = conv.on_dtmf("1", NOW)
    assert reply.intent is Intent.AFFIRM and reply.state is State.TERMINAL and reply.booking is not None


def test_dtmf_2_changes(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm")
    reply = conv.on_dtmf("2", NOW)
    assert reply.intent is Intent.DENY and (reply.state, reply.prompt_key) == (State.COLLECT_DATE, "change_ask")


def test_dtmf_star_repeats_and_other_keys_are_not_understood(store: Store) -> None:
    conv = new_call(store)
    confirm = talk(conv, "Friday at 3 pm")
    assert conv.on_dtmf("*", NOW).text == confirm.text
    assert conv.on_dtmf("7", NOW).state is State.FALLBACK
    assert conv.on_dtmf("1", NOW).state is State.TERMINAL  # the re-asked question was the confirmation


def test_dtmf_1_outside_confirmation_is_not_a_yes(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "yes")
    assert conv.on_dtmf("1", NOW).state is State.FALLBACK


def test_the_confirmation_mentions_the_keys(store: Store) -> None:
    assert "press 1 to confirm, or 2 to change" in talk(new_call(store), "Friday at 3 pm").text


# ---------------------------------------------------------------- snapshot / restore


def test_snapshot_restore_mid_call(tmp_path) -> None:
    db = str(tmp_path / "v.db")
    first_store = Store(db)
    conv = new_call(first_store)
    talk(conv, "I'd like an appointment", "next friday")
    data = json.loads(json.dumps(conv.snapshot()))  # JSON-safe
    first_store.close()

    second_store = Store(db)  # "another process"
    resumed = Conversation.restore(data, SETTINGS, second_store)
    assert resumed.state is State.COLLECT_TIME and resumed.slots == {"date": "2026-11-27", "time": None}
    assert resumed.call_sid == "CA1" and resumed.caller == "+15551234567"
    assert resumed.repeat_last().text == conv.repeat_last().text
    assert talk(resumed, "10 am").prompt_key == "confirm"
    reply = talk(resumed, "yes")
    assert reply.booking is not None and second_store.list_bookings()[0].call_sid == "CA1"
    again = Conversation.restore(json.loads(json.dumps(resumed.snapshot())), SETTINGS, second_store)
    assert again.booking == reply.booking and again.state is State.TERMINAL
    second_store.close()


def test_restore_keeps_the_retry_count_and_the_question(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm", "hmm")
    resumed = Conversation.restore(conv.snapshot(), SETTINGS, store, call_sid="CA2")
    assert resumed.state is State.FALLBACK and resumed.call_sid == "CA2"
    assert talk(resumed, "yes").state is State.TERMINAL  # still answering the confirmation
    resumed = Conversation.restore(conv.snapshot(), SETTINGS, store)
    talk(resumed, "hmm")
    assert talk(resumed, "hmm").state is State.TERMINAL  # 3rd miss in a row


def test_restore_refuses_an_unknown_version(store: Store) -> None:
    with pytest.raises(ValueError):
        Conversation.restore({"version": 99}, SETTINGS, store)


# ---------------------------------------------------------------- the rest of the surface


def test_on_slots_takes_the_same_path(store: Store) -> None:
    conv = new_call(store)
    reply = conv.on_slots(FRI, THREE, Intent.PROVIDE_BOTH, NOW)
    assert reply.prompt_key == "confirm" and reply.slots == {"date": "2026-11-20", "time": "15:00"}
    reply = conv.on_slots(None, TimeOfDay(16, 0), Intent.CORRECTION, NOW)
    assert reply.slots == {"date": "2026-11-20", "time": "16:00"}
    assert conv.on_slots(None, None, Intent.AFFIRM, NOW).booking is not None


def test_a_slot_intent_without_slots_is_not_understood(store: Store) -> None:
    conv = new_call(store)
    assert conv.on_slots(None, None, Intent.PROVIDE_DATE, NOW).state is State.FALLBACK


def test_repeat_last(store: Store) -> None:
    conv = Conversation(SETTINGS, store)
    assert conv.repeat_last().intent is Intent.REPEAT
    greeting = conv.greet(NOW)
    again = conv.repeat_last()
    assert again.text == greeting.text and again.state is State.GREETING and again.intent is Intent.REPEAT


def test_now_must_be_aware_and_is_read_in_the_business_timezone(store: Store) -> None:
    conv = new_call(store)
    with pytest.raises(ValueError):
        conv.on_user("tomorrow", datetime(2026, 11, 18, 10, 0))
    utc_now = datetime(2026, 11, 19, 3, 0, tzinfo=timezone.utc)  # still the 18th in New York
    assert talk(conv, "tomorrow", now=utc_now).slots["date"] == "2026-11-19"


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        DialogSettings(open_hour=18, close_hour=9)
    with pytest.raises(ValueError):
        DialogSettings(open_weekdays=(7,))
    with pytest.raises(Exception):
        DialogSettings(timezone="Mars/Olympus_Mons")


def test_prompts_are_plain_short_speech() -> None:
    for key, templates in prompts.PROMPTS.items():
        for template in templates:
            assert not re.search(r"https?:|www\.|[<>*#_\[\]{}]", re.sub(r"\{\w+\}", "", template)), key
            assert len(re.findall(r"[.?!](?:\s|$)", template)) <= 3, key


def test_check_names_are_stable() -> None:
    assert {c.value for c in Check} >= {"taken", "race_lost", "gave_up"}


def test_saying_yes_again_after_a_rolled_back_booking_is_the_same_booking(store: Store) -> None:
    conv = new_call(store)
    talk(conv, "Friday at 3 pm")
    before = conv.snapshot()
    first = talk(conv, "yes")
    # The gateway rolls the turn back (the caller barged in) and the caller says yes again.
    conv = Conversation.restore(before, SETTINGS, store)
    again = talk(conv, "yes")
    assert again.state is State.TERMINAL and again.booking == first.booking
    assert len(store.list_bookings()) == 1
    other = Conversation.restore(before, SETTINGS, store, call_sid="CA2")
    assert talk(other, "yes").prompt_key == "race_offer"  # another call still cannot have it
