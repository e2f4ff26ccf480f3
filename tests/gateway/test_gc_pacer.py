"""The collection policy (pure) and the pacer that runs it from the event loop."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from gateway.gc_pacer import BACKSTOP_THRESHOLD, GcPacer, GcPolicy

POLICY = GcPolicy(young=1000, middle=10, old=10, full_growth=0.25)


def never_asked() -> float:
    raise AssertionError("the old generation was walked although no full collection could be due")


@pytest.mark.parametrize("counts, generation", [
    ((999, 9, 9), None),  # young generation not full yet: nothing, whatever the others say
    ((0, 50, 50), None),
    ((1000, 0, 0), 0),
    ((1000, 9, 9), 0),
    ((1000, 10, 9), 1),  # every tenth young collection takes the middle generation with it
])
def test_the_generation_due_follows_cpythons_thresholds(counts, generation):
    assert POLICY.generation(counts, never_asked) == generation


def test_a_full_collection_waits_until_the_old_generation_grew_by_a_quarter():
    assert POLICY.generation((1000, 10, 10), lambda: 0.5) == 2
    assert POLICY.generation((1000, 10, 10), lambda: 0.25) == 1  # not grown enough: the middle one only
    assert POLICY.generation((1000, 3, 10), lambda: 0.1) == 0


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_the_pacer_collects_cyclic_garbage_the_automatic_collector_no_longer_reaches():
    pauses: list[tuple[int, float]] = []
    pacer = GcPacer(GcPolicy(young=200), interval=0.005, on_pause=lambda g, s: pauses.append((g, s)))
    before = gc.get_threshold()
    gc.collect()
    pacer.start()
    try:
        assert gc.get_threshold()[0] == BACKSTOP_THRESHOLD
        garbage = [Cycle() for _ in range(500)]
        refs = [weakref.ref(c) for c in garbage]
        del garbage
        assert all(r() is not None for r in refs)  # only a collection frees a cycle
        for _ in range(400):
            if all(r() is None for r in refs):
                break
            await asyncio.sleep(0.005)
        assert all(r() is None for r in refs)
        assert pacer.collections[0] >= 1
        assert pauses and all(g in (0, 1, 2) and s >= 0 for g, s in pauses)
    finally:
        pacer.stop()
    assert gc.get_threshold() == before
    assert not pacer.running


async def test_thresholds_come_back_only_when_the_last_pacer_of_the_process_stops():
    before = gc.get_threshold()
    first, second = GcPacer(), GcPacer()
    first.start()
    second.start()
    first.stop()
    assert gc.get_threshold()[0] == BACKSTOP_THRESHOLD  # the second still relies on it
    second.stop()
    second.stop()  # twice is harmless
    assert gc.get_threshold() == before
