"""Received WebSocket messages handed to the app as they come off the socket, not through a queue.

uvicorn's sans-io WebSocket protocol puts each received message in a queue for the app's next
`receive()`, and stops reading the socket until the app has taken it. For a media stream that is,
50 times a second per call: a queue put, a task woken a loop turn later to resume the app's
`await receive()` through its layers of coroutines, and two epoll changes (reading stopped, then
started again). At 100 calls that is 5,000 wake-ups a second on the gateway's one core, and the
caller's frame waits behind everything else ready in the loop before its VAD step runs.

`DirectReceiveProtocol` lets an app that handles messages synchronously say so: the scope's
extension `DIRECT_RECEIVE` is a function that takes a handler. From then on each message (including
`websocket.disconnect`) is passed to the handler in the protocol's `data_received`, in order, and
the socket is read as fast as the handler takes the messages. The handler returns False to let go:
that message was its last, and the following ones queue for `receive()` as before. Messages queued
before the handler was installed go to it first, in order. An app that never installs one, or runs
under another server (no extension in the scope), is served exactly as by uvicorn.

The handler runs inside the protocol's callback, not in the app's task: it must not raise (an
exception would reach uvicorn's transport) and should run in the app task's context if it logs.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

DIRECT_RECEIVE = "voicegate.direct_receive"  # the scope extension: install(handler)

Handler = Callable[[dict[str, Any]], bool]  # an ASGI receive message -> keep receiving directly?


class _DirectQueue(asyncio.Queue):
    """uvicorn's receive queue, offering each message to the handler before queueing it."""

    handler: Handler | None = None

    def put_nowait(self, item: Any) -> None:
        handler = self.handler
        if handler is None:
            super().put_nowait(item)
        elif not handler(item):
            self.handler = None


class DirectReceiveProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _DirectQueue()  # still empty: nothing is received before the handshake

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            scope["extensions"][DIRECT_RECEIVE] = self.receive_directly

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # the disconnect reaches the handler, if one is installed
        self.queue.handler = None
        scope = getattr(self, "scope", None)
        if scope is not None:  # the extension refers back to this protocol: let reference counting free it
            scope["extensions"].pop(DIRECT_RECEIVE, None)

    def receive_directly(self, handler: Handler) -> None:
        """From now on, pass each received message to `handler` as it arrives (see the module's note)."""
        queue = self.queue
        while not queue.empty():  # what arrived before goes first
            if not handler(queue.get_nowait()):
                return
        queue.handler = handler
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        if self.queue.handler is None:
            super().send_receive_event_to_app()
            return
        # The handler takes the message in the put itself: nothing waits in the queue, so reading
        # must not stop for it (uvicorn pauses until `receive()` has taken each message).
        paused, self.read_paused = self.read_paused, True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not self.queue.empty() and not paused:  # the handler let go: back to the app's pace
            self.read_paused = True
            self.transport.pause_reading()
