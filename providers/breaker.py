"""Circuit breakers: one per provider, per process, shared by every call.

closed     requests flow; `failure_threshold` consecutive failures open the breaker.
open       requests are refused at once (the chain goes straight to the next engine, without
           waiting for this provider's timeout); after `reset_seconds` the breaker half-opens.
half-open  one trial request at a time is let through: success closes, failure opens again.

A breaker sees only outcomes that say something about the provider: an auth failure opens it at
once (no retry helps), a cancelled request (the caller barged in) counts as nothing.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


FAILURE_THRESHOLD = 3  # three failures in a row is a pattern, not a blip
RESET_SECONDS = 15.0  # long enough not to hammer a provider that is down, short enough to return soon


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int = FAILURE_THRESHOLD
    reset_seconds: float = RESET_SECONDS
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[str, BreakerState], None] | None = None
    _state: BreakerState = BreakerState.CLOSED
    _failures: int = 0
    _opened_at: float = 0.0
    _trial_in_flight: bool = False
    transitions: list[BreakerState] = field(default_factory=list)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.reset_seconds:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """May a request go to this provider now? (In half-open, this takes the one trial slot.)"""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self, fatal: bool = False) -> None:
        self._trial_in_flight = False
        self._failures += 1
        if fatal or self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self.clock()
            self._set(BreakerState.OPEN)

    def record_cancelled(self) -> None:
        """The request was abandoned by us (barge-in, call end): no verdict on the provider."""
        self._trial_in_flight = False

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        self.transitions.append(state)
        if self.on_change is not None:
            self.on_change(self.name, state)


class BreakerBoard:
    """The process's breakers, by provider name."""

    def __init__(self, on_change: Callable[[str, BreakerState], None] | None = None,
                 failure_threshold: int = FAILURE_THRESHOLD, reset_seconds: float = RESET_SECONDS) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._on_change = on_change
        self._threshold = failure_threshold
        self._reset = reset_seconds

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, self._threshold, self._reset, on_change=self._on_change)
            self._breakers[name] = breaker
            if self._on_change is not None:
                self._on_change(name, breaker.state)
        return breaker

    def states(self) -> dict[str, str]:
        return {name: b.state.name.lower() for name, b in self._breakers.items()}
