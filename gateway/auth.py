"""Who may open the dashboard and the browser softphone.

The operator's secret is `DASHBOARD_TOKEN`. It is presented once, to `POST /api/token`, which
answers with short-lived signed tokens: one for the dashboard (its WebSocket and `/api/*`), one
for the softphone (`/twilio/media?token=...`). Only those short-lived tokens travel in URLs, so a
token that leaks through a proxy log or a browser history expires within minutes and never
reveals the secret.

A token is `base64url(scope "|" expiry "|" nonce) "." base64url(HMAC-SHA256(key, payload))`.
The key is derived from the secret (HMAC with a fixed label), so the MAC is not made with the raw
operator secret and the token carries no secret material. Verification is constant-time, checks
the scope (a softphone token does not open the dashboard, nor the reverse) and the expiry.

Without `DASHBOARD_TOKEN`, the dashboard and the softphone are disabled (403 with a message
saying to set it) except for requests made from the machine itself: a loopback client with no
proxy headers. That keeps `voicegate serve` usable on a laptop while a deployment that forgot the
variable exposes no transcripts. A request that carries `X-Forwarded-For` or `Forwarded` came
through a proxy, so it is not local even when the proxy itself connects from 127.0.0.1.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from ipaddress import ip_address
from typing import Mapping
from urllib.parse import urlsplit

SCOPES = ("dashboard", "softphone")
# Dashboard tokens live 10 minutes: the page refreshes them while it is open, and an open
# WebSocket stays open after its token expires (it was checked when it connected).
DASHBOARD_TTL_S = 600
# A softphone token is fetched right before a call starts, so it only needs to outlive the
# WebSocket handshake; two minutes absorbs a slow microphone permission prompt.
SOFTPHONE_TTL_S = 120
MAX_TTL_S = 24 * 3600  # no token outlives a day, whatever a caller of issue_token asks
# WebSocket close code for a refused token (4000-4999 is the application range; 4401 reads as 401).
# Sent before accept, which uvicorn answers with an HTTP 403: the handshake never completes.
CLOSE_UNAUTHORIZED = 4401
MAX_TOKEN_CHARS = 256  # a real token is ~90 characters; anything longer is not worth parsing

_KEY_LABEL = b"voicegate/short-lived-token/v1"


class TokenError(ValueError):
    """issue_token was called with arguments no token can be made from (a misuse, not a peer's fault)."""


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(secret: str, scope: str, ttl_seconds: int = DASHBOARD_TTL_S, now: float | None = None) -> str:
    """A token for `scope` that `verify_token` accepts until `now + ttl_seconds`."""
    if not secret:
        raise TokenError("no secret to sign with")
    if scope not in SCOPES:
        raise TokenError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
    if not 0 < ttl_seconds <= MAX_TTL_S:
        raise TokenError(f"ttl_seconds must be between 1 and {MAX_TTL_S}")
    expiry = int((time.time() if now is None else now) + ttl_seconds)
    payload = f"{scope}|{expiry}|{secrets.token_hex(8)}".encode()
    mac = hmac.new(_key(secret), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_token(secret: str, token: str, scope: str, now: float | None = None) -> bool:
    """True only for an unexpired token this secret signed for this scope. Never raises."""
    if not secret or not token or len(token) > MAX_TOKEN_CHARS or scope not in SCOPES:
        return False
    body, sep, mac_text = token.partition(".")
    if not sep:
        return False
    try:
        payload = _unb64(body)
        mac = _unb64(mac_text)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(_key(secret), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        return False
    # The MAC is good, so the payload is ours: parse it without defending against forgery.
    try:
        token_scope, expiry_text, _nonce = payload.decode("ascii").split("|")
        expiry = int(expiry_text)
    except ValueError:
        return False
    current = time.time() if now is None else now
    return token_scope == scope and current < expiry


def same_secret(presented: str, secret: str) -> bool:
    """Constant-time comparison of a presented DASHBOARD_TOKEN with the configured one."""
    if not presented or not secret:
        return False
    return hmac.compare_digest(presented.encode(), secret.encode())


def bearer(headers: Mapping[str, str]) -> str:
    """The token of an `Authorization: Bearer <token>` header, or ''."""
    value = headers.get("authorization", "")
    kind, _, token = value.partition(" ")
    return token.strip() if kind.lower() == "bearer" else ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_local(client_host: str | None, headers: Mapping[str, str]) -> bool:
    """A request made from this machine, for this machine, not relayed by a proxy.

    The client address alone is not enough. A web page the operator opens in a browser on the same
    machine also connects from 127.0.0.1: browsers do not apply CORS to WebSockets, so a foreign
    page could read the live feed (cross-site WebSocket hijacking), and a DNS-rebound name could
    read the API. So the Host asked for, and the Origin of a browser request, must be loopback too.
    """
    if "x-forwarded-for" in headers or "forwarded" in headers or "x-real-ip" in headers:
        return False
    if not client_host or not _loopback(client_host):
        return False
    host = headers.get("host", "")
    if host and not _loopback(urlsplit(f"//{host}").hostname or ""):
        return False
    origin = headers.get("origin", "")
    return not origin or _loopback(urlsplit(origin).hostname or "")


class Access:
    """The dashboard's access rule for one process, built from `Settings.dashboard_token`."""

    def __init__(self, dashboard_token: str) -> None:
        self.dashboard_token = dashboard_token
        # Open (local-only) mode still hands out signed tokens, so the page works the same way;
        # they are signed with a per-process key that nothing outside this process knows.
        self._signing_secret = dashboard_token or secrets.token_urlsafe(32)

    @property
    def enabled(self) -> bool:
        return bool(self.dashboard_token)

    def issue(self) -> dict[str, object]:
        return {
            "dashboard": issue_token(self._signing_secret, "dashboard", DASHBOARD_TTL_S),
            "softphone": issue_token(self._signing_secret, "softphone", SOFTPHONE_TTL_S),
            "expires_in": DASHBOARD_TTL_S,
            "softphone_expires_in": SOFTPHONE_TTL_S,
        }

    def check(self, scope: str, token: str, client_host: str | None, headers: Mapping[str, str]) -> str | None:
        """None when the request may proceed, else the reason it may not: 'disabled' (no
        DASHBOARD_TOKEN and not a local request) or 'unauthorized' (missing/bad/expired token)."""
        if not self.enabled:
            return None if is_local(client_host, headers) else "disabled"
        if verify_token(self.dashboard_token, token, scope):
            return None
        if scope == "dashboard" and same_secret(token, self.dashboard_token):
            return None  # scripts may call /api/* with the operator secret itself
        return "unauthorized"

    def login(self, presented: str, client_host: str | None, headers: Mapping[str, str]) -> str | None:
        """The `POST /api/token` rule: the operator secret, or a still-valid dashboard token (the
        page's refresh). Returns a refusal reason like `check`."""
        if not self.enabled:
            return None if is_local(client_host, headers) else "disabled"
        if same_secret(presented, self.dashboard_token) or verify_token(self.dashboard_token, presented, "dashboard"):
            return None
        return "unauthorized"


def softphone_allowed(dashboard_token: str, token: str, client_host: str | None, headers: Mapping[str, str]) -> bool:
    """May a `/twilio/media?token=...` connection proceed? Used by the media endpoint."""
    if not dashboard_token:
        return is_local(client_host, headers)
    return verify_token(dashboard_token, token, "softphone")


def softphone_connection_allowed(dashboard_token: str, conn) -> bool:  # conn: a Starlette HTTPConnection
    """`softphone_allowed` for a Starlette WebSocket carrying `?token=...`."""
    client = conn.client.host if conn.client else None
    return softphone_allowed(dashboard_token, conn.query_params.get("token", ""), client, conn.headers)
