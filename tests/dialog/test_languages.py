"""Calls in other languages (issue 25, item 1): the switching rule, the prompts and dates in each
language, and the dialog with an LLM following a caller from one language to another."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import date, datetime
from typing import AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from dialog import prompts
from dialog.events import StartReply
from dialog.languages import CallLanguage, is_question, say_date, say_when
from dialog.latency import LatencySuite
from dialog.llm_responder import LlmResponder
from dialog.machine import Conversation, DialogSettings, State
from dialog.prompts_i18n import PROMPTS_BY_LANGUAGE, QUESTIONS_BY_LANGUAGE
from dialog.responder import ReplyEnd, RuleResponder
from emulators.config import EmulatorConfig
from emulators.server import EmulatorServer, running_emulators
from providers.base import SpokenLanguage
from providers.breaker import CircuitBreaker
from providers.chain import GuardedLlm
from providers.languages import available, parse_languages
from providers.openai_llm import OpenAiLlm
from providers.settings import Settings

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # a Wednesday
SETTINGS = DialogSettings()
ALL = ("en", "es", "fr", "de", "it")


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("language", ["es", "fr", "de", "it"])
def test_every_prompt_has_its_translation_with_the_same_fields(language: str) -> None:
    table = PROMPTS_BY_LANGUAGE[language]
    assert set(prompts.PROMPTS) <= set(table), set(prompts.PROMPTS) - set(table)
    for key, english in prompts.PROMPTS.items():
        wanted = set().union(*(fields_of(t) for t in english))
        for template in table[key]:
            assert fields_of(template) <= wanted | {"languages"}, (language, key)
    assert set(QUESTIONS_BY_LANGUAGE[language]) == set(prompts.QUESTIONS)


def test_dates_and_times_are_said_in_the_calls_language() -> None:
    day = date(2026, 12, 8)
    assert say_date(day, None, "es") == "martes 8 de diciembre"
    assert say_date(day, None, "fr") == "mardi 8 décembre"
    assert say_date(day, None, "de") == "Dienstag, den 8. Dezember"
    assert say_date(day, None, "it") == "martedì 8 dicembre"
    start = datetime(2026, 12, 8, 15, 30, tzinfo=ZoneInfo("America/New_York"))
    assert say_when(start, None, "es") == "martes 8 de diciembre a las 15:30"
    assert say_when(start, None, "en") == "Tuesday, December 8th at 3:30 pm"


def test_a_spanish_call_reads_back_in_spanish() -> None:
    conv = Conversation(SETTINGS, None)
    conv.language = "es"
    assert conv.greet(NOW).text == "Hola, gracias por llamar a the clinic. ¿Quiere pedir una cita?"
    reply = conv.on_slots(date(2026, 11, 24), None, conv_intent("provide_date"), NOW)
    assert reply.text == "Muy bien, el martes 24 de noviembre. ¿A qué hora le viene bien?"
    assert Conversation.restore(conv.snapshot(), SETTINGS, None).language == "es"


def conv_intent(value: str):
    from dialog.intents import Intent

    return Intent(value)


def test_the_call_follows_two_words_or_the_first_turn_not_one_word() -> None:
    lang = CallLanguage(ALL)
    assert lang.hear("es", "Hola") == "switched" and lang.current == "es"  # the caller's first turn
    assert lang.hear("en", "Okay") == "" and lang.current == "es"  # one word later on: no
    assert lang.hear("en", "Actually, can we speak English?") == "switched" and lang.current == "en"
    assert lang.hear("pt", "Eu quero marcar uma consulta") == "unsupported" and lang.current == "en"
    assert lang.hear("", "anything") == ""


def test_languages_setting_and_what_the_engines_allow() -> None:
    assert parse_languages("en, es-419,FR") == ("en", "es", "fr")
    with pytest.raises(ValueError):
        parse_languages("en,pt")
    assert available(ALL, deepgram=True, llm=True, elevenlabs=True) == (ALL, "")
    offline, why = available(ALL, deepgram=False, llm=False, elevenlabs=False)
    assert offline == ("en",) and "English only" in why
    assert Settings.from_env({"LANGUAGES": "en,es"}).call_languages == ("en",)


@pytest.mark.parametrize("text, language, asked", [
    ("Do you take walk-ins?", "en", True), ("I want Tuesday", "en", False), ("¿Dónde están?", "es", True),
    ("Quiero una cita", "es", False), ("Où êtes-vous?", "fr", True), ("Wann haben Sie geöffnet", "de", True),
    ("Dove siete", "it", True), ("Hello?", "en", True),
])
def test_questions_in_each_language(text: str, language: str, asked: bool) -> None:
    assert is_question(text, language) is asked


# ---------------------------------------------------------------------- with an LLM


@pytest.fixture
async def emu() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(llm_first_token=0.0, llm_token_rate=500.0)
    config.merge({"openai": {"rules": {
        "quiero una cita": {"tool": "record_booking_details", "arguments": {"intent": "book"}},
        "el martes": {"tool": "record_booking_details", "arguments": {"date": "2026-11-24", "intent": "provide_date"}},
    }, "default_reply": "Okay."}})
    async with running_emulators(config) as server:
        yield server


@dataclass
class Dialog:
    """A call's dialog on the real LLM client against the emulator, in any language of ALL."""

    responder: LlmResponder
    rules: RuleResponder
    spoken: SpokenLanguage

    async def say(self, turn: int, text: str | None, language: str = "") -> str:
        """What the agent says to the caller's turn (`text` None: the greeting)."""
        pieces = self.responder.reply(StartReply(turn, text, (), language=language))
        return "".join([p async for p in pieces if not isinstance(p, ReplyEnd)])


@pytest.fixture
async def dialog(emu: EmulatorServer) -> AsyncIterator[Dialog]:
    llm = OpenAiLlm(Settings(openai_api_key="sk-test", openai_base_url=emu.url + "/v1"))
    spoken = SpokenLanguage()
    conv = Conversation(SETTINGS, None, call_sid="CA1")
    rules = RuleResponder(conv, lambda: NOW, restore=lambda s: Conversation.restore(s, SETTINGS, None))
    responder = LlmResponder(rules, [GuardedLlm(llm, CircuitBreaker("primary"))], LatencySuite(mode="enabled"),
                             language=CallLanguage(ALL), spoken=spoken)
    try:
        yield Dialog(responder, rules, spoken)
    finally:
        await llm.aclose()


async def test_the_dialog_follows_a_caller_into_spanish_and_back(emu: EmulatorServer, dialog: Dialog) -> None:
    assert (await dialog.say(0, None)).startswith("Hi, thanks for calling")
    # Spanish: the English rules cannot read it, so the LLM does, through its tool; the machine's
    # answer is said in Spanish, and the TTS streams are told.
    said = await dialog.say(1, "Quiero una cita, por favor", "es")
    assert said == "Vale. Claro. ¿Qué día le gustaría venir?"
    assert dialog.spoken.code == "es" and dialog.rules.conversation.state is State.COLLECT_DATE
    request = [r for r in emu.log.openai if r["path"].endswith("/chat/completions")][-1]
    assert "always reply in Spanish" in request["body"]["messages"][0]["content"]
    said = await dialog.say(2, "El martes, por favor", "es")
    assert said == "Vale. Muy bien, el martes 24 de noviembre. ¿A qué hora le viene bien?"
    # Back to English: the rules read it again, and answer in English.
    said = await dialog.say(3, "Sorry, can we do this in English? At 3 pm please", "en")
    assert dialog.spoken.code == "en"
    assert re.search(r"Tuesday, November 24th at 3 pm", said), said


async def test_a_caller_in_a_language_not_supported_hears_one_sentence_in_the_default_one(
        emu: EmulatorServer, dialog: Dialog) -> None:
    await dialog.say(0, None)
    said = await dialog.say(1, "Eu queria marcar uma consulta", "pt")
    assert said == ("Sorry, I can only speak English, Spanish, French, German and Italian. "
                    "Would you like to book an appointment?")
    assert dialog.spoken.code == "en"
    assert not [r for r in emu.log.openai if r["path"].endswith("/chat/completions")]  # no request for it
