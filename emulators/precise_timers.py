"""An event loop whose timers fire on time, so an emulated latency is the configured one.

asyncio waits for its next timer in `epoll_wait`, whose timeout is in whole milliseconds and which
`selectors` rounds up: a timer due in 2.1 ms fires after 3 ms, plus the wake-up. Each emulator's
configured wait (the Deepgram final after endpointing, the LLM's tokens, the TTS first byte) came
out 0.7-0.8 ms late at p50 and 2 ms at p99, and three of them are on every turn's path: all of it
charged to the gateway in the caller-side overhead (voice-to-voice minus the configured waits).

`PreciseEpollSelector` arms a timerfd (nanosecond resolution, the kernel's timer slack aside) for
each wait with a deadline and registers it in the same epoll set, so `epoll_wait` returns when the
deadline passes, not at the next millisecond after it. Re-arming or disarming the timerfd resets its
expiry count, so it never stays readable; its events never reach the loop (`selectors` skips file
descriptors it does not know). Linux only; elsewhere the emulators use the default loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import select
import selectors
import sys
from typing import Callable

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = 0o4000
TFD_CLOEXEC = 0o2000000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.timerfd_settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                         ctypes.POINTER(_Itimerspec))
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


class PreciseEpollSelector(selectors.EpollSelector):
    def __init__(self) -> None:
        super().__init__()
        assert _LIBC is not None
        fd = _LIBC.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._timer_fd = fd
        self._spec = _Itimerspec()
        self._armed = False
        self._selector.register(fd, select.EPOLLIN)  # the epoll set itself: no key, so never reported

    def _set(self, timeout: float) -> None:
        """Arm the timer `timeout` seconds from now; 0 disarms it."""
        value = self._spec.it_value
        ns = int(timeout * 1e9)
        if timeout > 0:
            ns = max(ns, 1)  # a zero it_value would disarm
        value.tv_sec, value.tv_nsec = divmod(ns, 1_000_000_000)
        _LIBC.timerfd_settime(self._timer_fd, 0, ctypes.byref(self._spec), None)  # type: ignore[union-attr]

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self._set(timeout)
            self._armed = True
        elif self._armed:
            self._set(0)
            self._armed = False
        return super().select(timeout)

    def close(self) -> None:
        try:
            super().close()
        finally:
            os.close(self._timer_fd)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory for `asyncio.Runner` (None: the platform cannot, use the default loop)."""
    if _LIBC is None:
        return None
    try:
        PreciseEpollSelector().close()
    except OSError:
        return None
    return lambda: asyncio.SelectorEventLoop(PreciseEpollSelector())
