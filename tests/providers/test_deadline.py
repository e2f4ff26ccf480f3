"""ReadDeadline: each read's own deadline, one timer while deadlines move later, cancellation kept honest."""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from providers.deadline import ReadDeadline


@pytest.fixture
def deadline() -> Iterator[ReadDeadline]:
    d = ReadDeadline()
    yield d
    d.close()


@pytest.fixture
def queue() -> asyncio.Queue[int]:
    return asyncio.Queue()


def _in(seconds: float) -> float:
    """The loop time `seconds` from now: a read's deadline."""
    return asyncio.get_running_loop().time() + seconds


async def _expires(deadline: ReadDeadline, queue: asyncio.Queue[int], when: float) -> None:
    """The read times out by its own deadline: a 2 s guard (which would also raise TimeoutError)
    must not be what ended it."""
    guard = asyncio.timeout(2.0)
    with pytest.raises(TimeoutError):
        async with guard:
            await deadline.read(queue.get(), when)
    assert not guard.expired()


async def _feed(queue: asyncio.Queue[int], items: int, every: float) -> None:
    for i in range(items):
        await asyncio.sleep(every)
        queue.put_nowait(i)


async def test_a_read_done_in_time_returns_its_value(deadline: ReadDeadline, queue: asyncio.Queue[int]) -> None:
    queue.put_nowait(7)
    assert await deadline.read(queue.get(), _in(1.0)) == 7


async def test_a_read_past_its_deadline_times_out(deadline: ReadDeadline, queue: asyncio.Queue[int]) -> None:
    when = _in(0.05)
    await _expires(deadline, queue, when)
    assert _in(0.0) >= when - 0.002  # libuv timers have millisecond resolution
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the expiry's cancel was taken back


async def test_a_stream_that_keeps_moving_outlives_its_first_deadline(
        deadline: ReadDeadline, queue: asyncio.Queue[int]) -> None:
    # Each item comes 30 ms after the last, each read allows 80 ms: ten items take 300 ms, well past
    # the first read's deadline, and no read times out (the timer re-arms instead of firing).
    feeder = asyncio.create_task(_feed(queue, 10, 0.03))
    got = [await deadline.read(queue.get(), _in(0.08)) for _ in range(10)]
    assert got == list(range(10))
    await feeder
    # ...and once it stops, the next read times out.
    await _expires(deadline, queue, _in(0.08))


async def test_an_earlier_deadline_than_the_armed_timer_still_fires_on_time(
        deadline: ReadDeadline, queue: asyncio.Queue[int]) -> None:
    queue.put_nowait(1)
    assert await deadline.read(queue.get(), _in(60.0)) == 1  # a timer armed a minute out
    await _expires(deadline, queue, _in(0.05))  # not the minute-long timer's


async def test_a_cancel_from_outside_stays_a_cancel(deadline: ReadDeadline, queue: asyncio.Queue[int]) -> None:
    reader = asyncio.create_task(deadline.read(queue.get(), _in(5.0)))
    await asyncio.sleep(0.01)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert reader.cancelled()


async def test_an_outer_timeout_is_the_outer_ones(deadline: ReadDeadline, queue: asyncio.Queue[int]) -> None:
    # An enclosing asyncio.timeout that expires first must see its own TimeoutError, and the read's
    # deadline (later) must not claim it.
    outer = asyncio.timeout(0.05)
    with pytest.raises(TimeoutError):
        async with outer:
            await deadline.read(queue.get(), _in(5.0))
    assert outer.expired()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_read_that_expires_inside_an_outer_timeout_leaves_the_outer_one_alone(
        deadline: ReadDeadline, queue: asyncio.Queue[int]) -> None:
    outer = asyncio.timeout(5.0)
    async with outer:
        with pytest.raises(TimeoutError):
            await deadline.read(queue.get(), _in(0.05))
        queue.put_nowait(3)
        assert await deadline.read(queue.get(), _in(0.05)) == 3
    assert not outer.expired()


async def test_the_timer_does_nothing_between_reads(deadline: ReadDeadline, queue: asyncio.Queue[int]) -> None:
    # A deadline that passes while no read is waiting (the consumer is busy with the last item)
    # cancels nothing: the consumer's own awaits are not the stream's reads.
    queue.put_nowait(1)
    assert await deadline.read(queue.get(), _in(0.02)) == 1
    await asyncio.sleep(0.08)  # the consumer's own wait, past the last read's deadline
    queue.put_nowait(2)
    assert await deadline.read(queue.get(), _in(0.05)) == 2
