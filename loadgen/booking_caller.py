"""A person who rings to book one appointment slot: the caller of the booking success benchmark.

`bench/booking_success.py` places real-time calls through the gateway (`loadgen.simcaller.run_call`
with its `next_turn` hook); after each of the agent's replies has played out, it reads the agent's
words from the stored transcript and asks `BookingCaller.respond` what the person says next. This
module is pure: text in, the next line out. It never sees the dialog's state, only the agent's words,
as a caller would.

The policy, per call (`plan_calls` draws it, seeded):

- **A slot it wants** (`Persona.target`): an open weekday 1-13 days ahead, a time on the business's
  30-minute grid within its hours (`dialog.schedule`, the published calendar), different for every
  call of a run, so no call is offered another time because a benchmark call took its slot.
- **How it opens** (answering "Would you like to book an appointment?"): a plain yes ("Yes, I'd like
  to book an appointment, please."), or straight away with the day, or with the day and the time.
- **How it answers** "What day?": the day and the time in one breath (`both`), the day alone and the
  time when asked (`split`), or the time first (`time_first`: "Could I get something at two thirty?",
  then the day when the agent asks for it).
- **A change of mind** (`Persona.decoy`, about a quarter of the calls): the first time it gives the
  day (or the time) it gives another one, and when the agent reads the slot back it corrects it
  ("Actually, make it Thursday.", "Can we do three thirty instead?").
- **Phrasing**: every day and time is said in words, drawn from the ways people say them and that mean
  the target with no doubt on the day of the call: "tomorrow", "the day after tomorrow", the weekday
  (within six days), "this Friday" (later this week), "next Monday" (a weekday already past this
  week), "Tuesday next week", "a week from today", "the sixteenth", "the sixteenth of
  December", "December sixteenth", "Wednesday the sixteenth"...; "three p.m.", "three in the
  afternoon", "three o'clock", "at three", "two thirty", "half past two", "two thirty p.m.", "fourteen
  thirty", "noon", "midday", "half past twelve"... A form whose meaning depends on a convention ("next
  Tuesday" said on a Monday, "Friday after next") is not used. Each time it says a day or a time it
  takes the next phrasing from its own shuffled list, so a re-asked question gets other words.
- **Reacting to the agent's words** (`hear`): a goodbye ends the call (the agent hangs up). A day and
  time put as a yes/no question (a read-back, or an offer of another time) gets a yes if it is the
  slot it wants, else a correction of what differs ("No, I said half past two."). It accepts an offer
  only if it is the slot it wants. A question for the day, the time, or both gets that; if the agent
  states a day or time it holds that is not what the caller said ("Great, Tuesday, December 8th. What
  time works for you?" when it said the 9th), the answer carries both, the wrong one corrected. "Would
  you like to book an appointment?" gets the opening (again, in other words). Anything else (words it
  cannot place, or no reply at all to its last line) gets the whole request restated: "I'd like to book
  Tuesday at half past two, please."
- It hangs up after `MAX_LINES` lines without a booking (counted as a failed call).

A Persona may speak in `allison` words: Allison Smith's recorded prompt words (loadgen.recordings:
weekdays, one to twelve, "at", "a.m.", "p.m.", "o'clock", "today", "tomorrow"), so its days are weekdays
within six days or tomorrow and its times on the hour. `Line.in_words(RECORDED_WORDS)` says whether a line
can be composed from them; the benchmark speaks the others in a synthetic voice.

Each `Line` carries what it means (`day`, `time`, `intent`: what a model would record through the
dialog's `record_booking_details` tool), for the benchmark's emulated model in LLM mode.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Iterable, Sequence

from dialog.schedule import DialogSettings, is_open_day, slots_on

__all__ = ["BookingCaller", "Heard", "Line", "MAX_LINES", "Persona", "RECORDED_WORDS", "Slot", "day_phrases",
           "hear", "plan_calls", "time_phrases"]

MAX_LINES = 10  # a person gives up after this many lines without a booking (4 is a normal call)
DAYS_AHEAD = (1, 13)  # the target's day: tomorrow to within two weeks (the dialog offers within 14 days)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
HOURS = ("twelve", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven")
_ORD_UNITS = ("", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth")
_ORD_SPECIAL = {10: "tenth", 11: "eleventh", 12: "twelfth", 13: "thirteenth", 14: "fourteenth", 15: "fifteenth",
                16: "sixteenth", 17: "seventeenth", 18: "eighteenth", 19: "nineteenth", 20: "twentieth",
                30: "thirtieth"}
# The words Allison Smith's recordings hold (loadgen.recordings `word_*` clips), as a line spells them.
RECORDED_WORDS = frozenset([w.lower() for w in WEEKDAYS] + list(HOURS) + ["at", "a.m.", "p.m.", "o'clock",
                                                                          "today", "tomorrow"])


def ordinal(n: int) -> str:
    """21 -> "twenty-first"."""
    if n in _ORD_SPECIAL:
        return _ORD_SPECIAL[n]
    tens, unit = divmod(n, 10)
    return ("twenty-" if tens == 2 else "thirty-" if tens == 3 else "") + _ORD_UNITS[unit]


@dataclass(frozen=True, order=True)
class Slot:
    day: date
    hour: int
    minute: int

    @property
    def time(self) -> tuple[int, int]:
        return (self.hour, self.minute)

    def iso(self) -> str:
        return f"{self.day.isoformat()} {self.hour:02d}:{self.minute:02d}"

    def __str__(self) -> str:
        return f"{WEEKDAYS[self.day.weekday()]} {self.iso()}"


@dataclass(frozen=True)
class Persona:
    call: int
    target: Slot
    voice: str
    opening: str = "plain"  # plain | day | both
    answer: str = "split"  # both | split | time_first
    decoy: Slot | None = None  # said first, then corrected at the read-back; differs in the day or the time
    words: str = "free"  # free | allison (only the recorded words for days and times)
    seed: int = 0

    def to_json(self) -> dict:
        return {"call": self.call, "target": self.target.iso(), "voice": self.voice, "opening": self.opening,
                "answer": self.answer, "decoy": self.decoy.iso() if self.decoy else None, "words": self.words}


@dataclass(frozen=True)
class Line:
    text: str
    kind: str  # opening | day | time | both | yes | correction | restate
    intent: str  # what a model would record: book, provide_date, provide_time, provide_both, affirm, correction
    day: date | None = None
    time: tuple[int, int] | None = None

    def in_words(self, vocabulary: Iterable[str]) -> bool:
        """Every word of the line is in `vocabulary` (lower case; "a.m." keeps its dots)."""
        words = set(vocabulary)
        return all(w in words or w.rstrip(".?!") in words for w in self.text.lower().replace(",", "").split())

    def tool_arguments(self) -> dict:
        """The `record_booking_details` call a model that understood this line would make."""
        return {"date": self.day.isoformat() if self.day else None,
                "time": f"{self.time[0]:02d}:{self.time[1]:02d}" if self.time else None, "intent": self.intent}


# ---------------------------------------------------------------- how a day and a time are said


@dataclass(frozen=True)
class Said:
    bare: str  # "the sixteenth", "tomorrow"
    on: str  # after a verb: "on the sixteenth", "tomorrow"


def day_phrases(day: date, today: date, words: str = "free") -> list[Said]:
    """Ways to say `day` that mean it and nothing else when said on `today`."""
    delta = (day - today).days
    wd, wd_today = day.weekday(), today.weekday()
    name = WEEKDAYS[wd]
    out: list[Said] = []
    if delta == 1:
        out.append(Said("tomorrow", "tomorrow"))
    if 1 <= delta <= 6:
        out.append(Said(name, f"on {name}"))
    if words == "allison":
        return out
    if delta == 2:
        out.append(Said("the day after tomorrow", "the day after tomorrow"))
    if 1 <= delta <= 6 and wd > wd_today:
        out.append(Said(f"this {name}", f"this {name}"))
    # "next Monday" on a Thursday: this week's Monday has passed, so it can only be the coming one.
    # Never on a Sunday, the first day of the week for some and the last for others.
    if 2 <= delta <= 6 and wd < wd_today and wd_today != 6:
        out.append(Said(f"next {name}", f"next {name}"))
    next_monday = today + timedelta(days=7 - wd_today)
    # Not for a Sunday either: the first day of next week for some, the last for others.
    if wd_today != 6 and wd != 6 and next_monday <= day < next_monday + timedelta(days=7):
        out.append(Said(f"{name} next week", f"{name} next week"))
    if delta == 7:
        out.append(Said("a week from today", "a week from today"))
    if delta == 8:
        out.append(Said("a week from tomorrow", "a week from tomorrow"))
    nth, month = ordinal(day.day), MONTHS[day.month - 1]
    out += [Said(f"the {nth}", f"on the {nth}"), Said(f"the {nth} of {month}", f"on the {nth} of {month}"),
            Said(f"{month} {nth}", f"on {month} {nth}"), Said(f"{month} the {nth}", f"on {month} the {nth}"),
            Said(f"{name} the {nth}", f"on {name} the {nth}"), Said(f"{name}, {month} {nth}", f"on {name}, {month} {nth}")]
    return out


def time_phrases(hour: int, minute: int, words: str = "free") -> list[Said]:
    """Ways to say a time on the half-hour grid of a business day (9 am to 5 pm)."""
    h = HOURS[hour % 12]
    ap = "a.m." if hour < 12 else "p.m."
    part = "in the morning" if hour < 12 else "in the afternoon"
    out: list[Said] = []
    if minute == 0:
        if hour == 12 and words != "allison":
            out += [Said("noon", "at noon"), Said("midday", "at midday"), Said("twelve noon", "at twelve noon")]
        else:
            out += [Said(f"{h} {ap}", f"at {h} {ap}")]
        out += [Said(f"{h} o'clock", f"at {h} o'clock"), Said(h, f"at {h}")]
        if words != "allison" and hour != 12:
            out.append(Said(f"{h} {part}", f"at {h} {part}"))
    else:
        out += [Said(f"{h} thirty", f"at {h} thirty"), Said(f"half past {h}", f"at half past {h}")]
        if hour != 12:
            out += [Said(f"{h} thirty {ap}", f"at {h} thirty {ap}"), Said(f"{h} thirty {part}", f"at {h} thirty {part}"),
                    Said(f"half past {h} {part}", f"at half past {h} {part}")]
        if hour >= 13:
            out.append(Said(f"{_24h(hour)} thirty", f"at {_24h(hour)} thirty"))
    return out


def _24h(hour: int) -> str:
    teens = {13: "thirteen", 14: "fourteen", 15: "fifteen", 16: "sixteen"}
    return teens[hour]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# What a person wraps a day, a time or both in. {d}/{t}: bare; {on_d}/{at_t}: after a verb.
DAY_LINES = ("{D}.", "{D}, please.", "Could I come in {on_d}?", "How about {d}?", "{D} would be great.",
             "I was hoping for {d}.", "Can I do {d}?")
TIME_LINES = ("{T}.", "{At_t}, please.", "{T} would be great.", "Could we say {t}?", "How about {t}?",
              "{At_t} if possible.", "Let's say {t}.")
BOTH_LINES = ("{D} at {t}.", "Could I come in {on_d} {at_t}?", "How about {d} {at_t}?", "{D}, {t}, please.",
              "I'd like {d} {at_t}.", "{At_t} {on_d}, please.")
TIME_FIRST_LINES = ("Could I get something {at_t}?", "Do you have anything {at_t}?", "I'd like {t} if you have it.")
OPENING_PLAIN = ("Yes, I'd like to book an appointment, please.", "Yes please.", "Hi, yes, I need to schedule a visit.",
                 "Yes, I'd like to make an appointment.", "Hello, I'd like to book an appointment.")
OPENING_DAY = ("Yes, I'd like to come in {on_d}.", "Hi, could I book an appointment for {d}?")
OPENING_BOTH = ("Yes, could I book an appointment {on_d} {at_t}?", "Hi, I'd like to come in {on_d} {at_t}, please.")
REOPEN = ("Yes, I'd like to book an appointment.", "Yes, please. I want to make an appointment.")
YES_LINES = ("Yes.", "Yes, that's right.", "Yeah, that's correct.", "Perfect, book it.", "Sounds good.", "Yes please.",
             "That works for me.", "Yes, go ahead.", "Correct.", "Yep, that's it.")
CORRECT_DAY = ("Actually, make it {d}.", "Sorry, I meant {d}.", "No, {d}, please.", "Could we do {d} instead?",
               "No, I said {d}.")
CORRECT_TIME = ("No, I said {t}.", "Can we do {t} instead?", "Actually, make it {t}.", "Change the time to {t}, please.",
                "Sorry, I meant {t}.")
CORRECT_BOTH = ("No, {d} {at_t}.", "Actually, I'd like {d} {at_t}.", "No, I said {d} {at_t}.")
RESTATE = ("I'd like to book {d} {at_t}, please.", "I'm looking for {d} {at_t}.")


def _fill(template: str, d: Said | None, t: Said | None) -> str:
    values = {}
    if d is not None:
        values.update(d=d.bare, D=_cap(d.bare), on_d=d.on)
    if t is not None:
        values.update(t=t.bare, T=_cap(t.bare), at_t=t.on, At_t=_cap(t.on))
    return _cap(template.format(**values))


# ---------------------------------------------------------------- what the caller hears

_DATE = (r"(?P<wd>Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (?P<mon>" + "|".join(MONTHS)
         + r") (?P<dd>\d{1,2})(?:st|nd|rd|th)(?:, (?P<yy>\d{4}))?")
_TIME = r"(?P<time>noon|midnight|\d{1,2}(?::\d{2})? ?(?:am|pm|a\.m\.|p\.m\.))"
_WHEN = re.compile(_DATE + r",? at " + _TIME, re.I)
_DAY_SAID = re.compile(_DATE, re.I)
_TIME_ACK = re.compile(r"\b(?:okay|ok|got it|sure),? " + _TIME + r"[.!,]", re.I)
_ENDED = re.compile(r"\bgood ?bye\b|\bput you through\b|\bcall back\b", re.I)
_ASKS_BOOK = re.compile(r"book (?:you )?an appointment\?|find you a time\?|book an appointment for you\?", re.I)
_ASKS_BOTH = re.compile(r"\bday and time\b|\bday or the time\b|\bdate and time\b", re.I)
_ASKS_DAY = re.compile(r"\b(?:what|which)(?: other)? (?:day|date)\b|\bthe day\b|\ba day\b|\bthe date you'd like\b", re.I)
_ASKS_TIME = re.compile(r"\bwhat time\b|\ba time\b|\btime would that be\b|\bwhat time exactly\b", re.I)


@dataclass(frozen=True)
class Heard:
    """What the caller understood from the agent's words."""

    ended: bool = False  # a goodbye: the agent is ending the call
    offer: Slot | None = None  # a day and time put as a yes/no question (a read-back, or another time)
    asks: str | None = None  # book | day | time | day_time | None (nothing it can place)
    day: date | None = None  # a day the agent said it holds, outside an offer
    time: tuple[int, int] | None = None  # a time the agent said it holds ("Okay, 3 pm.")


def _agent_day(m: re.Match[str], today: date) -> date | None:
    month = MONTHS.index(_cap(m.group("mon").lower())) + 1
    day = int(m.group("dd"))
    years = [int(m.group("yy"))] if m.group("yy") else [today.year, today.year + 1]
    for year in years:
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if m.group("yy") or candidate >= today - timedelta(days=1):
            return candidate
    return None


def _agent_time(text: str) -> tuple[int, int] | None:
    t = text.lower().replace(".", "").replace(" ", "")
    if t == "noon":
        return (12, 0)
    if t == "midnight":
        return (0, 0)
    m = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?(am|pm)", t)
    if not m:
        return None
    hour = int(m.group(1)) % 12 + (12 if m.group(3) == "pm" else 0)
    return (hour, int(m.group(2) or 0))


def hear(agent_text: str, today: date) -> Heard:
    """The agent's reply as a caller takes it: was it goodbye, a slot to say yes or no to, a question?"""
    text = " ".join(agent_text.split())
    if _ENDED.search(text):
        return Heard(ended=True)
    when = _WHEN.search(text)
    if when is not None and "?" in text[when.end():]:
        day, at = _agent_day(when, today), _agent_time(when.group("time"))
        if day is not None and at is not None:
            return Heard(offer=Slot(day, *at))
    said = _DAY_SAID.search(text)
    day = _agent_day(said, today) if said else None
    ack = _TIME_ACK.search(text)
    at = _agent_time(ack.group("time")) if ack else None
    if _ASKS_BOOK.search(text):  # before the time: "Would you like me to find you a time?"
        asks = "book"
    elif _ASKS_BOTH.search(text):
        asks = "day_time"
    elif _ASKS_DAY.search(text):
        asks = "day"
    elif _ASKS_TIME.search(text):
        asks = "time"
    else:
        asks = None
    return Heard(asks=asks, day=day, time=at)


# ---------------------------------------------------------------- the person


class BookingCaller:
    """One caller's side of the conversation: `respond(agent_text, today)` -> the next `Line`, or None
    when the call is over for it (the agent said goodbye, or it gave up after MAX_LINES)."""

    def __init__(self, persona: Persona) -> None:
        self.persona = persona
        self.rng = random.Random(persona.seed)
        self.lines: list[Line] = []
        self.gave_up = False
        self.decoy_said = False  # the decoy's day or time was said (the call has a correction)
        self._changed_mind = persona.decoy is None  # the decoy was corrected (or there is none)
        self._uses: dict[str, int] = {}
        self._order: dict[str, list[int]] = {}

    # What the caller means right now: the decoy's day or time until it has changed its mind.
    def _day(self) -> date:
        d = self.persona.decoy
        return d.day if d is not None and not self._changed_mind and d.day != self.persona.target.day \
            else self.persona.target.day

    def _time(self) -> tuple[int, int]:
        d = self.persona.decoy
        return d.time if d is not None and not self._changed_mind and d.time != self.persona.target.time \
            else self.persona.target.time

    def _pick(self, key: str, options: Sequence):  # type: ignore[no-untyped-def]
        """The next of `options` in this caller's own shuffled order: a repeated question, other words."""
        if key not in self._order or len(self._order[key]) != len(options):
            order = list(range(len(options)))
            self.rng.shuffle(order)
            self._order[key] = order
        n = self._uses.get(key, 0)
        self._uses[key] = n + 1
        return options[self._order[key][n % len(options)]]

    def _day_said(self, today: date) -> Said:
        day = self._day()
        return self._pick(f"day:{day}:{today}", day_phrases(day, today, self.persona.words))

    def _time_said(self) -> Said:
        hour, minute = self._time()
        return self._pick(f"time:{hour}:{minute}", time_phrases(hour, minute, self.persona.words))

    def _templates(self, key: str, options: Sequence[str], allison: str) -> str:
        # A caller in Allison's recorded words says days and times bare: no carrier words she lacks.
        return allison if self.persona.words == "allison" else self._pick(key, options)

    def _say(self, line: Line) -> Line:
        self.lines.append(line)
        return line

    def _give(self, what: str, today: date, kind: str | None = None) -> Line:
        """Say the day, the time, or both (what the caller currently means)."""
        if what in ("day", "both") and self._day() != self.persona.target.day:
            self.decoy_said = True
        if what in ("time", "both") and self._time() != self.persona.target.time:
            self.decoy_said = True
        if what == "day":
            d = self._day_said(today)
            return self._say(Line(_fill(self._templates("day", DAY_LINES, "{D}"), d, None), kind or "day",
                                  "provide_date", day=self._day()))
        if what == "time":
            t = self._time_said()
            return self._say(Line(_fill(self._templates("time", TIME_LINES, "{T}"), None, t), kind or "time",
                                  "provide_time", time=self._time()))
        d, t = self._day_said(today), self._time_said()
        return self._say(Line(_fill(self._templates("both", BOTH_LINES, "{D} at {t}"), d, t), kind or "both",
                              "provide_both", day=self._day(), time=self._time()))

    def respond(self, agent_text: str, today: date) -> Line | None:
        heard = hear(agent_text, today)
        if heard.ended:
            return None
        if len(self.lines) >= MAX_LINES:
            self.gave_up = True
            return None
        target = self.persona.target
        if heard.offer is not None:
            return self._answer_offer(heard.offer, today)
        if heard.asks == "book":
            return self._open(today)
        if heard.asks in ("day", "time", "day_time"):
            wrong_day = heard.day is not None and heard.day != self._day()
            wrong_time = heard.time is not None and heard.time != self._time()
            time_known = heard.time is not None and heard.time == self._time()
            if heard.asks == "day_time" or (heard.asks == "day" and wrong_time) or (heard.asks == "time" and wrong_day):
                return self._give("both", today)
            if heard.asks == "time":
                return self._give("time", today)
            if self.persona.answer == "time_first" and not time_known and not any(line.time for line in self.lines):
                t = self._time_said()
                if self._time() != target.time:
                    self.decoy_said = True
                return self._say(Line(_fill(self._pick("time_first", TIME_FIRST_LINES), None, t), "time",
                                      "provide_time", time=self._time()))
            if self.persona.answer == "both" and not time_known:
                return self._give("both", today)
            return self._give("day", today)
        # Words it cannot place (or none): say the whole request again.
        d, t = self._day_said(today), self._time_said()
        return self._say(Line(_fill(self._templates("restate", RESTATE, "{D} at {t}"), d, t), "restate",
                              "provide_both", day=self._day(), time=self._time()))

    def _open(self, today: date) -> Line:
        if any(line.kind == "opening" for line in self.lines):
            return self._say(Line(self._pick("reopen", REOPEN), "opening", "book"))
        style = self.persona.opening
        if style == "plain":
            return self._say(Line(self._pick("opening", OPENING_PLAIN), "opening", "book"))
        d = self._day_said(today)
        if self._day() != self.persona.target.day:
            self.decoy_said = True
        if style == "day":
            return self._say(Line(_fill(self._templates("opening_day", OPENING_DAY, "{D}"), d, None), "opening",
                                  "provide_date", day=self._day()))
        t = self._time_said()
        if self._time() != self.persona.target.time:
            self.decoy_said = True
        return self._say(Line(_fill(self._templates("opening_both", OPENING_BOTH, "{D} at {t}"), d, t), "opening",
                              "provide_both", day=self._day(), time=self._time()))

    def _answer_offer(self, offer: Slot, today: date) -> Line:
        target = self.persona.target
        # The first slot read back after it said its decoy: it changes its mind, whatever it heard.
        self._changed_mind = True
        if offer == target:
            return self._say(Line(self._pick("yes", YES_LINES), "yes", "affirm"))
        day_wrong, time_wrong = offer.day != target.day, offer.time != target.time
        d = self._day_said(today) if day_wrong else None
        t = self._time_said() if time_wrong else None
        if day_wrong and time_wrong:
            text = _fill(self._pick("correct_both", CORRECT_BOTH), d, t)
        elif day_wrong:
            text = _fill(self._pick("correct_day", CORRECT_DAY), d, None)
        else:
            text = _fill(self._pick("correct_time", CORRECT_TIME), None, t)
        return self._say(Line(text, "correction", "correction", day=target.day if day_wrong else None,
                              time=target.time if time_wrong else None))


# ---------------------------------------------------------------- a run's callers


@dataclass
class _Pool:
    free: list[Slot]
    used: set[Slot] = field(default_factory=set)

    def take(self, rng: random.Random, ok=lambda s: True) -> Slot | None:  # type: ignore[no-untyped-def]
        choices = [s for s in self.free if s not in self.used and ok(s)]
        if not choices:
            return None
        slot = rng.choice(choices)
        self.used.add(slot)
        return slot


def bookable(today: date, settings: DialogSettings = DialogSettings()) -> list[Slot]:
    """Every grid slot on the open days DAYS_AHEAD from `today`."""
    out = []
    for delta in range(DAYS_AHEAD[0], DAYS_AHEAD[1] + 1):
        day = today + timedelta(days=delta)
        if is_open_day(day, settings):
            out += [Slot(day, s.hour, s.minute) for s in slots_on(day, settings)]
    return out


def plan_calls(n: int, today: date, voices: Sequence[str], *, seed: int = 22, corrections: float = 0.25,
               recorded_voice: str = "allison-words", settings: DialogSettings = DialogSettings()) -> list[Persona]:
    """`n` callers, voices taken in turn, every target (and every decoy) a different slot."""
    rng = random.Random(f"{seed}:{today.isoformat()}")
    pool = _Pool(bookable(today, settings))
    # Decide every caller's style first, so the share of each does not depend on the slots left.
    people = []
    for i in range(n):
        voice = voices[i % len(voices)]
        words = "allison" if voice == recorded_voice else "free"
        opening = rng.choices(("plain", "day", "both"), (0.6, 0.2, 0.2))[0]
        answer = rng.choices(("both", "split", "time_first"), (0.4, 0.45, 0.15))[0]
        decoy = rng.choice(("day", "time")) if rng.random() < corrections else None
        people.append((voice, words, opening, answer, decoy))
    personas = []
    for i, (voice, words, opening, answer, decoy_kind) in enumerate(people):
        def fits(s: Slot, words: str = words) -> bool:
            # Allison's words say a day within six days by its name, and a time on the hour.
            return words != "allison" or ((s.day - today).days <= 6 and s.minute == 0)
        target = pool.take(rng, fits) or pool.take(rng)
        if target is None:
            raise ValueError(f"only {len(pool.free)} bookable slots for {n} calls")
        decoy = None
        if decoy_kind == "day":
            decoy = pool.take(rng, lambda s: fits(s) and s.time == target.time and s.day != target.day)
        elif decoy_kind == "time":
            decoy = pool.take(rng, lambda s: fits(s) and s.day == target.day and s.time != target.time)
        personas.append(Persona(i, target, voice, opening, answer, decoy, words if fits(target) else "free",
                                seed=rng.randrange(1 << 30)))
    return personas


def with_voice(persona: Persona, voice: str) -> Persona:
    return replace(persona, voice=voice)
