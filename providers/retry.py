"""What every cloud client shares: jittered backoff, per-client counters, and the event hook.

The gateway's fallback chain does the retrying *across* providers; a client retries only what it
must to keep a long-lived stream alive (the Deepgram socket of a call). Those retries wait a capped,
jittered, exponentially growing delay, so a provider that is down is never hammered in a tight loop
and many calls that lost the same provider do not all reconnect in the same millisecond.

Metrics: a client counts its own `requests`, `errors`, `retries` and `fallbacks` in a
`ProviderCounters`, and forwards the kinds in its `forward` set to the module-level
`on_provider_event` hook, which the gateway points at Prometheus (None: nothing wired). Events the
fallback chain already reports for an engine (providers.chain: request/error/fallback per STT and
TTS attempt) are not forwarded again by the engine, so no event is counted twice.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("voicegate.providers")

EVENT_KINDS = ("request", "error", "retry", "fallback")

# (provider, role, kind) with kind in EVENT_KINDS; set by the gateway, e.g. to a Prometheus counter's inc.
on_provider_event: Callable[[str, str, str], None] | None = None

# First reconnect after ~0.1-0.2 s (a blip), growing to ~1-2 s: a caller tolerates a second of lost
# transcription (the audio is replayed), not a stream that hammers a dead endpoint.
BACKOFF_BASE_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 2.0


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE_SECONDS, cap: float = BACKOFF_CAP_SECONDS,
                  rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number `attempt` (1-based): equal jitter over a capped exponential.

    Never zero (half the step is fixed), never above `cap`."""
    step = min(cap, base * (2 ** max(0, attempt - 1)))
    return step / 2 + rand() * step / 2


@dataclass
class ProviderCounters:
    """Counts of one client; the kinds in `forward` also go to `on_provider_event`."""

    provider: str
    role: str
    forward: frozenset[str] = frozenset(EVENT_KINDS)
    requests: int = 0
    errors: int = 0
    retries: int = 0
    fallbacks: int = 0

    def count(self, kind: str) -> None:
        match kind:
            case "request":
                self.requests += 1
            case "error":
                self.errors += 1
            case "retry":
                self.retries += 1
            case "fallback":
                self.fallbacks += 1
            case _:
                raise ValueError(f"unknown provider event kind {kind!r}")
        if kind in self.forward:
            report(self.provider, self.role, kind)

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "errors": self.errors, "retries": self.retries,
                "fallbacks": self.fallbacks}


def report(provider: str, role: str, kind: str) -> None:
    """Forward one event to the hook; a broken hook is logged, never raised into a call."""
    hook = on_provider_event
    if hook is None:
        return
    try:
        hook(provider, role, kind)
    except Exception:
        log.exception("on_provider_event hook failed")
