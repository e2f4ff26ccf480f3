"""When a request or a message reached the emulator process, not when its handler got round to it.

The benchmark times the gateway's hops between two stamps, one of them an emulator's "received"
(`loadgen/wire_hops.py`). Stamped in the handler, that also counts the emulator's own work before it:
uvicorn parsing the request and starting a task for it, or the WebSocket message waiting in the
connection's queue for the handler's next `receive()`. On a loaded emulator (100 calls' worth of
Deepgram audio, LLM tokens and TTS chunks on one loop) that is a loop iteration or more, charged to
the gateway. These protocol classes stamp in `data_received`, when the bytes come off the socket, and
hand the stamp to the app: `scope[RECEIVED_AT]` for HTTP, `message[RECEIVED_AT]` for WebSocket messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from emulators.common import now

RECEIVED_AT = "emulator.received_at"


def received_at(scope_or_message: Any) -> float:
    """The arrival stamp uvicorn's protocol left, or now (an app served by another server)."""
    stamp = scope_or_message.get(RECEIVED_AT)
    return stamp if stamp is not None else now()


class StampedHttpProtocol(HttpToolsProtocol):
    _arrived_at = 0.0

    def data_received(self, data: bytes) -> None:
        self._arrived_at = now()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[RECEIVED_AT] = self._arrived_at  # type: ignore[typeddict-unknown-key]


class _StampingQueue(asyncio.Queue):
    def __init__(self, protocol: "StampedWebSocketProtocol") -> None:
        super().__init__()
        self._protocol = protocol

    def put_nowait(self, item: Any) -> None:
        if item.get("type") == "websocket.receive":
            item[RECEIVED_AT] = self._protocol.arrived_at
        super().put_nowait(item)


class StampedWebSocketProtocol(WebSocketsSansIOProtocol):
    arrived_at = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _StampingQueue(self)  # still empty: nothing is received before the handshake

    def data_received(self, data: bytes) -> None:
        self.arrived_at = now()
        super().data_received(data)
