"""uvicorn's WebSocket protocol with messages handed to an app's handler as they arrive
(`gateway.direct_receive`): in order with what was queued before, reading not paused for them, back to
the queue when the handler lets go, disconnects included; and the same over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

import pytest
import uvicorn
import websockets
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from gateway.direct_receive import DIRECT_RECEIVE, DirectReceiveProtocol
from tests.support import free_port

HANDSHAKE = (b"GET /media HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def client_frame(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[])


class FakeTransport:
    """Records what the protocol asks of the socket."""

    def __init__(self) -> None:
        self.reading = True
        self.pauses = 0
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class AcceptingApp:
    """Accepts the socket and keeps it open until `done`; the test drives the protocol."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.done = asyncio.Event()
        self.scope: dict = {}
        self.receive = None

    async def __call__(self, scope, receive, send) -> None:
        self.scope, self.receive = scope, receive
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        self.accepted.set()
        await self.done.wait()


@pytest.fixture
async def opened():
    app = AcceptingApp()
    config = uvicorn.Config(app, ws=DirectReceiveProtocol, log_config=None, lifespan="off")
    state = ServerState()
    protocol = DirectReceiveProtocol(config, state, {})
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    await asyncio.wait_for(app.accepted.wait(), 5)
    yield protocol, transport, app
    app.done.set()
    await asyncio.wait_for(asyncio.gather(*state.tasks), 5)


def texts(messages: list[dict]) -> list[str]:
    return [m.get("text", m["type"]) for m in messages]


async def test_messages_queued_before_the_handler_reach_it_first_then_each_as_it_arrives(opened):
    protocol, transport, app = opened
    protocol.data_received(client_frame("a") + client_frame("b"))
    assert not transport.reading  # uvicorn's pace: paused until the app has taken them
    got: list[dict] = []
    app.scope["extensions"][DIRECT_RECEIVE](lambda m: got.append(m) or True)
    assert texts(got) == ["a", "b"]
    assert transport.reading  # nothing left queued: read on
    pauses = transport.pauses
    for word in ("c", "d", "e"):
        protocol.data_received(client_frame(word))
        assert texts(got)[-1] == word  # taken inside data_received, not a loop turn later
    assert texts(got) == ["a", "b", "c", "d", "e"]
    assert transport.reading and transport.pauses == pauses  # never paused for a message the handler took
    assert protocol.queue.empty()


async def test_a_handler_that_lets_go_leaves_the_rest_to_receive_in_order(opened):
    protocol, transport, app = opened
    got: list[dict] = []
    app.scope["extensions"][DIRECT_RECEIVE](lambda m: got.append(m) or m.get("text") != "stop")
    protocol.data_received(client_frame("a") + client_frame("stop") + client_frame("after") + client_frame("more"))
    assert texts(got) == ["a", "stop"]
    assert not transport.reading  # back to uvicorn's pace
    assert texts([await app.receive(), await app.receive()]) == ["after", "more"]
    assert transport.reading


async def test_a_handler_that_lets_go_on_a_queued_message_is_never_installed(opened):
    protocol, transport, app = opened
    protocol.data_received(client_frame("stop") + client_frame("after"))
    got: list[dict] = []
    app.scope["extensions"][DIRECT_RECEIVE](lambda m: got.append(m) or m.get("text") != "stop")
    protocol.data_received(client_frame("later"))
    assert texts(got) == ["stop"]
    assert texts([await app.receive(), await app.receive()]) == ["after", "later"]


async def test_the_disconnect_reaches_the_handler(opened):
    protocol, transport, app = opened
    got: list[dict] = []
    app.scope["extensions"][DIRECT_RECEIVE](lambda m: got.append(m) or True)
    protocol.data_received(client_frame("a"))
    protocol.connection_lost(None)
    assert texts(got) == ["a", "websocket.disconnect"]


async def test_a_refused_handshake_has_no_scope_to_extend():
    async def refuse(scope, receive, send):
        raise AssertionError("not called")

    protocol = DirectReceiveProtocol(uvicorn.Config(refuse, log_config=None, lifespan="off"), ServerState(), {})
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"))
    assert transport.closed and b"400 Bad Request" in b"".join(transport.written)


async def test_over_a_real_socket_every_message_reaches_the_handler_in_order_outside_any_task():
    port = free_port()
    seen: list[tuple[str, bool]] = []
    done = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        first = await receive()  # the first through the queue, as an app's `start` would be
        seen.append((first["text"], asyncio.current_task() is not None))

        def handler(message: dict) -> bool:
            if message["type"] == "websocket.disconnect":
                done.set()
                return False
            seen.append((message["text"], asyncio.current_task() is not None))
            return True

        scope["extensions"][DIRECT_RECEIVE](handler)
        await send({"type": "websocket.send", "text": "installed"})
        await done.wait()

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, ws=DirectReceiveProtocol,
                                           log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
            await ws.send("m0")
            assert await ws.recv() == "installed"
            for n in range(1, 500):
                await ws.send(f"m{n}")
        await asyncio.wait_for(done.wait(), 10)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 10)
    assert [text for text, _ in seen] == [f"m{n}" for n in range(500)]
    assert seen[0][1] and not any(in_task for _, in_task in seen[1:])  # after the first: in data_received


async def test_a_closed_connection_is_freed_without_the_cycle_collector():
    """The scope's extension refers back to the protocol; left in place, every connection would wait in
    the old generation for a full collection (the gateway paces those rarely)."""
    accepted = asyncio.Event()
    scopes: list[dict] = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        scope["extensions"][DIRECT_RECEIVE](lambda message: message["type"] != "websocket.disconnect")
        scopes.append(scope)
        accepted.set()

    state = ServerState()
    protocol = DirectReceiveProtocol(uvicorn.Config(app, log_config=None, lifespan="off"), state, {})
    protocol.connection_made(FakeTransport())
    protocol.data_received(HANDSHAKE)
    await asyncio.wait_for(accepted.wait(), 5)
    await asyncio.wait_for(asyncio.gather(*state.tasks), 5)
    protocol.connection_lost(None)
    assert DIRECT_RECEIVE not in scopes[0]["extensions"] and protocol.queue.handler is None
    gone = weakref.ref(protocol)
    gc.disable()
    try:
        del protocol
        for _ in range(3):
            await asyncio.sleep(0)
        assert gone() is None
    finally:
        gc.enable()
