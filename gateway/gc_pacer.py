"""Garbage collection started by a timer on the event loop, not by whichever allocation crosses a threshold.

CPython starts a collection inside the allocation that crosses the young generation's threshold, and
allocation is densest exactly where a turn is in a hurry: the LLM SDK building its request (hundreds
of containers), a burst of media frames parsed. Traced at 100 calls, 3 of a run's 4 young
collections began inside some call's STT-final -> LLM-request hop, and each held 2-3 turns back by
its whole pause (6-9 ms: ~15 k live young objects, most of them the await chains every call rebuilds
per frame, spread over the heap so each is a cache miss). Those few turns were the run's p99.

The pacer moves the decision off the allocation path. Every `PACE_INTERVAL_S` a loop callback reads
the counts and runs the collection CPython's own policy would run: the young generation once it holds
`YOUNG_THRESHOLD` objects, the middle one every `threshold1` young collections, and a full one only
when what was promoted since the last full collection exceeds a quarter of what survived it (CPython's
rule for keeping full collections linear in the heap). Run between callbacks, at a moment unrelated
to any turn, a pause overlaps a turn's hop only by chance.

The automatic collector stays on with `BACKSTOP_THRESHOLD`, for allocation the pacer cannot see in
time: a loop that is blocked, or threads (the local engines, the store) allocating in bulk.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass
from typing import Callable

# How often the counts are looked at. At 100 calls the young generation fills at ~2,000 objects a
# second, so a collection starts at most this late, a hundred objects past the threshold.
PACE_INTERVAL_S = 0.05
# Young objects that start a paced collection (CPython's default threshold is 700). At 100 calls
# this is a pause of 4-10 ms every 4-9 s. A lower threshold makes each pause shorter but not in
# proportion (most young objects are the await chains every call keeps alive), and the middle
# collections it brings on are as long: at 3,000, 4 runs of 100 calls had 19 turns over 10 ms of
# gateway hops against 13 at 10,000 (1.5 ms pauses, 29 a run, the longest 10-15 ms).
YOUNG_THRESHOLD = 10_000
# The automatic collector's own threshold while the pacer runs: only allocation outside the loop's
# sight (a blocked loop, threads) ever gets this far.
BACKSTOP_THRESHOLD = 50_000
# A full collection runs once the objects promoted since the last one exceed this share of those
# that survived it (CPython's `long_lived_pending > long_lived_total / 4`).
FULL_GROWTH_RATIO = 0.25


@dataclass(frozen=True)
class GcPolicy:
    """Which generation to collect, given `gc.get_count()`. Pure: the counts and sizes are passed in."""

    young: int = YOUNG_THRESHOLD
    middle: int = 10  # young collections between middle ones (CPython's threshold1)
    old: int = 10  # middle collections before a full one is considered (CPython's threshold2)
    full_growth: float = FULL_GROWTH_RATIO

    def generation(self, counts: tuple[int, int, int], old_grown: Callable[[], float] = lambda: 1.0) -> int | None:
        """The generation due now, or None. `old_grown()`: the old generation's growth since the last
        full collection, as a share of what survived it; asked only when a full one could be due
        (it costs a walk of the old generation)."""
        young, middle, old = counts
        if young < self.young:
            return None
        if old >= self.old and old_grown() > self.full_growth:
            return 2
        return 1 if middle >= self.middle else 0


# The collector is per process; several gateways in one (tests) share these.
_running: set["GcPacer"] = set()
_saved_threshold: list[int] = []


def freeze_heap() -> None:
    """Collect once, then move everything alive out of the collector's sight for good (`gc.freeze`):
    for what a process loads at start-up and keeps (modules, schemas, models), never for what it
    creates per call, since frozen objects are never collected."""
    gc.collect()
    gc.freeze()


def _old_size() -> int:
    return len(gc.get_objects(generation=2))


class GcPacer:
    """Runs the collector from a loop timer (`start()` on the running loop, `stop()` to hand back)."""

    def __init__(self, policy: GcPolicy | None = None, interval: float = PACE_INTERVAL_S,
                 backstop: int = BACKSTOP_THRESHOLD,
                 on_pause: Callable[[int, float], None] | None = None) -> None:
        self.policy = policy or GcPolicy()
        self.interval = interval
        self.backstop = backstop
        self.on_pause = on_pause  # (generation, seconds) after each paced collection
        self.collections = [0, 0, 0]
        self._survived_full = 0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._survived_full = _old_size()
        if not _running:
            _saved_threshold[:] = gc.get_threshold()
            gc.set_threshold(self.backstop, self.policy.middle, self.policy.old)
        _running.add(self)
        self._handle = self._loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is None:
            return
        self._handle.cancel()
        self._handle = None
        _running.discard(self)
        if not _running:  # the last pacer in this process hands the collector back its thresholds
            gc.set_threshold(*_saved_threshold)

    def _old_grown(self) -> float:
        return (_old_size() - self._survived_full) / max(1, self._survived_full)

    def _tick(self) -> None:
        try:
            self.collect_if_due()
        finally:
            if self._handle is not None and self._loop is not None:
                self._handle = self._loop.call_later(self.interval, self._tick)

    def collect_if_due(self) -> int | None:
        """One look at the counts; the generation collected, or None."""
        counts = gc.get_count()
        generation = self.policy.generation((counts[0], counts[1], counts[2]), self._old_grown)
        if generation is None:
            return None
        started = time.perf_counter()
        gc.collect(generation)
        pause = time.perf_counter() - started
        if generation == 2:
            self._survived_full = _old_size()
        self.collections[generation] += 1
        if self.on_pause is not None:
            self.on_pause(generation, pause)
        return generation
