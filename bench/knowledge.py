"""Callers' questions answered from the business's own files: how many right, how many declined, how fast.

30 caller questions over the sample clinic's files (examples/knowledge/): 21 the files answer, each
with the fact that answers it, and 9 they do not (a dentist, x-rays, a dog, home visits...). Each
question is asked mid-call (the agent has just asked "What day would you like?") through the dialog
the gateway runs, and judged on what the caller would hear:

- offline (no LLM: RuleResponder): an answerable question is *answered correctly* when the reply
  holds the expected fact (the passage's sentences read out) and the call is still on its question;
  an unanswerable one is *declined* when the reply says the agent does not have that information and
  holds no passage of the files.
- with an LLM (LlmResponder, the official openai SDK against the OpenAI emulator): the emulated model
  only phrases what it is scripted to, so what is measured is what the one request of the turn gave
  it: an answerable question's request holds the expected fact among the facts marked as answering
  it; an unanswerable one's marks none as answering it. Whether a real model then stays faithful to
  the facts (says "I don't know" rather than invent an opening hour) is not measured by an emulator.

Retrieval's added latency: each question's lookup as a turn waits for it (`Knowledge.lookup`: the
hand-off to the knowledge thread, BM25 and the coverage check, and the way back), p50 / p95 / max.

    .venv/bin/python bench/knowledge.py [--json bench/results/knowledge.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dialog import prompts  # noqa: E402
from dialog.events import StartReply  # noqa: E402
from dialog.knowledge import Knowledge, KnowledgeBase  # noqa: E402
from dialog.latency import LatencySuite  # noqa: E402
from dialog.llm_responder import LlmResponder  # noqa: E402
from dialog.machine import Conversation, DialogSettings  # noqa: E402
from dialog.responder import ReplyEnd, RuleResponder  # noqa: E402
from emulators.config import EmulatorConfig  # noqa: E402
from emulators.server import running_emulators  # noqa: E402
from providers.breaker import CircuitBreaker  # noqa: E402
from providers.chain import GuardedLlm  # noqa: E402
from providers.openai_llm import OpenAiLlm  # noqa: E402
from providers.settings import Settings  # noqa: E402

KNOWLEDGE_DIR = ROOT / "examples" / "knowledge"
NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # a Wednesday morning
SETTINGS = DialogSettings()

# (question, the fact that answers it, as the files put it; None: the files do not answer it)
QUESTIONS: list[tuple[str, str | None]] = [
    ("What time do you open tomorrow?", "9 am to 5 pm"),
    ("What are your opening hours?", "9 am to 5 pm"),
    ("Are you open on Saturday?", "closed on Saturdays"),
    ("Where are you?", "42 Maple Street"),
    ("What's your address?", "42 Maple Street"),
    ("Do you take walk-ins?", "don't take walk-ins"),
    ("Is there parking?", "free parking"),
    ("Where do I park my car?", "free parking"),
    ("How much does a consultation cost?", "60 dollars"),
    ("How much is a flu shot?", "25 dollars"),
    ("Do you take insurance?", "most major insurance plans"),
    ("Do you accept Medicare?", "Medicare"),
    ("Can I pay by card?", "by card or in cash"),
    ("Which bus goes there?", "Bus lines 12 and 31"),
    ("Is the building wheelchair accessible?", "step-free access"),
    ("When can I get a blood test?", "from 9 am to 11 am"),
    ("What should I bring to my visit?", "photo ID"),
    ("How do I cancel an appointment?", "at least 24 hours before"),
    ("Can my child come alone?", "Children under 16"),
    ("Are you open over Christmas?", "between Christmas and New Year"),
    ("Are you open on Sunday mornings?", "Sundays"),
    ("Do you have a dentist?", None),
    ("Do you do x-rays?", None),
    ("Can I bring my dog?", None),
    ("Do you sell contact lenses?", None),
    ("What's the wifi password?", None),
    ("Do you offer physiotherapy?", None),
    ("How long is the wait for a specialist?", None),
    ("Do you do home visits?", None),
    ("Is there a cafe in the building?", None),
]
# Written after the rules above were settled on QUESTIONS (a first run there: 15/20 answered, 6/10
# declined; see README), and measured as they came: a check that the rules were not fitted to QUESTIONS.
HELD_OUT: list[tuple[str, str | None]] = [
    ("When do you close today?", "5 pm"),
    ("How far is the train station?", "ten-minute walk"),
    ("Do you give flu shots?", "flu shots"),
    ("Is there a lift?", "lift"),
    ("Can I pay cash?", "in cash"),
    ("What happens if I miss my appointment?", "20 dollars"),
    ("Do you treat cats?", None),
    ("Is there a vending machine?", None),
    ("Do you do tattoo removal?", None),
    ("Can I get a COVID test?", None),
]
DECLINE = prompts.render("knowledge_unknown", {})
QUESTION_AFTER = "What day would you like?"


def conversation() -> Conversation:
    conv = Conversation(SETTINGS, None, call_sid="CAbench")
    conv.greet(NOW)
    conv.on_user("I'd like to book an appointment", NOW)  # the agent now waits for a day
    return conv


def rules(knowledge: Knowledge) -> RuleResponder:
    return RuleResponder(conversation(), lambda: NOW, restore=lambda s: Conversation.restore(s, SETTINGS, None),
                         knowledge=knowledge)


async def reply_text(responder, question: str) -> str:
    request = StartReply(1, question, ({"role": "assistant", "content": "Sure. What day would you like to come in?"},))
    parts = [p async for p in responder.reply(request) if not isinstance(p, ReplyEnd)]
    return "".join(parts)


def holds(text: str, fact: str) -> bool:
    return fact.lower() in text.lower()


async def offline(knowledge: Knowledge, base: KnowledgeBase, questions=QUESTIONS) -> list[dict]:
    rows = []
    for question, fact in questions:
        said = await reply_text(rules(knowledge), question)
        if fact is not None:
            ok = holds(said, fact) and QUESTION_AFTER in said
        else:
            ok = said.startswith(DECLINE) and not any(p.text[:40] in said for p in base.passages)
        rows.append({"question": question, "fact": fact, "said": said, "ok": ok})
    return rows


async def with_llm(knowledge: Knowledge, questions=QUESTIONS) -> list[dict]:
    config = EmulatorConfig(llm_first_token=0.0, llm_token_rate=1000.0)
    config.merge({"openai": {"default_reply": "Let me tell you. What day would you like?"}})
    rows = []
    async with running_emulators(config) as emu:
        llm = OpenAiLlm(Settings(openai_api_key="sk-bench", openai_base_url=emu.url + "/v1"))
        llms = [GuardedLlm(llm, CircuitBreaker("openai"))]
        try:
            for question, fact in questions:
                before = len(emu.log.openai)
                responder = LlmResponder(rules(knowledge), llms, LatencySuite(mode="enabled"))
                await reply_text(responder, question)
                requests = [r for r in list(emu.log.openai)[before:] if r["path"].endswith("/chat/completions")]
                messages = requests[-1]["body"]["messages"] if requests else []
                facts = " ".join(m["content"] for m in messages if m["role"] == "system"
                                 and m["content"].startswith("Facts about") and "the only facts" in m["content"])
                ok = holds(facts, fact) if fact is not None else not facts
                rows.append({"question": question, "fact": fact, "requests": len(requests), "ok": ok,
                             "facts_given": facts[:300]})
        finally:
            await llm.aclose()
    return rows


async def latency(knowledge: Knowledge, rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        for question, _ in QUESTIONS:
            started = time.perf_counter()
            await knowledge.lookup(question, "en")
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"lookups": len(times), "p50_ms": round(statistics.median(times), 3),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3), "max_ms": round(times[-1], 3)}


def shares(rows: list[dict]) -> dict[str, object]:
    answerable = [r for r in rows if r["fact"] is not None]
    uncovered = [r for r in rows if r["fact"] is None]
    return {"answered_correctly": f"{sum(r['ok'] for r in answerable)}/{len(answerable)}",
            "answered_share": round(sum(r["ok"] for r in answerable) / len(answerable), 3),
            "declined": f"{sum(r['ok'] for r in uncovered)}/{len(uncovered)}",
            "declined_share": round(sum(r["ok"] for r in uncovered) / len(uncovered), 3),
            "wrong": [r["question"] for r in rows if not r["ok"]]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="passes over the questions for the latency")
    parser.add_argument("--show", action="store_true", help="print what the offline path said")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    base = KnowledgeBase.load(KNOWLEDGE_DIR)
    knowledge = Knowledge(base)
    try:
        off = await offline(knowledge, base)
        llm = await with_llm(knowledge)
        held_off = await offline(knowledge, base, HELD_OUT)
        held_llm = await with_llm(knowledge, HELD_OUT)
        timing = await latency(knowledge, args.rounds)
    finally:
        knowledge.close()
    if args.show:
        for row in off:
            print(f"  {'ok ' if row['ok'] else 'BAD'} {row['question']} -> {row['said']}")
    result = {"knowledge": base.describe(), "questions": len(QUESTIONS), "offline": shares(off),
              "llm_request": shares(llm), "held_out": {"questions": len(HELD_OUT), "offline": shares(held_off),
                                                        "llm_request": shares(held_llm)},
              "retrieval_latency": timing}
    print(f"{len(QUESTIONS)} questions over {base.describe()['passages']} passages of {base.files} files")
    print("| path | answerable answered correctly | unanswerable declined |")
    print("|---|---|---|")
    for name, s in (("offline (passage read aloud)", result["offline"]),
                    ("LLM (facts in its one request)", result["llm_request"]),
                    (f"held out, {len(HELD_OUT)} questions, offline", result["held_out"]["offline"]),
                    (f"held out, {len(HELD_OUT)} questions, LLM", result["held_out"]["llm_request"])):
        print(f"| {name} | {s['answered_correctly']} ({s['answered_share']:.0%}) | {s['declined']} "
              f"({s['declined_share']:.0%}) |")
    print(f"retrieval added per turn: p50 {timing['p50_ms']} ms, p95 {timing['p95_ms']} ms, max {timing['max_ms']} ms "
          f"({timing['lookups']} lookups)")
    for key, s in (("offline", result["offline"]), ("llm_request", result["llm_request"]),
                   ("held-out offline", result["held_out"]["offline"]), ("held-out llm", result["held_out"]["llm_request"])):
        if s["wrong"]:
            print(f"{key} wrong: {s['wrong']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**result, "offline_rows": off, "llm_rows": llm,
                                               "held_out_rows": held_off + held_llm}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
