"""The offline intent classifier: what a caller's turn means for the booking dialog.

Rule-based and stateless: `classify(text, now, question)` looks at one transcript and returns a
`ParsedTurn` (the intent plus any date/time it carried). `question` is what the agent had just
asked (`dialog.slots.Question`), so a bare "230" after "What time?" is a time and "the 16th" after
"Which day?" a date; without it the turn is read alone. The state machine decides what the intent
means where the call is; an LLM's tool call can produce the same `ParsedTurn` instead.

Order of the rules, and why:
1. A request to repeat ("what?", "say that again") unless it also carries a date or time.
2. Any date or time makes the turn a slot turn: CORRECTION when it is phrased as one
   ("actually make it Wednesday", "no, 4 pm", "change the time to 5"), otherwise
   PROVIDE_DATE / PROVIDE_TIME / PROVIDE_BOTH. A "yes" in it is kept as `affirm`, so
   "yes, Tuesday at 3" after reading back Tuesday at 3 can count as a yes.
3. A correction that names what to change but not the new value ("change the time").
4. Goodbye, unless a clear yes is in the same breath ("yes thanks, bye" confirms), or the caller goes
   on after it to ask for a booking or a day or time ("...see you soon. I'd like December": a
   goodbye whisper wrote into a garbled sentence under noise must not end the call).
5. No, then yes: negations are checked first so "that's not right" is not read as "right". A no
   counts when it comes up front or is the whole of a short turn, not as a "not" deep inside a long
   sentence that answers nothing (whisper's writing of a caller under noise).
6. Wanting an appointment at all ("I'd like to book").
7. Half a slot, when nothing else was said: "...of December" (a month) is PROVIDE_DATE and
   "...in the afternoon" (am/pm) PROVIDE_TIME, for the dialog to complete what it holds
   (a caller's pause split one answer into two turns); with a "no", a CORRECTION.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date, datetime

from dialog.slots import Question, Slots, TimeOfDay, extract, normalize


class Intent(enum.Enum):
    PROVIDE_DATE = "provide_date"
    PROVIDE_TIME = "provide_time"
    PROVIDE_BOTH = "provide_both"  # "next Tuesday at 3"
    AFFIRM = "affirm"
    DENY = "deny"
    CORRECTION = "correction"  # carries the new slot values, or `clear` naming the slot to change
    REPEAT = "repeat"
    GOODBYE = "goodbye"
    BOOK = "book"  # wants an appointment, no slot yet
    UNKNOWN = "unknown"


SLOT_INTENTS = frozenset({Intent.PROVIDE_DATE, Intent.PROVIDE_TIME, Intent.PROVIDE_BOTH, Intent.CORRECTION})


@dataclass(frozen=True, slots=True)
class ParsedTurn:
    intent: Intent
    date: date | None = None
    time: TimeOfDay | None = None
    clear: frozenset[str] = field(default_factory=frozenset)  # "date"/"time" to change, no new value given
    affirm: bool = False  # a yes was said along with the slots
    vague_date: bool = False
    invalid_date: bool = False
    invalid_time: bool = False
    vague_time: bool = False  # a time of day with no hour ("after lunch")
    month: int | None = None  # a month with no day: completes the day the call holds
    meridiem: str | None = None  # "am"/"pm" with no hour: completes the time the call holds

    @classmethod
    def from_slots(cls, intent: Intent, slots: Slots, **kw: object) -> "ParsedTurn":
        return cls(intent, slots.date, slots.time, vague_date=slots.vague_date,  # type: ignore[arg-type]
                   invalid_date=slots.invalid_date, invalid_time=slots.invalid_time,
                   vague_time=slots.vague_time, month=slots.month, meridiem=slots.meridiem, **kw)


def _words(*phrases: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b")


_REPEAT = re.compile(
    r"\b(?:repeat|say (?:that|it|this) again|come again|pardon|one more time|didn't (?:catch|hear|get)|"
    # as whisper writes a half-heard "say that again, please" / "I didn't catch that"
    r"(?:say|saying|save)\b.{0,12}\bagain|again please|catch that|"
    r"did not (?:catch|hear|get)|what did you (?:just )?say|what was that|can't hear|cannot hear|"
    r"couldn't hear|once more)\b|^(?:what|huh|sorry|eh|excuse me|what's that|sorry what|i'm sorry|"
    r"sorry i'm sorry|what sorry)$")
# "see you" ends a call, "I'd like to see you on the 11th" asks for one (as whisper wrote a caller under noise).
_GOODBYE = _words("goodbye", "good bye", "bye", "bye bye", "that's all", "that is all", "hang up",
                  "nothing else", "i'm done", "have a good day", "have a nice day", "(?<!to )see you")
_STRONG_YES = _words("yes", "yeah", "yep", "yup", "yea", "ya", "sure", "correct", "that's right",
                     "that is right", "thats right", "right", "exactly", "sounds good", "sounds great",
                     "perfect",
                     "absolutely", "definitely", "affirmative", "please do", "go ahead", "book it",
                     "book that", "do it", "that works", "works for me", "that's fine", "confirm",
                     "confirmed", "of course", "why not", "uh huh", "mhm", "mm hmm", "certainly",
                     "that'll work", "that will work", "that's it")
_WEAK_YES = _words("ok", "okay", "alright", "all right", "great", "good", "cool", "fine", "lovely",
                   "awesome", "please", "i would", "i do", "i'd like that", "thanks", "thank you")
_NO = _words("no", "nope", "nah", "not really", "not quite", "wrong", "incorrect", "negative",
             "don't", "dont", "do not", "doesn't work", "does not work", "won't work", "not right", "cancel",
             "never mind", "nevermind", "not that", "not it", "not good", "can't make it")
# Said with "no"/"not" in them but not a refusal: an okay, or not knowing.
_NO_PROBLEM = _words("no problem", "no worries", "not a problem")
_UNSURE = _words("i don't know", "i do not know", "not sure", "no idea", "don't know", "i'm not sure",
                 "dont know")
_CORRECTION = _words("actually", "instead", "change", "changing", "make it", "make that", "rather",
                     "switch", "move", "different", "another", "wrong", "not right", "reschedule",
                     "i meant", "i mean", "scratch that", "wait", "not")
_BOOK = _words("book", "booking", "appointment", "appointments", "schedule", "reserve", "reservation",
               "come in", "see the doctor", "see a doctor", "see someone", "visit", "consultation",
               "check up", "checkup", "slot", "availability", "available", "opening")
_TIME_TARGET = _words("time", "hour", "times")
_DATE_TARGET = _words("date", "day", "days")


# Asking for a booking or for free times, as opposed to asking about the business ("How much does a
# consultation cost?", "What should I bring to my visit?", "What are your opening hours?").
_BOOKING_REQUEST = re.compile(
    r"\b(?:book|booking|schedule|reschedule|reserve|reservation|available|availability|slots?|"
    r"openings?(?! hours| times)|make an appointment|get an appointment|see (?:the|a) doctor|come in)\b")


def mentions_booking(text: str) -> bool:
    """The caller asks for a booking or for free times ("Can I book...", "Any slots on Tuesday?"): a
    question like that is the booking dialog's to answer, not the knowledge base's (dialog.responder)."""
    return bool(_BOOKING_REQUEST.search(normalize(text)))


# A refusal is said up front ("No thanks", "I don't think so", "That's not right") or is the whole of a
# short turn. A "not" deep in a long sentence that answers nothing ("Hi, I hope you're working. I do not
# agree.", as whisper wrote a caller asking for the 14th under babble) is not a no to the question: the
# agent asks again rather than end the call on it.
REFUSAL_LEAD_WORDS = 4
SHORT_TURN_WORDS = 6


def _refuses(plain: str, no: re.Match[str]) -> bool:
    """`no`: the turn's first negation."""
    return len(plain[:no.start()].split()) < REFUSAL_LEAD_WORDS or len(plain.split()) <= SHORT_TURN_WORDS


def _goes_on(s: str, now: datetime) -> bool:
    """After its last goodbye, the turn asks for a booking or names a day, month or time of day."""
    *_, last = _GOODBYE.finditer(s)
    rest = s[last.end():]
    if _BOOK.search(rest):
        return True
    after = extract(rest, now)
    return any(x is not None for x in (after.date, after.time, after.month, after.meridiem))


def classify(text: str, now: datetime, question: Question | None = None) -> ParsedTurn:
    """What the caller's turn means. `now` is aware, in the business's timezone; `question` is what
    the agent had just asked, if known."""
    s = normalize(text)
    if not s:
        return ParsedTurn(Intent.UNKNOWN)
    slots = extract(text, now, question)
    has_slots = slots.date is not None or slots.time is not None
    plain = _UNSURE.sub(" ", _NO_PROBLEM.sub("okay", s))
    no = _NO.search(plain)
    said_no = no is not None
    strong_yes = bool(_STRONG_YES.search(plain)) and not said_no
    any_yes = strong_yes or (bool(_WEAK_YES.search(plain)) and not said_no)

    if _REPEAT.search(s) and not has_slots:
        return ParsedTurn(Intent.REPEAT)
    if has_slots:
        if _CORRECTION.search(plain) or said_no:
            return ParsedTurn.from_slots(Intent.CORRECTION, slots)
        intent = (Intent.PROVIDE_BOTH if slots.date and slots.time
                  else Intent.PROVIDE_DATE if slots.date else Intent.PROVIDE_TIME)
        return ParsedTurn.from_slots(intent, slots, affirm=any_yes)
    if _CORRECTION.search(plain):
        clear = frozenset(name for name, pattern in (("time", _TIME_TARGET), ("date", _DATE_TARGET))
                          if pattern.search(s))
        if clear:
            return ParsedTurn.from_slots(Intent.CORRECTION, slots, clear=clear)
    if _GOODBYE.search(s) and not strong_yes and not _goes_on(s, now):
        return ParsedTurn.from_slots(Intent.GOODBYE, slots)
    partial = slots.month is not None or slots.meridiem is not None
    if no is not None and (partial or _refuses(plain, no)):
        return ParsedTurn.from_slots(Intent.CORRECTION if partial else Intent.DENY, slots)
    if any_yes:
        return ParsedTurn.from_slots(Intent.AFFIRM, slots)
    if _BOOK.search(s):
        return ParsedTurn.from_slots(Intent.BOOK, slots)
    if slots.month is not None:
        return ParsedTurn.from_slots(Intent.PROVIDE_DATE, slots)
    if slots.meridiem is not None:
        return ParsedTurn.from_slots(Intent.PROVIDE_TIME, slots)
    return ParsedTurn.from_slots(Intent.UNKNOWN, slots)
