"""Property tests: no caller text breaks the extractor, the classifier or the machine, and the
machine only ever stands in states the tables name."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from dialog.intents import classify
from dialog.machine import CHECKS, TRANSITIONS, Conversation, DialogSettings, State
from dialog.slots import extract, extract_time
from dialog.store import Store

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 18, 10, 0, tzinfo=NY)
SETTINGS = DialogSettings()
# Where a call can be: where it starts, every state a table row leads to, and FALLBACK.
REACHABLE = ({State.GREETING, State.FALLBACK} | {s for s, _ in TRANSITIONS.values()}
             | {s for s, _ in CHECKS.values()})

PHRASES = [
    "yes", "no", "next Tuesday at 3", "actually make it Wednesday", "no, 4 pm", "what?", "goodbye",
    "I'd like to book", "the 32nd", "25:00", "Saturday at 10", "half past two", "change the time",
    "a different day", "tomorrow", "in two weeks", "3", "yesterday at 3", "today at 9", "Friday at 7 pm",
    "12/5 at 3:15", "February 30th", "next week", "that's all", "sure, Friday at 4", "hmm",
]
# Text built from pieces that look like what callers say, plus arbitrary unicode.
caller_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(PHRASES + ["at", "the", "pm", "am", ":", "/", "-", "oh", "thirty", "first", "of",
                                        "December", "May", "past", "quarter", "to", "12", "99", "0", "."]),
             max_size=12).map(" ".join),
)
event = st.one_of(
    st.tuples(st.just("text"), caller_text),
    st.tuples(st.just("dtmf"), st.sampled_from(list("0123456789*#") + ["", "11"])),
    st.tuples(st.just("fail"), st.just("")),
    st.tuples(st.just("repeat"), st.just("")),
)


@settings(max_examples=300, deadline=None)
@given(caller_text, st.integers(min_value=0, max_value=800))
def test_extraction_never_raises(text: str, days: int) -> None:
    now = NOW + timedelta(days=days, hours=days % 13)
    slots = extract(text, now)
    assert slots.date is None or slots.date.year >= now.year - 1
    extract_time(text)
    classify(text, now)


@settings(max_examples=150, deadline=None)
@given(st.lists(event, max_size=12), st.booleans(), st.integers(min_value=0, max_value=3))
def test_random_calls_stay_in_the_table(events: list[tuple[str, str]], with_store: bool, retries: int) -> None:
    store = Store(":memory:") if with_store else None
    try:
        conv = Conversation(DialogSettings(max_retries=retries), store, "CA1", "+1555")
        conv.greet(NOW)
        now = NOW
        for kind, value in events:
            now += timedelta(seconds=7)
            if kind == "text":
                reply = conv.on_user(value, now)
            elif kind == "dtmf":
                reply = conv.on_dtmf(value, now)
            elif kind == "fail":
                reply = conv.on_failure(now)
            else:
                reply = conv.repeat_last()
            assert conv.state in REACHABLE and reply.state is conv.state
            assert reply.text and len(reply.text) < 300
            assert reply.hang_up or reply.transfer_to or conv.state is not State.TERMINAL
            data = json.loads(json.dumps(conv.snapshot()))
            assert Conversation.restore(data, SETTINGS, store).snapshot() == data
        if store is not None:
            assert len(store.list_bookings()) <= 1
    finally:
        if store is not None:
            store.close()
