"""Slot extraction: which day and what time a caller asked for, from speech-to-text output.

Transcripts arrive in any case, with or without punctuation, numbers as digits or as words
("3:30 p.m.", "three thirty pm", "half past two"). Everything goes through one `normalize` pass
(lower case, "p.m." -> "pm", number words -> digits, "twenty-fifth" -> "25th"), then a small set
of regular expressions finds candidate dates and times; nothing here reads the clock, `now` is
passed in.

Conventions (the confirmation read-back always says the full date, so a caller who meant the other
reading hears it and corrects it):

- "Tuesday", "on Tuesday", "this coming Tuesday": the next Tuesday after today, never today.
- "this Tuesday": the coming Tuesday, today included when today is Tuesday.
- "next Tuesday", "Tuesday next week": the Tuesday of next calendar week, weeks starting on
  Sunday as on US wall calendars. On Wednesday 2026-11-18 "next Tuesday" is the 24th and
  "next Friday" is the 27th (not the 20th, which is "Friday" / "this Friday").
- "Tuesday after next": a week after "Tuesday".
- "the 5th": the 5th of this month, or of the next month that has one if it has passed
  (the day itself counts: "the 18th" on the 18th is today).
- A month and day without a year that has passed this year means next year; a date with an
  explicit year is taken as said (and the dialog rejects it if it is past).
- "12/5" is US month/day; "12/05/2026", "12-05-2026" and "2026-12-05" carry a year.
- "next week", "this week", "sometime", "the weekend"... name no day: `vague_date` is set.
- "at 3" (no am/pm): 1-6 read as pm, 7-11 as am, 12 as noon, with `ambiguous_meridiem` set
  (the dialog re-reads it against its business hours). "in the morning/afternoon/evening"
  anywhere in the same sentence settles it.
- When a sentence names several dates (or times), the last one wins: callers correct themselves
  mid-sentence ("Tuesday, no, Wednesday"; "change it from 3 to 4"). A weekday said next to a
  calendar date ("Tuesday, December 8th") is a description of it, not a second date.
- A number only counts as a time with some sign that it is one: am/pm, "o'clock", a colon, a part
  of the day, a word before it ("at", "around", "make it"...), or being the whole answer ("3.").
  "I have 2 kids" has no time in it.

What STT engines write, besides what people would (the corpus in tests/dialog/corpus holds real
whisper output): times without a separator ("230 in the afternoon", "1030 am", "at 1145"), a dot
for the colon ("2.30"), "P.M"/"p m" for pm, "3 of the clock", ordinals as digits ("16th"), Deepgram's
smart format ("2:30 PM", "December 16 2026", "12/16").

The question the agent just asked (`Question`) settles what a bare answer means: after "What
time?", "230" is 2:30 and "4" is 4 o'clock; after "Which day?", "16" and "the 16" are the 16th.
Without it a bare 1-12 is read as an hour, as before.

Half an answer (a caller who pauses mid-phrase is transcribed as two turns): "...of December" is
`month` and "...in the afternoon" is `meridiem`, for the dialog to apply to the day or time it
already holds. A part of the day with no hour ("after lunch", "in the afternoon") sets `vague_time`,
a month with no day `vague_date`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

# Bounds regex work on garbage input; ~15 s of speech is ~250 characters.
MAX_TEXT_CHARS = 1000


class Question(enum.Enum):
    """What the agent just asked: the context a bare answer is read in."""

    BOOK = "book"  # would you like an appointment?
    DATE = "date"  # which day?
    TIME = "time"  # what time?
    CONFIRM = "confirm"  # shall I book <slot>?


@dataclass(frozen=True, slots=True)
class TimeOfDay:
    hour: int  # 0-23, already resolved to the likelier half of the day when am/pm was not said
    minute: int
    ambiguous_meridiem: bool = False  # am/pm was not said ("at 3"): `hour` is a guess

    def __post_init__(self) -> None:
        if not (0 <= self.hour <= 23 and 0 <= self.minute <= 59):
            raise ValueError(f"not a time of day: {self.hour}:{self.minute}")

    def flipped(self) -> "TimeOfDay":
        """The other half of the day (3 pm <-> 3 am)."""
        return TimeOfDay((self.hour + 12) % 24, self.minute, self.ambiguous_meridiem)

    def hhmm(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"

    @classmethod
    def from_hhmm(cls, text: str, ambiguous_meridiem: bool = False) -> "TimeOfDay":
        hour, minute = text.split(":")
        return cls(int(hour), int(minute), ambiguous_meridiem)


@dataclass(frozen=True, slots=True)
class Slots:
    date: date | None = None
    time: TimeOfDay | None = None
    vague_date: bool = False  # a day was meant but not which one ("next week", "sometime")
    invalid_date: bool = False  # a date that does not exist ("February 30th", "the 32nd", "13/45")
    invalid_time: bool = False  # a time that does not exist ("25:00", "13 pm", "3:75")
    vague_time: bool = False  # a time of day was meant but no hour ("after lunch", "in the afternoon")
    month: int | None = None  # a month with no day ("...of December", the end of a split date)
    meridiem: str | None = None  # "am" / "pm" with no hour ("...in the afternoon", a split time)


# ---------------------------------------------------------------- normalization

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_ORD_UNITS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
              "seventh": 7, "eighth": 8, "ninth": 9}
_ORD_OTHER = {"tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
              "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
              "nineteenth": 19, "twentieth": 20, "thirtieth": 30}
_CARDINALS = {**_UNITS, **_TEENS}
_ORDINALS = {**_ORD_UNITS, **_ORD_OTHER}


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _words_to_numbers(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        word = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if word in _TENS:
            if _UNITS.get(nxt, 0) > 0:  # twenty five -> 25 (but "nine thirty" stays two numbers)
                out.append(str(_TENS[word] + _UNITS[nxt]))
                i += 2
                continue
            if nxt in _ORD_UNITS:  # twenty fifth -> 25th
                out.append(_ordinal(_TENS[word] + _ORD_UNITS[nxt]))
                i += 2
                continue
            out.append(str(_TENS[word]))
        elif word in ("oh", "o") and out and out[-1].isdigit() and _UNITS.get(nxt, 0) > 0:
            out.append(f"0{_UNITS[nxt]}")  # eleven oh five -> 11 05
            i += 2
            continue
        elif word in _CARDINALS:
            out.append(str(_CARDINALS[word]))
        elif word in _ORDINALS:
            out.append(_ordinal(_ORDINALS[word]))
        else:
            out.append(word)
        i += 1
    return out


def normalize(text: str) -> str:
    """Lower case, single spaces, digits for number words; keeps ':' '/' '-' only between digits."""
    t = text[:MAX_TEXT_CHARS].lower().replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"\b([ap]) ?\. ?m\b\.?", r"\1m", t)  # p.m. / a. m. / P.M -> pm / am
    t = re.sub(r"(\d) ?([ap]) m\b", r"\1 \2m", t)  # 3 p m -> 3 pm
    t = re.sub(r"(\d)([ap]m)\b", r"\1 \2", t)  # 3pm -> 3 pm
    t = re.sub(r"\b(?:o ?'? ?|of (?:the |a )?)clock\b", "oclock", t)  # o'clock; whisper's "of the clock"
    t = re.sub(r"(\d)\.(\d\d)\b", r"\1:\2", t)  # 3.30 -> 3:30
    t = re.sub(r"(\d)\.0\b(?!\.)", r"\1", t)  # whisper's "3.0 o'clock"
    t = re.sub(r"(\d)ish\b", r"\1 ish", t)
    t = re.sub(r"[^a-z0-9:/' \-]", " ", t)
    t = re.sub(r"(?<!\d)[-:/]|[-:/](?!\d)", " ", t)  # separators survive only between digits
    t = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", t)
    t = " ".join(_words_to_numbers(t.split()))
    for pattern, repair in _STT_REPAIRS:
        t = pattern.sub(repair, t)
    return t


# What whisper writes for time phrases it half heard, where the words around leave one reading
# (each seen in the STT corpus, tests/dialog/corpus): "half pass 2", "have passed 9" (half past),
# "attend in the morning" (at 10), "11th am", "3 on the clock", "10-15" (10:15), "free 30",
# "how about for", "and 3 days" (in three days).
_STT_REPAIRS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bhave pass(?:ed)? (?=\d)"), "half past "),
    (re.compile(r"\b(half|quarter|\d{1,2}(?: minutes)?) pass(?:ed)? (?=\d)"), r"\1 past "),
    (re.compile(r"\battend(?= (?:in the (?:morning|afternoon|evening)|am|pm|oclock)\b)"), "at 10"),
    (re.compile(r"\b(\d{1,2})(?:st|nd|rd|th) (am|pm)\b"), r"\1 \2"),
    (re.compile(r"\b(\d{1,2}) (?:on (?:the )?|to |the )clock\b"), r"\1 oclock"),
    (re.compile(r"^round(?= \d)"), "around"),
    (re.compile(r"\b(how about|what about|say|at|around) for$"), r"\1 4"),  # "how about for?"
    (re.compile(r"^and(?= \d{1,2} (?:days?|weeks?)\b)"), "in"),  # "and 3 days" (in three days)
    (re.compile(r"(?<![\d/-])(\d{1,2})-([0-5]\d)(?![\d/-])"), r"\1 \2"),
    # The hour heard as a word that sounds like it, before the minutes: "free 30" (three thirty),
    # "to 30 in the afternoon", "for 45 pm". "to"/"for" only with a part of the day or am/pm after.
    (re.compile(r"\b(?:free|tree)(?= [0-5]\d\b)"), "3"),
    (re.compile(r"^(?:to|too)(?= [0-5]\d (?:in the (?:morning|afternoon|evening)|am|pm)\b)"), "2"),
    (re.compile(r"^for(?= [0-5]\d (?:in the (?:morning|afternoon|evening)|am|pm)\b)"), "4"),
]


# ---------------------------------------------------------------- dates

_MONTHS = {"january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4,
           "apr": 4, "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8,
           "september": 9, "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11,
           "nov": 11, "december": 12, "dec": 12}
_WEEKDAYS = {"monday": 0, "tuesday": 1, "tues": 1, "wednesday": 2, "weds": 2, "thursday": 3,
             "thurs": 3, "friday": 4, "saturday": 5, "sunday": 6}
_MON = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WD = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
_SUF = r"(?:st|nd|rd|th)"
_YEAR = r"(?:,? (?P<y>\d{4}|20 \d\d))?"
# "the first available", "the second week": an ordinal that is not a day of the month.
_NOT_A_DAY = (r"(?! (?:available|opening|openings|slot|slots|time|times|thing|one|ones|appointment|"
              r"week|weeks|day|days|option|options|floor|person|patient|caller|choice|month|hour)\b)")

# kind, pattern. Kinds decide how a match resolves to a date (see _resolve).
_DATE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("iso", re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b")),
    ("numeric", re.compile(r"\b(?P<m>\d{1,2})/(?P<d>\d{1,2})(?:/(?P<y>\d{4}|\d\d))?\b(?!/)")),
    ("numeric", re.compile(r"\b(?P<m>\d{1,2})-(?P<d>\d{1,2})-(?P<y>\d{4}|\d\d)\b")),
    ("month_day", re.compile(
        rf"\b(?P<mon>{_MON}) (?:the )?(?P<d>\d{{1,2}})(?P<suf>{_SUF})?\b(?!:)(?! (?:am|pm|oclock)\b){_YEAR}")),
    ("day_month", re.compile(
        rf"\b(?P<the>the )?(?P<d>\d{{1,2}})(?P<suf>{_SUF})?(?P<of> of)? (?P<mon>{_MON})\b{_YEAR}")),
    ("nth", re.compile(rf"(?:\b(?P<wd>{_WD}),? )?(?:\bthe |\bon |^)(?P<d>\d{{1,3}}){_SUF}\b{_NOT_A_DAY}")),
    ("offset", re.compile(r"\b(?:the )?day after tomorrow\b")),
    ("offset", re.compile(r"\btomorrow\b")),
    ("offset", re.compile(r"\b(?:today|tonight|this morning|this afternoon|this evening)\b")),
    ("offset", re.compile(r"\byesterday\b")),
    ("in", re.compile(
        r"\bin (?:(?P<n>\d{1,4})|(?P<a>an?)|(?P<c>a couple of|a couple|couple of)) "
        r"(?P<u>days?|weeks?|fortnights?)\b")),
    ("in", re.compile(r"\bin (?P<a>a) (?P<u>fortnight)\b")),
    ("from", re.compile(
        rf"(?:\b(?:(?P<n>\d{{1,4}})|(?P<a>an?|the)) |^)(?P<u>days?|weeks?) (?:from|after|on) "
        rf"(?P<base>today|now|tomorrow|(?P<next>next )?(?P<wd>{_WD}))\b")),
    ("from", re.compile(r"\b(?P<a>a) (?P<u>week) (?P<base>today|tomorrow)\b")),
    ("after_next", re.compile(rf"\b(?:the )?(?P<wd>{_WD}) after next\b")),
    ("next_week", re.compile(rf"\bnext week (?:on )?(?P<wd>{_WD})\b|\b(?P<wd2>{_WD}) (?:of )?next week\b")),
    ("this_week", re.compile(rf"\bthis week (?:on )?(?P<wd>{_WD})\b|\b(?P<wd2>{_WD}) (?:of )?this week\b")),
    ("weekday", re.compile(
        rf"\b(?:(?P<mod>next|this coming|this|the coming|coming|upcoming|the following|following) )?"
        rf"(?P<wd>{_WD})s?\b")),
]
_OFFSETS = {"today": 0, "tonight": 0, "this morning": 0, "this afternoon": 0, "this evening": 0,
            "tomorrow": 1, "yesterday": -1, "day after tomorrow": 2, "the day after tomorrow": 2}
_CALENDAR_KINDS = frozenset({"iso", "numeric", "month_day", "day_month", "nth"})
_VAGUE = re.compile(
    r"\b(?:next week|this week|(?:the )?weekend|next month|this month|end of the (?:week|month)|"
    r"some ?time|some day|whenever|soon|a few days|in a month|in a while|any ?day|later)\b")


@dataclass(frozen=True, slots=True)
class _Found:
    start: int
    end: int
    kind: str
    groups: dict[str, str | None]
    text: str


def _find(patterns: list[tuple[str, re.Pattern[str]]], s: str) -> list[_Found]:
    """All matches, longest first where they overlap, then in order of position."""
    found = [_Found(m.start(), m.end(), kind, m.groupdict(), m.group(0))
             for kind, pattern in patterns for m in pattern.finditer(s)]
    found.sort(key=lambda f: (-(f.end - f.start), f.start))
    kept: list[_Found] = []
    for f in found:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    kept.sort(key=lambda f: f.start)
    return kept


def _date_matches(s: str) -> list[_Found]:
    found = _find(_DATE_PATTERNS, s)
    if any(f.kind in _CALENDAR_KINDS for f in found):
        # "Tuesday, December 8th": the weekday describes the date rather than naming another
        found = [f for f in found if not (f.kind == "weekday" and not f.groups["mod"])]
    return found


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _roll_forward(today: date, month: int, day: int) -> date | None:
    """This year's month/day, or next year's if it has passed."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    this_year = _safe_date(today.year, month, day)
    if this_year is not None and this_year >= today:
        return this_year
    return _safe_date(today.year + 1, month, day)  # Feb 29 in a non-leap year stays None


def _year(text: str | None) -> int | None:
    if text is None:
        return None
    digits = text.replace(" ", "")
    return int(digits) + 2000 if len(digits) == 2 else int(digits)


def _upcoming(today: date, weekday: int, include_today: bool) -> date:
    days = (weekday - today.weekday()) % 7
    if days == 0 and not include_today:
        days = 7
    return today + timedelta(days=days)


def _next_week(today: date, weekday: int) -> date:
    """The given weekday of next calendar week, weeks starting on Sunday."""
    this_sunday = today - timedelta(days=(today.weekday() + 1) % 7)
    return this_sunday + timedelta(days=7 + (weekday + 1) % 7)


def _nth(today: date, day: int, weekday: int | None) -> date | None:
    """The next `day` of a month from today on; with a weekday, the next one falling on it."""
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month
    first_fit = None
    for _ in range(28 if weekday is not None else 13):  # 28 months: every weekday/day pair recurs
        candidate = _safe_date(year, month, day)
        if candidate is not None and candidate >= today:
            if weekday is None or candidate.weekday() == weekday:
                return candidate
            first_fit = first_fit or candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return first_fit


def _count(groups: dict[str, str | None]) -> int:
    if groups.get("n"):
        return int(groups["n"] or 0)
    if groups.get("c"):
        return 2
    return 1


def _resolve(f: _Found, today: date) -> date | None:
    g = f.groups
    try:
        match f.kind:
            case "iso":
                return _safe_date(int(g["y"] or 0), int(g["m"] or 0), int(g["d"] or 0))
            case "numeric" | "month_day" | "day_month":
                month = int(g["m"]) if g.get("m") else _MONTHS[g["mon"] or ""]
                if f.kind == "day_month" and g["mon"] in ("may", "mar", "march") and not (
                        g["suf"] or g["of"] or g["the"]):
                    return None  # "at 3 may I..." is not the 3rd of May
                year = _year(g.get("y"))
                if year is None:
                    return _roll_forward(today, month, int(g["d"] or 0))
                return _safe_date(year, month, int(g["d"] or 0))
            case "nth":
                weekday = _WEEKDAYS[g["wd"]] if g.get("wd") else None
                return _nth(today, int(g["d"] or 0), weekday)
            case "offset":
                return today + timedelta(days=_OFFSETS[f.text])
            case "in" | "from":
                unit = g["u"] or ""
                days = _count(g) * (14 if unit.startswith("fortnight") else 7 if unit.startswith("week") else 1)
                base = today
                if f.kind == "from":
                    b = g["base"] or ""
                    if b == "tomorrow":
                        base = today + timedelta(days=1)
                    elif g.get("wd"):
                        wd = _WEEKDAYS[g["wd"] or ""]
                        base = _next_week(today, wd) if g.get("next") else _upcoming(today, wd, False)
                return base + timedelta(days=days)
            case "after_next":
                return _upcoming(today, _WEEKDAYS[g["wd"] or ""], False) + timedelta(days=7)
            case "next_week":
                return _next_week(today, _WEEKDAYS[g["wd"] or g["wd2"] or ""])
            case "this_week":
                return _upcoming(today, _WEEKDAYS[g["wd"] or g["wd2"] or ""], True)
            case "weekday":
                wd = _WEEKDAYS[g["wd"] or ""]
                mod = g["mod"]
                if mod in ("next", "following", "the following"):
                    return _next_week(today, wd)
                return _upcoming(today, wd, include_today=(mod == "this"))
    except (OverflowError, ValueError):  # "in 9999 weeks"
        return None
    return None


# ---------------------------------------------------------------- times

_AP = r"(?: ?(?P<ap>am|pm))?"
_POD = (r"(?P<pod>in the morning|in the afternoon|in the evening|at night|tonight|this morning|"
        r"this afternoon|this evening|morning|afternoon|evening)")
# Nouns that make a number a count rather than an hour: "for 2 people", "in 5 minutes".
_COUNTED = (r"(?! (?:minutes?|mins?|hours?|days?|weeks?|months?|years?|people|persons?|kids|children|"
            r"of\b|percent|dollars|times|patients|more|or so\b|appointments?|visits?|slots?|spots?))")
_POD_OPT = rf"(?: {_POD})?"  # "half past 2 in the afternoon" is one phrase, not "2 in the afternoon"
_LEAD = (r"(?:at|around|about|say|maybe|make it|make that|it to|time to|that to|to be|how about|what about|"
         r"for like|said|meant|do|try|from \d{1,2}(?::\d\d)?(?: am| pm)? to)")
_TIME_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("noon", re.compile(r"\b(?:12 )?(?:noon|midday|mid day)\b")),
    ("midnight", re.compile(r"\b(?:12 )?midnight\b")),
    ("colon", re.compile(rf"\b(?P<h>\d{{1,2}}):(?P<m>\d\d)\b{_AP}{_POD_OPT}")),
    # 330 pm, 230 in the afternoon, 1030 oclock, at 1145: whisper writes times without a separator.
    # Not when another number follows: "at 555 1234" is a phone number.
    ("hhmm", re.compile(rf"\b(?P<h>\d{{3,4}}) (?:(?P<ap>am|pm)\b|{_POD}\b|oclock\b|hours\b)")),
    ("hhmm", re.compile(rf"\b{_LEAD} (?P<h>\d{{3,4}})\b(?![:/-]| \d| ?{_SUF}\b){_COUNTED}{_AP}{_POD_OPT}")),
    # "half 2": British for 2:30 (never "half past 2", which is "past" below, nor "half an hour")
    ("half", re.compile(rf"\bhalf (?P<h>\d{{1,2}})\b(?![:/-]| \d| ?{_SUF}\b){_COUNTED}{_AP}{_POD_OPT}")),
    ("hundred", re.compile(r"\b(?P<h>\d{1,2}) hundred(?: hours)?\b")),
    ("past", re.compile(
        rf"\b(?:(?P<q>a quarter|quarter|half)|(?P<mm>5|10|20|25)(?: minutes)?) (?P<dir>past|after) "
        rf"(?P<h>\d{{1,2}})\b(?!:){_AP}{_POD_OPT}")),
    ("to", re.compile(
        rf"(?<!from )(?<!between )\b(?:(?P<q>a quarter|quarter)|(?P<mm>5|10|20|25)(?: minutes)?) "
        rf"(?P<dir>to|till|til|of|before)(?: the)? (?P<h>\d{{1,2}})\b(?!:){_AP}{_POD_OPT}")),
    ("spaced", re.compile(rf"\b(?P<h>\d{{1,2}}) (?P<m>[0-5]\d)\b(?! ?{_SUF}){_COUNTED}{_AP}{_POD_OPT}")),
    ("ap", re.compile(r"\b(?P<h>\d{1,2}) ?(?P<ap>am|pm)\b")),
    ("oclock", re.compile(rf"\b(?P<h>\d{{1,2}}) oclock\b{_AP}{_POD_OPT}")),
    ("pod", re.compile(rf"(?<![:\d] )(?<!:)\b(?P<h>\d{{1,2}}) {_POD}\b")),
    ("lead", re.compile(
        rf"\b{_LEAD} (?P<h>\d{{1,2}})(?: (?P<m>[0-5]\d))?\b(?![:/-]| ?{_SUF}\b){_COUNTED}{_AP}{_POD_OPT}")),
    ("ish", re.compile(r"\b(?P<h>\d{1,2}) ish\b")),
]
_POD_ANYWHERE = re.compile(rf"\b{_POD}\b")
_GREETING_POD = re.compile(r"\bgood (?:morning|afternoon|evening)\b")
# A time of day with no hour: the dialog asks for the hour. The half of the day it names, if any.
_VAGUE_TIME = re.compile(
    r"\b(?P<pm>after lunch|lunch ?time|at lunch|over lunch|end of the day|late in the day)\b|"
    r"\b(?P<am>before lunch|first thing|early in the day)\b")
_FILLER = frozenset(
    "um uh er erm hmm mm well ok okay oh so yes yeah yep sure no nope actually let's lets let us say "
    "maybe how what about like i guess think probably please then would be works work fine good great "
    "on at for it make the around that's that is ish i'd id like to do go with perhaps instead rather "
    "thanks thank you is how's does there available free open possible anything".split())


def _meridiem(hour: int, ap: str | None, pod: str | None, h24: bool) -> tuple[int, bool] | None:
    """(hour 0-23, ambiguous) or None when the hour cannot be read that way."""
    if ap:
        if not 1 <= hour <= 12:
            return None  # "13 pm", "0 am"
        return hour % 12 + (12 if ap == "pm" else 0), False
    if hour > 23:
        return None
    if h24 or hour == 0 or hour >= 13:
        return hour, False
    if pod:
        if "morning" in pod:
            return hour % 12, False
        return (hour if hour == 12 else hour + 12), False
    # Business hours: 1-6 are afternoon hours far more often than early-morning ones.
    return (hour + 12 if 1 <= hour <= 6 else hour), True


def _time_value(f: _Found, pod: str | None) -> TimeOfDay | None:
    g = f.groups
    kind = f.kind
    if kind == "noon":
        return TimeOfDay(12, 0)
    if kind == "midnight":
        return TimeOfDay(0, 0)
    ap = g.get("ap")
    pod = g.get("pod") or pod
    raw_h = g.get("h") or "0"
    minute = 0
    h24 = False
    if kind == "hhmm":
        raw_h, minute = raw_h[:-2], int(raw_h[-2:])
        h24 = raw_h.startswith("0") or int(raw_h) >= 13  # 0930, 1430
    elif kind in ("colon", "spaced", "lead"):
        minute = int(g.get("m") or 0)
        h24 = kind == "colon" and raw_h.startswith("0") and len(raw_h) == 2  # 09:00
    elif kind == "half":
        minute = 30
    elif kind == "hundred":
        h24 = True
    hour = int(raw_h)
    if minute > 59:
        return None
    resolved = _meridiem(hour, ap, pod, h24)
    if resolved is None:
        return None
    hour24, ambiguous = resolved
    if kind in ("past", "to"):
        q = g.get("q") or ""
        offset = 30 if q == "half" else 15 if q else int(g.get("mm") or 0)
        total = hour24 * 60 + (offset if kind == "past" else -offset)
        hour24, minute = divmod(total % (24 * 60), 60)
    return TimeOfDay(hour24, minute, ambiguous)


def _answer_word(residue: str) -> str | None:
    """The one word left of an answer once fillers are gone ("um, four please" -> "4")."""
    words = [w for w in residue.split() if w not in _FILLER]
    return words[0] if len(words) == 1 else None


def _bare_number(residue: str, question: Question | None) -> _Found | None:
    """The whole answer is one number ("3.", "um, four please"): an hour, read as with "at".
    After "What time?" also "230" (2:30) and a 24-hour "16"; after "Which day?" it is a day instead."""
    word = _answer_word(residue)
    if word is None or not word.isdigit() or question is Question.DATE:
        return None
    if 1 <= int(word) <= 12 or (question is Question.TIME and len(word) <= 2):
        return _Found(0, 0, "lead", {"h": word}, word)
    if question is Question.TIME and len(word) in (3, 4):
        return _Found(0, 0, "hhmm", {"h": word}, word)
    return None


def _bare_day(residue: str) -> _Found | None:
    """After "Which day?", a lone number is a day of the month ("16", "the 16", "on the 16th")."""
    word = _answer_word(residue)
    if word is None:
        return None
    digits = re.fullmatch(rf"(\d{{1,2}}){_SUF}?", word)
    return _Found(0, 0, "nth", {"d": digits.group(1)}, word) if digits else None


def _mask(s: str, spans: list[_Found]) -> str:
    chars = list(s)
    for f in spans:
        chars[f.start:f.end] = " " * (f.end - f.start)
    return "".join(chars)


# After "What time?", a number written as a time without a separator is one wherever it stands
# ("1015 would suit me"), unless a count follows it or it runs on into another number.
_ASKED_HHMM = [("hhmm", re.compile(rf"\b(?P<h>\d{{3,4}})\b(?![:/-]| \d| ?{_SUF}\b){_COUNTED}{_AP}{_POD_OPT}"))]


def _find_time(s: str, date_spans: list[_Found], question: Question | None = None
               ) -> tuple[TimeOfDay | None, bool]:
    """(time, invalid): the last time-like phrase outside the date phrases."""
    masked = _mask(s, date_spans)
    found = _find(_TIME_PATTERNS + (_ASKED_HHMM if question is Question.TIME else []), masked)
    if not found:
        bare = _bare_number(masked, question)
        found = [bare] if bare else []
    if not found:
        return None, False
    pod_match = _POD_ANYWHERE.search(s)
    pod = pod_match.group("pod") if pod_match else None
    value = _time_value(found[-1], pod)
    return value, value is None


def _half_of_day(s: str) -> tuple[str | None, bool]:
    """(meridiem, vague): for a turn with no hour in it, the half of the day it names, and whether
    it names a time of day at all ("after lunch" -> pm, vague; "pm" alone -> pm, not vague)."""
    s = _GREETING_POD.sub(" ", s)
    vague = _VAGUE_TIME.search(s)
    if vague:
        return ("pm" if vague.group("pm") else "am"), True
    pod = _POD_ANYWHERE.search(s)
    if pod:
        return ("am" if "morning" in pod.group("pod") else "pm"), True
    words = [w for w in s.split() if w not in ("um", "uh", "please", "ok", "okay")]
    if len(words) == 1 and words[0] in ("am", "pm"):  # "pm" alone; not the "am" of "what am I"
        return words[0], False
    return None, False


# ---------------------------------------------------------------- public API


_LONE_MONTH = re.compile(rf"(?:\b(?:of|in|for) )?\b(?P<mon>{_MON})\b")


def _find_date(s: str, now: datetime, question: Question | None = None
               ) -> tuple[date | None, bool, bool, list[_Found]]:
    """(date, invalid, vague, spans of every date phrase)."""
    found = _date_matches(s)
    if not found and question is Question.DATE:
        bare = _bare_day(s)
        found = [bare] if bare else []
    if not found:
        return None, False, bool(_VAGUE.search(s)), found
    value = _resolve(found[-1], now.date())
    return value, value is None, False, found


def _lone_month(s: str) -> int | None:
    """A month named with no day ("...of December"). "May" and "March" only after of/in/for: they are
    also a verb."""
    for m in _LONE_MONTH.finditer(s):
        if m.group("mon") not in ("may", "mar", "march") or m.group(0) != m.group("mon"):
            return _MONTHS[m.group("mon")]
    return None


def extract_date(text: str, now: datetime, question: Question | None = None) -> date | None:
    """The day the caller named, resolved against `now` (aware, in the business's timezone)."""
    return _find_date(normalize(text), now, question)[0]


def extract_time(text: str, question: Question | None = None) -> TimeOfDay | None:
    """The time of day the caller named, or None (also for impossible times like "25:00")."""
    s = normalize(text)
    return _find_time(s, _date_matches(s), question)[0]


def extract(text: str, now: datetime, question: Question | None = None) -> Slots:
    """Everything the turn says about the day and time. `question`: what the agent just asked."""
    s = normalize(text)
    day, bad_date, vague, spans = _find_date(s, now, question)
    time, bad_time = _find_time(s, spans, question)
    month = meridiem = None
    vague_time = False
    if day is None and not bad_date:
        month = _lone_month(s)
        vague = vague or month is not None
    if time is None and not bad_time:
        meridiem, vague_time = _half_of_day(s)
    return Slots(day, time, vague_date=vague, invalid_date=bad_date, invalid_time=bad_time,
                 vague_time=vague_time, month=month, meridiem=meridiem)
