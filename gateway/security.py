"""What keeps strangers out: Twilio signatures, per-IP rate limits, and HTTP security headers.

Signatures. Twilio signs every webhook and the Media Streams WebSocket upgrade with the account's
auth token (`X-Twilio-Signature`: HMAC-SHA1 over the URL and the sorted form parameters). We check
them against the URL Twilio requested, as `gateway.public_urls` rebuilds it: from `PUBLIC_URL` when
set, else from the request's Host (and trusted proxies' X-Forwarded-Proto/-Host), never the local
socket address, which behind a proxy differs. For the WebSocket it is the stream URL our own TwiML
gave, with empty parameters (PROTOCOLS.md section 4). Checking is on whenever `TWILIO_AUTH_TOKEN` is
set; turning it off is an explicit `TWILIO_VALIDATE_SIGNATURES=false`, logged loudly at startup.

Rate limits. A token bucket per client IP for HTTP requests and another for WebSocket upgrades,
in a bounded table (the oldest IPs are forgotten first, so a scan from many addresses cannot grow
it without bound). Twilio opens every call's stream from a small set of its own addresses, so the
connection bucket is sized for many calls per second from one IP: it stops floods, not traffic.

Everything here is pure ASGI middleware, so it sees WebSocket upgrades as well as HTTP.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

from twilio.request_validator import RequestValidator

from gateway import metrics

log = logging.getLogger("voicegate.security")


@dataclass(frozen=True)
class RateLimits:
    http_per_second: float = 20.0  # per IP: a dashboard and an operator's scripts fit easily
    http_burst: int = 60
    ws_per_second: float = 20.0  # per IP: Twilio's media servers open many calls' streams
    ws_burst: int = 100
    max_tracked_ips: int = 10_000  # bounded memory under a scan from many addresses


class TokenBuckets:
    def __init__(self, rate: float, burst: int, max_keys: int, clock=time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed


class TwilioSignatures:
    def __init__(self, auth_token: str, enabled: bool) -> None:
        self.enabled = bool(auth_token) and enabled
        self._validator = RequestValidator(auth_token) if auth_token else None

    def check_http(self, public_url: str, params: Mapping[str, str], signature: str | None) -> bool:
        """`public_url`: the webhook's URL as Twilio requested it, query string included."""
        if not self.enabled:
            return True
        return bool(signature) and self._validator.validate(public_url, dict(params), signature)

    def check_media_upgrade(self, stream_url: str, signature: str | None) -> bool:
        """`stream_url`: the wss:// URL Twilio opened, the one our TwiML gave it."""
        if not self.enabled:
            return True
        return bool(signature) and self._validator.validate(stream_url, {}, signature)


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"camera=(), geolocation=(), microphone=(self)"),
    # The dashboard and softphone are served from here and talk only to here (and their own blob: audio).
    (b"content-security-policy", b"default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
                                 b"img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
                                 b"frame-ancestors 'none'"),
)


class SecurityMiddleware:
    """Per-IP rate limits for HTTP and WebSocket upgrades, security headers and CORS on HTTP responses."""

    def __init__(self, app, limits: RateLimits = RateLimits(), cors_origins: tuple[str, ...] = (),
                 hsts: bool = False, trusted_proxies: int = 0) -> None:
        self.app = app
        self._http = TokenBuckets(limits.http_per_second, limits.http_burst, limits.max_tracked_ips)
        self._ws = TokenBuckets(limits.ws_per_second, limits.ws_burst, limits.max_tracked_ips)
        self._cors = frozenset(o.rstrip("/") for o in cors_origins)
        self._headers = SECURITY_HEADERS + (
            ((b"strict-transport-security", b"max-age=31536000; includeSubDomains"),) if hsts else ())
        self._trusted_proxies = trusted_proxies

    def _client_ip(self, scope) -> str:
        if self._trusted_proxies:
            for name, value in scope.get("headers", ()):
                if name == b"x-forwarded-for":
                    hops = [h.strip() for h in value.decode("latin-1").split(",")]
                    return hops[-self._trusted_proxies] if len(hops) >= self._trusted_proxies else hops[0]
        client = scope.get("client")
        return client[0] if client else "unknown"

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            if not self._ws.allow(self._client_ip(scope)):
                metrics.ERRORS.labels("rate_limited_ws", "gateway").inc()
                await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
                return
            await self.app(scope, receive, send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        if not self._http.allow(self._client_ip(scope)):
            metrics.ERRORS.labels("rate_limited_http", "gateway").inc()
            await _plain(send, 429, b"too many requests", [(b"retry-after", b"1")])
            return
        origin = _header(scope, b"origin")
        cors: list[tuple[bytes, bytes]] = []
        if origin and origin.rstrip("/") in self._cors:
            cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (b"access-control-allow-headers", b"authorization, content-type"),
                    (b"access-control-max-age", b"600")]
        if scope["method"] == "OPTIONS" and origin:
            await _plain(send, 204 if cors else 403, b"", cors)
            return
        extra = list(self._headers) + cors

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


async def _plain(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": body})
