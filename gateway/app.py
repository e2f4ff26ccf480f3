"""The Starlette application: routes, lifespan, and the process-wide services calls share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import AsyncIterator
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from dialog.knowledge import Knowledge, KnowledgeBase
from dialog.languages import CallLanguage
from dialog.latency import LatencySuite, ResponseCache
from dialog.llm_responder import LlmResponder
from dialog.machine import Conversation, DialogSettings
from dialog.responder import Responder, RuleResponder
from dialog.summary import CallMemory
from dialog.store import Store
from gateway import auth, dashboard, eager_tasks, metrics, tracing, twiml
from gateway.call import CLOSE_BUSY, CLOSE_FORBIDDEN, CLOSE_NOT_READY, CLOSE_RESTARTING, CallServices, MediaCall
from providers.settings import Settings
from gateway.gc_pacer import GcPacer, freeze_heap
from gateway.logs import event as log_event, mask_number
from gateway.public_urls import PublicUrls
from gateway.security import RateLimits, SecurityMiddleware, TwilioSignatures
from gateway.session import SessionSettings
from gateway.shared_state import shared_state
from providers import retry
from gateway.dial import place_call
from providers.base import CallInfo, ProviderError
from providers.probes import ProbeCache
from providers.breaker import BreakerBoard, BreakerState
from providers.engines import Engines

log = logging.getLogger("voicegate.app")


class Gateway:
    """Everything one process shares between its calls."""

    def __init__(self, settings: Settings, engines: Engines | None = None, clock=None) -> None:
        self.settings = settings
        # OpenTelemetry when OTEL_EXPORTER_OTLP_ENDPOINT is set, else None and nothing of it imported.
        # Before any provider's HTTP client exists: those get instrumented.
        self.tracer = tracing.from_environment()
        self.engines = engines or Engines(settings, board=BreakerBoard(
            on_change=_breaker_metric, failure_threshold=settings.breaker_failure_threshold,
            reset_seconds=settings.breaker_reset_seconds,
            drop_window_seconds=settings.provider_reconnect_window_seconds))
        retry.on_provider_event = _provider_metric
        self.shared = shared_state(settings.redis_url)
        backend = self.shared.cache_backend()
        self.latency = LatencySuite(mode=settings.latency_optimization_mode, observer=_latency_metric,
                                    cache=ResponseCache(backend) if backend is not None else None)
        self.twilio = None
        if settings.twilio_rest_enabled:
            from providers.twilio_rest import TwilioRest

            self.twilio = TwilioRest(settings)
        self.tz = ZoneInfo(settings.timezone)
        self.clock = clock or (lambda: datetime.now(self.tz))
        self.dialog_settings = DialogSettings(timezone=settings.timezone, transfer_number=settings.transfer_number)
        self.store = Store(settings.voicegate_db)
        # The business's files (KNOWLEDGE_DIR), read and indexed once: a missing folder is a startup error.
        self.knowledge = None
        if settings.knowledge_dir:
            base = KnowledgeBase.load(settings.knowledge_dir, default_language=settings.call_languages[0],
                                      languages=settings.call_languages)
            self.knowledge = Knowledge(base)
        self.store.on_backlog = metrics.STORE_BACKLOG.set
        self._store_pool = ThreadPoolExecutor(1, thread_name_prefix="store")  # SQLite likes one writer
        self._store_retry: asyncio.Task | None = None
        self.draining = False  # SIGTERM: no new calls (`drain`)
        self._drain: asyncio.Task | None = None
        self.session_settings = SessionSettings(
            end_of_speech_ms=settings.end_of_speech_ms,
            max_utterance_seconds=settings.max_utterance_seconds,
            outbound_lead_ms=settings.outbound_lead_ms,
            max_call_seconds=settings.max_call_seconds,
            idle_timeout_seconds=settings.idle_timeout_seconds,
            max_caller_text_chars=settings.max_caller_text_chars,
            model_vad=settings.model_vad,  # each call turns it off if the model did not load
            backchannels=settings.backchannels,
        )
        self.services = CallServices(
            settings=settings, engines=self.engines, make_responder=self.make_responder,
            store=self.store, run_store=self.run_store,
            hang_up=self.hang_up if self.twilio is not None else None, shared=self.shared,
            tracer=self.tracer,
        )
        self._load_task: asyncio.Task | None = None
        self._gc_pacer = GcPacer(on_pause=lambda generation, seconds:
                                 metrics.GC_PAUSE.labels(str(generation)).observe(seconds))
        self._event_tasks: set[asyncio.Task] = set()

    def publish_event(self, kind: str, data: dict) -> None:
        task = asyncio.get_running_loop().create_task(self.shared.publish(kind, data))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def run_store(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._store_pool, fn, *args)

    async def hang_up(self, call_sid: str, transfer_to: str) -> bool:
        """End (or transfer) the call through Twilio's REST API; False if that did not work."""
        if transfer_to:
            return await self.twilio.transfer(call_sid, transfer_to)
        return await self.twilio.hang_up(call_sid)

    def make_responder(self, call: CallInfo, snapshot: dict | None = None) -> Responder:
        """The call's dialog: new, or restored from a snapshot when a cut-off call resumes."""
        caller = call.parameters.get("caller", call.parameters.get("From", ""))

        # A stream of a call cut off before (Twilio's <Redirect> counts the attempts) whose context was
        # not found (Redis lost it, or was down): start afresh, saying so.
        lost = snapshot is None and _int(call.parameters.get("attempt"), 0) > 0

        def new(snapshot: dict | None = None) -> Conversation:
            if snapshot is not None:
                return Conversation.restore(snapshot, self.dialog_settings, self.store)
            return Conversation(self.dialog_settings, self.store, call_sid=call.call_sid, caller=caller,
                                lost_context=lost)

        if lost:
            log_event(log, "a cut-off call came back without its context: starting the conversation afresh",
                      logging.WARNING, shared_state=self.shared.backend)

        def cancel(booking) -> None:
            self.store.cancel(booking.id, booking.call_sid)

        rules = RuleResponder(new(snapshot), self.clock, restore=new, cancel_booking=cancel, knowledge=self.knowledge)
        if self.engines.llms:
            # The call's language: the dialog follows the caller (dialog.languages) and tells the call's
            # TTS streams through `call.language`.
            language = CallLanguage(self.settings.call_languages,
                                    switch_min_words=self.settings.language_switch_min_words)
            if snapshot is None:
                rules.conversation.language = language.default  # a new call greets in the default language
            memory = CallMemory(self.settings.history_recent_chars, self.settings.history_summary_chars)
            return LlmResponder(rules, self.engines.llms, self.latency, business=self.dialog_settings.business_name,
                                language=language, spoken=call.language, memory=memory)
        return rules

    async def startup(self) -> None:
        settings = self.settings
        if settings.twilio_auth_token and not settings.twilio_validate_signatures:
            log.warning("TWILIO_VALIDATE_SIGNATURES=false: Twilio signatures are NOT checked. Anyone who finds "
                        "this URL can place calls through it. Never run like this in production.")
        elif not settings.twilio_auth_token:
            log.warning("TWILIO_AUTH_TOKEN is not set: Twilio signatures cannot be checked (local development only)")
        if settings.languages_note:  # LANGUAGES asks for more than the engines can do (offline: English)
            log_event(log, settings.languages_note, logging.WARNING, languages=settings.languages)
        await self.shared.start()
        # The LLM request's body goes out in the loop turn that sends its headers (eager_tasks).
        eager_tasks.install(asyncio.get_running_loop())
        self._load_task = asyncio.create_task(self._load())
        self._store_retry = asyncio.create_task(self._retry_store())

    async def _retry_store(self) -> None:
        """Transcript writes the store refused are held (dialog.store); write them once it takes writes."""
        while True:
            await asyncio.sleep(STORE_RETRY_SECONDS)
            if self.store.backlog:
                with contextlib.suppress(Exception):
                    await self.run_store(self.store.flush_backlog)

    # ------------------------------------------------------------------ drain (a deploy)

    def drain(self) -> asyncio.Task:
        """SIGTERM (gateway.serving): stop taking calls, let those in progress go on up to
        DRAIN_SECONDS, then hand each one still going over to another instance. The task ends when
        no call is left here."""
        if self._drain is None:
            self.draining = True
            metrics.DRAINING.set(1)
            self._drain = asyncio.get_running_loop().create_task(self._drain_calls())
        return self._drain

    async def _drain_calls(self) -> None:
        settings, calls = self.settings, self.services.calls
        loop = asyncio.get_running_loop()
        log_event(log, "draining: new calls go to other instances; calls in progress go on",
                  calls=len(calls), drain_seconds=settings.drain_seconds)
        if self.shared.backend == "memory" and calls:
            log_event(log, "no REDIS_URL: calls still going at the drain deadline will start afresh on the "
                      "next instance", logging.WARNING)
        deadline = loop.time() + settings.drain_seconds
        while calls and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        moments: list[object] = []
        if calls:
            log_event(log, "drain deadline: handing calls over", calls=len(calls))
            moments = await asyncio.gather(*(call.hand_over(settings.handover_wait_seconds)
                                             for call in list(calls.values())), return_exceptions=True)
        closing = loop.time() + HANDOVER_CLOSE_SECONDS
        while calls and loop.time() < closing:  # the handed-over calls end (their streams close)
            await asyncio.sleep(DRAIN_POLL_SECONDS / 4)
        for failure in (m for m in moments if isinstance(m, BaseException)):
            log.error("a hand-over failed", exc_info=failure)
        log_event(log, "drained", handed_over=sum(1 for m in moments if m in ("quiet", "forced")),
                  forced=sum(1 for m in moments if m == "forced"), left=len(calls))

    async def _load(self) -> None:
        await self.engines.load()
        # Synchronously, before any call can start on the readiness just gained. The SDKs' modules and
        # pydantic schemas and the loaded engines live as long as the process: hundreds of thousands of
        # objects every full collection would walk again while the event loop waits (60-80 ms measured
        # at 100 calls). Frozen, they are never walked, nor ever collected, so this runs once, before
        # the first call creates anything.
        freeze_heap()
        self._gc_pacer.start()
        described = self.engines.describe()
        for role in ("stt", "llm", "tts"):
            if described[role]:
                metrics.ENGINE_READY.labels(role, str(described[role])).set(1 if self.engines.ready else 0)
        # Every call language's prompts play with no TTS wait; the languages side by side (a stream each).
        await asyncio.gather(*(self.engines.prerender(fixed_prompt_sentences(self.dialog_settings, language), language)
                               for language in self.settings.call_languages))

        log_event(log, "engines ready" if self.engines.ready else "engines not ready", **self.engines.describe())

    async def shutdown(self) -> None:
        self._gc_pacer.stop()
        if self._store_retry is not None:
            self._store_retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._store_retry
        if self.store.backlog:
            left = await self.run_store(self.store.flush_backlog)
            if left:
                log_event(log, "transcript writes the store never took are lost at shutdown", logging.ERROR,
                          writes=left)
        if self._load_task is not None:
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._load_task
        await self.engines.aclose()
        await self.shared.close()
        if self.twilio is not None:
            await self.twilio.close()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.flush)  # the last calls' spans
        self._store_pool.shutdown(wait=True)


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    gw = gateway or Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.startup()
        try:
            yield
        finally:
            await gw.shutdown()

    signatures = TwilioSignatures(settings.twilio_auth_token, settings.twilio_validate_signatures)
    # PUBLIC_URL, or where each request was sent (its Host; trusted proxies' X-Forwarded-*).
    urls = PublicUrls(settings.public_url, settings.trusted_proxy_hops)

    def signed(request: Request, form: dict[str, str]) -> bool:
        url = urls.origin(request.scope).http_url(request.url.path, request.url.query)  # what Twilio signed
        if signatures.check_http(url, form, request.headers.get("x-twilio-signature")):
            return True
        metrics.ERRORS.labels("bad_signature", "twilio").inc()
        log_event(log, "refused a request with a missing or forged Twilio signature", logging.WARNING,
                  path=request.url.path)
        return False

    async def voice(request: Request) -> Response:
        form = await form_params(request)
        if not signed(request, form):
            return Response("forbidden", status_code=403)
        call_sid = str(form.get("CallSid", ""))
        caller = str(form.get("From", ""))
        attempt = _int(request.query_params.get("attempt"), 0)
        hops = _int(request.query_params.get("drain_hops"), 0)
        ended = await gw.shared.ended(call_sid) if call_sid else None
        if attempt > 0 and ended is None and call_sid:
            # A hand-over at a deploy is no failure: it does not count against the resume attempts, or
            # a long call would be hung up after a couple of rolling deploys.
            context = await gw.shared.load_context(call_sid)
            if ((context or {}).get("dialog") or {}).get("handover") == "planned":
                attempt -= 1
        if ended is not None:
            # The stream was closed on purpose: the call is over (or being transferred).
            body = twiml.dial(ended.split(":", 1)[1]) if ended.startswith("transfer:") else twiml.hangup()
        elif gw.draining and hops < twiml.MAX_DRAIN_HOPS:
            # This instance is going away: back to the same URL after a pause, which the load balancer
            # (told by /readyz) sends to another instance. The attempt count goes along unchanged.
            body = twiml.try_elsewhere(urls.origin(request.scope).http_url("/twilio/voice"),
                                       {"attempt": str(_int(request.query_params.get("attempt"), 0)),
                                        "drain_hops": str(hops + 1)})
        elif gw.draining:
            metrics.ERRORS.labels("draining", "gateway").inc()
            body = twiml.hangup("Sorry, we are restarting. Please call again in a minute. Goodbye.")
        elif attempt > twiml.MAX_RESUME_ATTEMPTS:
            body = twiml.hangup("Sorry, we are having technical trouble. Please call again later. Goodbye.")
        elif not gw.engines.ready:
            metrics.ERRORS.labels("not_ready", "gateway").inc()
            body = twiml.hangup("Sorry, we can't take your call right now. Please try again in a minute. Goodbye.")
        elif len(gw.services.calls) >= settings.max_concurrent_calls:
            metrics.ERRORS.labels("busy", "gateway").inc()
            body = twiml.busy()
        else:
            origin = urls.origin(request.scope)
            body = twiml.connect_stream(origin.stream_url, origin.http_url("/twilio/voice"), call_sid, caller,
                                        attempt=attempt, direction=str(form.get("Direction", "inbound")).split("-")[0])
        log_event(log, "voice webhook", call_sid=call_sid, caller=mask_number(caller), attempt=attempt)
        return Response(body, media_type="application/xml")

    async def status(request: Request) -> Response:
        form = await form_params(request)
        if not signed(request, form):
            return Response("forbidden", status_code=403)
        log_event(log, "call status", call_sid=str(form.get("CallSid", "")), status=str(form.get("CallStatus", "")))
        return Response(status_code=204)

    async def media(ws: WebSocket) -> None:
        # The browser softphone authenticates with a short-lived token (gateway/auth.py).
        if "token" in ws.query_params and not auth.softphone_connection_allowed(settings.dashboard_token, ws):
            await ws.close(auth.CLOSE_UNAUTHORIZED)  # before accept: the handshake is refused
            return
        if "token" not in ws.query_params and not signatures.check_media_upgrade(
                urls.origin(ws.scope).stream_url, ws.headers.get("x-twilio-signature")):
            metrics.ERRORS.labels("bad_signature", "twilio").inc()
            log_event(log, "refused a media stream with a missing or forged Twilio signature", logging.WARNING)
            await ws.close(CLOSE_FORBIDDEN)  # before accept: the handshake is answered 403
            return
        if gw.draining:
            # Going away: a stream that still arrives (its webhook was answered just before the drain)
            # is refused with 1012, and Twilio's <Redirect> after <Connect> takes the call elsewhere.
            metrics.ERRORS.labels("draining", "gateway").inc()
            await ws.accept()
            await ws.close(CLOSE_RESTARTING, "draining: this instance is shutting down")
            return
        if len(gw.services.calls) >= settings.max_concurrent_calls or not gw.engines.ready:
            # Accept, then close with a code that says why (a refused handshake carries no reason).
            metrics.ERRORS.labels("busy" if gw.engines.ready else "not_ready", "gateway").inc()
            await ws.accept()
            await ws.close(CLOSE_BUSY if gw.engines.ready else CLOSE_NOT_READY,
                           "over capacity" if gw.engines.ready else "engines not ready")
            return
        await ws.accept()
        await MediaCall(ws, gw.services, gw.session_settings).run()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        engines = gw.engines
        ready = engines.ready and not gw.draining
        status = "draining" if gw.draining else "ready" if engines.ready else "not ready"
        # Redis or the store down is degraded, not unready: calls go on without them (README,
        # Resilience), and taking every instance out of the load balancer would be an outage.
        body = {"status": status, **engines.describe(), "languages": _languages(settings),
                "knowledge": gw.knowledge.base.describe() if gw.knowledge is not None else None,
                "active_calls": len(gw.services.calls),
                "shared_state": gw.shared.describe(),
                "store": {"backlog": gw.store.backlog, "lost_writes": gw.store.lost_writes}}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_route(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def list_calls(request: Request) -> Response:
        calls = await gw.run_store(gw.store.list_calls, _int(request.query_params.get("limit"), 50))
        live = [{**c, "live": True} for c in await gw.shared.live_calls()]  # every worker's, with Redis
        return JSONResponse({"live": live, "calls": [_mask_call(c) for c in calls]})

    async def get_call(request: Request) -> Response:
        call = await gw.run_store(gw.store.get_call, request.path_params["call_sid"])
        if call is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        return JSONResponse(_mask_call(call))

    async def bookings(request: Request) -> Response:
        rows = await gw.run_store(gw.store.list_bookings)
        return JSONResponse({"bookings": [_mask_booking(b.to_dict()) for b in rows]})

    probes = ProbeCache()

    async def connectivity(request: Request) -> Response:
        # Probes are real (DNS, connect, auth) but cached for a few seconds: not a way to hammer providers.
        return JSONResponse(await probes.get(settings))

    async def create_call(request: Request) -> Response:
        if not settings.dashboard_token or not auth.same_secret(auth.bearer(request.headers), settings.dashboard_token):
            return JSONResponse({"error": "a valid bearer token (DASHBOARD_TOKEN) is required"}, status_code=401)
        if gw.twilio is None:
            return JSONResponse({"error": "outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"},
                                status_code=503)
        try:
            body = await request.json()
            sid = await place_call(settings, gw.twilio, urls.origin(request.scope), str(body.get("to", "")),
                                   str(body.get("from", "")))
        except (ValueError, AttributeError) as exc:
            return JSONResponse({"error": str(exc) or "the body must be JSON: {\"to\": \"+1...\"}"}, status_code=400)
        except ProviderError as exc:
            return JSONResponse({"error": f"Twilio refused the call: {exc}"}, status_code=502)
        log_event(log, "outbound call placed", call_sid=sid, to=mask_number(str(body.get("to", ""))))
        return JSONResponse({"call_sid": sid}, status_code=201)

    routes = [
        Route("/twilio/voice", voice, methods=["POST"]),
        Route("/debug/connectivity", connectivity),
        Route("/twilio/status", status, methods=["POST"]),
        WebSocketRoute("/twilio/media", media),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_route),
        Route("/api/calls", list_calls, methods=["GET"]),
        Route("/api/calls", create_call, methods=["POST"]),
        Route("/api/calls/{call_sid}", get_call),
        Route("/api/bookings", bookings),
    ]
    limits = RateLimits(http_per_second=settings.http_rate_per_ip, http_burst=int(settings.http_rate_per_ip * 3),
                        ws_per_second=settings.ws_rate_per_ip, ws_burst=int(settings.ws_rate_per_ip * 5))
    middleware = [Middleware(SecurityMiddleware, limits=limits,
                             cors_origins=tuple(o.strip() for o in settings.cors_origins.split(",") if o.strip()),
                             hsts=settings.public_url.startswith("https://"),
                             trusted_proxies=settings.trusted_proxy_hops)]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.gateway = gw
    dashboard.install(app, gw)
    # Dashboard events travel through the shared state, so every worker's dashboard sees every call.
    hub_publish = gw.services.on_call_event
    if hub_publish is not None:
        gw.shared.subscribe(hub_publish)
        gw.services.on_call_event = gw.publish_event  # GET /, /ws/dashboard, /api/token, /static; the live-call feed
    return app


def _breaker_metric(provider: str, state: BreakerState) -> None:
    metrics.BREAKER_STATE.labels(provider).set(int(state))


def _provider_metric(provider: str, role: str, kind: str) -> None:
    match kind:
        case "request":
            metrics.PROVIDER_REQUESTS.labels(provider, role).inc()
        case "error":
            metrics.PROVIDER_ERRORS.labels(provider, role, "error").inc()
            metrics.ERRORS.labels(f"{role}_provider", provider).inc()
        case "retry":
            metrics.PROVIDER_RETRIES.labels(provider, role).inc()
        case "fallback":
            metrics.FALLBACKS.labels(role, provider).inc()


def _latency_metric(kind: str, data: dict) -> None:
    match kind:
        case "quick":
            metrics.QUICK_RESPONSES.labels("hit" if data["hit"] else "miss").inc()
        case "cache":
            metrics.CACHE.labels("hit" if data["hit"] else "miss").inc()
        case "shadow_diff":
            metrics.SHADOW_DIFFS.inc()
        case "quality":
            metrics.QUALITY.observe(data["score"])
            metrics.QUALITY_AVG.set(data["average"])


def _languages(settings: Settings) -> dict[str, object]:
    """/readyz: the languages configured, those calls can be held in, and why not all (offline)."""
    return {"configured": list(settings.language_codes), "available": list(settings.call_languages),
            "note": settings.languages_note or None}


def fixed_prompt_sentences(settings: DialogSettings, language: str = "en") -> list[str]:
    """Every sentence of every template that needs no per-call field, as the chunker will cut it:
    the greeting first. These are rendered once at startup, so they play with no TTS wait."""
    from dialog import languages, prompts
    from dialog.chunker import SentenceChunker

    static = {"business": settings.business_name, "hours": languages.say_hours(settings, language),
              "days": languages.say_days(settings, language),
              "grid": languages.say_grid(settings.slot_minutes, language)}
    sentences: list[str] = []
    for key in ("greet", *prompts.PROMPTS):
        for template in prompts.templates(key, language):
            try:
                text = template.format_map(static)
            except KeyError:
                continue  # needs the caller's date or time
            chunker = SentenceChunker()
            for sentence in chunker.push(text) + chunker.flush():
                if sentence not in sentences:
                    sentences.append(sentence)
    return sentences


MAX_FORM_BYTES = 64 * 1024  # a Twilio webhook form is ~1-2 KiB
# The drain checks whether its calls have ended this often (a call's end is a few lines of cleanup).
DRAIN_POLL_SECONDS = 0.2
# After the hand-overs, their streams close and their calls end within this (close frame 2 s at most).
HANDOVER_CLOSE_SECONDS = 5.0
# The store's refused transcript writes are retried this often (dialog.store.RETRY_SECONDS).
STORE_RETRY_SECONDS = 2.0


async def form_params(request: Request) -> dict[str, str]:
    """Twilio's webhooks are application/x-www-form-urlencoded; parsed here without a multipart library."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ValueError("form too large")
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _mask_call(call: dict) -> dict:
    return {**call, "caller": mask_number(str(call.get("caller") or ""))}


def _mask_booking(booking: dict) -> dict:
    return {**booking, "caller": mask_number(str(booking.get("caller") or ""))}
