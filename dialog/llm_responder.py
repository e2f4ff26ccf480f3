"""LLM mode: the state machine decides, the LLM understands what the rules cannot and phrases replies.

A caller turn waits for at most one LLM request before its first audio, whatever the caller said.

- The rules understood the turn (also the greeting, DTMF and re-prompts): the state machine has
  decided, at once. The decision (the machine's template text) is answered, per the latency mode, as
  a quick response, from the response cache, or phrased by the LLM in its own words, streamed token
  by token (`dialog.latency`).
- The rules did not understand it (the machine would re-ask its question, or give up; see
  `misunderstood`): one streamed request, with the machine's state in the prompt and the tool
  `record_booking_details` on offer (`dialog.llm_prompts`). The model either records what the caller
  said through the tool, or answers what was said (an off-script question, small talk, a request the
  agent cannot help with) in a sentence and asks the waiting question; or both, a short lead-in
  before the tool call. A tool call goes through the same state machine (`RuleResponder.redecide` ->
  `on_slots`): slot availability and business hours are checked there, nothing is booked because the
  model said so, and the caller hears the machine's outcome in its own words (the template) straight
  after the model's lead-in, with no second request; a call with no lead-in gets "Okay." (rendered at
  startup) as it starts streaming, so the arguments' stream is not silence. The machine's words reach
  the next turn's request through the history. The model's own words never state an outcome
  (`dialog.spoken_guard`).

Why one request that may speak or record (bench/turn_alternatives.py: the off-script conversation of
loadgen/conversations.py through OpenAiLlm against the emulator, LLM first token 300 ms and 50 tokens/s,
latency mode enabled; first speakable phrase after the STT final, median of 5 conversations):

| alternative | off-script answer | details recorded through the tool |
|---|---|---|
| one request, speak or record (this) | 383 ms, 1 request | 325 ms, 1 request |
| extraction, then the phrasing (before) | 1086 ms, 2 requests in sequence | 464 ms, 1 request (805 ms, 2, when the LLM phrases every reply) |
| extraction, then the machine's template | 644 ms, 1 request, and a blind re-ask | 464 ms, 1 request |
| extraction and the phrasing of the re-ask at once (speculation) | 647 ms, 2 requests | 483 ms, 2 requests |

Extraction must read a whole response before it knows there is no tool call, so every alternative
built on it waits for the model's full answer, and none of them can answer what the caller asked.

The LLM chain: the primary model, then the fallback model (if configured), then the template itself.
A failure before anything was said moves to the next; after words were said the reply ends with the
machine's question (the caller has heard the start; repeating it would be worse). A failure before a
tool call is whole leaves the machine as the rules left it: nothing half-recorded is applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import AsyncIterator, Sequence

from dataclasses import replace

from dialog import languages, prompts
from dialog.events import StartReply
from dialog.intents import Intent
from dialog.knowledge import Lookup
from dialog.languages import CallLanguage
from dialog.latency import QUICK_PROMPT_KEYS, LatencySuite, cache_key, normalize_intent, quality_score
from dialog.llm_prompts import (
    TOOL_NAME, caller_words, earlier_message, parse_tool_arguments, persona, phrase_messages, tool, turn_messages,
)
from dialog.machine import CHECKS, Check, DialogReply, State, next_steps
from dialog.responder import ReplyEnd, ReplyPiece, RuleResponder
from dialog.spoken_guard import OutcomeGuard
from dialog.summary import RECENT_HISTORY_CHARS, CallMemory
from providers.base import LanguageModel, ProviderError, SpokenLanguage, ToolCall, ToolCallStarted

__all__ = ["LlmResponder", "misunderstood"]

log = logging.getLogger("voicegate.dialog.llm")

# ~500 tokens of past turns verbatim, older ones summarized (dialog.summary): enough context, and a first
# token as fast on the sixtieth turn as on the first.
HISTORY_BUDGET_CHARS = RECENT_HISTORY_CHARS
MAX_REPLY_TOKENS = 150  # two short spoken sentences, or a tool call, with room to spare
GIVE_UP_KEYS = frozenset(CHECKS[check][1] for check in (Check.GAVE_UP, Check.GAVE_UP_TRANSFER))


@dataclass(frozen=True, slots=True)
class TurnContext:
    """Where the call stood before a turn the rules did not understand: what the model is told."""

    question: str  # the question waiting for an answer, in its plain words
    steps: tuple[Intent, ...]  # what the caller can do now (the machine's rows from that state)


class LlmResponder:
    def __init__(self, rules: RuleResponder, llms: Sequence[LanguageModel], suite: LatencySuite,
                 business: str = "the clinic", language: CallLanguage | None = None,
                 spoken: SpokenLanguage | None = None, memory: CallMemory | None = None) -> None:
        self.rules = rules
        self.llms = list(llms)  # primary first, then fallbacks
        self.suite = suite
        self.business = business
        # The call's language and the rule that follows the caller (dialog.languages); `spoken` is the
        # same call's TTS streams' view of it (providers.base.SpokenLanguage).
        self.language = language or CallLanguage()
        self.spoken = spoken or SpokenLanguage()
        self.memory = memory or CallMemory(HISTORY_BUDGET_CHARS)  # older turns summarized (dialog.summary)
        restored = self.rules.conversation.language  # a resumed call goes on in its language
        self._speak(restored if restored in self.language.supported else self.language.current)

    # The Responder protocol -------------------------------------------------

    def rollback(self, turn_id: int) -> None:
        self.rules.rollback(turn_id)

    def snapshot(self) -> dict:
        return self.rules.snapshot()

    async def reply(self, request: StartReply) -> AsyncIterator[ReplyPiece]:
        rules = self.rules
        switch = self._follow(request)
        # Read before the rules move the machine: the question the caller was answering.
        context = self._context() if request.user_text and self.llms and not request.reprompt else None
        # The business's facts for what the caller said, off the loop: they go in this turn's one request.
        lookup = await rules.consult(request) if context is not None else None
        if switch == "unsupported":
            pieces = self._fixed(self._unsupported(request))
        elif context is not None and rules.asks_about_business(request, lookup):
            # A question about the business: answered from the files, the machine held where it was.
            # The offline answer stands in if every model fails.
            held = rules.answer(request, lookup)  # type: ignore[arg-type]
            pieces = self._one_request(request, held, context, lookup=lookup, asked=True)
        else:
            # In a language the rules cannot read, every turn is one they did not understand.
            decided = rules.decide(request, understand=rules.conversation.language == "en")
            if context is not None and misunderstood(decided):
                pieces = self._one_request(request, decided, context, lookup=lookup)
            else:
                pieces = self._answer(request, decided)
        async for piece in pieces:
            if isinstance(piece, ReplyEnd):
                # The reply is out: a long call's older turns are summarized now, beside the call.
                self.memory.after_reply(request.history, self.llms)
            yield piece

    # The call's language ------------------------------------------------------

    def _follow(self, request: StartReply) -> str:
        """Follow a caller who speaks another supported language (dialog.languages); "unsupported"
        when they speak one that is not."""
        if not self.language.multilingual or not request.user_text or request.reprompt:
            return ""
        outcome = self.language.hear(request.language, request.user_text)
        if outcome == "switched":
            log.info("the call follows the caller into another language",
                     extra={"fields": {"language": self.language.current}})
            self._speak(self.language.current)
        elif outcome == "unsupported":
            log.info("the caller speaks a language not supported", extra={"fields": {"detected": request.language}})
        return outcome

    def _speak(self, code: str) -> None:
        """Prompts, the LLM's words and the TTS voice in `code` from now on."""
        self.language.current = code
        self.rules.conversation.language = code
        self.spoken.code = code

    def _unsupported(self, request: StartReply) -> DialogReply:
        """One sentence in the default language naming the languages spoken, then the waiting
        question; counted as a misunderstanding, so a caller who goes on in it is not held forever."""
        code = self.language.default
        self._speak(code)
        rules = self.rules
        decided = rules.decide(request, understand=False)
        if decided.state is not State.FALLBACK:
            return decided  # one misunderstanding too many: the machine's goodbye or transfer
        sentence = prompts.render("unsupported_language",
                                  {"languages": languages.say_languages(self.language.supported, code)}, language=code)
        return replace(decided, text=f"{sentence} {rules.conversation.question(rules.now())}",
                       prompt_key="unsupported_language")

    async def _fixed(self, decided: DialogReply) -> AsyncIterator[ReplyPiece]:
        yield decided.text
        yield _end(decided, "rules", "rules")

    def _history(self, request: StartReply) -> list[dict]:
        """The conversation for the model: older turns summarized, recent ones verbatim (dialog.summary)."""
        summary, recent = self.memory.prompt_history(request.history)
        return [*earlier_message(summary), *recent]

    # The rules understood the turn: quick response, cache, or the LLM's phrasing --

    async def _answer(self, request: StartReply, decided: DialogReply) -> AsyncIterator[ReplyPiece]:
        suite = self.suite
        quick = decided.prompt_key in QUICK_PROMPT_KEYS
        # Quick replies are keyed without the caller's words: "yes" and "yep" get the same confirmation.
        language = self.rules.conversation.language  # a phrasing is cached per language
        key = cache_key(decided.state.value, decided.prompt_key if language == "en" else f"{language}:{decided.prompt_key}",
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
            yield _end(decided, fast[1], fast[1])
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
        asked_llm = source != "rules" or len(spoken) > 1  # a failed model's fragment, then the template
        yield _end(decided, source, "llm" if asked_llm else "rules")

    async def _phrase(self, request: StartReply, decided: DialogReply) -> AsyncIterator[tuple[str, str]]:
        now = self.rules.now()
        messages = phrase_messages(persona(self.business, now, decided.slots, self.rules.conversation.language),
                                   self._history(request), caller_words(request.user_text, request.dtmf),
                                   decided.text)
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

    # The rules did not understand it: one request, to speak or to record -----

    def _context(self) -> TurnContext | None:
        conv = self.rules.conversation
        asking = conv.asking
        if asking is None:
            return None  # the call has ended: nothing the model records could change that
        return TurnContext(conv.question(self.rules.now()), next_steps(asking))

    async def _one_request(self, request: StartReply, decided: DialogReply, context: TurnContext,
                           lookup: Lookup | None = None, asked: bool = False) -> AsyncIterator[ReplyPiece]:
        now = self.rules.now()
        conv = self.rules.conversation
        settings, language = conv.settings, conv.language
        # The facts go in this same request: a knowledge base is configured (`lookup` is not None)
        # and found passages, or the caller asked a question (then "no fact matches" is said too).
        facts = None
        if lookup is not None and (asked or lookup.hits):
            facts = [p.full for p in lookup.passages()]
        messages = turn_messages(persona(self.business, now, decided.slots, language), self._history(request),
                                 request.user_text or "", question=context.question, steps=context.steps,
                                 days=languages.say_days(settings, language),
                                 hours=languages.say_hours(settings, language), now=now, facts=facts, asked=asked,
                                 business=self.business, facts_cover=lookup is not None and lookup.covered)
        tools = [tool(context.steps)]
        # The model may speak only while the machine stays on its question (a re-ask, or a question
        # about the business, which holds it). When this misunderstanding would end the call (one too
        # many in a row), only a tool call can change that, and an answer ending "would you like to
        # book?" before a goodbye would contradict it.
        may_speak = asked or decided.state is State.FALLBACK
        said: list[str] = []  # the model's phrases the caller hears
        acked = False  # the acknowledgement went out while a tool call streamed
        source = "rules"
        for llm in self.llms:
            guard = OutcomeGuard()
            call: ToolCall | None = None
            failed = False
            try:
                async for chunk in llm.stream(messages, tools=tools, max_tokens=MAX_REPLY_TOKENS):
                    if isinstance(chunk, ToolCallStarted):
                        if not may_speak or chunk.name != TOOL_NAME:
                            continue
                        # The text before the call is complete: its last phrase goes now, not after
                        # the arguments. A call with no words before it gets the acknowledgement, so
                        # the caller hears something at the first token, not after the arguments.
                        for phrase in guard.flush():
                            said.append(phrase)
                            yield phrase + " "
                        if not said and not acked:
                            acked = True
                            yield prompts.render("tool_ack", {}, language=self.rules.conversation.language) + " "
                    elif isinstance(chunk, ToolCall):
                        call = call or (chunk if chunk.name == TOOL_NAME else None)
                    elif chunk and may_speak:
                        for phrase in guard.push(chunk):
                            said.append(phrase)
                            yield phrase + " "
            except ProviderError as exc:
                log.warning("LLM failed", extra={"fields": {"provider": exc.provider, "error": str(exc)[:200],
                                                            "heard": bool(said), "whole_tool_call": call is not None}})
                failed = True
                if call is None and not said:
                    continue  # nothing said, nothing recorded: the next model gets the same request
            source = llm.name
            if guard.dropped:
                log.info("model claimed an outcome; not spoken", extra={"fields": {"dropped": guard.dropped}})
                self.suite.note("claim_dropped", phrases=list(guard.dropped))
            outcome = self._record(request.turn_id, call) if call is not None else None
            if outcome is not None:
                # The machine's words, at once: its outcome is what the caller must hear.
                self._score(" ".join([*said, outcome.text]), outcome.text)
                yield outcome.text
                yield _end(outcome, source, "llm_tool")
                return
            if not failed:
                for phrase in guard.flush():  # the last phrase has no boundary after it
                    said.append(phrase)
                    yield phrase + " "
            break
        if not said:
            # Every model failed, or said nothing the caller may hear: the machine's re-ask.
            yield decided.text
            yield _end(decided, "rules", "rules" if source == "rules" and not acked else "llm")
            return
        if not said[-1].rstrip().endswith("?"):
            # An answer must move the call on: the waiting question, if the model did not ask it.
            said.append(context.question)
            yield context.question
        self._score(" ".join(said), decided.text)
        yield _end(decided, source, "llm")

    def _record(self, turn_id: int, call: ToolCall) -> DialogReply | None:
        """The model's tool call into the state machine; None when it adds nothing to the rules'
        decision (a malformed call, or "unknown" with no date or time)."""
        try:
            intent, day, at = parse_tool_arguments(call.arguments)
        except ValueError as exc:  # orjson's decode error is one too
            log.info("LLM tool call refused", extra={"fields": {"error": str(exc)[:200]}})
            return None
        if intent is Intent.UNKNOWN and day is None and at is None:
            return None
        return self.rules.redecide(turn_id, intent, day, at)

    # ------------------------------------------------------------------------

    def _score(self, text: str, reference: str) -> None:
        score = quality_score(text, reference)
        average = self.suite.quality.add(score)
        self.suite.note("quality", score=score, average=average)


def misunderstood(decided: DialogReply) -> bool:
    """The rules did not understand the caller's words: the machine re-asks its question, or, after
    one misunderstanding too many, gives up. Whatever the classifier returned (UNKNOWN, a slot turn
    with no usable slot, a vague or impossible date, a yes to a question not asked), the machine's
    answer says so."""
    return decided.state is State.FALLBACK or decided.prompt_key in GIVE_UP_KEYS


def _end(decided: DialogReply, source: str, kind: str) -> ReplyEnd:
    return ReplyEnd(hang_up=decided.hang_up, transfer_to=decided.transfer_to, prompt_key=decided.prompt_key,
                    source=source, kind=kind)
