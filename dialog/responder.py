"""The reply side of a call: one `Responder` per call turns a `StartReply` into a stream of text.

A responder yields text pieces as they are ready (a rule-based reply is one piece; an LLM's is many
tokens) and ends with a `ReplyEnd` saying whether the call should end after this reply. When the
core cancels a reply the caller never heard (they kept talking), `rollback` undoes that turn in the
dialog, so the combined utterance is not applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterator, Callable, Protocol

from dialog.events import StartReply


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
                 cancel_booking: Callable[[object], None] | None = None) -> None:
        self.conversation = conversation
        self._clock = clock
        self._restore = restore  # snapshot -> Conversation (bound to the same settings and store)
        self._cancel_booking = cancel_booking  # a booking made by a turn that is rolled back is withdrawn
        self._before: dict[int, dict] = {}  # turn -> dialog snapshot before it, for rollback
        self._booked: dict[int, object] = {}  # turn -> the booking it made

    def decide(self, request: StartReply):
        """Run the state machine for this turn (sync, instant) and return its `DialogReply`."""
        self._before = {request.turn_id: self.conversation.snapshot()}
        self._booked = {}
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
        else:
            decided = conv.on_user(request.user_text, now)
        return self._note_booking(request.turn_id, decided)

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
