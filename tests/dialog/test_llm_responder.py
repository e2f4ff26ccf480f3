"""LLM mode on the turns the rules understand: the LLM phrases the machine's decision; the latency suite.

The turns they do not understand (one request that speaks or records through a tool) are in
test_one_request.py, against the OpenAI emulator."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from dialog.latency import LatencySuite, MemoryBackend, ResponseCache, quality_score
from dialog.llm_prompts import parse_tool_arguments, trim_history
from dialog.llm_responder import LlmResponder
from dialog.machine import Conversation, DialogSettings, State
from dialog.responder import ReplyEnd, RuleResponder
from dialog.events import StartReply
from providers.base import ProviderError

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))


class FakeLlm:
    name = "fake-llm"

    def __init__(self, replies=(), fail=None):
        self.replies = list(replies)
        self.fail = fail
        self.requests = []

    async def stream(self, messages, *, tools=(), max_tokens=150):
        self.requests.append({"messages": list(messages), "tools": list(tools), "max_tokens": max_tokens})
        if self.fail is not None:
            raise self.fail
        text = self.replies.pop(0) if self.replies else "Okay."
        for word in text.split(" "):
            yield word + " "


def responder(mode="enabled", llm=None, cache=None):
    settings = DialogSettings()

    def new(snapshot=None):
        if snapshot is not None:
            return Conversation.restore(snapshot, settings, None)
        return Conversation(settings, None, call_sid="CA1")

    events = []
    suite = LatencySuite(mode=mode, cache=cache, observer=lambda kind, data: events.append((kind, data)))
    rules = RuleResponder(new(), lambda: NOW, restore=new)
    return LlmResponder(rules, [llm or FakeLlm()], suite), suite, events


async def turn(r, turn_id, text=None, dtmf=""):
    pieces = [p async for p in r.reply(StartReply(turn_id, text, (), dtmf=dtmf))]
    end = pieces[-1]
    assert isinstance(end, ReplyEnd)
    return "".join(p for p in pieces if isinstance(p, str)).strip(), end, len(pieces) - 1


async def test_enabled_answers_fixed_prompts_without_the_llm():
    llm = FakeLlm()
    r, suite, events = responder("enabled", llm)
    text, end, _ = await turn(r, 0)
    assert end.source == "quick" and "book an appointment" in text
    assert llm.requests == [] and suite.quick_hits == 1
    assert ("quick", {"hit": True}) in events


async def test_disabled_streams_the_llm_phrasing_piece_by_piece():
    llm = FakeLlm(["Hello there, thanks for calling the clinic. Shall we book you in?"])
    r, suite, _ = responder("disabled", llm)
    text, end, pieces = await turn(r, 0)
    assert end.source == "fake-llm" and pieces > 5  # tokens, not one block
    assert text.startswith("Hello there")
    request = llm.requests[0]
    assert request["max_tokens"] <= 150
    # The LLM phrases the state machine's decision: the template is in the prompt.
    assert "Would you like to book an appointment?" in str(request["messages"])


async def test_llm_failure_falls_back_to_the_template():
    r, _, _ = responder("disabled", FakeLlm(fail=ProviderError("fake-llm", "500")))
    text, end, _ = await turn(r, 0)
    assert end.source == "rules" and "book an appointment" in text


async def test_cache_serves_the_same_state_and_intent_the_second_time():
    cache = ResponseCache(MemoryBackend())
    llm = FakeLlm(["We're closed on Sundays; would Monday at 10 work?"] * 3)
    r1, suite, _ = responder("enabled", llm, cache)
    await turn(r1, 0)
    await turn(r1, 1, "I'd like Sunday at 10 am")  # closed day: an offer, not a fixed prompt
    assert len(llm.requests) == 1 and suite.cache.misses == 1
    r2, _, _ = responder("enabled", llm, cache)
    r2.suite = suite
    await turn(r2, 0)
    text, end, _ = await turn(r2, 1, "I'd like Sunday at 10 am")
    assert end.source == "cache" and suite.cache.hits == 1 and len(llm.requests) == 1


async def test_shadow_runs_both_and_the_caller_hears_the_llm():
    llm = FakeLlm(["Hi! Thanks for ringing. Want to book a visit?"])
    r, suite, events = responder("shadow", llm)
    text, end, _ = await turn(r, 0)
    assert text.startswith("Hi! Thanks for ringing") and end.source == "fake-llm"
    assert suite.shadow_diffs == 1 and any(kind == "shadow_diff" for kind, _ in events)


def test_quality_score_rewards_short_complete_clear_replies():
    reference = "So that's Tuesday, November 24th at 3 pm. Shall I book it?"
    good = quality_score("Tuesday, November 24th at 3 pm it is. Shall I book it?", reference)
    missing_time = quality_score("Tuesday it is. Shall I book it?", reference)
    markup = quality_score("**Tuesday, November 24th at 3 pm** - see https://x.y. Book it?", reference)
    rambling = quality_score(" ".join(["very"] * 80) + " Tuesday November 24th 3 pm?", reference)
    assert good > missing_time and good > markup and good > rambling
    assert 0 <= rambling <= 100 and quality_score("", reference) == 0


def test_history_is_trimmed_to_a_budget_keeping_the_latest():
    history = [{"role": "user", "content": "x" * 100} for _ in range(50)]
    kept = trim_history(history, 1000)
    assert len(kept) == 10 and kept == history[-10:]


def test_tool_arguments_are_validated():
    intent, day, at = parse_tool_arguments('{"date": "2026-12-01", "time": "9:30", "intent": "correction"}')
    assert (intent.value, day.isoformat(), at.hour, at.minute) == ("correction", "2026-12-01", 9, 30)
    for bad in ('{"intent": "dance"}', '{"intent": "affirm", "time": "25:00"}', "[]"):
        with pytest.raises(ValueError):
            parse_tool_arguments(bad)


async def test_a_reply_cut_mid_stream_still_says_the_decision():
    class Breaks(FakeLlm):
        async def stream(self, messages, *, tools=(), max_tokens=150):
            yield "Noted, "
            raise ProviderError("fake-llm", "overloaded", heard_anything=True)

    r, _, _ = responder("disabled", Breaks())
    text, end, _ = await turn(r, 0)
    assert text.startswith("Noted,") and text.endswith("Would you like to book an appointment?")
    assert end.source == "rules"
