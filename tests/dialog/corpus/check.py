"""How a transcript's reading compares with what the caller meant, for the corpus tests and summary.

    .venv/bin/python -m tests.dialog.corpus.check [corpus.json]   # share of the corpus understood right

An utterance is understood right when the classifier, given the transcript and the question the
agent had asked, finds exactly the expected day and time (hour and minute), the expected intent for
a turn with no slot, and the expected half of a split answer; and the engine did not reject the
transcript (a rejected one reaches the dialog as "didn't catch that").

A transcript is *faithful* when it still holds every word of the phrasing that carries its meaning
(numbers, months, weekdays, am/pm, parts of the day, "half", "quarter", yes and no...), in order,
after both are normalized as for the word error rate (`wer.words`): "230 in the afternoon would be
great" holds "two thirty in the afternoon", "to 30 in the afternoon" does not. A faithful transcript
must be understood right; one that is not may be, and counts in the share understood.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Callable

from dialog.intents import SLOT_INTENTS, Intent, ParsedTurn, classify
from dialog.slots import Question
from tests.dialog.corpus.phrasings import NOW
from tests.dialog.corpus.wer import words

CORPUS = Path(__file__).with_name("stt_corpus.json")
Classify = Callable[[str, str], ParsedTurn]


def classify_in_context(text: str, asked: str) -> ParsedTurn:
    return classify(text, NOW, Question(asked))


def mismatches(turn: ParsedTurn, expect: dict[str, object]) -> list[str]:
    """What differs between the reading and the expectation ([] when it is right)."""
    wrong = []
    want_date = date.fromisoformat(str(expect["date"])) if "date" in expect else None
    if turn.date != want_date:
        wrong.append(f"date {turn.date} != {want_date}")
    got_time = turn.time.hhmm() if turn.time else None
    if got_time != expect.get("time"):
        wrong.append(f"time {got_time} != {expect.get('time')}")
    if "intent" in expect:
        if turn.intent is not Intent(str(expect["intent"])):
            wrong.append(f"intent {turn.intent.value} != {expect['intent']}")
    elif ("date" in expect or "time" in expect or "month" in expect or "meridiem" in expect) \
            and turn.intent not in SLOT_INTENTS:
        wrong.append(f"intent {turn.intent.value} is not a slot turn")
    elif not expect and turn.intent is not Intent.UNKNOWN:  # nothing usable was left
        wrong.append(f"intent {turn.intent.value} != unknown")
    for key in ("month", "meridiem", "vague_time"):
        if key in expect and getattr(turn, key, None) != expect[key]:
            wrong.append(f"{key} {getattr(turn, key, None)!r} != {expect[key]!r}")
    return wrong


def entry_mismatches(entry: dict, classify_fn: Classify = classify_in_context) -> list[str]:
    """How the entry's transcript was misread against what the caller meant ([] when right)."""
    if entry["rejected"]:
        return [f"rejected ({entry['rejected']})"]  # the dialog never sees it: "didn't catch that"
    return mismatches(classify_fn(entry["heard"], entry["asked"]), entry["expect"])


# The words that carry a phrasing's meaning (besides numbers): a transcript that lost one of them may
# mean something else, and is not held to the expected reading.
KEY_WORDS = frozenset(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday today tomorrow tonight next this week "
    "weeks days after before from in am pm noon midday midnight morning afternoon evening lunch half "
    "quarter past to oclock hundred hours ish yes yeah yep correct right sure absolutely perfect "
    "sounds good fine works no nope not wrong doesnt thanks repeat again pardon catch what book "
    "schedule appointment visit goodbye actually instead change meant said sorry".split())


def key_words(text: str) -> list[str]:
    return [w for w in words(text) if w in KEY_WORDS or any(c.isdigit() for c in w)]


# Transcripts the key-word test takes for faithful that are not, read by hand: whisper changed a
# word that carries the meaning but is not a key word ("say" -> "pay"), or added a contradiction.
# Keyed by (voice, phrasing id), with the transcript, so a rebuilt corpus that changes it shows here.
NOT_FAITHFUL: dict[tuple[str, str], str] = {
    ("flite-slt", "d-friday-after-next"): "Friday after our next...",
    ("flite-slt", "t-how-about-four"): "Tower doubt four.",
    ("espeak-en-us", "t-lets-say-two"): "Let's pay two.",
    ("espeak-en-us-f3", "r-didnt-catch"): "I did this catch net.",
    ("espeak-en-gb-x-rp-m3", "d-day-after-tomorrow"): "Mummy after tomorrow",
    ("espeak-en-gb-x-rp-m3", "t-lets-say-two"): "Let's pay two.",
    ("espeak-en-gb-scotland-f2", "t-four-forty-five-pm"): "4.4.5 in the afternoon.",
    ("espeak-en-gb-scotland-f2", "t-how-about-four"): "Hi Max 4",
    ("espeak-en-gb-scotland-f2", "o-yes-at-date"): "Yes, not right.",
    ("espeak-en-us-nyc-f4", "y-sure-go-ahead"): "Sure, don't end.",
    ("espeak-en-gb-x-gbclan-klatt", "r-what-was-that"): "What am I?",
}
# Faithful transcripts the engine rejects (its average log-probability is under REJECT_LOG_PROB):
# the price of the guard, measured by the corpus summary; the caller is asked again.
GUARD_LOSSES: dict[tuple[str, str], str] = {
    ("espeak-en-gb-x-rp-m3", "r-pardon"): "pardon",
    ("espeak-en-us-nyc-f4", "t-at-one"): "one",
}


def faithful(spoken: str, heard: str) -> bool:
    """The heard text holds the spoken key words, in order (other words may be added or lost)."""
    rest = iter(words(heard))
    return all(any(h == k for h in rest) for k in key_words(spoken))


def must_be_understood(entry: dict) -> bool:
    """A faithful transcript, not one of the hand-read exceptions above."""
    key = (entry["voice"], entry["id"])
    return faithful(entry["spoken"], entry["heard"]) and key not in NOT_FAITHFUL and key not in GUARD_LOSSES


def load(path: Path = CORPUS) -> dict:
    return json.loads(path.read_text())


def summary(classify_fn: Classify = classify_in_context, path: Path = CORPUS) -> dict[str, object]:
    entries = load(path)["entries"]
    right = [not entry_mismatches(e, classify_fn) for e in entries]
    by_voice: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for e, ok in zip(entries, right):
        totals[e["voice"]] += 1
        by_voice[e["voice"]] += ok
    return {"utterances": len(entries), "understood": sum(right), "share": round(sum(right) / len(entries), 4),
            "rejected": sum(1 for e in entries if e["rejected"]),
            "faithful": sum(1 for e in entries if must_be_understood(e)),
            "by_voice": {v: f"{by_voice[v]}/{totals[v]}" for v in totals}}


if __name__ == "__main__":
    import sys

    print(json.dumps(summary(path=Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS), indent=1))
