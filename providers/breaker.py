"""Circuit breakers: one per provider, per process, shared by every call.

closed     requests flow; `failure_threshold` consecutive failures open the breaker.
open       requests are refused at once (the chain goes straight to the next engine, without
           waiting for this provider's timeout); after `reset_seconds` the breaker half-opens.
half-open  one trial request at a time is let through: success closes, failure opens again.

A breaker sees only outcomes that say something about the provider: an auth failure opens it at
once (no retry helps), a cancelled request (the caller barged in) counts as nothing.

Connection drops are counted apart from failures. A flapping provider (a socket that opens, serves a
little, and is cut again, behind a bad load balancer) answers requests between its drops, and every
answered request would reset a count of failures in a row. So `record_drop` counts the drops of the
last `drop_window_seconds`, whatever succeeded between them, and `failure_threshold` of them open
the breaker; in half-open, a trial whose connection drops opens it again. New calls then skip the
provider until a trial connection holds (the engine says so: `record_success`).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


FAILURE_THRESHOLD = 3  # three failures in a row is a pattern, not a blip
RESET_SECONDS = 15.0  # long enough not to hammer a provider that is down, short enough to return soon
# Drops within this window count together: Deepgram's and ElevenLabs' healthy sockets live for a whole
# call (minutes); three of them cut within 30 s is a provider or a path that is failing, not bad luck.
DROP_WINDOW_SECONDS = 30.0


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int = FAILURE_THRESHOLD
    reset_seconds: float = RESET_SECONDS
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[str, BreakerState], None] | None = None
    drop_window_seconds: float = DROP_WINDOW_SECONDS
    _state: BreakerState = BreakerState.CLOSED
    _failures: int = 0
    _opened_at: float = 0.0
    _trial_in_flight: bool = False
    _drops: deque[float] = field(default_factory=deque)  # when connections dropped, within the window
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
        self._trial_in_flight = False
        if self.state is BreakerState.OPEN:
            # A request or connection begun before the breaker opened: it says nothing about the
            # provider now. Only a trial, in half-open, closes an open breaker.
            return
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._drops.clear()  # a trial held: the drops before it are history
            self._set(BreakerState.CLOSED)

    def record_failure(self, fatal: bool = False) -> None:
        self._trial_in_flight = False
        self._failures += 1
        if fatal or self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self.clock()
            self._set(BreakerState.OPEN)

    def record_drop(self) -> None:
        """A connection that had opened was lost without being asked to close. Successes between
        drops do not forgive them: `failure_threshold` drops within `drop_window_seconds` open it."""
        now = self.clock()
        self._trial_in_flight = False
        drops = self._drops
        drops.append(now)
        while drops and now - drops[0] > self.drop_window_seconds:
            drops.popleft()
        if self._state is BreakerState.HALF_OPEN or len(drops) >= self.failure_threshold:
            self._opened_at = now
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
                 failure_threshold: int = FAILURE_THRESHOLD, reset_seconds: float = RESET_SECONDS,
                 drop_window_seconds: float = DROP_WINDOW_SECONDS) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._on_change = on_change
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._drop_window = drop_window_seconds

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, self._threshold, self._reset, on_change=self._on_change,
                                     drop_window_seconds=self._drop_window)
            self._breakers[name] = breaker
            if self._on_change is not None:
                self._on_change(name, breaker.state)
        return breaker

    def states(self) -> dict[str, str]:
        return {name: b.state.name.lower() for name, b in self._breakers.items()}
