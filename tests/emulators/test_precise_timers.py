"""The emulators' loop (`emulators/precise_timers.py`): timers, I/O and shutdown work as on the
default loop, and the timer's own file descriptor never reaches the loop. How late the timers are is
measured by the benchmark (the test rig's share in `voicegate bench`), not here."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from emulators import precise_timers

factory = precise_timers.loop_factory()
pytestmark = pytest.mark.skipif(factory is None, reason="timerfd is Linux-only")


def test_timers_and_sockets_run_on_the_precise_loop() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop._selector, precise_timers.PreciseEpollSelector)  # type: ignore[attr-defined]
        order: list[str] = []
        loop.call_later(0.03, order.append, "late")
        loop.call_later(0.01, order.append, "early")
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        await loop.sock_sendall(a, b"ping")
        order.append((await loop.sock_recv(b, 16)).decode())
        start = loop.time()
        await asyncio.sleep(0.05)
        assert loop.time() - start >= 0.05  # never early
        await asyncio.sleep(0)  # a zero wait disarms the timer; nothing may spin on it
        reader, writer = await asyncio.open_connection(sock=a)
        writer.write(b"pong\n")
        await writer.drain()
        order.append((await loop.sock_recv(b, 16)).decode().strip())
        writer.close()
        b.close()
        return order

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(main()) == ["ping", "early", "late", "pong"]


def test_closing_the_selector_closes_its_timer() -> None:
    selector = precise_timers.PreciseEpollSelector()
    fd = selector._timer_fd
    os.fstat(fd)
    selector.close()
    with pytest.raises(OSError):
        os.fstat(fd)
