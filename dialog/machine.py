"""The appointment-booking dialog: one state machine, its transitions written as a table.

A call moves through six states. GREETING asks whether the caller wants an appointment;
COLLECT_DATE and COLLECT_TIME ask for what is missing; CONFIRMATION has a concrete, validated,
free slot on the table and asks yes or no; FALLBACK is where the call is while a question is
being re-asked in other words; TERMINAL is the end (booked, goodbye, or handed off), and every
reply from it hangs up or transfers.

Each caller turn is classified into an `Intent` (offline by `dialog.intents.classify`, or by an
LLM's tool call through `on_slots`) and the next state is looked up in TRANSITIONS, keyed by
(state, intent). Only the pairs written there exist; any other pair is a misunderstanding and goes
to FALLBACK with a re-ask of the current question (DEFAULT below). So there is no code path that
reaches a state the table does not name.

Three rules say how a turn becomes a key, and they are the whole of the machine's logic outside
the tables:

1. Slot turns are keyed by what the call knows after them. A turn carrying a date or a time
   (PROVIDE_*, or a CORRECTION with a new value or naming a slot to change) first updates the
   call's date and time; the key's intent is then PROVIDE_BOTH, PROVIDE_DATE or PROVIDE_TIME for
   what is now known (CORRECTION if a correction cleared everything). That is why corrections work
   in any state with no rows of their own: "actually make it Wednesday" during CONFIRMATION
   replaces the date, keeps the time, and is keyed PROVIDE_BOTH, which leads back to a fresh
   read-back. (`DialogReply.intent` still reports what the caller said, e.g. CORRECTION.)
   In CONFIRMATION, a "yes" that repeats the slot on the table ("yes, Tuesday at 3") is keyed
   AFFIRM.
2. FALLBACK has no rows: the turn after a re-ask answers the question that was re-asked, so it
   is looked up as the state that asked it (`_resume`). Consecutive misunderstandings (FALLBACK
   entries, provider failures) are counted; one more than `max_retries` ends the call politely
   (CHECKS[GAVE_UP]: a transfer when a transfer number is set, else a hang-up).
3. Two rows have guards, because the calendar and the store must agree before they are taken.
   A row into CONFIRMATION (a read-back) first validates the slot: a past date, a closed day,
   outside hours, in the past, off the slot grid, or already taken each divert to the row of
   CHECKS, which mostly offers the nearest free slot (a yes/no question, so the call stays in
   CONFIRMATION with the offer as the slot on the table). A row into COLLECT_TIME validates the
   date alone. (CONFIRMATION, AFFIRM) books through the store; if a racing call took the slot
   meanwhile, the INSERT fails and CHECKS[RACE_LOST] offers the nearest free one instead; if the
   store cannot save it (locked, read-only, disk full), CHECKS[STORE_FAILED] tells the caller so and
   offers to try again (the slot stays on the table: a yes books it once the store takes writes).
   A store that cannot be read is taken to have the slot free: the booking itself is the check.

A yes or no while the agent asks for a day or a time answers a question it did not ask (the
caller expected a read-back that never came, "Yes, that's all correct"): the agent says in one
sentence what it still needs (need_date / need_time), counted as a misunderstanding like any re-ask,
so it cannot loop. The question being answered goes to the classifier as context
(`dialog.slots.Question`): after "What time?" a bare "230" is a time. Half an answer completes what
the call holds: "...of December" moves the held day into December, "...in the afternoon" puts
the held time in the afternoon.

REPEAT replays the last reply without counting as a misunderstanding. DTMF during CONFIRMATION
maps 1 to AFFIRM and 2 to DENY; "*" is REPEAT anywhere.

Time always comes in as `now` (aware; converted to the business's timezone here); nothing reads a
clock. `snapshot()` is JSON-safe and `restore()` resumes a call in another process.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time as clock, timedelta
from typing import Any, Mapping

from dialog import languages, prompts
from dialog.intents import SLOT_INTENTS, Intent, ParsedTurn, classify
from dialog.schedule import (
    SEARCH_DAYS, DialogSettings, is_open_day, nearest_slot, on_grid, slot_start, within_hours,
)
from dialog.slots import Question, TimeOfDay
from dialog.store import Booking, BookingStore, StoreUnavailable

__all__ = ["CHECKS", "Check", "Conversation", "DialogReply", "DialogSettings", "Intent", "State",
           "TRANSITIONS", "TimeOfDay", "next_steps"]


class State(enum.Enum):
    GREETING = "greeting"
    COLLECT_DATE = "collect_date"
    COLLECT_TIME = "collect_time"
    CONFIRMATION = "confirmation"
    FALLBACK = "fallback"
    TERMINAL = "terminal"


class Check(enum.Enum):
    """Outcomes of the guards on rows into COLLECT_TIME / CONFIRMATION and of booking."""

    PAST_DATE = "past_date"
    CLOSED_DAY = "closed_day"  # a closed day, no time yet: ask for another day
    CLOSED_OFFER = "closed_offer"  # a closed day with a time: offer the nearest open slot
    OUTSIDE_HOURS = "outside_hours"
    PAST_TIME = "past_time"
    OFF_GRID = "off_grid"
    TAKEN = "taken"
    NO_FREE = "no_free"
    RACE_LOST = "race_lost"
    GAVE_UP = "gave_up"
    GAVE_UP_TRANSFER = "gave_up_transfer"
    STORE_FAILED = "store_failed"  # the booking could not be saved: nothing was booked


ASKING = (State.GREETING, State.COLLECT_DATE, State.COLLECT_TIME, State.CONFIRMATION)
# What each asking state's question is, for reading a bare answer ("230", "the 16th") in context.
QUESTIONS = {State.GREETING: Question.BOOK, State.COLLECT_DATE: Question.DATE,
             State.COLLECT_TIME: Question.TIME, State.CONFIRMATION: Question.CONFIRM}
REASK = {State.GREETING: "reask_greeting", State.COLLECT_DATE: "reask_date", State.COLLECT_TIME: "reask_time",
         State.CONFIRMATION: "reask_confirm"}

TRANSITIONS: dict[tuple[State, Intent], tuple[State, str]] = {
    (State.GREETING, Intent.BOOK): (State.COLLECT_DATE, "ask_date"),
    (State.GREETING, Intent.AFFIRM): (State.COLLECT_DATE, "ask_date"),
    (State.GREETING, Intent.DENY): (State.TERMINAL, "goodbye"),
    # CORRECTION rows: a correction that left nothing known ("change the date" with only a date).
    (State.GREETING, Intent.CORRECTION): (State.COLLECT_DATE, "ask_date"),
    (State.COLLECT_DATE, Intent.BOOK): (State.COLLECT_DATE, "ask_date"),
    (State.COLLECT_DATE, Intent.CORRECTION): (State.COLLECT_DATE, "ask_date"),
    (State.COLLECT_TIME, Intent.BOOK): (State.COLLECT_TIME, "ask_time"),
    (State.COLLECT_TIME, Intent.CORRECTION): (State.COLLECT_DATE, "ask_date"),
    # A yes/no to a question not asked: say what is still needed (a re-ask, so it counts).
    (State.COLLECT_DATE, Intent.AFFIRM): (State.FALLBACK, "need_date"),
    (State.COLLECT_DATE, Intent.DENY): (State.FALLBACK, "need_date"),
    (State.COLLECT_TIME, Intent.AFFIRM): (State.FALLBACK, "need_time"),
    (State.COLLECT_TIME, Intent.DENY): (State.FALLBACK, "need_time"),
    (State.CONFIRMATION, Intent.AFFIRM): (State.TERMINAL, "booked"),  # guarded: books through the store
    (State.CONFIRMATION, Intent.DENY): (State.COLLECT_DATE, "change_ask"),  # keeps the slots as defaults
    (State.CONFIRMATION, Intent.BOOK): (State.CONFIRMATION, "confirm"),
    (State.CONFIRMATION, Intent.CORRECTION): (State.COLLECT_DATE, "ask_date"),
    # Slot turns (keyed by what the call now knows, rule 1) lead to the same place from anywhere.
    **{(s, Intent.PROVIDE_DATE): (State.COLLECT_TIME, "ask_time") for s in ASKING},  # guarded: date check
    **{(s, Intent.PROVIDE_TIME): (State.COLLECT_DATE, "ask_date_for_time") for s in ASKING},
    **{(s, Intent.PROVIDE_BOTH): (State.CONFIRMATION, "confirm") for s in ASKING},  # guarded: slot check
    **{(s, Intent.REPEAT): (s, "repeat") for s in ASKING},
    **{(s, Intent.GOODBYE): (State.TERMINAL, "goodbye") for s in ASKING},
    **{(s, Intent.UNKNOWN): (State.FALLBACK, REASK[s]) for s in ASKING},
    **{(State.TERMINAL, i): (State.TERMINAL, "ended") for i in Intent},
}
# Every other (state, intent) pair: a misunderstanding, re-asked in other words.
DEFAULT: dict[State, tuple[State, str]] = {s: (State.FALLBACK, REASK[s]) for s in ASKING}


def next_steps(state: State) -> tuple[Intent, ...]:
    """What a caller can do from `state` that the table answers (a row not into FALLBACK), in the
    order of `Intent`: an LLM's prompt lists them as the allowed next steps. None after the end."""
    if state is State.TERMINAL:
        return ()
    return tuple(i for i in Intent if (state, i) in TRANSITIONS and TRANSITIONS[state, i][0] is not State.FALLBACK)


CHECKS: dict[Check, tuple[State, str]] = {
    Check.PAST_DATE: (State.COLLECT_DATE, "past_date"),
    Check.CLOSED_DAY: (State.COLLECT_DATE, "closed_day"),
    Check.CLOSED_OFFER: (State.CONFIRMATION, "closed_offer"),
    Check.OUTSIDE_HOURS: (State.CONFIRMATION, "hours_offer"),
    Check.PAST_TIME: (State.CONFIRMATION, "past_offer"),
    Check.OFF_GRID: (State.CONFIRMATION, "offgrid_offer"),
    Check.TAKEN: (State.CONFIRMATION, "taken_offer"),
    Check.NO_FREE: (State.COLLECT_DATE, "no_free"),
    Check.RACE_LOST: (State.CONFIRMATION, "race_offer"),
    Check.GAVE_UP: (State.TERMINAL, "handoff"),
    Check.GAVE_UP_TRANSFER: (State.TERMINAL, "transfer"),
    Check.STORE_FAILED: (State.CONFIRMATION, "store_failed"),
}

_DTMF = {"1": Intent.AFFIRM, "2": Intent.DENY}
SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class DialogReply:
    text: str  # what the agent says: plain spoken English, 1-3 short sentences
    state: State  # the state after this turn
    intent: Intent  # what the caller's turn was understood as
    prompt_key: str  # the template used, stable (for cached/quick responses)
    hang_up: bool = False
    transfer_to: str = ""
    booking: Booking | None = None  # set on the turn that booked
    slots: dict = field(default_factory=dict)  # {"date": "2026-12-08" | None, "time": "15:00" | None}


class _Fields(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return ""


class Conversation:
    def __init__(self, settings: DialogSettings, store: BookingStore | None, call_sid: str = "",
                 caller: str = "", lost_context: bool = False) -> None:
        self.settings = settings
        self.store = store
        self.call_sid = call_sid
        self.caller = caller
        # A cut-off call came back but its context could not be found: the greeting says so, once.
        self._lost_context = lost_context
        self._handover = False  # restored from a planned hand-over (a deploy): resume without an apology
        self._state = State.GREETING
        self._resume = State.GREETING  # the state whose question FALLBACK is re-asking
        self._date: date | None = None
        self._time: TimeOfDay | None = None
        self._asked: datetime | None = None  # what the caller asked for, when an offer replaces it
        self._retries = 0  # consecutive misunderstandings
        self._booking: Booking | None = None
        self._last: DialogReply | None = None
        self._streak = 0  # how many times in a row the last prompt key was used: picks its variant
        # The call's language (dialog.languages): its prompts, dates, times and hours are said in it.
        self.language = "en"

    # ------------------------------------------------------------ public surface

    @property
    def state(self) -> State:
        return self._state

    @property
    def slots(self) -> dict[str, str | None]:
        return {"date": self._date.isoformat() if self._date else None,
                "time": self._time.hhmm() if self._time else None}

    @property
    def booking(self) -> Booking | None:
        return self._booking

    @property
    def asking(self) -> State | None:
        """The state whose question the caller is answering (FALLBACK re-asks another's); None once
        the call has ended."""
        if self._state is State.TERMINAL:
            return None
        return self._resume if self._state is State.FALLBACK else self._state

    def question(self, now: datetime) -> str:
        """The question waiting for an answer, in its plain words: an LLM asked to answer an
        off-script turn ends with it, so the call moves on."""
        at = self.asking or State.GREETING
        return prompts.question(at.value, self._fields(self._local(now)), self.language)

    def greet(self, now: datetime) -> DialogReply:
        now = self._local(now)
        self._state = self._resume = State.GREETING
        key = "greet_lost" if self._lost_context else "greet"
        self._lost_context = False
        return self._reply(key, Intent.UNKNOWN, now)

    def on_user(self, text: str, now: datetime) -> DialogReply:
        now = self._local(now)
        at = self._resume if self._state is State.FALLBACK else self._state
        return self._step(classify(text, now, QUESTIONS.get(at)), now)

    def on_dtmf(self, digit: str, now: datetime) -> DialogReply:
        now = self._local(now)
        at = self._resume if self._state is State.FALLBACK else self._state
        if digit == "*":
            intent = Intent.REPEAT
        elif at is State.CONFIRMATION and digit in _DTMF:
            intent = _DTMF[digit]
        else:
            intent = Intent.UNKNOWN
        return self._step(ParsedTurn(intent), now)

    def on_slots(self, date: date | None, time: TimeOfDay | None, intent: Intent, now: datetime) -> DialogReply:
        """The same transition path, fed by an LLM's tool call instead of the offline extractor."""
        now = self._local(now)
        return self._step(ParsedTurn(intent, date, time), now)

    def on_failure(self, now: datetime) -> DialogReply:
        """A provider failed: apologise and re-ask the current question; counts as a misunderstanding."""
        now = self._local(now)
        if self._state is State.TERMINAL:
            return self._step(ParsedTurn(Intent.UNKNOWN), now)
        self._retries += 1
        if self._retries > self.settings.max_retries:
            return self._give_up(Intent.UNKNOWN, now)
        return self._reply("failure", Intent.UNKNOWN, now)

    def on_resume(self, now: datetime) -> DialogReply:
        """The call was cut off and is back (a new stream for the same call): pick up the question
        where it was. Not a misunderstanding: the retry count is untouched."""
        now = self._local(now)
        planned, self._handover = self._handover, False
        if self._state is State.TERMINAL:
            return self._reply("ended", Intent.UNKNOWN, now)
        # A planned hand-over (a deploy) happened at a quiet moment: no apology, just the question.
        return self._reply("handover" if planned else "resume", Intent.UNKNOWN, now)

    def repeat_last(self) -> DialogReply:
        if self._last is None:
            return DialogReply(prompts.question(self._state.value, self._fields(None), self.language), self._state,
                               Intent.REPEAT, "question", slots=self.slots)
        return replace(self._last, state=self._state, intent=Intent.REPEAT, booking=None)

    # ------------------------------------------------------------ the step

    def _step(self, turn: ParsedTurn, now: datetime) -> DialogReply:
        at = self._resume if self._state is State.FALLBACK else self._state
        key_intent = turn.intent
        if turn.intent in SLOT_INTENTS:
            key_intent = self._take_slots(turn, at, now)
            if key_intent is Intent.UNKNOWN:  # nothing it said could be used: not understood
                turn = replace(turn, intent=Intent.UNKNOWN)
        next_state, key = TRANSITIONS.get((at, key_intent), DEFAULT.get(at, (State.FALLBACK, "reask_greeting")))

        if next_state is State.FALLBACK:
            self._retries += 1
            if self._retries > self.settings.max_retries:
                return self._give_up(turn.intent, now)
            self._resume = at
            key = self._reask_key(key, turn, at)
        elif key_intent is not Intent.REPEAT:
            self._retries = 0

        booking = None
        if next_state is State.COLLECT_TIME:
            next_state, key = self._check_date(next_state, key, now)
        elif next_state is State.CONFIRMATION and key == "confirm":
            next_state, key = self._check_slot(now)
        elif key == "booked":
            next_state, key, booking = self._book(now)
        self._state = next_state
        if next_state is State.TERMINAL and key == "ended" and self._last is not None:
            return replace(self._last, intent=turn.intent, prompt_key="ended", booking=None,
                           text=prompts.render("ended", self._fields(now), language=self.language))
        return self._reply(key, turn.intent, now, booking=booking,
                           acknowledge=turn.intent is Intent.CORRECTION and key == "confirm")

    def _take_slots(self, turn: ParsedTurn, at: State, now: datetime) -> Intent:
        """Rule 1: merge the turn's slots into the call's and key the turn by what is now known."""
        completed_date = self._in_month(turn.month, now) if turn.date is None else None
        completed_time = self._in_half_of_day(turn.meridiem) if turn.time is None else None
        if (turn.date is None and turn.time is None and not turn.clear
                and completed_date is None and completed_time is None):
            return Intent.UNKNOWN  # a slot intent with no usable slot in it was not understood
        new_date = None if "date" in turn.clear else self._date
        new_time = None if "time" in turn.clear else self._time
        new_date = turn.date or completed_date or new_date
        new_time = turn.time or completed_time or new_time
        repeats_the_offer = new_date == self._date and _same_clock(new_time, self._time)
        if at is State.CONFIRMATION and turn.affirm and repeats_the_offer:
            return Intent.AFFIRM
        self._date, self._time = new_date, new_time
        self._asked = None
        if new_date and new_time:
            return Intent.PROVIDE_BOTH
        if new_date:
            return Intent.PROVIDE_DATE
        if new_time:
            return Intent.PROVIDE_TIME
        return Intent.CORRECTION

    def _in_month(self, month: int | None, now: datetime) -> date | None:
        """The held day of the month in `month` ("...of December"), this year or, if past, next."""
        if month is None or self._date is None:
            return None
        for year in (now.year, now.year + 1):
            try:
                candidate = date(year, month, self._date.day)
            except ValueError:  # the 31st of a 30-day month: not a day to guess
                return None
            if candidate >= now.date():
                return candidate
        return None

    def _in_half_of_day(self, meridiem: str | None) -> TimeOfDay | None:
        """The held time in the morning or afternoon the caller named ("...in the afternoon")."""
        if meridiem is None or self._time is None:
            return None
        return TimeOfDay(self._time.hour % 12 + (12 if meridiem == "pm" else 0), self._time.minute)

    def _reask_key(self, key: str, turn: ParsedTurn, at: State) -> str:
        if at in (State.GREETING, State.COLLECT_DATE) and turn.vague_date:
            return "vague_date"
        if at in (State.COLLECT_TIME, State.CONFIRMATION) and turn.vague_time:
            return "vague_time"
        if turn.invalid_date:
            return "invalid_date"
        if turn.invalid_time:
            return "invalid_time"
        return key

    def _give_up(self, intent: Intent, now: datetime) -> DialogReply:
        check = Check.GAVE_UP_TRANSFER if self.settings.transfer_number else Check.GAVE_UP
        self._state, key = CHECKS[check]
        return self._reply(key, intent, now)

    # ------------------------------------------------------------ guards

    def _check_date(self, next_state: State, key: str, now: datetime) -> tuple[State, str]:
        assert self._date is not None
        if self._date < now.date():
            self._date = None
            return CHECKS[Check.PAST_DATE]
        if not is_open_day(self._date, self.settings):
            self._asked = slot_start(self._date, clock(self.settings.open_hour), self.settings)
            self._date = None
            return CHECKS[Check.CLOSED_DAY]
        return next_state, key

    def _check_slot(self, now: datetime) -> tuple[State, str]:
        assert self._date is not None and self._time is not None
        self._time = self._resolve_meridiem(self._date, self._time)
        if self._date < now.date():
            self._date = None
            return CHECKS[Check.PAST_DATE]
        start = self._start()
        if not is_open_day(self._date, self.settings):
            problem = Check.CLOSED_OFFER
        elif not within_hours(start, self.settings):
            problem = Check.OUTSIDE_HOURS
        elif start <= now:
            problem = Check.PAST_TIME
        elif not on_grid(start, self.settings):
            problem = Check.OFF_GRID
        elif not self._free(start):
            problem = Check.TAKEN
        else:
            return State.CONFIRMATION, "confirm"
        return self._offer(start, problem, now)

    def _offer(self, start: datetime, problem: Check, now: datetime) -> tuple[State, str]:
        offer = self._same_time_other_day(start, now) if problem is Check.CLOSED_OFFER else None
        offer = offer or self._nearest_free(start, now)
        self._asked = start
        if offer is None:
            self._date = None
            return CHECKS[Check.NO_FREE]
        self._date, self._time = offer.date(), TimeOfDay(offer.hour, offer.minute)
        return CHECKS[problem]

    def _book(self, now: datetime) -> tuple[State, str, Booking | None]:
        start = self._start()
        if start <= now or not within_hours(start, self.settings):  # the offer went stale on hold
            return (*self._offer(start, Check.PAST_TIME, now), None)
        if self.store is None:  # nothing to book against: the booking lives in the reply only
            booking: Booking | None = Booking(0, start, self.call_sid, self.caller, now)
        else:
            try:
                booking = self.store.book(start, self.call_sid, self.caller, created_at=now)
                if booking is None and self.call_sid:
                    # This call's own booking, from a turn that was rolled back after it booked (the
                    # caller barged in on the read-back): saying yes again is the same booking.
                    mine = self.store.booking_at(start)
                    booking = mine if mine is not None and mine.call_sid == self.call_sid else None
            except StoreUnavailable:  # not saved (the store logs it with the call sid): say so
                return (*CHECKS[Check.STORE_FAILED], None)
        if booking is None:  # a racing call took it between the read-back and the yes
            return (*self._offer(start, Check.RACE_LOST, now), None)
        self._booking = booking
        return State.TERMINAL, "booked", booking

    def _same_time_other_day(self, start: datetime, now: datetime) -> datetime | None:
        """For a closed day: the same time on the nearest open day (later first on a tie), if free.
        "Sunday at 10" is better answered with Monday at 10 than with Friday at 4:30 pm."""
        for days in range(1, SEARCH_DAYS + 1):
            for sign in (1, -1):
                day = start.date() + timedelta(days=sign * days)
                candidate = slot_start(day, clock(start.hour, start.minute), self.settings)
                if (candidate > now and within_hours(candidate, self.settings)
                        and on_grid(candidate, self.settings) and self._free(candidate)):
                    return candidate
        return None

    def _free(self, start: datetime) -> bool:
        """Free as far as the store knows; a store that cannot be read is taken to say yes (the
        booking INSERT is the real check, and its failure is told to the caller)."""
        if self.store is None:
            return True
        try:
            return self.store.is_free(start)
        except StoreUnavailable:
            return True

    def _nearest_free(self, start: datetime, now: datetime) -> datetime | None:
        if self.store is not None:
            try:
                return self.store.nearest_free(start, self.settings, now)
            except StoreUnavailable:
                pass
        return nearest_slot(start, self.settings, (), now)

    def _resolve_meridiem(self, day: date, t: TimeOfDay) -> TimeOfDay:
        """"At 3" was read as 3 pm by default; if only the other half of the day is open, take it."""
        if not t.ambiguous_meridiem:
            return t
        other = t.flipped()
        if (not within_hours(slot_start(day, _clock(t), self.settings), self.settings)
                and within_hours(slot_start(day, _clock(other), self.settings), self.settings)):
            return other
        return t

    def _start(self) -> datetime:
        assert self._date is not None and self._time is not None
        return slot_start(self._date, _clock(self._time), self.settings)

    # ------------------------------------------------------------ replies

    def _local(self, now: datetime) -> datetime:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        return now.astimezone(self.settings.tz)

    def _fields(self, now: datetime | None) -> _Fields:
        today = now.date() if now else None
        settings = self.settings
        lang = self.language
        f = _Fields(business=settings.business_name, hours=languages.say_hours(settings, lang),
                    days=languages.say_days(settings, lang),
                    grid=languages.say_grid(settings.slot_minutes, lang))
        if self._date:
            f["date"] = languages.say_date(self._date, today, lang)
        if self._time:
            f["time"] = languages.say_time(self._time.hour, self._time.minute, lang)
        if self._date and self._time:
            f["when"] = f["offer"] = languages.say_when(self._start(), today, lang)
        if self._asked is not None:
            f["closed"] = languages.say_weekday_plural(self._asked.weekday(), lang)
            same_day = self._date == self._asked.date()
            f["asked"] = (languages.say_time(self._asked.hour, self._asked.minute, lang) if same_day
                          else languages.say_when(self._asked, today, lang))
        return f

    def _reply(self, key: str, intent: Intent, now: datetime, booking: Booking | None = None,
               acknowledge: bool = False) -> DialogReply:
        fields = self._fields(now)
        if key == "repeat":
            if self._last is not None:
                return replace(self._last, state=self._state, intent=intent, booking=None)
            key = "greet"
        same = self._last is not None and self._last.prompt_key == key
        self._streak = self._streak + 1 if same else 0
        variant = self._streak
        if key in ("failure", "resume", "handover"):  # an apology (or none), then the question being answered
            at = self._resume if self._state is State.FALLBACK else self._state
            text = (prompts.render(key, fields, language=self.language) + " "
                    + prompts.question(at.value, fields, self.language)).strip()
        else:
            text = prompts.render(key, fields, variant, self.language)
        if acknowledge:
            text = prompts.render("correction_ack", fields, language=self.language) + " " + text
        terminal = self._state is State.TERMINAL
        transfer = self.settings.transfer_number if key == "transfer" else ""
        reply = DialogReply(text, self._state, intent, key, hang_up=terminal and not transfer,
                            transfer_to=transfer, booking=booking, slots=self.slots)
        self._last = reply
        return reply

    # ------------------------------------------------------------ resuming elsewhere

    def snapshot(self) -> dict[str, Any]:
        last = self._last
        return {
            "version": SNAPSHOT_VERSION,
            "state": self._state.value,
            "resume": self._resume.value,
            "date": self._date.isoformat() if self._date else None,
            "time": self._time.hhmm() if self._time else None,
            "time_ambiguous": bool(self._time and self._time.ambiguous_meridiem),
            "asked": self._asked.isoformat() if self._asked else None,
            "retries": self._retries,
            "streak": self._streak,
            "booking": self._booking.to_dict() if self._booking else None,
            "call_sid": self.call_sid,
            "caller": self.caller,
            "language": self.language,
            "last": None if last is None else {
                "text": last.text, "state": last.state.value, "intent": last.intent.value,
                "prompt_key": last.prompt_key, "hang_up": last.hang_up, "transfer_to": last.transfer_to},
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any], settings: DialogSettings, store: BookingStore | None,
                call_sid: str | None = None, caller: str | None = None) -> "Conversation":
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown dialog snapshot version {data.get('version')!r}")
        conv = cls(settings, store, data.get("call_sid", "") if call_sid is None else call_sid,
                   data.get("caller", "") if caller is None else caller)
        conv._state = State(data["state"])
        conv._resume = State(data["resume"])
        conv._date = date.fromisoformat(data["date"]) if data.get("date") else None
        if data.get("time"):
            conv._time = TimeOfDay.from_hhmm(data["time"], bool(data.get("time_ambiguous")))
        conv._asked = datetime.fromisoformat(data["asked"]) if data.get("asked") else None
        conv._retries = int(data.get("retries", 0))
        conv._streak = int(data.get("streak", 0))
        conv._booking = Booking.from_dict(data["booking"]) if data.get("booking") else None
        conv.language = str(data.get("language") or "en")
        conv._handover = data.get("handover") == "planned"  # set by the gateway on a planned hand-over
        last = data.get("last")
        if last:
            conv._last = DialogReply(last["text"], State(last["state"]), Intent(last["intent"]),
                                     last["prompt_key"], bool(last["hang_up"]), last["transfer_to"],
                                     slots=conv.slots)
        return conv


def _clock(t: TimeOfDay) -> clock:
    return clock(t.hour, t.minute)


def _same_clock(a: TimeOfDay | None, b: TimeOfDay | None) -> bool:
    """Same hour and minute, however sure the caller was of am/pm ("at 3" repeats "3 pm")."""
    return (a is None and b is None) or (a is not None and b is not None and _clock(a) == _clock(b))
