"""The LLM's HTTP connections: kept ahead of demand, so no reply waits for a handshake.

Every reply is one streamed request, and a request that finds no idle connection in the pool opens
one first: a TCP handshake on loopback costs the event loop 2-3 ms spread over several loop turns
(measured at 100 calls: 4 % of the turns paid it, all of them in the top 5 % of the STT -> LLM hop),
and TCP + TLS to a cloud API costs 100-300 ms. aiohttp's own pool grows only when a request already waits.

`SparePool` owns the aiohttp session under the OpenAI SDK's aiohttp transport. aiohttp's public
tracing says when a request had to open a connection: the pool ran dry, so a burst is under way and
the next request will find it dry too. Then, in the background, it opens `spares` more connections
and hands them to the pool idle. A request that would have paid the handshake finds one ready. The
same happens once at `warm()`. Connections idle longer than `keepalive` close (aiohttp's own
expiry): a pool sized for a burst shrinks back when the burst is over.

A spare that cannot be opened (the host is down, the pool is at its limit) is only logged: the
request path opens its own connection and reports its own errors as before.

Dead idle connections. A NAT or load balancer on the path may forget a connection without telling
either end (no FIN, no RST): the pooled socket looks open and a request written on it waits for its
first-token timeout. When a request fails like that (`connection_failed`, called by the client on a
timeout or a connection error), the pool's other idle connections are assumed to share its fate and
are closed, so the next request opens a fresh one instead of meeting the same silence; and no spares
are opened for `SPARE_PAUSE_SECONDS`, so a failing path is not met with a reconnect per request
(the breaker decides when requests go there again).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_
from typing import Any

import aiohttp
from yarl import URL

log = logging.getLogger("voicegate.http_pool")

# Idle connections opened whenever a request found none: a handful of replies starting in the same
# few milliseconds (calls started together, a DTMF menu answered at once) take one each.
SPARE_CONNECTIONS = 2
# An idle connection lives this long. A caller's turns come 5-20 s apart, so the SDK's 5 s default
# closed the connection between almost every turn of a quiet gateway and the next reply paid a new
# TLS handshake. Servers close idle connections after about a minute; closing ours first means a
# request never lands on a socket the server is closing.
KEEPALIVE_SECONDS = 30.0
# The most connections to one host, like the SDK's own limit.
MAX_CONNECTIONS = 1000
# After a connection failed, no spares for this long: long enough that a flapping path gets no
# reconnect storm from us, short against the breaker's 15 s reset (spares are back before it closes).
SPARE_PAUSE_SECONDS = 5.0


class _PoolConnector(aiohttp.TCPConnector):
    def drop_idle(self) -> int:
        """Close every idle connection (none in use is touched); how many. aiohttp keeps idle
        connections in `_conns` (3.x), which its own keep-alive expiry walks the same way."""
        conns = getattr(self, "_conns", None)
        if not conns:
            return 0
        dropped = 0
        for idle in list(conns.values()):
            for proto, _ in idle:
                proto.close()
                dropped += 1
        conns.clear()
        return dropped


class SparePool:
    """A factory for the SDK transport's `ClientSession` (called on the event loop, at the first
    request), plus the spares kept in it."""

    def __init__(self, base_url: str = "", *, spares: int = SPARE_CONNECTIONS, keepalive: float = KEEPALIVE_SECONDS,
                 connect_timeout: float = 2.0, limit: int = MAX_CONNECTIONS, ssl: ssl_.SSLContext | bool = True) -> None:
        self.base_url = base_url  # where the requests go; only its scheme, host and port matter here
        self.ssl = ssl
        self.spares = spares
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.limit = limit
        self.session: aiohttp.ClientSession | None = None
        self._topping_up: asyncio.Task | None = None
        self._paused_until = 0.0  # loop time before which no spares are opened (a connection failed)
        self.handed = 0  # connections handed to the pool idle by top-ups
        self.dry = 0  # requests that found no idle connection and opened one on their own path
        self.dropped_idle = 0  # idle connections closed after a request on one of them failed

    def __call__(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_start.append(self._on_create)
            connector = _PoolConnector(limit=self.limit, keepalive_timeout=self.keepalive, ssl=self.ssl)
            self.session = aiohttp.ClientSession(connector=connector, trace_configs=[trace])
        return self.session

    async def _on_create(self, session: aiohttp.ClientSession, context: Any, params: Any) -> None:
        self.dry += 1
        self.top_up()

    def connection_failed(self) -> None:
        """A request failed on its connection (a timeout, a reset): close the idle ones too, and open
        no spares for a while (module doc)."""
        loop = asyncio.get_running_loop()
        self._paused_until = loop.time() + SPARE_PAUSE_SECONDS
        if self._topping_up is not None and not self._topping_up.done():
            self._topping_up.cancel()
        connector = self.session.connector if self.session is not None and not self.session.closed else None
        if isinstance(connector, _PoolConnector):
            dropped = connector.drop_idle()
            self.dropped_idle += dropped
            if dropped:
                log.info("closed %d idle LLM connection(s) after a failed request", dropped)

    def top_up(self) -> None:
        """Open `spares` idle connections in the background, unless that is under way already."""
        if self.spares <= 0 or not self.base_url or (self._topping_up is not None and not self._topping_up.done()):
            return
        if asyncio.get_running_loop().time() < self._paused_until:
            return
        self._topping_up = asyncio.get_running_loop().create_task(self._open_spares())

    async def _open_spares(self) -> None:
        session = self()
        connector = session.connector
        if connector is None:
            return
        request = aiohttp.ClientRequest("GET", URL(self.base_url), loop=asyncio.get_running_loop(), session=session)
        timeout = aiohttp.ClientTimeout(connect=self.connect_timeout)
        held: list[Any] = []
        try:
            # All held at once: one connection released and taken again would be counted twice.
            # Without traces, so opening spares does not itself ask for more.
            for _ in range(self.spares):
                held.append(await connector.connect(request, [], timeout))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the request path reports its own failures
            log.debug("opening a spare connection failed: %s", type(exc).__name__)
        finally:
            for conn in held:
                conn.release()  # idle in the pool: a keep-alive connection with no request on it
            self.handed += len(held)

    async def settled(self) -> None:
        """Wait for a top-up under way (`warm()`, tests)."""
        if self._topping_up is not None:
            await asyncio.gather(asyncio.shield(self._topping_up), return_exceptions=True)

    async def aclose(self) -> None:
        if self._topping_up is not None:
            self._topping_up.cancel()
            await asyncio.gather(self._topping_up, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
