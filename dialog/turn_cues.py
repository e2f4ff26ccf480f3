"""What a caller's words say about turn-taking: an acknowledgement that lets the agent go on, and a
thought that is not finished yet.

Both are judged on the transcript alone, cheaply, at the moment the call core has to decide:

- `is_backchannel`: "uh-huh", "yeah", "right", "okay", "mm-hm", "sure" said while the agent is
  talking tell it to go on; they are not a turn. "No", "wait", "stop", "hold on", a question, or
  anything longer than a few words is (a person would stop for it).
- `is_fragment`: two or three words that trail off ("I have to...", "We have...") are a start the
  caller did not go on with, or talk nearby that the engine half caught: while the agent is talking they
  let it go on, as a backchannel does. With a stop word, a number or a question mark they are a turn.
- `sounds_unfinished`: a caller who pauses after "I'd like to come in on", "next", "at", "and",
  "um", or an hour with no minutes yet ("half past") has not finished the thought; answering into the
  pause cuts them off. A finished sentence ("Tuesday at 3.") is answered at once.

Speech-to-text engines write these in many ways ("uh huh", "Uh-huh.", "mhm", "Mm-hmm"): the text is
normalised to lower-case words first.
"""

from __future__ import annotations

import re

__all__ = ["is_backchannel", "is_fragment", "sounds_unfinished"]

# A backchannel is short: past this many words it carries content of its own.
MAX_BACKCHANNEL_WORDS = 4

_ACKS = frozenset({
    "uh huh", "uh-huh", "uhhuh", "mhm", "mm hmm", "mmhmm", "mm hm", "mmhm", "hmm", "mm", "m hm", "um hum",
    "yeah", "yes", "yep", "yup", "yeh", "ya", "okay", "ok", "k", "right", "alright", "all right", "sure",
    "got it", "i see", "cool", "great", "fine", "good", "nice", "oh", "ah", "aha", "oh okay", "i know",
    "go on", "sounds good", "perfect", "gotcha", "makes sense", "of course", "exactly", "true",
})
_ACK_FILLERS = frozenset({"oh", "ah", "uh", "um", "well", "so", "yeah", "okay", "ok", "right", "sure", "mm"})
# Words that stop a person talking, whatever else is said.
_STOP = re.compile(r"\b(?:no|nope|not|wait|stop|hold on|hang on|sorry|excuse me|actually|but|hello|hey|"
                   r"what|why|how|when|where|who|can|could|would|will|do|does|is|are)\b")

# A fragment is shorter still: a request, even cut off, takes more words ("I'd like to book...").
MAX_FRAGMENT_WORDS = 3
# How engines write a voice that trails off (whisper: "...", Deepgram: "-").
_TRAILING_OFF = ("...", "\u2026", "-", "\u2014")

# Words a sentence does not end on: conjunctions, prepositions, articles, possessives, fillers, a subject
# with no verb yet, and the first halves of a date or a time. Kept to words that end almost no complete
# answer: "that", "so", "then", "maybe" end plenty ("I'd like that.", "I think so.").
_TRAILING = frozenset({
    "and", "or", "but", "because", "cause", "if",
    "the", "a", "an", "my", "your", "our", "their",
    "on", "at", "in", "for", "to", "with", "of", "from", "by", "about", "around", "after", "before", "until",
    "till", "between", "into", "near",
    "um", "uh", "er", "erm", "uhm",
    "next", "half", "quarter", "past", "i", "i'm", "i'd", "we", "we'd", "it's", "is", "was",
    "want", "need", "could", "would", "should",
})
# Endings on those words that are complete: phrasal verbs and an infinitive answering a question.
_COMPLETE_ENDINGS = (
    "come in", "check in", "drop in", "pop in", "me in", "us in", "hold on", "go on", "come on", "later on",
    "like to", "love to", "want to", "need to", "have to", "be in", "right in", "that in", "it in", "i would",
    "we would", "i could", "we could", "you could", "i need", "i was", "it is", "that is", "this is",
)
_WORD = re.compile(r"[a-z']+|\d+")


_HUM = re.compile(r"[mh]*m[mh]*")  # "mm", "mmm", "hmm", "mhm", "mmhmm": a hum, however it is spelled


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("-", " "))


def _ack_words(text: str) -> list[str]:
    """Words with hums spelled one way ("MMM." and "Mm-hmm" are "mm"), letters held long squashed."""
    out = []
    for word in _words(text):
        word = re.sub(r"(.)\1{2,}", r"\1\1", word)  # "yeahhh" -> "yeahh", "okkk" -> "okk"
        out.append("mm" if _HUM.fullmatch(word) else word)
    return out


def is_backchannel(text: str) -> bool:
    """An acknowledgement that asks the agent to go on, not a turn of its own."""
    words = _ack_words(text)
    if not words or len(words) > MAX_BACKCHANNEL_WORDS or "?" in text:
        return False
    phrase = " ".join(words)
    if _STOP.search(phrase):
        return False
    if phrase in _ACKS:
        return True
    # "oh okay", "yeah yeah", "right right, sure": every word an acknowledgement or a filler.
    rest = [w for w in words if w not in _ACK_FILLERS]
    return not rest or " ".join(rest) in _ACKS


def is_fragment(text: str) -> bool:
    """A few words that trail off with nothing asked or refused: not a turn while the agent talks."""
    stripped = text.strip()
    words = _words(stripped)
    if not words or len(words) > MAX_FRAGMENT_WORDS or not stripped.endswith(_TRAILING_OFF):
        return False
    if "?" in stripped or any(w.isdigit() for w in words):
        return False  # a question, or a number that may be a day or a time the caller is giving
    return not _STOP.search(" ".join(words))


def sounds_unfinished(text: str) -> bool:
    """The transcript stops where a sentence cannot end: the caller paused mid-thought."""
    stripped = text.strip()
    if not stripped:
        return False
    if stripped.endswith(_TRAILING_OFF + (",",)):
        return True  # engines write a trailing-off voice this way (or break off at a comma)
    words = _words(stripped)
    if not words:
        return False
    if stripped[-1] in "?!":
        return False  # a question or an exclamation is a whole turn
    # A full stop is not trusted: engines put one after "I'd like to come in on" too.
    if words[-1] not in _TRAILING:
        return False
    return not " ".join(words[-3:]).endswith(_COMPLETE_ENDINGS)
