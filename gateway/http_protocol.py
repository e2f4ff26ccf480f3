"""uvicorn's HTTP protocol, letting go of its parser when it hands a connection to WebSocket.

`HttpToolsProtocol` and its httptools parser hold each other (the parser keeps bound methods of the
protocol as its callbacks). uvicorn breaks that in `connection_lost`, but a connection upgraded to a
WebSocket never reaches it: the transport moves to the WebSocket protocol, and the HTTP protocol,
its parser, its flow control and the transport it still points at wait for a full collection. That
is every call: a few kB each, and the longer full collections are apart (they come when the old
generation grows by a quarter), the more of them pile up. Dropping the parser once the upgrade is
done lets reference counting free them when the handshake's last reference goes.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HttpProtocol(HttpToolsProtocol):
    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]  # as connection_lost does; it is not used again
