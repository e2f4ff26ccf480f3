"""The latency suite: quick responses, a response cache, and a per-reply quality score.

`LATENCY_OPTIMIZATION_MODE` switches it:
- `disabled`: every reply is phrased by the LLM (when one is configured).
- `enabled`: fixed prompts and confirmations are answered from the dialog's own template (a quick
  response: no LLM round trip, and its audio is usually pre-rendered); other replies come from the
  response cache when the same state, intent and slots were phrased recently, else from the LLM.
- `shadow`: both paths run; the caller hears the LLM's reply; a difference between the two is
  logged and counted, so an operator can see what `enabled` would change before turning it on.

The cache is keyed by dialog state, prompt key, normalized intent and the slot values (a reply
that reads back "Tuesday at 3 pm" must not be served for Wednesday), with a TTL. It is in-process
by default; `ResponseCache` takes any `get/set` backend, so several workers can share one in Redis.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Protocol

MODES = ("disabled", "shadow", "enabled")

# Prompts whose wording carries no nuance an LLM could add: answered from the template in `enabled`.
QUICK_PROMPT_KEYS = frozenset({
    "greet", "ask_date", "ask_time", "ask_date_for_time", "confirm", "change_ask", "booked", "goodbye",
    "ended", "handoff", "transfer", "failure", "resume", "correction_ack",
})
CACHE_TTL_SECONDS = 3600.0  # phrasings do not go stale fast, but prompts and prices change with deploys
CACHE_MAX_ENTRIES = 4096  # templates x states x a week of slots, with room to spare
QUALITY_WINDOW = 100  # replies in the rolling average
CACHE_TIMEOUT_SECONDS = 0.05  # a cache lookup slower than this costs more than the LLM call it saves


class CacheBackend(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...


class MemoryBackend:
    """In-process LRU with a TTL: the default when no REDIS_URL is set."""

    def __init__(self, max_entries: int = CACHE_MAX_ENTRIES, clock=time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


def normalize_intent(text: str | None) -> str:
    """Lower-case words only: "Yes!" and "yes." are the same intent for the cache."""
    return " ".join(re.findall(r"[a-z0-9]+", (text or "").lower()))


def cache_key(state: str, prompt_key: str, intent: str, slots: dict) -> str:
    slot_part = ",".join(f"{k}={slots[k]}" for k in sorted(slots) if slots[k] is not None)
    return f"reply:{state}:{prompt_key}:{intent}:{slot_part}"


class ResponseCache:
    def __init__(self, backend: CacheBackend | None = None, ttl: float = CACHE_TTL_SECONDS) -> None:
        self.backend = backend or MemoryBackend()
        self.ttl = ttl
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> str | None:
        try:
            value = await asyncio.wait_for(self.backend.get(key), CACHE_TIMEOUT_SECONDS)
        except Exception:  # a cache outage (or a slow Redis) is a miss, never a failed or slow call
            value = None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    async def put(self, key: str, value: str) -> None:
        try:
            await asyncio.wait_for(self.backend.set(key, value, self.ttl), CACHE_TIMEOUT_SECONDS)
        except Exception:
            pass

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


_MARKUP = re.compile(r"[<>{}\[\]*#_`|\\]|https?://|www\.")
_DIGITS_OR_DAYS = re.compile(
    r"\b(\d{1,2}(:\d{2})?\s*(am|pm)?|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"january|february|march|april|may|june|july|august|september|october|november|december|"
    r"today|tomorrow|noon)\b", re.I)


def quality_score(reply: str, reference: str) -> int:
    """0-100: length (is it short and speakable), slot coverage (does it keep every date and time the
    dialog decided on), clarity (no markup or URLs, asks the question when the dialog asks one)."""
    words = reply.split()
    n = len(words)
    if n == 0:
        return 0
    # Length, 40 points: 4-30 words is a spoken turn; longer loses the caller, shorter is curt.
    length = 40 if 4 <= n <= 30 else max(0, 40 - 2 * (n - 30)) if n > 30 else 10 * n
    # Slot coverage, 40 points: every date/time mentioned by the decision appears in the reply.
    wanted = {m.group(0).lower().replace(" ", "") for m in _DIGITS_OR_DAYS.finditer(reference)}
    got = {m.group(0).lower().replace(" ", "") for m in _DIGITS_OR_DAYS.finditer(reply)}
    coverage = 40 if not wanted else round(40 * len(wanted & got) / len(wanted))
    # Clarity, 20 points.
    clarity = 20
    if _MARKUP.search(reply):
        clarity -= 10
    if reference.rstrip().endswith("?") and not reply.rstrip().endswith("?"):
        clarity -= 7
    if reply.count(".") + reply.count("!") + reply.count("?") > 4:
        clarity -= 3
    return max(0, min(100, length + coverage + clarity))


class QualityTracker:
    def __init__(self, window: int = QUALITY_WINDOW) -> None:
        self._scores: deque[int] = deque(maxlen=window)

    def add(self, score: int) -> float:
        self._scores.append(score)
        return self.average

    @property
    def average(self) -> float:
        return sum(self._scores) / len(self._scores) if self._scores else 0.0


@dataclass
class LatencySuite:
    """Process-wide: shared by every call's responder."""

    mode: str = "enabled"
    cache: ResponseCache | None = None
    quality: QualityTracker | None = None
    # Told of each lookup and score, so the gateway can export metrics without dialog/ importing it:
    # ("quick", {"hit": bool}), ("cache", {"hit": bool}), ("shadow_diff", {...}), ("quality", {...}).
    observer: Callable[[str, dict], None] | None = None
    quick_hits: int = 0
    quick_misses: int = 0
    shadow_diffs: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"latency mode must be one of {MODES}, not {self.mode!r}")
        self.cache = self.cache or ResponseCache()
        self.quality = self.quality or QualityTracker()

    @property
    def quick_hit_rate(self) -> float:
        total = self.quick_hits + self.quick_misses
        return self.quick_hits / total if total else 0.0

    def note(self, kind: str, **data: object) -> None:
        if kind == "quick":
            if data["hit"]:
                self.quick_hits += 1
            else:
                self.quick_misses += 1
        elif kind == "shadow_diff":
            self.shadow_diffs += 1
        if self.observer is not None:
            try:
                self.observer(kind, data)
            except Exception:  # metrics must never break a reply
                pass
