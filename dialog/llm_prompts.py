"""What the LLM is sent: the persona, the two kinds of request, and the one tool.

A caller turn makes at most one request before its first audio, of one of two kinds:
- phrase: the rules understood the turn and the state machine decided; the model says the decision
  in its own words. No tool.
- turn: the rules did not understand it. The machine's state goes in the prompt (the question
  waiting for an answer, the booking so far, what the caller can do next, the opening hours), with
  the tool `record_booking_details` on offer. The model either records what the caller said
  through the tool (the machine decides, and says its outcome), or answers what was said in one
  sentence and asks the waiting question. It never states an outcome; `dialog.spoken_guard`
  makes sure of that.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Mapping, Sequence

import orjson

from dialog.intents import Intent
from dialog.slots import TimeOfDay

TOOL_NAME = "record_booking_details"

PERSONA = (
    "You are the phone receptionist of {business}. You book appointments. You speak to a caller on the "
    "phone, so: plain spoken {language}, at most two short sentences, no lists, no markup, no URLs, no emoji. "
    "Today is {today}. The booking so far: {slots}."
)
# A call held in another language (dialog.languages): the model speaks it, whatever the history holds.
SPEAK = " The caller speaks {language}: always reply in {language}."
# The business's own facts for this turn (dialog.knowledge), before the instruction that may use them.
FACTS = (
    "Facts about {business} from its own files, the only facts about it you may state:\n{facts}"
)
NO_FACTS = "No fact about {business} in its files matches what the caller said."
# Passages that share words with the question but were not found to cover it (dialog.knowledge).
PARTIAL_FACTS = (
    "Facts about {business} from its own files that share words with what the caller said; none was found to "
    "answer it directly, so unless one plainly does, say you don't know:\n{facts}"
)
# A question the booking rules cannot act on: answered from the facts, then back to the booking.
QUESTION = (
    "The caller asked a question. Answer it in one short sentence using only the facts given; if they do not "
    "answer it, say plainly that you don't know (never guess hours, prices, addresses or policies). Then ask: "
    "\"{question}\" If the caller also gave a day or a time for the booking, call " + "record_booking_details"
    + " with it instead, resolving relative dates against today ({today}, {weekday}).\n"
    "Never say that anything is booked, confirmed, free, available, taken, cancelled or changed: only the "
    "system knows that."
)
# Added to TURN when facts were found: the caller may have asked about the business in passing.
TURN_FACTS = ("If the caller asked about {business}, answer only from the facts given, and say you don't know "
              "when they do not cover it.")
# Older turns of a long call, folded (dialog.summary): what the model still needs of them.
EARLIER = "Earlier in this call (a summary; the booking so far above is current): {summary}"
PHRASE = (
    "Say the following to the caller in your own natural words. Keep every date, time and number exactly, "
    "keep any question, and add nothing else: \"{decision}\""
)
TURN = (
    "The booking system did not understand the caller's last words. It is waiting for an answer to: "
    "\"{question}\" What the caller can do now: {steps}. We are open {days}, {hours}.\n"
    "If the caller did any of that (a day or a time, a yes or a no, a change, a goodbye, asking to hear it "
    "again), call " + TOOL_NAME + " with it, resolving relative dates against today ({today}, {weekday}). Say "
    "nothing, or only a word like \"Okay,\" before the call: the system tells the caller what happens next.\n"
    "Otherwise (a question, something you cannot help with, small talk), do not call the tool: answer in one "
    "short sentence (you only book appointments, so say so plainly when asked for anything else), then ask: "
    "\"{question}\"\n"
    "Never say that anything is booked, confirmed, free, available, taken, cancelled or changed: only the "
    "system knows that."
)

# The allowed next steps of a state (dialog.machine.next_steps), in the words the prompt lists them.
STEP_WORDS: Mapping[Intent, str] = {
    Intent.PROVIDE_DATE: "give a day and/or a time",
    Intent.PROVIDE_TIME: "give a day and/or a time",
    Intent.PROVIDE_BOTH: "give a day and/or a time",
    Intent.AFFIRM: "say yes",
    Intent.DENY: "say no",
    Intent.CORRECTION: "change the day or the time",
    Intent.REPEAT: "ask to hear that again",
    Intent.GOODBYE: "say goodbye",
    Intent.BOOK: "ask for an appointment",
}


def tool(steps: Sequence[Intent]) -> dict:
    """The tool, its intents narrowed to what the machine accepts now (and "unknown"): a model
    offered fewer choices picks a wrong one less often. The machine re-checks whatever it gets."""
    intents = [i.value for i in (*steps, Intent.UNKNOWN)]
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Record what the caller said about their appointment: the date and/or time they "
                           "want, and whether they confirm, decline, want to change, want a repeat, or say goodbye.",
            "parameters": {
                "type": "object",
                "properties": {
                    "date": {"type": ["string", "null"], "description": "YYYY-MM-DD, resolved against today"},
                    "time": {"type": ["string", "null"], "description": "HH:MM, 24-hour"},
                    "intent": {"type": "string", "enum": intents},
                },
                "required": ["intent"],
            },
        },
    }


def say_steps(steps: Sequence[Intent]) -> str:
    return "; ".join(dict.fromkeys(STEP_WORDS[i] for i in steps if i in STEP_WORDS)) or "nothing"


def persona(business: str, now: datetime, slots: Mapping[str, str | None], language: str = "en") -> str:
    known = ", ".join(f"{k} {v}" for k, v in dict(slots).items() if v) or "nothing yet"
    name = language_name(language)
    text = PERSONA.format(business=business, today=now.strftime("%A %B %d, %Y"), slots=known, language=name)
    return text + SPEAK.format(language=name) if language != "en" else text


def language_name(code: str) -> str:
    from dialog.languages import NAMES

    return NAMES["en"].get(code, code)


def facts_message(business: str, facts: Sequence[str], covered: bool = True) -> dict:
    if not facts:
        return {"role": "system", "content": NO_FACTS.format(business=business)}
    listed = "\n".join(f"- {f}" for f in facts)
    template = FACTS if covered else PARTIAL_FACTS
    return {"role": "system", "content": template.format(business=business, facts=listed)}


def earlier_message(summary: str) -> list[dict]:
    return [{"role": "system", "content": EARLIER.format(summary=summary)}] if summary else []


def caller_words(user_text: str | None, dtmf: str) -> str:
    if user_text is not None:
        return user_text
    return f"[the caller pressed {dtmf}]" if dtmf else "[the call has just connected]"


def phrase_messages(system: str, history: Sequence[Mapping[str, str]], user: str, decision: str) -> list[dict]:
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": user},
            {"role": "system", "content": PHRASE.format(decision=decision)}]


def turn_messages(system: str, history: Sequence[Mapping[str, str]], user: str, *, question: str,
                  steps: Sequence[Intent], days: str, hours: str, now: datetime,
                  facts: Sequence[str] | None = None, asked: bool = False, business: str = "",
                  facts_cover: bool = True) -> list[dict]:
    """The request of a turn the rules did not understand. `facts`: the knowledge base's passages for
    it (None: no knowledge base, and the prompt is as it always was), `facts_cover` whether one was
    found to cover what was said. `asked`: the caller asked a question the booking rules cannot act
    on (dialog.knowledge): it is answered from the facts."""
    today, weekday = now.date().isoformat(), now.strftime("%A")
    if asked:
        instruction = QUESTION.format(question=question, today=today, weekday=weekday)
    else:
        instruction = TURN.format(question=question, steps=say_steps(steps), days=days, hours=hours,
                                  today=today, weekday=weekday)
        if facts:
            instruction += "\n" + TURN_FACTS.format(business=business)
    extra = [] if facts is None else [facts_message(business, facts, facts_cover)]
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": user}, *extra,
            {"role": "system", "content": instruction}]


def trim_history(history: Sequence[Mapping[str, str]], budget_chars: int) -> list[dict]:
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
