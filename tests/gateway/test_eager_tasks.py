"""Eagerly started tasks: their first step runs in the loop turn that creates them, and they are
otherwise ordinary tasks (result, exception, cancellation, context, current task)."""

from __future__ import annotations

import asyncio
import contextvars

import aiohttp
import pytest

from gateway import eager_tasks

VAR = contextvars.ContextVar("VAR", default="outer")


class LoopTurns:
    """Counts event-loop turns: a callback that schedules itself again runs once per turn."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_the_first_step_runs_before_start_returns_as_the_task():
    seen = []
    outer = asyncio.current_task()

    async def child():
        seen.append(("first", asyncio.current_task()))
        VAR.set("inner")
        await asyncio.sleep(0)
        seen.append(("second", VAR.get()))
        return 42

    task = eager_tasks.start(child())
    assert seen == [("first", task)]
    assert asyncio.current_task() is outer  # the caller is its loop's current task again
    assert VAR.get() == "outer"  # what the task set stays in the task's context
    assert await task == 42
    assert seen[-1] == ("second", "inner")


async def test_a_first_step_that_finishes_or_fails_is_the_tasks_outcome():
    async def done():
        return "at once"

    async def fails():
        raise ValueError("in the first step")

    assert await eager_tasks.start(done()) == "at once"
    with pytest.raises(ValueError, match="in the first step"):
        await eager_tasks.start(fails())


async def test_cancelled_before_the_task_takes_over_it_is_cancelled_where_it_waits():
    waited = asyncio.get_running_loop().create_future()
    cleaned = []

    async def child():
        try:
            await waited
        except asyncio.CancelledError:
            cleaned.append("cancelled at the await")
            raise

    task = eager_tasks.start(child())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cancelled at the await"] and waited.cancelled()


async def test_prepare_runs_the_first_step_only_when_asked_and_never_after_a_cancel():
    ran = []

    async def child(name):
        ran.append(name)
        return name

    task, first_step = eager_tasks.prepare(child("asked"))
    assert ran == []
    first_step()
    assert ran == ["asked"]
    first_step()  # once only
    assert await task == "asked" and ran == ["asked"]

    task, first_step = eager_tasks.prepare(child("cancelled"))
    task.cancel()
    first_step()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "cancelled" not in ran

    task, _ = eager_tasks.prepare(child("never asked"))
    assert await task == "never asked"  # it starts like any task, a loop turn later


async def test_aiohttp_writes_a_request_body_in_the_turn_it_sends_the_headers():
    """The factory makes aiohttp's body writer eager on 3.11, as aiohttp itself does on 3.12+."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    loop = asyncio.get_running_loop()
    turns = LoopTurns()
    at: dict[str, int] = {}

    async def request_start(session, context, params):
        at["start"] = turns.count

    async def chunk_sent(session, context, params):
        at.setdefault("body", turns.count)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(request_start)
    trace.on_request_chunk_sent.append(chunk_sent)
    previous = loop.get_task_factory()
    loop.set_task_factory(None)
    try:
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            async with session.post(url, data=b"warm") as response:  # opens the pooled connection
                await response.read()
            results = {}
            for eager in (False, True):
                if eager:
                    assert eager_tasks.install(loop)
                at.clear()
                async with session.post(url, data=b"x" * 3000) as response:
                    assert await response.read() == b"ok"
                results[eager] = at["body"] - at["start"]
    finally:
        loop.set_task_factory(previous)
        turns.stop()
        server.close()
        await server.wait_closed()
    assert results[True] == 0  # the body left in the turn the request started
    assert results[False] >= 1  # without the factory it waited a turn (this test sees the difference)


def test_the_factory_knows_aiohttps_body_writer():
    assert aiohttp.client_reqrep.ClientRequest.write_bytes.__code__ in eager_tasks.EAGER_CODES


async def test_adopt_carries_on_a_coroutine_whose_first_step_ran_outside_any_task():
    room = asyncio.get_running_loop().create_future()

    async def send():
        value = await room
        return f"sent after {value}"

    sending = send()
    waits_on = sending.send(None)  # what a caller does to write without a task when there is room
    task = eager_tasks.adopt(sending, waits_on)
    room.set_result("the buffer drained")
    assert await task == "sent after the buffer drained"
