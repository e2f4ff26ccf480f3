"""What every emulator shares: the per-app state, raw-ASGI reply helpers, and the connection cutter.

The streaming endpoints are plain ASGI callables rather than Starlette request/response
functions, because their faults need control Starlette does not give: headers sent and then
nothing (a stall), or the TCP connection cut mid-body (a drop). A real drop means the client sees
the socket die without a close frame or a chunked-body terminator, so `abort_connection` reaches
the uvicorn transport that `EmulatorApp` (app.py) stores in the scope and aborts it. Servers
without a reachable transport fall back to a close code or an incomplete body.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, MutableMapping

import orjson

from emulators.config import EmulatorConfig, EmulatorLog

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRANSPORT_KEY = "emulator.transport"  # scope key: the uvicorn transport of this connection


@dataclass
class EmulatorState:
    config: EmulatorConfig
    log: EmulatorLog
    # Set when the server is stopping, so stalled handlers let go instead of holding shutdown up.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    twilio_calls: dict[str, dict[str, Any]] = field(default_factory=dict)


def state_of(scope: Scope) -> EmulatorState:
    return scope["app"].state.emulator


def now() -> float:
    return time.time()


def loop_time_at(stamp: float) -> float:
    """The running loop's clock reading at wall-clock `stamp` (an arrival stamp, `now()` then).
    Latencies count from when a request reached the process, not from when its handler ran: a
    handler that starts a loop turn late must not make the emulated provider that much slower."""
    return asyncio.get_running_loop().time() - max(0.0, time.time() - stamp)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def recorded_headers(scope: Scope, secret: tuple[bytes, ...]) -> dict[str, Any]:
    """Request headers for the log; secret ones become True (present), never their value."""
    out: dict[str, Any] = {}
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        out[name] = True if key.lower() in secret else value.decode("latin-1")
    for name in secret:
        out.setdefault(name.decode(), False)
    return out


async def read_body(receive: Receive, limit: int = 8 * 1024 * 1024) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ValueError("request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _headers(content_type: str, extra: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    out = [(b"content-type", content_type.encode())]
    for k, v in (extra or {}).items():
        out.append((k.lower().encode(), v.encode()))
    return out


async def send_json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    data = orjson.dumps(body)
    hdrs = _headers("application/json", headers)
    hdrs.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data})


async def start_stream(send: Send, status: int, content_type: str, headers: dict[str, str] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(content_type, headers)})


async def send_chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def end_stream(send: Send) -> None:
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def sleep_until(deadline: float) -> None:
    """Sleep until `deadline` on the loop clock (absolute, so pacing does not drift)."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def hold(receive: Receive | None, state: EmulatorState, seconds: float) -> None:
    """A stall: keep the connection open, saying nothing, until the client leaves, the server
    stops, or `seconds` pass."""
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(state.stopping.wait())]
    if receive is not None:
        waiters.append(asyncio.ensure_future(_until_disconnect(receive)))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            return


async def abort_connection(scope: Scope, receive: Receive | None = None) -> bool:
    """Cut the TCP connection with no close frame / body terminator. False if not possible."""
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        return False
    transport.abort()
    if receive is not None and scope["type"] == "http":
        # Let uvicorn notice the loss before the app returns, so it does not report an
        # incomplete response as an application error.
        try:
            await asyncio.wait_for(_until_disconnect(receive), 1.0)
        except (asyncio.TimeoutError, Exception):
            pass
    else:
        await asyncio.sleep(0)
    return True


class IdleTimer:
    """Calls `on_idle` once when `touch()` has not been called for `timeout` seconds.

    Cheap for a per-frame `touch()`: the timer is re-armed only when it fires early, never on
    each touch (a `wait_for` around every receive would cost a timer per audio frame)."""

    def __init__(self, timeout: float, on_idle: Callable[[], None]) -> None:
        self._timeout = timeout
        self._on_idle = on_idle
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = None
        if timeout > 0:
            self._handle = self._loop.call_at(self.last + timeout, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        deadline = self.last + self._timeout
        if self._loop.time() >= deadline:
            self._handle = None
            self._on_idle()
        else:
            self._handle = self._loop.call_at(deadline, self._check)


async def deny_websocket(ws: Any, response: Any) -> None:
    """Refuse a WebSocket handshake with an HTTP response (the SDKs see the status code).

    uvicorn's websockets-sansio protocol (0.54) does not mark a denial response as a finished
    handshake and logs "ASGI callable returned without completing handshake" when the app returns.
    Ending with `ClientDisconnected`, which uvicorn treats as a normal end, avoids that false alarm."""
    await ws.send_denial_response(response)
    try:
        from uvicorn.protocols.utils import ClientDisconnected
    except ImportError:  # pragma: no cover - another ASGI server
        return
    raise ClientDisconnected()
