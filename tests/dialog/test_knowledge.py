"""Questions answered from the business's own files (dialog.knowledge), offline and in the one LLM
request of a turn (issue 25, item 2)."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from dialog.events import StartReply
from dialog.knowledge import Knowledge, KnowledgeBase, split_passages
from dialog.latency import LatencySuite
from dialog.llm_responder import LlmResponder
from dialog.machine import Conversation, DialogSettings, State
from dialog.responder import ReplyEnd, RuleResponder
from emulators.config import EmulatorConfig
from emulators.server import EmulatorServer, running_emulators
from providers.breaker import CircuitBreaker
from providers.chain import GuardedLlm
from providers.openai_llm import OpenAiLlm
from providers.settings import Settings

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "knowledge"
NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))
SETTINGS = DialogSettings()


@pytest.fixture(scope="module")
def base() -> KnowledgeBase:
    return KnowledgeBase.load(SAMPLE)


@pytest.fixture
def knowledge(base: KnowledgeBase):
    k = Knowledge(base)
    yield k
    k.close()


def test_passages_carry_their_headings_and_a_section_is_one_passage() -> None:
    text = "# Opening hours\n\nWe're open **9 to 5**.\n\nClosed on Sundays.\n\n## Holidays\n\n- Closed at Christmas\n- Closed at Easter\n"
    passages = split_passages(text, "hours.md", "en")
    assert [(p.heading, p.text) for p in passages] == [
        ("Opening hours", "We're open 9 to 5. Closed on Sundays."),
        ("Opening hours, Holidays", "Closed at Christmas. Closed at Easter."),
    ]


def test_files_in_a_language_folder_are_that_languages(base: KnowledgeBase) -> None:
    assert {p.language for p in base.passages if p.source.startswith("es/")} == {"es"}
    assert {p.language for p in base.passages if not p.source.startswith("es/")} == {"en"}


def test_a_missing_folder_is_an_error_not_an_empty_knowledge_base(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        KnowledgeBase.load(tmp_path / "nowhere")


@pytest.mark.parametrize("question, fact", [
    ("Do you take walk-ins?", "don't take walk-ins"),
    ("Where are you?", "42 Maple Street"),
    ("Is there parking?", "free parking"),
    ("Are you open over Christmas?", "between Christmas and New Year"),
])
def test_a_covered_question_is_read_from_its_passage(base: KnowledgeBase, question: str, fact: str) -> None:
    lookup = base.search(question, "en")
    assert lookup.covered
    assert fact in base.read(lookup)


@pytest.mark.parametrize("question", ["Do you have a dentist?", "Can I bring my dog?", "Do you do home visits?"])
def test_a_question_sharing_a_word_with_a_passage_is_not_covered(base: KnowledgeBase, question: str) -> None:
    lookup = base.search(question, "en")
    assert not lookup.covered
    assert base.read(lookup) == ""


def test_a_spanish_question_is_looked_up_in_the_spanish_files(base: KnowledgeBase) -> None:
    lookup = base.search("¿Tienen aparcamiento?", "es")
    assert lookup.covered and lookup.best.passage.language == "es"
    assert "aparcamiento gratuito" in base.read(lookup)


async def test_a_lookup_runs_in_the_knowledge_thread(knowledge: Knowledge) -> None:
    lookup = await knowledge.lookup("Is there parking?", "en")
    assert lookup is not None and lookup.covered
    assert any(t.name.startswith("knowledge") for t in threading.enumerate())
    assert lookup.elapsed_ms < 20  # the budget for retrieval, with a wide margin


# ---------------------------------------------------------------------- the offline dialog


def rules(knowledge: Knowledge | None) -> RuleResponder:
    conv = Conversation(SETTINGS, None, call_sid="CA1")
    conv.greet(NOW)
    conv.on_user("I'd like to book an appointment", NOW)
    return RuleResponder(conv, lambda: NOW, restore=lambda s: Conversation.restore(s, SETTINGS, None),
                         knowledge=knowledge)


async def said(responder, text: str, turn: int = 1) -> str:
    return "".join([p async for p in responder.reply(StartReply(turn, text, ())) if not isinstance(p, ReplyEnd)])


async def test_offline_a_question_is_answered_and_the_booking_question_asked_again(knowledge: Knowledge) -> None:
    responder = rules(knowledge)
    retries = responder.conversation.snapshot()["retries"]
    text = await said(responder, "What time do you open tomorrow?")
    assert text == "We're open Monday to Friday, 9 am to 5 pm. What day would you like?"
    # The machine did not take "tomorrow" as the booking's day, nor count a misunderstanding.
    assert responder.conversation.state is State.COLLECT_DATE
    assert responder.conversation.slots == {"date": None, "time": None}
    assert responder.conversation.snapshot()["retries"] == retries


async def test_offline_an_uncovered_question_is_declined(knowledge: Knowledge) -> None:
    text = await said(rules(knowledge), "Do you have a dentist?")
    assert text == "I'm sorry, I don't have that information. What day would you like?"


async def test_offline_booking_words_and_repeats_stay_with_the_rules(knowledge: Knowledge) -> None:
    responder = rules(knowledge)
    assert (await said(responder, "Can I book next Tuesday at 3 pm?")).startswith("So that's Tuesday")
    assert responder.conversation.state is State.CONFIRMATION
    assert await said(responder, "What did you say?", 2) == (await said(responder, "What did you say?", 3))


async def test_without_a_knowledge_base_nothing_changes() -> None:
    text = await said(rules(None), "Do you have a dentist?")
    assert text.startswith("Sorry, I didn't catch the day")


# ---------------------------------------------------------------------- with an LLM: the same one request


@pytest.fixture
async def emu() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(llm_first_token=0.0, llm_token_rate=500.0)
    config.merge({"openai": {"rules": {"walk-ins": "No, every visit is by appointment.",
                                       "dentist": "I'm sorry, I don't know that."},
                             "default_reply": "Okay."}})
    async with running_emulators(config) as server:
        yield server


async def test_with_an_llm_the_passages_go_in_the_turns_one_request(emu: EmulatorServer, knowledge: Knowledge) -> None:
    llm = OpenAiLlm(Settings(openai_api_key="sk-test", openai_base_url=emu.url + "/v1"))
    try:
        responder = LlmResponder(rules(knowledge), [GuardedLlm(llm, CircuitBreaker("primary"))], LatencySuite())
        text = await said(responder, "Do you take walk-ins?")
        (request,) = [r for r in emu.log.openai if r["path"].endswith("/chat/completions")]
        system = [m["content"] for m in request["body"]["messages"] if m["role"] == "system"]
        assert any("the only facts about it you may state" in s and "don't take walk-ins" in s for s in system)
        assert any(s.startswith("The caller asked a question") for s in system)
        assert text == "No, every visit is by appointment. What day would you like?"
        assert responder.rules.conversation.state is State.COLLECT_DATE

        text = await said(responder, "Do you have a dentist?", 2)
        request = [r for r in emu.log.openai if r["path"].endswith("/chat/completions")][-1]
        system = [m["content"] for m in request["body"]["messages"] if m["role"] == "system"]
        # Nothing was found to cover it: the model is told so, and its "I don't know" is what is said.
        assert not any("the only facts about it you may state" in s for s in system)
        assert text == "I'm sorry, I don't know that. What day would you like?"
    finally:
        await llm.aclose()
