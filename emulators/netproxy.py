"""A TCP proxy that makes the network between the gateway and its providers slow or broken.

    python -m emulators.netproxy --route llm=127.0.0.1:9100 --route stt=127.0.0.1:9100

Each route listens on a port of its own (printed as JSON on the first line of stdout, with the
control port) and forwards every connection to its target, byte for byte. How each route behaves is
changed while it runs with `POST /config` on the control port (`GET /state` shows it):

    {"llm": {"latency_ms": 80, "bandwidth_bps": 32000, "freeze": "existing"}}

- `latency_ms`: each chunk is delivered this long after it arrived, in each direction, in order.
- `bandwidth_bps`: each direction of each connection carries at most this many bytes a second.
- `freeze`: a half-open path, the peer that "just stops answering": no FIN, no RST, nothing. A frozen
  connection is neither read nor written any more, so what is sent into it stays in the kernel's
  buffers and nothing comes back, and it stays open. "existing" freezes the connections open now (as
  a NAT or load balancer forgetting them does) and lets new ones through; "all" also freezes every
  new connection once accepted (a dead path whose handshakes still complete); null lets new
  connections through again (frozen ones stay frozen: their state is gone).
- `cut`: true closes every connection of the route at once with a reset.

Pure asyncio, no dependencies: it runs as its own process beside the emulators in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

READ_BYTES = 65536
MAX_HEADER_BYTES = 16384
MAX_BODY_BYTES = 65536


@dataclass
class Behaviour:
    latency_ms: float = 0.0
    bandwidth_bps: float = 0.0  # 0: unlimited
    freeze: str | None = None  # None | "existing" | "all"

    def update(self, change: dict[str, Any]) -> None:
        for key, value in change.items():
            if key == "cut":
                continue
            if key not in ("latency_ms", "bandwidth_bps", "freeze"):
                raise ValueError(f"unknown setting {key!r}")
            if key == "freeze" and value not in (None, "existing", "all"):
                raise ValueError("freeze must be null, 'existing' or 'all'")
            if key != "freeze" and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{key} must be a non-negative number")
            setattr(self, key, value)


class Pipe:
    """One direction of one connection: read, hold for the latency, pace to the bandwidth, write."""

    def __init__(self, route: "Route", conn: "Connection", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.route, self.conn, self.reader, self.writer = route, conn, reader, writer
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.bytes = 0

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.conn.alive.wait()  # frozen: never read again, the data stays in the kernel
                data = await self.reader.read(READ_BYTES)
                if not data:
                    break
                self.queue.put_nowait((loop.time() + self.route.behaviour.latency_ms / 1000, data))
        except (ConnectionError, OSError):
            pass
        finally:
            self.queue.put_nowait((0.0, b""))  # end of stream, after what was read

    async def write(self) -> None:
        loop = asyncio.get_running_loop()
        next_free = loop.time()
        try:
            while True:
                due, data = await self.queue.get()
                if not data:
                    break
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                rate = self.route.behaviour.bandwidth_bps
                if rate > 0:
                    next_free = max(next_free, loop.time())
                    await asyncio.sleep(max(0.0, next_free - loop.time()))
                    next_free += len(data) / rate
                await self.conn.alive.wait()
                self.writer.write(data)
                await self.writer.drain()
                self.bytes += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if self.conn.alive.is_set():  # a clean end is passed on; a frozen connection says nothing
                try:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                except (OSError, RuntimeError):
                    pass


@dataclass(eq=False)  # kept in a set: identity is what tells two connections apart
class Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    alive: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)

    def freeze(self) -> None:
        self.alive.clear()

    def cut(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                sock = writer.get_extra_info("socket")
                if sock is not None:  # a reset, not a FIN: SO_LINGER 0
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    except OSError:
                        pass
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class Route:
    def __init__(self, name: str, target_host: str, target_port: int) -> None:
        self.name, self.target_host, self.target_port = name, target_host, target_port
        self.behaviour = Behaviour()
        self.connections: set[Connection] = set()
        self.accepted = 0
        self.server: asyncio.base_events.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = Connection(writer)
        if self.behaviour.freeze != "all":
            conn.alive.set()
        self.connections.add(conn)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            conn.cut()
            self.connections.discard(conn)
            return
        conn.upstream = up_writer
        pipes = [Pipe(self, conn, reader, up_writer), Pipe(self, conn, up_reader, writer)]
        conn.tasks = [asyncio.create_task(coro) for p in pipes for coro in (p.read(), p.write())]
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self.connections.discard(conn)
            for w in (writer, up_writer):
                w.close()

    def configure(self, change: dict[str, Any]) -> None:
        self.behaviour.update(change)
        if change.get("freeze") in ("existing", "all"):
            for conn in list(self.connections):
                conn.freeze()
        if change.get("cut"):
            for conn in list(self.connections):
                conn.cut()

    def state(self) -> dict[str, Any]:
        return {"latency_ms": self.behaviour.latency_ms, "bandwidth_bps": self.behaviour.bandwidth_bps,
                "freeze": self.behaviour.freeze, "open": len(self.connections), "accepted": self.accepted,
                "frozen": sum(1 for c in self.connections if not c.alive.is_set())}


class Control:
    """A minimal HTTP/1.1 control endpoint: GET /state, POST /config (JSON)."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEADER_BYTES:
                raise ValueError("headers too large")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            length = int(headers.get("content-length", "0"))
            if length > MAX_BODY_BYTES:
                raise ValueError("body too large")
            body = await reader.readexactly(length) if length else b""
            status, answer = self.answer(method, path, body)
        except (ValueError, KeyError, json.JSONDecodeError, asyncio.IncompleteReadError) as exc:
            status, answer = 400, {"error": str(exc)}
        payload = json.dumps(answer).encode()
        writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
        try:
            await writer.drain()
        finally:
            writer.close()

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path == "/state":
            return 200, {name: route.state() for name, route in self.routes.items()}
        if method == "POST" and path == "/config":
            change = json.loads(body or b"{}")
            unknown = set(change) - set(self.routes)
            if unknown:
                raise ValueError(f"unknown routes: {sorted(unknown)}")
            for name, route_change in change.items():
                Behaviour().update(route_change)  # validate everything before changing anything
            for name, route_change in change.items():
                self.routes[name].configure(route_change)
            return 200, {name: route.state() for name, route in self.routes.items()}
        return 404, {"error": "GET /state or POST /config"}


async def serve(specs: list[str], host: str, control_port: int) -> None:
    routes: dict[str, Route] = {}
    ports: dict[str, int] = {}
    for spec in specs:
        name, _, target = spec.partition("=")
        target_host, _, target_port = target.rpartition(":")
        if not name or not target_host or not target_port.isdigit():
            raise SystemExit(f"netproxy: a route is NAME=HOST:PORT, not {spec!r}")
        route = routes[name] = Route(name, target_host, int(target_port))
        route.server = await asyncio.start_server(route.handle, host, 0)
        ports[name] = route.server.sockets[0].getsockname()[1]
    control = await asyncio.start_server(Control(routes).handle, host, control_port)
    print(json.dumps({"routes": ports, "control": control.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netproxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", action="append", required=True, help="NAME=HOST:PORT (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--control-port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.route, args.host, args.control_port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
