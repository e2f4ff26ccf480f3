"""An off-script booking conversation, and what the emulated model does with each of its lines.

More than a third of the caller's turns are off script: an order question the agent cannot answer,
partial information, a correction the rules cannot read, small talk. `RULES` is the OpenAI emulator's
rule table for it (`--llm-rules` / `{"openai": {"rules": ...}}`): per caller line, whether the model
speaks, calls `record_booking_details`, or both. Dates are relative to `TODAY` (a Wednesday).

Each turn is (caller line, kind): "greeting" (no caller words), "script" (the rules understand it),
"answer" (off script, the model speaks), "tool" (off script, the model records details).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

TODAY = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))
NEXT_WEDNESDAY = "2026-11-25"

TURNS: list[tuple[str | None, str]] = [
    (None, "greeting"),
    ("Hi, I need to change my delivery address.", "answer"),
    ("Oh okay. Yes, I would like to book an appointment then.", "script"),
    ("Sometime around the middle of next week.", "tool"),  # partial: a day, no time
    ("Can you tell me when my order will arrive?", "answer"),  # a question the agent cannot answer
    ("At 2 pm.", "script"),
    ("Could we push it back an hour?", "tool"),  # a correction the rules cannot read
    ("How is your day going?", "answer"),  # small talk
    ("Yes please.", "script"),
]

RULES: dict[str, object] = {
    "delivery address": "I'm sorry, I can't help with deliveries; I can only book appointments. "
                        "Would you like to book one?",
    "middle of next week": {"tool": "record_booking_details",
                            "arguments": {"date": NEXT_WEDNESDAY, "time": None, "intent": "provide_date"}},
    "my order": "I'm afraid I can't look up orders from here. Would you like to book an appointment?",
    "push it back": {"text": "Sure,", "tool": "record_booking_details",
                     "arguments": {"date": NEXT_WEDNESDAY, "time": "15:00", "intent": "correction"}},
    "how is your day": "I'm doing well, thank you for asking! Shall I book that for you?",
}
