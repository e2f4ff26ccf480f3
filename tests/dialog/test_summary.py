"""A long call's prompt stays short (dialog.summary, issue 25 item 3): older turns summarized, by the
LLM beside the call or extractively, recent ones verbatim; the booking's slots always in the prompt."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from dialog.events import StartReply
from dialog.intents import Intent
from dialog.latency import LatencySuite
from dialog.llm_responder import LlmResponder
from dialog.machine import Conversation, DialogSettings
from dialog.responder import ReplyEnd, RuleResponder
from dialog.summary import RECENT_HISTORY_CHARS, SUMMARY_MAX_CHARS, CallMemory, extractive
from emulators.config import EmulatorConfig
from emulators.server import EmulatorServer, running_emulators
from providers.breaker import CircuitBreaker
from providers.chain import GuardedLlm
from providers.openai_llm import OpenAiLlm
from providers.settings import Settings

pytestmark = pytest.mark.timeout(90)

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))
SETTINGS = DialogSettings()
SUMMARY = "The caller wants a Tuesday appointment and asked about parking; told it is free behind the building."


def history(turns: int) -> list[dict]:
    out: list[dict] = []
    for i in range(turns):
        out.append({"role": "user", "content": f"Question number {i}: is parking free on day {i}? Thanks."})
        out.append({"role": "assistant", "content": f"Yes, parking is free on day {i}. What time would you like?"})
    return out


def size(messages: list[dict]) -> int:
    return sum(len(str(m["content"])) for m in messages)


def test_extractive_keeps_first_sentences_drops_repeats_and_keeps_the_newest() -> None:
    messages = [{"role": "assistant", "content": "What day would you like? We're open 9 to 5."}] * 3
    messages += [{"role": "user", "content": "Tuesday. At three."}]
    assert extractive(messages, 500) == "Agent: What day would you like? Caller: Tuesday."
    assert extractive(messages, 20) == "Caller: Tuesday."


def test_the_prompt_history_is_bounded_however_long_the_call() -> None:
    memory = CallMemory()
    for turns in (2, 20, 60, 200):
        summary, recent = memory.prompt_history(history(turns))
        assert size(recent) <= RECENT_HISTORY_CHARS and len(summary) <= SUMMARY_MAX_CHARS
        assert recent[-1]["content"].startswith(f"Yes, parking is free on day {turns - 1}")  # heard last: verbatim
        assert (summary == "") == (turns == 2)


@pytest.fixture
async def emu() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(llm_first_token=0.0, llm_token_rate=1000.0)
    config.merge({"openai": {"rules": {"Caller: [pressed": SUMMARY}, "default_reply": "Sure."}})  # summaries only
    async with running_emulators(config) as server:
        yield server


async def test_a_sixty_turn_call_keeps_its_prompt_short_and_its_slots(emu: EmulatorServer) -> None:
    llm = OpenAiLlm(Settings(openai_api_key="sk-test", openai_base_url=emu.url + "/v1"))
    conv = Conversation(SETTINGS, None, call_sid="CA1")
    conv.greet(NOW)
    conv.on_slots(date(2026, 11, 24), None, Intent.PROVIDE_DATE, NOW)  # the booking holds a day
    rules = RuleResponder(conv, lambda: NOW, restore=lambda s: Conversation.restore(s, SETTINGS, None))
    responder = LlmResponder(rules, [GuardedLlm(llm, CircuitBreaker("primary"))], LatencySuite(mode="disabled"))
    said: list[dict] = []
    try:
        for turn in range(60):
            request = StartReply(turn, None, tuple(said), dtmf="*")  # "*": a repeat, phrased by the LLM
            text = "".join([p async for p in responder.reply(request) if not isinstance(p, ReplyEnd)])
            said += [{"role": "user", "content": f"[pressed *] turn {turn}, a caller going on and on"},
                     {"role": "assistant", "content": text + f" (turn {turn})"}]
            await asyncio.sleep(0)  # the background summary gets its turn, as between a call's turns
        chats = [r for r in emu.log.openai if r["path"].endswith("/chat/completions")]
        phrasing = [r for r in chats if "earlier part of a phone call" not in r["body"]["messages"][0]["content"]]
        summaries = [r for r in chats if r not in phrasing]
        assert len(phrasing) == 60 and summaries, "older turns were summarized, beside the replies"
        sizes = [size(r["body"]["messages"]) for r in phrasing]
        assert max(sizes) < 4000, sizes  # the sixtieth turn's prompt is as short as the tenth's
        last = phrasing[-1]["body"]["messages"]
        assert "date 2026-11-24" in last[0]["content"], "the booking's slots are never summarized away"
        assert any(m["content"].startswith("Earlier in this call") and SUMMARY in m["content"] for m in last)
        assert last[-3]["content"].endswith("(turn 58)")  # what the caller heard last, verbatim
        assert responder.memory.summaries >= 1
    finally:
        await llm.aclose()
