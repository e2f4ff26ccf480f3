"""Tasks whose first step runs at once, in the loop turn that creates them (Python 3.12's eager start).

A task created with `create_task` first runs in a later turn of the event loop, after every callback
already queued and the next poll for I/O. On the path from a caller's words to the LLM request that
happens twice: the call spawns the reply task, and aiohttp spawns a task to write the request body.
At 100 calls each of those waits took 0.1-0.4 ms typically and 1-1.3 ms at p99: turns where the
gateway was busy paid them in full, twice, on top of the work itself.

Python 3.12 starts such tasks eagerly (`eager_start=True`, which aiohttp already asks for on 3.12).
On 3.11 `start()` does the same by hand: the task is created, made the loop's current task, and the
coroutine's first step runs in the task's context; the task's own first step, a turn later, only
hands the outcome over (the future the coroutine waits on, its result or its exception). What the
first step did (bytes written, requests sent) has happened by the time `start()` returns.

One difference from 3.12 remains: a coroutine that finished in its first step still completes its
task a turn later, and cancelling it in between reports it cancelled. Nothing here depends on that.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import sys
from typing import Any, Callable, Coroutine

import aiohttp.client_reqrep

# Coroutines `eager_factory` starts eagerly: aiohttp's request body writer (see the module's note).
EAGER_CODES: frozenset = frozenset({aiohttp.client_reqrep.ClientRequest.write_bytes.__code__})

_YIELDED, _RETURNED, _RAISED = range(3)


def start(coro: Coroutine[Any, Any, Any], *, loop: asyncio.AbstractEventLoop | None = None,
          name: str | None = None, context: contextvars.Context | None = None) -> asyncio.Task:
    """A task for `coro` whose first step has already run."""
    loop = loop or asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, name=name, context=context, eager_start=True)
    task, first_step = prepare(coro, loop=loop, name=name, context=context)
    first_step()
    return task


def prepare(coro: Coroutine[Any, Any, Any], *, loop: asyncio.AbstractEventLoop | None = None,
            name: str | None = None, context: contextvars.Context | None = None
            ) -> tuple[asyncio.Task, Callable[[], None]]:
    """A task for `coro`, and a function that runs the task's first step when called, in this loop
    turn. For a caller that must finish what it is doing before the task runs (the call core's step
    that asked for it) but must not wait a loop turn either. Called after the task was cancelled, or
    never called at all, it leaves the task to start as any other would."""
    loop = loop or asyncio.get_running_loop()
    context = context if context is not None else contextvars.copy_context()
    started = _Started(coro)
    task = asyncio.Task(started, loop=loop, name=name, context=context)

    def first_step() -> None:
        if started.started or task.cancelling():
            return
        outer = asyncio.current_task(loop)
        if outer is not None:
            asyncio.tasks._leave_task(loop, outer)
        asyncio.tasks._enter_task(loop, task)
        try:
            context.run(started.first_step)
        finally:
            asyncio.tasks._leave_task(loop, task)
            if outer is not None:
                asyncio.tasks._enter_task(loop, outer)

    return task, first_step


def adopt(coro: Coroutine[Any, Any, Any], waits_on: Any, *, loop: asyncio.AbstractEventLoop | None = None
          ) -> asyncio.Task:
    """A task that carries on `coro`, whose first step the caller ran itself (`coro.send(None)`,
    outside any task) and which now waits on `waits_on`, what that step yielded. For a coroutine that
    usually finishes in its first step, where even an eager task would be wasted (a frame written to
    a socket with room for it), and only sometimes has to wait."""
    started = _Started(coro)
    started.started = True
    started._outcome = (_YIELDED, waits_on)
    return asyncio.Task(started, loop=loop or asyncio.get_running_loop())


def eager_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], *,
                  context: contextvars.Context | None = None, **kwargs: Any) -> asyncio.Task:
    """A loop task factory that starts the coroutines in `EAGER_CODES` eagerly and the rest as usual."""
    if getattr(coro, "cr_code", None) in EAGER_CODES:
        return start(coro, loop=loop, context=context)
    return asyncio.Task(coro, loop=loop, context=context, **kwargs)


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Use `eager_factory` on this loop, unless Python starts aiohttp's writer eagerly itself or the
    loop already has a factory (someone else's choice). Returns whether it was installed."""
    if sys.version_info >= (3, 12) or loop.get_task_factory() is not None:
        return False
    loop.set_task_factory(eager_factory)
    return True


class _Started(collections.abc.Coroutine):
    """A coroutine whose first step may run outside its task: the task's first step then replays the
    outcome instead of stepping the coroutine."""

    __slots__ = ("_coro", "_outcome", "started")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._outcome: tuple[int, Any] | None = None  # the first step's, until the task takes it
        self.started = False

    def first_step(self) -> None:
        self.started = True
        try:
            self._outcome = (_YIELDED, self._coro.send(None))
        except StopIteration as stop:
            self._outcome = (_RETURNED, stop.value)
        except BaseException as exc:  # the task raises it, as it would have from its own first step
            self._outcome = (_RAISED, exc)

    def send(self, value: Any) -> Any:
        self.started = True
        outcome, self._outcome = self._outcome, None
        if outcome is None:
            return self._coro.send(value)
        return _replay(outcome)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self.started = True
        outcome, self._outcome = self._outcome, None
        if outcome is not None:
            kind, payload = outcome
            if kind != _YIELDED:
                return _replay(outcome)  # the coroutine has finished: nothing left to throw into
            # Cancelled before the task took over the wait: cancel what the coroutine waits on, as
            # Task.cancel() would have, and deliver the cancellation where it waits.
            if isinstance(payload, asyncio.Future):
                payload.cancel()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self):
        raise TypeError("an eagerly started coroutine belongs to its task")


def _replay(outcome: tuple[int, Any]) -> Any:
    kind, payload = outcome
    if kind == _YIELDED:
        return payload
    if kind == _RETURNED:
        raise StopIteration(payload)
    raise payload
