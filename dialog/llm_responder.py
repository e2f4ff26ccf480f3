"""LLM mode: the state machine decides, the LLM understands what the rules cannot and phrases replies.

Each turn runs in two steps:
1. Decide. The offline extractor and the state machine handle the turn first (instant). Only when
   they do not understand it (intent UNKNOWN) is the LLM asked to extract the slots through a tool
   call (`record_booking_details`), which goes into the same state machine (`on_slots`). The machine
   stays the source of truth: a provider failure leaves it exactly where it was.
2. Phrase. The decision (the machine's template text) is said in the LLM's words, streamed token by
   token so the first sentence is being spoken before the LLM has finished; or, per the latency
   mode, answered as a quick response or from the response cache (see `dialog.latency`).

The LLM chain: the primary model, then the fallback model (if configured), then the template
itself. A failure before any text was produced moves to the next; after text was produced the reply
ends there (the caller has heard it; repeating it would be worse).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime
from typing import AsyncIterator, Sequence

import orjson

from dialog.intents import Intent
from dialog.latency import QUICK_PROMPT_KEYS, LatencySuite, cache_key, normalize_intent, quality_score
from dialog.responder import ReplyEnd, ReplyPiece, RuleResponder
from dialog.slots import TimeOfDay
from dialog.events import StartReply
from providers.base import LanguageModel, ProviderError, ToolCall

log = logging.getLogger("voicegate.dialog.llm")

HISTORY_BUDGET_CHARS = 3000  # ~750 tokens of past turns: enough context, a fast first token
MAX_REPLY_TOKENS = 150
EXTRACTION_TIMEOUT_S = 4.0  # the tool call must come back fast, or the rules' re-ask is better

TOOL = {
    "type": "function",
    "function": {
        "name": "record_booking_details",
        "description": "Record what the caller said about their appointment: the date and/or time they "
                       "want, and whether they confirm, decline, want to change, want a repeat, or say goodbye.",
        "parameters": {
            "type": "object",
            "properties": {
                "date": {"type": ["string", "null"], "description": "YYYY-MM-DD, resolved against today"},
                "time": {"type": ["string", "null"], "description": "HH:MM, 24-hour"},
                "intent": {"type": "string", "enum": [i.value for i in Intent]},
            },
            "required": ["intent"],
        },
    },
}

PERSONA = (
    "You are the phone receptionist of {business}. You book appointments. You speak to a caller on the "
    "phone, so: plain spoken English, at most two short sentences, no lists, no markup, no URLs, no emoji. "
    "Today is {today}. The booking so far: {slots}."
)
PHRASE = (
    "Say the following to the caller in your own natural words. Keep every date, time and number exactly, "
    "keep any question, and add nothing else: \"{decision}\""
)
EXTRACT = (
    "Call record_booking_details with what the caller just said. Resolve relative dates against today "
    "({today}, {weekday})."
)


class LlmResponder:
    def __init__(self, rules: RuleResponder, llms: Sequence[LanguageModel], suite: LatencySuite,
                 business: str = "the clinic") -> None:
        self.rules = rules
        self.llms = list(llms)  # primary first, then fallbacks
        self.suite = suite
        self.business = business

    # The Responder protocol -------------------------------------------------

    def rollback(self, turn_id: int) -> None:
        self.rules.rollback(turn_id)

    def snapshot(self) -> dict:
        return self.rules.snapshot()

    async def reply(self, request: StartReply) -> AsyncIterator[ReplyPiece]:
        decided = await self._decide(request)
        end = ReplyEnd(hang_up=decided.hang_up, transfer_to=decided.transfer_to, prompt_key=decided.prompt_key)
        suite = self.suite
        quick = decided.prompt_key in QUICK_PROMPT_KEYS
        # Quick replies are keyed without the caller's words: "yes" and "yep" get the same confirmation.
        key = cache_key(decided.state.value, decided.prompt_key,
                        decided.intent.value + ("" if quick else ":" + normalize_intent(request.user_text)),
                        dict(decided.slots))
        fast: tuple[str, str] | None = None  # (text, source) the fast path would say
        if suite.mode != "disabled":
            suite.note("quick", hit=quick)
            if quick:
                fast = (decided.text, "quick")
            else:
                cached = await suite.cache.get(key)
                suite.note("cache", hit=cached is not None)
                if cached is not None:
                    fast = (cached, "cache")
        if suite.mode == "enabled" and fast is not None:
            self._score(fast[0], decided.text)
            yield fast[0]
            yield ReplyEnd(end.hang_up, end.transfer_to, end.prompt_key, source=fast[1])
            return
        spoken: list[str] = []
        source = "rules"
        async for piece, source in self._phrase(request, decided):
            spoken.append(piece)
            yield piece
        text = "".join(spoken).strip()
        if source != "rules" and text:
            await suite.cache.put(key, text)
        if suite.mode == "shadow" and fast is not None and normalize_intent(fast[0]) != normalize_intent(text):
            suite.note("shadow_diff", fast=fast[0], llm=text, source=fast[1])
            log.info("shadow: fast path differs", extra={"fields": {"fast_source": fast[1], "fast": fast[0],
                                                                    "llm": text}})
        self._score(text, decided.text)
        yield ReplyEnd(end.hang_up, end.transfer_to, end.prompt_key, source=source)

    # Step 1: decide ---------------------------------------------------------

    async def _decide(self, request: StartReply):
        decided = self.rules.decide(request)
        if decided.intent is not Intent.UNKNOWN or not request.user_text or not self.llms:
            return decided
        try:
            parsed = await asyncio.wait_for(self._extract(request), EXTRACTION_TIMEOUT_S)
        except (ProviderError, asyncio.TimeoutError, ValueError) as exc:
            log.info("LLM extraction failed; keeping the rules' decision", extra={"fields": {"error": type(exc).__name__}})
            return decided
        if parsed is None:
            return decided
        intent, day, at = parsed
        return self.rules.redecide(request.turn_id, intent, day, at)

    async def _extract(self, request: StartReply) -> tuple[Intent, date | None, TimeOfDay | None] | None:
        now = self.rules.now()
        messages = [
            {"role": "system", "content": self._persona(now)},
            *trim_history(request.history, HISTORY_BUDGET_CHARS),
            {"role": "user", "content": request.user_text or ""},
            {"role": "system", "content": EXTRACT.format(today=now.date().isoformat(), weekday=now.strftime("%A"))},
        ]
        for chunk in [c async for c in self.llms[0].stream(messages, tools=[TOOL], max_tokens=MAX_REPLY_TOKENS)]:
            if isinstance(chunk, ToolCall) and chunk.name == TOOL["function"]["name"]:
                return parse_tool_arguments(chunk.arguments)
        return None

    # Step 2: phrase ---------------------------------------------------------

    async def _phrase(self, request: StartReply, decided) -> AsyncIterator[tuple[str, str]]:
        now = self.rules.now()
        user = request.user_text if request.user_text is not None else (
            f"[the caller pressed {request.dtmf}]" if request.dtmf else "[the call has just connected]")
        messages = [
            {"role": "system", "content": self._persona(now, decided.slots)},
            *trim_history(request.history, HISTORY_BUDGET_CHARS),
            {"role": "user", "content": user},
            {"role": "system", "content": PHRASE.format(decision=decided.text)},
        ]
        for llm in self.llms:
            produced = False
            try:
                async for chunk in llm.stream(messages, max_tokens=MAX_REPLY_TOKENS):
                    if isinstance(chunk, str) and chunk:
                        produced = True
                        yield chunk, llm.name
                if produced:
                    return
            except ProviderError as exc:
                log.warning("LLM failed", extra={"fields": {"provider": exc.provider, "error": str(exc)[:200]}})
                if produced:
                    # The caller has a fragment; the decision (and its question) must still be said.
                    # Said twice is better than a caller left without the question.
                    yield " " + decided.text, "rules"
                    return
        yield decided.text, "rules"  # every LLM failed: the template is always there

    # ------------------------------------------------------------------------

    def _persona(self, now: datetime, slots: dict | None = None) -> str:
        slots = slots if slots is not None else self.rules.conversation.slots
        known = ", ".join(f"{k} {v}" for k, v in dict(slots).items() if v) or "nothing yet"
        return PERSONA.format(business=self.business, today=now.strftime("%A %B %d, %Y"), slots=known)

    def _score(self, text: str, reference: str) -> None:
        score = quality_score(text, reference)
        average = self.suite.quality.add(score)
        self.suite.note("quality", score=score, average=average)


def trim_history(history: Sequence[dict], budget_chars: int) -> list[dict]:
    """The most recent messages that fit the budget, oldest first."""
    kept: list[dict] = []
    used = 0
    for message in reversed(history):
        size = len(str(message.get("content", "")))
        if used + size > budget_chars:
            break
        kept.append(dict(message))
        used += size
    return kept[::-1]


def parse_tool_arguments(arguments: str) -> tuple[Intent, date | None, TimeOfDay | None]:
    """The tool call's JSON, validated: a model's bad date is a ValueError, never a bad booking."""
    data = orjson.loads(arguments or "{}")
    if not isinstance(data, dict):
        raise ValueError("tool arguments are not an object")
    intent = Intent(data.get("intent", "unknown"))
    day = date.fromisoformat(data["date"]) if data.get("date") else None
    at = None
    if data.get("time"):
        hour, _, minute = str(data["time"]).partition(":")
        at = TimeOfDay(int(hour), int(minute or 0), False)
        if not (0 <= at.hour < 24 and 0 <= at.minute < 60):
            raise ValueError("time out of range")
    return intent, day, at
