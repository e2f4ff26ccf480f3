"""What the simulated callers say, and what the emulated model does with it.

Two conversations:
- `booking`: booking phrases the rules understand, so each caller turn needs at most one LLM request
  (a phrasing) even before issue 21.
- `off-script`: more than a third of the caller's turns are off script: a request the agent cannot
  help with, partial information, a question it cannot answer, a correction the rules cannot read,
  small talk. `OFF_SCRIPT_RULES` is the OpenAI emulator's rule table for it (`--llm-rules`, or
  `{"openai": {"rules": ...}}`): per caller line, whether the model speaks, calls
  `record_booking_details`, or both. Its dates are fixed: the day the model "resolves" from
  "the middle of next week" is always in the future (`OFF_SCRIPT_DAY`), so the machine accepts it.

Each turn is (caller line, kind): "script" (the rules understand it), "answer" (off script, the model
speaks) or "tool" (off script, the model records details). The greeting comes first, unsaid here.
"""

from __future__ import annotations

from datetime import date, timedelta

TOOL = "record_booking_details"

BOOKING: tuple[tuple[str, str], ...] = (
    ("I would like to book an appointment please.", "script"),
    ("Next Tuesday at three in the afternoon.", "script"),
    ("Yes, that is right.", "script"),
    ("Thank you very much.", "script"),
)


def off_script_day(today: date | None = None) -> date:
    """A Wednesday 8-14 days ahead: open, in the future, and far enough that its afternoon is free
    in a fresh store (each bench run starts one)."""
    today = today or date.today()
    return today + timedelta(days=((2 - today.weekday()) % 7 or 7) + 7)


OFF_SCRIPT: tuple[tuple[str, str], ...] = (
    ("Hi, I need to change my delivery address.", "answer"),
    ("Oh okay. Yes, I would like to book an appointment then.", "script"),
    ("Sometime around the middle of next week.", "tool"),  # partial: a day, no time
    ("Can you tell me when my order will arrive?", "answer"),  # a question the agent cannot answer
    ("At two in the afternoon.", "script"),
    ("Could we push it back an hour?", "tool"),  # a correction the rules cannot read
    ("How is your day going?", "answer"),  # small talk
    ("Yes please.", "script"),
)


def off_script_rules(day: date | None = None) -> dict[str, object]:
    """The emulated model's behaviour per off-script line (a piece of it -> the reply)."""
    when = (day or off_script_day()).isoformat()
    return {
        "delivery address": "I'm sorry, I can't help with deliveries; I can only book appointments. "
                            "Would you like to book one?",
        "middle of next week": {"tool": TOOL, "arguments": {"date": when, "time": None, "intent": "provide_date"}},
        "my order": "I'm afraid I can't look up orders from here. Would you like to book an appointment?",
        "push it back": {"text": "Sure,", "tool": TOOL,
                         "arguments": {"date": when, "time": "15:00", "intent": "correction"}},
        "how is your day": "I'm doing well, thank you for asking! Shall I book that for you?",
    }


CONVERSATIONS = {"booking": BOOKING, "off-script": OFF_SCRIPT}
# Caller turns per call unless asked: the booking's first three (it has always been run so), the
# whole off-script conversation (5 of its 8 turns off script).
DEFAULT_TURNS = {"booking": 3, "off-script": len(OFF_SCRIPT)}


def lines(name: str) -> tuple[str, ...]:
    return tuple(text for text, _ in CONVERSATIONS[name])


def kinds(name: str) -> dict[str, str]:
    """Caller line -> its kind in the conversation."""
    return dict(CONVERSATIONS[name])


def llm_rules(name: str) -> dict[str, object]:
    return off_script_rules() if name == "off-script" else {}
