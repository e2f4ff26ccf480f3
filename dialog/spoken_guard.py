"""Keep a model's own words from stating what happened to a booking.

In a turn the rules did not understand, the model may speak: an answer to an off-script question, or
a lead-in ("Okay,") before it records details through its tool. What happened to the booking (made,
refused, moved, a time free or taken) is the state machine's to say, in its own words, after the
model's. A model that claims an outcome anyway ("Great, you're booked!") would contradict the
machine ("Sorry, 3 pm is taken"), and the prompt asking it not to is not a guarantee. So the model's
words reach the caller a phrase at a time, cut by the same chunker the gateway uses, and a phrase
that claims an outcome is not spoken, nor is anything the model says after it (its next words
rest on the outcome it made up: "See you then."). Cutting at phrase boundaries costs no latency:
the gateway's chunker would not have spoken a phrase before its boundary either.

The check is deliberately blunt: a phrase dropped by mistake ("I can check what's available") costs
a few words the machine's question replaces; a claim let through costs the caller's trust.
"""

from __future__ import annotations

import re

from dialog.chunker import SentenceChunker

# Words that state an outcome only the machine knows: a booking made, changed or cancelled, a time
# free or taken. "open" is not among them: "we're open weekdays, 9 to 5" is an answer about hours.
OUTCOME_CLAIM = re.compile(
    r"\b(?:booked|reserved|confirmed|scheduled|cancell?ed|rescheduled|moved|changed|"
    r"all set|you're set|set up for|got you down|put you down|pencil(?:l)?ed|"
    r"(?:un)?available|free|taken|fully booked|no longer|see you|seeing you)\b", re.I)


def claims_outcome(phrase: str) -> bool:
    return OUTCOME_CLAIM.search(phrase.replace("\u2019", "'")) is not None


class OutcomeGuard:
    """Streamed model text in, speakable phrases out, minus the ones that claim an outcome."""

    def __init__(self) -> None:
        self._chunker = SentenceChunker()
        self.dropped: list[str] = []

    def push(self, text: str) -> list[str]:
        return self._keep(self._chunker.push(text))

    def flush(self) -> list[str]:
        return self._keep(self._chunker.flush())

    def _keep(self, phrases: list[str]) -> list[str]:
        kept = []
        for phrase in phrases:
            if self.dropped or claims_outcome(phrase):
                self.dropped.append(phrase)
            else:
                kept.append(phrase)
        return kept
