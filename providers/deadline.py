"""A deadline on each read of a stream, without a loop timer per read.

A reply streams tens of small pieces per provider (LLM tokens, TTS audio chunks), and each wait for
the next one has a deadline (first token, between tokens, first audio...). A fresh `asyncio.timeout`
around every read schedules a loop timer and cancels it again, piece after piece: about 1.5 % of
the gateway's core at 100 calls (bench/PROFILE.md). `ReadDeadline` keeps one timer while the
deadline only moves later, as it does on a healthy stream: when the timer fires before the current
deadline (the stream kept moving), it re-arms for that deadline. A deadline earlier than the armed
timer re-arms it at once.

It cancels the reading task only while a read is waiting and its deadline has passed, and `read`
turns exactly that cancellation into `TimeoutError`; a cancellation from anyone else (barge-in
cancelling the reply) stays a cancellation. The task's cancel count is kept as `asyncio.timeout`
keeps it, so `Task.cancelling()` and structured concurrency above see no difference.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")


class ReadDeadline:
    """Successive `await`s of one stream, each with its own absolute deadline (loop time)."""

    __slots__ = ("_loop", "_task", "_when", "_handle", "_armed", "_expired")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None  # set only while a read waits
        self._when = 0.0  # the waiting read's deadline
        self._handle: asyncio.Handle | None = None
        self._armed = 0.0  # when the timer fires
        self._expired = False

    async def read(self, awaitable: Awaitable[T], when: float) -> T:
        """`await awaitable`, raising TimeoutError if it is not done by loop time `when`."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "ReadDeadline.read runs in a task"
        self._when = when
        if self._handle is None or self._armed > when:
            if self._handle is not None:
                self._handle.cancel()
            self._armed = when
            self._handle = loop.call_at(when, self._fire)
        cancelling = task.cancelling()
        self._task = task
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._task = None
            if self._expired:  # expired as the read completed anyway: take back our cancel
                self._expired = False
                task.uncancel()

    def close(self) -> None:
        """Drop the timer (the stream is done); `read` may still be used afterwards."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        task = self._task
        if task is None:
            return  # between reads: the next read arms a timer for its own deadline
        loop = self._loop
        assert loop is not None
        if loop.time() < self._when:
            self._armed = self._when
            self._handle = loop.call_at(self._when, self._fire)
            return
        self._expired = True
        task.cancel()
