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

from gateway.events import StartReply


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    hang_up: bool = False
    transfer_to: str = ""
    prompt_key: str = ""  # the dialog template behind the reply, for caches and metrics
    source: str = ""  # "rules" | "quick" | "cache" | "llm" | the LLM model name


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

    def __init__(self, conversation, clock: Clock, restore: Callable[[dict], object]) -> None:
        self.conversation = conversation
        self._clock = clock
        self._restore = restore  # snapshot -> Conversation (bound to the same settings and store)
        self._before: dict[int, dict] = {}  # turn -> dialog snapshot before it, for rollback

    def decide(self, request: StartReply):
        """Run the state machine for this turn (sync, instant) and return its `DialogReply`."""
        self._before = {request.turn_id: self.conversation.snapshot()}
        now = self._clock()
        conv = self.conversation
        if request.reprompt:
            return conv.on_failure(now)
        if request.dtmf:
            return conv.on_dtmf(request.dtmf, now)
        if request.user_text is None:
            return conv.greet(now)
        return conv.on_user(request.user_text, now)

    def redecide(self, turn_id: int, intent, day, at):
        """Undo this turn's decision and apply slots an LLM extracted instead (same transitions)."""
        before = self._before.get(turn_id)
        if before is not None:
            self.conversation = self._restore(before)
        return self.conversation.on_slots(day, at, intent, self._clock())

    def now(self) -> datetime:
        return self._clock()

    async def reply(self, request: StartReply) -> AsyncIterator[ReplyPiece]:
        decided = self.decide(request)
        yield decided.text
        yield ReplyEnd(hang_up=decided.hang_up, transfer_to=decided.transfer_to,
                       prompt_key=decided.prompt_key, source="rules")

    def rollback(self, turn_id: int) -> None:
        before = self._before.pop(turn_id, None)
        if before is not None:
            self.conversation = self._restore(before)

    def snapshot(self) -> dict:
        return self.conversation.snapshot()
