"""The operator's view: the dashboard page, its live feed, and the login that guards them.

Calls report what happens to them through `CallServices.on_call_event(kind, data)` (kinds
`call_started`, `turn`, `call_ended`). `install` points that hook at a `DashboardHub`, which keeps
a small picture of the live calls and fans each event out to the connected dashboards.

The hub never waits for a dashboard. Each subscriber has a bounded queue; `publish` appends the
(already serialized) event to every queue and returns. A subscriber whose queue is full is slow or
gone: it is dropped on the spot (its socket closed with `CLOSE_SLOW_CONSUMER`) and the page
reconnects to a fresh snapshot. So a stalled browser costs at most `MAX_SUBSCRIBER_BACKLOG`
messages of memory and never a millisecond of a call's time.

On connect a subscriber's first message is a snapshot (live calls with their recent turns, the
last few ended calls, provider status), queued in the same step as the subscription, so the
snapshot and the events after it neither overlap nor leave a gap.

Provider status is pushed too, by one hub-wide ticker that runs only while someone is watching and
sends a `status` message only when something changed; the page itself never polls.

Limits: the hub is per process. With several uvicorn workers a dashboard sees the calls of the
worker its WebSocket landed on (call history from the store is complete either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections import deque
from pathlib import Path
from typing import Any, Callable

import orjson
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway import metrics
from gateway.auth import CLOSE_UNAUTHORIZED, Access, bearer
from gateway.logs import event as log_event

log = logging.getLogger("voicegate.dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "static"

# A dashboard receives a few messages per turn; 256 queued means it has not read for many turns
# (or a burst of hundreds of calls). Either way it is better reconnected to a fresh snapshot.
MAX_SUBSCRIBER_BACKLOG = 256
MAX_TURNS_PER_CALL = 100  # turns kept per call for snapshots; the store keeps every turn
RECENT_CALLS = 10  # ended calls kept for the snapshot (the history table reads the store)
STATUS_INTERVAL_S = 2.0  # provider status is checked this often, and pushed only when it changed
MAX_LOGIN_BYTES = 4096  # a login form holds one token
MIN_DASHBOARD_TOKEN_CHARS = 24  # shorter is guessable at the HTTP rate limit; warned about, not refused
CLOSE_SLOW_CONSUMER = 4002  # same meaning as the media endpoint's code

BREAKER_STATES = {0: "closed", 1: "half_open", 2: "open"}  # voicegate_circuit_breaker_state values

# Security headers (CSP, nosniff, frame denial) are added to every response by
# gateway.security.SecurityMiddleware; the page only adds that it must not be cached.
PAGE_HEADERS = {"cache-control": "no-store"}

DISABLED_MESSAGE = (
    "The voicegate dashboard is disabled: DASHBOARD_TOKEN is not set, and without it the dashboard and "
    "the browser softphone only answer requests made from the gateway's own machine. "
    "Set DASHBOARD_TOKEN to a long random value to use them remotely."
)


# ---------------------------------------------------------------------------------------- hub


class Subscriber:
    """One dashboard's outbound queue: bounded, and dropped (not blocked on) when full."""

    def __init__(self, limit: int = MAX_SUBSCRIBER_BACKLOG) -> None:
        self.limit = limit
        self.dropped = False
        self._items: deque[str] = deque()
        self._ready = asyncio.Event()
        self.gone = asyncio.Event()  # set when dropped: wakes a handler stuck sending to this client

    def offer(self, message: str) -> bool:
        if self.dropped:
            return False
        if len(self._items) >= self.limit:
            self.drop()
            return False
        self._items.append(message)
        self._ready.set()
        return True

    def drop(self) -> None:
        self.dropped = True
        self._items.clear()  # free the backlog now; the page will reload a snapshot
        self._ready.set()
        self.gone.set()

    async def next(self) -> str | None:
        """The next message, or None once this subscriber has been dropped."""
        while not self._items:
            if self.dropped:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class DashboardHub:
    def __init__(self, status: Callable[[], dict] | None = None, *, backlog: int = MAX_SUBSCRIBER_BACKLOG,
                 status_interval: float = STATUS_INTERVAL_S) -> None:
        self._status = status or (lambda: {})
        self._backlog = backlog
        self._status_interval = status_interval
        self._subscribers: set[Subscriber] = set()
        self._ticker: asyncio.Task | None = None
        self._last_status: dict | None = None
        self.live: dict[str, dict[str, Any]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_CALLS)
        self.dropped_total = 0

    # ---- calls report here (the `on_call_event` hook); never blocks, never raises to the call

    def publish(self, kind: str, data: dict) -> None:
        call_sid = str(data.get("call_sid", ""))
        now = time.time()
        match kind:
            case "call_started":
                call = self.live[call_sid] = _new_call(call_sid, data.get("caller", ""), data.get("direction", ""), now)
                message = {"type": kind, "call": _call_json(call)}
            case "turn":
                turn = {k: v for k, v in data.items() if k != "call_sid"}
                call = self.live.get(call_sid)
                if call is None:  # the hub came up mid-call: start tracking it now
                    call = self.live[call_sid] = _new_call(call_sid, "", "", now)
                call["turns"].append(turn)
                message = {"type": kind, "call_sid": call_sid, "turn": turn}
            case "call_ended":
                call = self.live.pop(call_sid, None)
                if call is not None:
                    self.recent.appendleft({**call, "ended_at": now, "reason": data.get("reason", "")})
                message = {"type": kind, "call_sid": call_sid, "reason": data.get("reason", ""), "ended_at": now}
            case _:
                message = {"type": kind, **data}
        self._broadcast(message)

    def _broadcast(self, message: dict) -> None:
        if not self._subscribers:
            return
        text = orjson.dumps(message, default=str).decode()  # serialized once for every subscriber
        for sub in list(self._subscribers):
            if not sub.offer(text):
                self._drop(sub)

    def _drop(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            self.dropped_total += 1
            metrics.DASHBOARD_DROPPED.inc()
            metrics.DASHBOARD_SUBSCRIBERS.dec()
            log_event(log, "dashboard subscriber too slow: dropped", logging.WARNING, backlog=sub.limit)
        self._stop_ticker_if_idle()

    # ---- dashboards

    def subscribe(self) -> Subscriber:
        """A new subscriber whose first queued message is the snapshot."""
        sub = Subscriber(self._backlog)
        status = self._safe_status()
        sub.offer(orjson.dumps(self.snapshot(status), default=str).decode())
        self._subscribers.add(sub)
        metrics.DASHBOARD_SUBSCRIBERS.inc()
        if self._ticker is None and self._status_interval > 0:
            self._last_status = status
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            metrics.DASHBOARD_SUBSCRIBERS.dec()
        self._stop_ticker_if_idle()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def snapshot(self, status: dict | None = None) -> dict:
        return {
            "type": "snapshot",
            "server_time": time.time(),
            "live": [_call_json(c) for c in self.live.values()],
            "recent": [_call_json(c) for c in self.recent],
            "status": self._safe_status() if status is None else status,
        }

    async def close(self) -> None:
        for sub in list(self._subscribers):
            sub.drop()
            self.unsubscribe(sub)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    # ---- provider status push

    def _safe_status(self) -> dict:
        try:
            return self._status()
        except Exception:  # the status view must never break a dashboard, let alone a call
            log.exception("provider status failed")
            return {"error": "status unavailable"}

    async def _tick(self) -> None:
        while self._subscribers:
            await asyncio.sleep(self._status_interval)
            status = self._safe_status()
            if status != self._last_status:
                self._last_status = status
                self._broadcast({"type": "status", "status": status})

    def _stop_ticker_if_idle(self) -> None:
        if not self._subscribers and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None


def _new_call(call_sid: str, caller: str, direction: str, started_at: float) -> dict[str, Any]:
    return {"call_sid": call_sid, "caller": caller, "direction": direction, "started_at": started_at,
            "turns": deque(maxlen=MAX_TURNS_PER_CALL)}


def _call_json(call: dict) -> dict:
    return {**call, "turns": list(call.get("turns", ()))}


# ------------------------------------------------------------------------------- provider status


def provider_status(gw: Any) -> dict:
    """What is known now about the engines and providers, for the dashboard's health panel.

    Engines report what loaded and what did not (`Engines.describe`). Circuit breakers and provider
    errors are read from their Prometheus metrics, so this works as soon as the provider layer
    records them, without a dependency on how breakers are implemented.
    """
    engines = gw.engines
    described = engines.describe()
    breakers: dict[str, str] = {}
    for sample in _samples(metrics.BREAKER_STATE):
        provider = sample.labels.get("provider", "")
        breakers[provider] = BREAKER_STATES.get(int(sample.value), str(sample.value))
    # An engines object that keeps its breakers (provider -> object with .state) is the fresher view.
    for name, breaker in (getattr(engines, "breakers", None) or {}).items():
        state = getattr(breaker, "state", None)
        if state is not None:
            breakers[str(name)] = str(getattr(state, "value", state)).lower()
    errors: dict[str, float] = {}
    for sample in _samples(metrics.PROVIDER_ERRORS):
        if sample.name.endswith("_total") and sample.value:
            key = "/".join(sample.labels.get(k, "") for k in ("provider", "role", "kind"))
            errors[key] = sample.value
    fallbacks = sum(s.value for s in _samples(metrics.FALLBACKS) if s.name.endswith("_total"))
    return {
        "ready": bool(engines.ready),
        "loaded": bool(described.get("loaded")),
        "engines": {role: described.get(role) for role in ("stt", "llm", "tts")},
        "problems": described.get("problems") or {},
        "breakers": breakers,
        "provider_errors": errors,
        "fallbacks": fallbacks,
        "active_calls": len(gw.services.calls),
    }


def _samples(metric: Any) -> list:
    return [s for family in metric.collect() for s in family.samples]


# ------------------------------------------------------------------------------------ routes


class ApiGuard:
    """Pure ASGI middleware: `/api/*` (call transcripts, bookings) needs a dashboard token,
    except `/api/token` itself, which is the login."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/") and scope["path"] != "/api/token":
            headers = Headers(scope=scope)
            token = bearer(headers) or _query_token(scope)
            reason = self.access.check("dashboard", token, _client_host(scope), headers)
            if reason is not None:
                await _refusal(reason)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _query_token(scope: Scope) -> str:
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("token") or [""])[0]


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _refusal(reason: str) -> Response:
    if reason == "disabled":
        return JSONResponse({"error": "dashboard disabled", "detail": DISABLED_MESSAGE}, status_code=403)
    return JSONResponse({"error": "invalid or expired token"}, status_code=401,
                        headers={"www-authenticate": 'Bearer realm="voicegate"'})


async def _login_secret(request: Request) -> str:
    """The token presented to `POST /api/token`: a Bearer header, or a `token` form/JSON field."""
    presented = bearer(request.headers)
    if presented:
        return presented
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BYTES:
            return ""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return ""
        value = data.get("token") if isinstance(data, dict) else None
        return value.strip() if isinstance(value, str) else ""
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return (fields.get("token") or [""])[0].strip()


def install(app: Starlette, gw: Any) -> DashboardHub:
    """Add the dashboard's routes to `app` and point the calls' event hook at a new hub."""
    access = Access(gw.settings.dashboard_token)
    if access.enabled and len(gw.settings.dashboard_token) < MIN_DASHBOARD_TOKEN_CHARS:
        log_event(log, "DASHBOARD_TOKEN is short: use a long random value (e.g. `openssl rand -hex 32`)",
                  logging.WARNING, min_chars=MIN_DASHBOARD_TOKEN_CHARS)
    elif not access.enabled:
        log_event(log, "DASHBOARD_TOKEN is not set: the dashboard and softphone answer local requests only")
    hub = DashboardHub(lambda: provider_status(gw))
    previous = gw.services.on_call_event

    def on_call_event(kind: str, data: dict) -> None:
        if previous is not None:
            previous(kind, data)
        hub.publish(kind, data)

    gw.services.on_call_event = hub.publish if previous is None else on_call_event

    async def page(request: Request) -> Response:
        if not access.enabled and access.check("dashboard", "", _client_host(request.scope), request.headers):
            return PlainTextResponse(DISABLED_MESSAGE, status_code=403, headers=PAGE_HEADERS)
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    async def token(request: Request) -> Response:
        presented = await _login_secret(request)
        client = _client_host(request.scope)
        reason = access.login(presented, client, request.headers)
        if reason is not None:
            log_event(log, "dashboard login refused", logging.WARNING, reason=reason, client=client)
            return _refusal(reason)
        return JSONResponse({**access.issue(), "mode": "token" if access.enabled else "local"},
                            headers={"cache-control": "no-store"})

    async def status(request: Request) -> Response:
        return JSONResponse(provider_status(gw))

    async def feed(ws: WebSocket) -> None:
        if access.check("dashboard", ws.query_params.get("token", ""), _client_host(ws.scope), ws.headers):
            await ws.close(CLOSE_UNAUTHORIZED)
            return
        await ws.accept()
        sub = hub.subscribe()
        tasks = {asyncio.create_task(_send_feed(ws, sub)), asyncio.create_task(_drain_client(ws)),
                 asyncio.create_task(sub.gone.wait())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            hub.unsubscribe(sub)
            with contextlib.suppress(Exception):
                # asyncio.timeout, not wait_for: a viewer already gone makes close raise, and wait_for's
                # inner task and that exception would hold each other (and this handler) in a cycle.
                async with asyncio.timeout(2.0):
                    await ws.close(CLOSE_SLOW_CONSUMER if sub.dropped else 1000)

    app.router.routes.extend([
        Route("/", page),
        Route("/api/token", token, methods=["POST"]),
        Route("/api/status", status),
        WebSocketRoute("/ws/dashboard", feed),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ])
    # Innermost, so the security middleware (rate limits, headers) still wraps the refusals.
    app.user_middleware.append(Middleware(ApiGuard, access=access))
    app.state.dashboard_hub = hub
    app.state.dashboard_access = access
    return hub


async def _send_feed(ws: WebSocket, sub: Subscriber) -> None:
    while (message := await sub.next()) is not None:
        await ws.send_text(message)


async def _drain_client(ws: WebSocket) -> None:
    """Read (and ignore) what the page sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
