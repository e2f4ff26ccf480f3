"""A long call's history, kept short for the LLM: recent turns verbatim, older ones summarized.

Every LLM request of a turn carries the conversation so far. Sent whole, a 60-turn call's history
would grow every request, and the model's first token with it. So a request carries:
- the most recent messages verbatim, up to `RECENT_HISTORY_CHARS` (the last thing the caller heard
  is always among them: the session records what was heard, not what was planned);
- before them, one system message summarizing everything older, at most `SUMMARY_MAX_CHARS`.

The summary is made by the LLM, off the reply path: once `SUMMARIZE_EVERY_MESSAGES` messages have
slid out of the verbatim window since the last summary, a reply that has just been sent starts one
background request ("what the caller wants, what they asked and were told, every day, time, price
and fact exactly as said") whose answer, when it comes, covers those messages from the next turn on.
No turn waits for it. Until it comes, or without an LLM summary at all (it failed, or took longer
than `SUMMARY_TIMEOUT_SECONDS`), the messages it does not cover are summarized extractively: each
message's first sentence, repeats dropped, the newest kept when the budget runs out.

What is never summarized away: the booking's slots are not in the history at all, but in the
system prompt, from the state machine, every turn (`llm_prompts.persona`); the stored transcript
keeps every turn whole (this only shapes what the model is sent); and what the caller heard last is
verbatim.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Mapping, Sequence

from dialog.llm_prompts import trim_history
from providers.base import LanguageModel, ProviderError

__all__ = ["CallMemory"]

log = logging.getLogger("voicegate.dialog.summary")

# ~500 tokens of recent turns verbatim: the last three or four exchanges, which a reply builds on.
RECENT_HISTORY_CHARS = 2000
# ~170 tokens for everything older: what the caller wants and was told, not how it was said.
SUMMARY_MAX_CHARS = 700
# Messages slid out of the verbatim window before a new LLM summary is asked for: one request every
# three exchanges or so, not one per turn.
SUMMARIZE_EVERY_MESSAGES = 6
SUMMARY_MAX_TOKENS = 160  # ~120 words: room for the 80 asked for
# A summary slower than this is dropped (the extractive one stands): it runs beside the call, but a
# stalled request must not hold a connection for the rest of it.
SUMMARY_TIMEOUT_SECONDS = 15.0

SUMMARIZE = (
    "Summarize this earlier part of a phone call between a receptionist and a caller in at most 80 words, "
    "for the receptionist to read before replying: what the caller wants, what they asked and what they were "
    "told, keeping every day, time, price and fact exactly as said, and anything still open. Plain text."
)

_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)")
# Background summaries in flight, referenced until done (the event loop keeps only weak references).
_TASKS: set[asyncio.Task[None]] = set()


class CallMemory:
    """One call's summary of its older turns (module doc)."""

    def __init__(self, recent_chars: int = RECENT_HISTORY_CHARS, summary_chars: int = SUMMARY_MAX_CHARS) -> None:
        self.recent_chars = recent_chars
        self.summary_chars = summary_chars
        self.summary = ""  # the LLM's, covering history[:covered]
        self.covered = 0
        self.summaries = 0  # LLM summaries taken
        self._task: asyncio.Task[None] | None = None

    def prompt_history(self, history: Sequence[Mapping[str, str]]) -> tuple[str, list[dict]]:
        """(summary of the older messages, "" if none; the recent messages verbatim)."""
        recent = trim_history(history, self.recent_chars)
        folded = len(history) - len(recent)
        if folded <= 0:
            return "", recent
        covered = min(self.covered, folded)
        parts = [self.summary] if covered and self.summary else []
        rest = extractive(history[covered:folded], self.summary_chars - sum(len(p) for p in parts))
        if rest:
            parts.append(rest)
        return " ".join(parts)[: self.summary_chars], recent

    def after_reply(self, history: Sequence[Mapping[str, str]], llms: Sequence[LanguageModel]) -> None:
        """A reply went out: if enough has slid out of the verbatim window since the last summary, ask
        the LLM for a new one in the background (never awaited by a turn)."""
        if not llms or (self._task is not None and not self._task.done()):
            return
        folded = len(history) - len(trim_history(history, self.recent_chars))
        if folded - self.covered < SUMMARIZE_EVERY_MESSAGES:
            return
        messages = [dict(m) for m in history[self.covered:folded]]
        task = asyncio.get_running_loop().create_task(self._summarize(llms[0], self.summary, messages, folded))
        self._task = task
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _summarize(self, llm: LanguageModel, previous: str, messages: list[dict], upto: int) -> None:
        transcript = "\n".join(_line(m) for m in messages if _line(m))
        if previous:
            transcript = f"Summary so far: {previous}\n{transcript}"
        request = [{"role": "system", "content": SUMMARIZE}, {"role": "user", "content": transcript}]
        parts: list[str] = []
        try:
            async with asyncio.timeout(SUMMARY_TIMEOUT_SECONDS):
                async for chunk in llm.stream(request, max_tokens=SUMMARY_MAX_TOKENS):
                    if isinstance(chunk, str):
                        parts.append(chunk)
        except (ProviderError, TimeoutError) as exc:
            log.info("call summary failed; the extractive one stands", extra={"fields": {"error": str(exc)[:200]}})
            return
        text = " ".join("".join(parts).split())
        if text:
            self.summary, self.covered = text[: self.summary_chars], upto
            self.summaries += 1


def _line(message: Mapping[str, str]) -> str:
    content = " ".join(str(message.get("content", "")).split())
    if not content:
        return ""
    return f"{'Caller' if message.get('role') == 'user' else 'Agent'}: {content}"


def extractive(messages: Sequence[Mapping[str, str]], budget: int) -> str:
    """Each message's first sentence, said by whom, repeats dropped; the newest kept within `budget`."""
    lines: list[str] = []
    seen: set[str] = set()
    for message in messages:
        content = " ".join(str(message.get("content", "")).split())
        match = _FIRST_SENTENCE.match(content)
        sentence = match.group(1) if match else content
        line = _line({"role": message.get("role", ""), "content": sentence})
        if line and line.lower() not in seen:
            seen.add(line.lower())
            lines.append(line)
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        if used + len(line) + 1 > budget:
            break
        kept.append(line)
        used += len(line) + 1
    return " ".join(reversed(kept))
