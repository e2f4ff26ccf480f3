"""The reply side of a call: one `Responder` per call turns a `StartReply` into a stream of text.

A responder yields text pieces as they are ready (a rule-based reply is one piece; an LLM's is many
tokens) and ends with a `ReplyEnd` saying whether the call should end after this reply. When the
core cancels a reply the caller never heard (they kept talking), `rollback` undoes that turn in the
dialog, so the combined utterance is not applied twice.

A question about the business (`asks_about_business`: a question the booking rules cannot act on,
or one the knowledge base covers that is not about booking) is answered from the operator's files
(`dialog.knowledge`) and the question the call was waiting on is asked again; the state machine does
not move and the turn is not counted as a misunderstanding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, AsyncIterator, Callable, Protocol

from dialog import prompts
from dialog.events import StartReply
from dialog.intents import Intent, classify, mentions_booking
from dialog.languages import is_question
from dialog.machine import QUESTIONS, DialogReply

if TYPE_CHECKING:
    from dialog.knowledge import Knowledge, Lookup


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    hang_up: bool = False
    transfer_to: str = ""
    prompt_key: str = ""  # the dialog template behind the reply, for caches and metrics
    source: str = ""  # "rules" | "quick" | "cache" | "llm" | the LLM model name
    # What the caller's first audio waited for, for latency per turn kind: "rules" (no LLM), "quick"
    # (a template), "cache", "llm" (one LLM request, the model's words), "llm_tool" (one LLM request
    # whose tool call went through the state machine; the caller hears the machine's words).
    kind: str = ""


ReplyPiece = str | ReplyEnd
Clock = Callable[[], datetime]


class Responder(Protocol):
    def reply(self, request: StartReply) -> AsyncIterator[ReplyPiece]:
        ...

    def rollback(self, turn_id: int) -> None:
        ...

    def snapshot(self) -> dict:
        ...


class RuleResponder:
    """The offline default: the appointment state machine phrases its own replies."""

    def __init__(self, conversation, clock: Clock, restore: Callable[[dict], object],
                 cancel_booking: Callable[[object], None] | None = None, knowledge: "Knowledge | None" = None) -> None:
        self.conversation = conversation
        self._clock = clock
        self._restore = restore  # snapshot -> Conversation (bound to the same settings and store)
        self._cancel_booking = cancel_booking  # a booking made by a turn that is rolled back is withdrawn
        self.knowledge = knowledge  # the business's files (KNOWLEDGE_DIR), None without them
        self._before: dict[int, dict] = {}  # turn -> dialog snapshot before it, for rollback
        self._booked: dict[int, object] = {}  # turn -> the booking it made

    def decide(self, request: StartReply, understand: bool = True):
        """Run the state machine for this turn (sync, instant) and return its `DialogReply`.
        `understand=False`: the caller's words are in a language the rules cannot read (they are
        English), so the turn is one they did not understand (an LLM reads it instead)."""
        self._hold(request)
        now = self._clock()
        conv = self.conversation
        if request.reprompt == "resume":
            decided = conv.on_resume(now)
        elif request.reprompt:
            decided = conv.on_failure(now)
        elif request.dtmf:
            decided = conv.on_dtmf(request.dtmf, now)
        elif request.user_text is None:
            decided = conv.greet(now)
        elif request.user_text and not understand:
            decided = conv.on_slots(None, None, Intent.UNKNOWN, now)
        else:
            decided = conv.on_user(request.user_text, now)
        return self._note_booking(request.turn_id, decided)

    def _hold(self, request: StartReply) -> None:
        """Remember the dialog as it was before this turn, for `rollback` and `redecide`."""
        self._before = {request.turn_id: self.conversation.snapshot()}
        self._booked = {}

    # Questions about the business -------------------------------------------

    async def consult(self, request: StartReply) -> "Lookup | None":
        """The knowledge base's passages for the caller's words (off the event loop); None without a
        knowledge base, or for a turn with no words."""
        if self.knowledge is None or not request.user_text or request.reprompt or request.dtmf:
            return None
        return await self.knowledge.lookup(request.user_text, self.conversation.language)

    def asks_about_business(self, request: StartReply, lookup: "Lookup | None") -> bool:
        """A question for the knowledge base rather than the booking rules: a question naming a topic
        ("Do you take walk-ins?"), with the call still asking something, that the rules either cannot
        act on, or would misread as booking details ("What time do you open tomorrow?" is not a day
        for the booking) when the files cover it and it says nothing of booking. A request to repeat
        and "Can I book Tuesday at 3?" stay the rules'. In another language than English every question
        is (the rules read English only)."""
        text = request.user_text or ""
        conv = self.conversation
        if lookup is None or not lookup.topic_words or conv.asking is None or not is_question(text, conv.language):
            return False
        if conv.language != "en":
            return True
        parsed = classify(text, self._clock().astimezone(conv.settings.tz), QUESTIONS.get(conv.asking))
        if parsed.intent is Intent.REPEAT:
            return False
        if parsed.intent is Intent.UNKNOWN:
            return True
        return lookup.covered and not mentions_booking(text)

    def answer(self, request: StartReply, lookup: "Lookup"):
        """The offline answer to a question about the business: the best passage's sentences that hold
        the question's words, or a sentence saying the agent does not know; then the waiting question.
        The state machine does not move, and nothing is counted against the caller."""
        self._hold(request)
        conv = self.conversation
        best = lookup.best
        said = ""
        if self.knowledge is not None and best is not None and best.passage.language == conv.language:
            said = self.knowledge.read(lookup)
        said = said or prompts.render("knowledge_unknown", {}, language=conv.language)
        return DialogReply(f"{said} {conv.question(self._clock())}", conv.state, Intent.UNKNOWN, "knowledge",
                           slots=conv.slots)

    def _note_booking(self, turn_id: int, decided):
        if getattr(decided, "booking", None) is not None:
            self._booked[turn_id] = decided.booking
        return decided

    def redecide(self, turn_id: int, intent, day, at):
        """Undo this turn's decision and apply slots an LLM extracted instead (same transitions)."""
        before = self._before.get(turn_id)
        if before is not None:
            self.conversation = self._restore(before)
        return self._note_booking(turn_id, self.conversation.on_slots(day, at, intent, self._clock()))

    def now(self) -> datetime:
        return self._clock()

    async def reply(self, request: StartReply) -> AsyncIterator[ReplyPiece]:
        lookup = await self.consult(request)
        if self.asks_about_business(request, lookup):
            decided = self.answer(request, lookup)  # type: ignore[arg-type]
        else:
            decided = self.decide(request)
        yield decided.text
        yield ReplyEnd(hang_up=decided.hang_up, transfer_to=decided.transfer_to,
                       prompt_key=decided.prompt_key, source="rules", kind="rules")

    def rollback(self, turn_id: int) -> None:
        before = self._before.pop(turn_id, None)
        if before is not None:
            self.conversation = self._restore(before)
        booking = self._booked.pop(turn_id, None)
        if booking is not None and self._cancel_booking is not None:
            self._cancel_booking(booking)

    def snapshot(self) -> dict:
        return self.conversation.snapshot()
