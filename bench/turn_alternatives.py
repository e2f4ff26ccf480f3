"""How a turn the rules do not understand should use the LLM: the alternatives, measured.

Runs the off-script conversation of loadgen/conversations.py through the dialog (the official openai SDK, through the
gateway's OpenAiLlm and GuardedLlm, against the OpenAI emulator at LLM first token 300 ms and 50
tokens/s), once per alternative, and reports per turn kind the time from the caller's final
transcript to the first speakable phrase (what the TTS engine gets first) and the LLM requests made
before it and in all. Voice-to-voice adds the STT final before and the TTS first byte after.

- one_request: what LlmResponder does. One streamed request with the tool on offer: the model speaks
  (an answer to what was said) or records details through the tool (the machine says its outcome).
- two_requests: what it did before issue 21. Extraction by tool call, then the machine's decision
  phrased by a second request.
- extract_template: extraction by tool call, then the machine's template (no second request).
- speculate: extraction and the phrasing of the rules' re-ask at once; the phrasing is spoken when the
  extraction changes nothing, the machine's template when it does.

    .venv/bin/python bench/turn_alternatives.py --runs 5 --json bench/results/turn_alternatives.json
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
from typing import AsyncIterator
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dialog.chunker import SentenceChunker  # noqa: E402
from dialog.events import StartReply  # noqa: E402
from dialog.intents import Intent  # noqa: E402
from dialog.latency import LatencySuite  # noqa: E402
from dialog.llm_prompts import TOOL_NAME, parse_tool_arguments, tool  # noqa: E402
from dialog.llm_responder import LlmResponder  # noqa: E402
from dialog.machine import Conversation, DialogSettings, next_steps  # noqa: E402
from dialog.responder import ReplyEnd, RuleResponder  # noqa: E402
from emulators.config import EmulatorConfig  # noqa: E402
from emulators.server import running_emulators  # noqa: E402
from loadgen.conversations import OFF_SCRIPT, off_script_day, off_script_rules  # noqa: E402
from providers.base import ToolCall  # noqa: E402
from providers.breaker import CircuitBreaker  # noqa: E402
from providers.chain import GuardedLlm  # noqa: E402
from providers.openai_llm import OpenAiLlm  # noqa: E402
from providers.settings import Settings  # noqa: E402

EXTRACT = "Call record_booking_details with what the caller just said. Resolve relative dates against today."
PHRASE_REPLY = "Certainly, let me take care of that for you. Does that work?"
TODAY = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # the dialog's clock, fixed
TURNS: list[tuple[str | None, str]] = [(None, "greeting"), *OFF_SCRIPT]
RULES = off_script_rules(off_script_day(TODAY.date()))


class TwoRequests(LlmResponder):
    """Before issue 21: extract, then answer the machine's decision as a rules-understood turn."""

    async def reply(self, request: StartReply) -> AsyncIterator:
        decided = self.rules.decide(request)
        if decided.intent is Intent.UNKNOWN and request.user_text:
            decided = await self._extract(request, decided)
        async for piece in self._answer(request, decided):
            yield piece

    async def _extract(self, request: StartReply, decided):
        steps = next_steps(self.rules.conversation.asking or decided.state)
        messages = [*request.history, {"role": "user", "content": request.user_text},
                    {"role": "system", "content": EXTRACT}]
        async for chunk in self.llms[0].stream(messages, tools=[tool(steps)]):
            if isinstance(chunk, ToolCall) and chunk.name == TOOL_NAME:
                intent, day, at = parse_tool_arguments(chunk.arguments)
                if intent is not Intent.UNKNOWN or day or at:
                    return self.rules.redecide(request.turn_id, intent, day, at)
        return decided


class ExtractTemplate(TwoRequests):
    """Extract, then the machine's template at once."""

    async def reply(self, request: StartReply) -> AsyncIterator:
        decided = self.rules.decide(request)
        if decided.intent is Intent.UNKNOWN and request.user_text:
            decided = await self._extract(request, decided)
            yield decided.text
            yield ReplyEnd(kind="llm_tool")
            return
        async for piece in self._answer(request, decided):
            yield piece


class Speculate(TwoRequests):
    """Extraction and the phrasing of the rules' decision in parallel."""

    async def reply(self, request: StartReply) -> AsyncIterator:
        decided = self.rules.decide(request)
        if not (decided.intent is Intent.UNKNOWN and request.user_text):
            async for piece in self._answer(request, decided):
                yield piece
            return
        phrased: asyncio.Queue = asyncio.Queue()

        async def phrase() -> None:
            async for piece, _ in self._phrase(request, decided):
                phrased.put_nowait(piece)
            phrased.put_nowait(None)

        speculation = asyncio.ensure_future(phrase())
        outcome = await self._extract(request, decided)
        if outcome is not decided:
            speculation.cancel()
            yield outcome.text
        else:  # the phrasing streamed meanwhile: what has come is said at once, the rest as it comes
            while (piece := await phrased.get()) is not None:
                yield piece
        yield ReplyEnd(kind="llm_tool" if outcome is not decided else "llm")


ALTERNATIVES = {"one_request": LlmResponder, "two_requests": TwoRequests, "extract_template": ExtractTemplate,
                "speculate": Speculate}


async def run_conversation(cls, base_url: str, log, mode: str) -> list[dict]:
    settings = DialogSettings()

    def new(snapshot=None):
        return Conversation.restore(snapshot, settings, None) if snapshot else Conversation(settings, None, "CA1")

    llm = GuardedLlm(OpenAiLlm(Settings(openai_api_key="sk-bench", openai_base_url=base_url)), CircuitBreaker("bench"))
    responder = cls(RuleResponder(new(), lambda: TODAY, restore=new), [llm], LatencySuite(mode=mode))
    history: list[dict] = []
    rows = []
    try:
        await llm.llm.warm()
        for turn_id, (line, kind) in enumerate(TURNS):
            chunker = SentenceChunker()
            before = len(log)
            started = time.perf_counter()
            first_ms = None
            requests_before = None
            text = ""
            end = ReplyEnd()
            async for piece in responder.reply(StartReply(turn_id, line, tuple(history))):
                if isinstance(piece, ReplyEnd):
                    end = piece
                    break
                text += piece
                if first_ms is None and chunker.push(piece):
                    first_ms = (time.perf_counter() - started) * 1000
                    requests_before = len(log) - before
            if first_ms is None:
                first_ms = (time.perf_counter() - started) * 1000
                requests_before = len(log) - before
            rows.append({"turn": turn_id, "kind": kind, "reply_kind": end.kind, "first_phrase_ms": round(first_ms, 1),
                         "requests_before_first_audio": requests_before, "requests": len(log) - before,
                         "said": text.strip()})
            if line is not None:
                history.append({"role": "user", "content": line})
            history.append({"role": "assistant", "content": text.strip()})
    finally:
        await llm.llm.aclose()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="conversations per alternative")
    parser.add_argument("--mode", default="enabled", help="LATENCY_OPTIMIZATION_MODE")
    parser.add_argument("--only", default="", help="comma-separated alternatives")
    parser.add_argument("--show", action="store_true", help="print what was said")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    config = EmulatorConfig(llm_first_token=0.3, llm_token_rate=50.0)
    config.merge({"openai": {"rules": RULES, "default_reply": PHRASE_REPLY}})
    names = [n for n in ALTERNATIVES if not args.only or n in args.only.split(",")]
    results = {}
    async with running_emulators(config) as emu:
        for name in names:
            rows = []
            for _ in range(args.runs):
                rows += await run_conversation(ALTERNATIVES[name], emu.url + "/v1", emu.log.openai, args.mode)
            results[name] = rows
            if args.show:
                for r in rows[:len(TURNS)]:
                    print(f"  {name} {r['kind']:8} {r['first_phrase_ms']:7.1f} ms {r['requests']} req: {r['said']}")
    print(f"mode {args.mode}, {args.runs} conversations of {len(TURNS)} turns; first phrase after the final "
          "transcript, median (requests before first audio / in all)")
    kinds = ["greeting", "script", "answer", "tool"]
    print("| alternative | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    summary = {}
    for name, rows in results.items():
        cells = []
        for kind in kinds:
            mine = [r for r in rows if r["kind"] == kind]
            p50 = statistics.median(r["first_phrase_ms"] for r in mine)
            before = max(r["requests_before_first_audio"] for r in mine)
            total = max(r["requests"] for r in mine)
            summary.setdefault(name, {})[kind] = {"p50_ms": round(p50, 1), "requests_before_first_audio": before,
                                                  "requests": total, "turns": len(mine)}
            cells.append(f"{p50:.0f} ms ({before}/{total})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"mode": args.mode, "runs": args.runs, "summary": summary,
                                               "turns": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
