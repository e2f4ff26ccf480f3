"""`GET /debug/connectivity`: can this process reach each configured provider, and is its key accepted?

For every configured provider, in parallel, three timed steps:
1. DNS: resolve the host of the provider's (possibly overridden) base URL;
2. TCP: open and close a connection to it;
3. an authenticated request through the same SDK the calls use:
   - Deepgram: the `/v1/listen` WebSocket handshake, then CloseStream (no audio, nothing billed);
   - OpenAI: `GET /models`;
   - ElevenLabs: `GET /v1/user`; a server without that route (the emulator) answers 404, and then
     the `stream-input` WebSocket handshake, which checks the `xi-api-key` header, decides;
   - Twilio: `GET /2010-04-01/Accounts/{sid}.json`.

Each provider gets `status`: "ok", "auth_failed", "unreachable", "timeout", "error: <short reason>"
(or "not_configured"). The whole probe is bounded by `PROBE_TIMEOUT_SECONDS`.

No secret ever appears in the output, not even a prefix: reasons are built from status codes and
exception type names, and the finished report is scrubbed of every configured secret besides.
`ProbeCache` keeps the route from being used to hammer the providers: a result is reused for `ttl`
seconds, and concurrent requests share the one probe in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import openai
from deepgram.core.api_error import ApiError as DeepgramApiError
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError as ElevenLabsApiError

from providers.settings import SECRET_FIELDS, Settings
from providers.base import ProviderAuthError, ProviderError, ProviderTimeout
from providers.deepgram_stt import DeepgramStt
from providers.elevenlabs_tts import ElevenLabsWsTts
from providers.openai_llm import OpenAiLlm, map_error
from providers.twilio_rest import TwilioRest

log = logging.getLogger("voicegate.probes")

# The route answers within this, whatever the providers do: probes run in parallel.
PROBE_TIMEOUT_SECONDS = 5.0
# Per step; a step that takes longer than this is reported as a timeout.
DNS_TIMEOUT_SECONDS = 2.0
TCP_TIMEOUT_SECONDS = 2.0
AUTH_TIMEOUT_SECONDS = 3.0
# Results are reused this long: the route cannot be used to hammer the providers.
PROBE_CACHE_TTL_SECONDS = 5.0

DEFAULT_URLS = {
    "deepgram": "https://api.deepgram.com",
    "openai": "https://api.openai.com/v1",
    "elevenlabs": "https://api.elevenlabs.io",
    "twilio": "https://api.twilio.com",
}
PROVIDERS = tuple(DEFAULT_URLS)
REDACTED = "<redacted>"
PROBE_TAG = "voicegate-probe"  # Deepgram's `tag` query parameter on the probe's socket


class _Failed(Exception):
    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.detail = detail


def _configured(settings: Settings, provider: str) -> bool:
    match provider:
        case "deepgram":
            return settings.deepgram_enabled
        case "openai":
            return settings.openai_enabled
        case "elevenlabs":
            return settings.elevenlabs_enabled
        case "twilio":
            return settings.twilio_rest_enabled
    return False


def _base_url(settings: Settings, provider: str) -> str:
    override = {
        "deepgram": settings.deepgram_base_url, "openai": settings.openai_base_url,
        "elevenlabs": settings.elevenlabs_base_url, "twilio": settings.twilio_api_base_url,
    }[provider].strip()
    return override or DEFAULT_URLS[provider]


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    return parts.hostname or "", parts.port or (443 if secure else 80)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def probe_all(settings: Settings, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Probe every configured provider in parallel; never raises, never longer than `timeout`."""
    started = time.perf_counter()
    reports: dict[str, dict[str, Any]] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    for provider in PROVIDERS:
        if not _configured(settings, provider):
            reports[provider] = {"configured": False, "status": "not_configured"}
            continue
        host, port = _host_port(_base_url(settings, provider))
        report = reports[provider] = {"configured": True, "host": host, "port": port, "dns_ms": None,
                                      "tcp_ms": None, "auth_ms": None, "status": "timeout"}
        tasks[provider] = asyncio.create_task(_probe_one(settings, provider, report), name=f"probe-{provider}")
    if tasks:
        _, pending = await asyncio.wait(tasks.values(), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    result = {"checked_at": round(time.time(), 3), "duration_ms": _ms(time.perf_counter() - started),
              "providers": reports}
    return scrub(result, _secrets(settings))


async def _probe_one(settings: Settings, provider: str, report: dict[str, Any]) -> None:
    """Fill `report` step by step (a cancelled probe keeps the timings it had, status "timeout")."""
    try:
        host, port = report["host"], report["port"]
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        try:
            async with asyncio.timeout(DNS_TIMEOUT_SECONDS):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise _Failed("timeout", "DNS lookup timed out") from None
        except OSError:
            raise _Failed("unreachable", "DNS lookup failed") from None
        report["dns_ms"] = _ms(time.perf_counter() - t)
        family, _, _, _, address = infos[0]
        t = time.perf_counter()
        try:
            async with asyncio.timeout(TCP_TIMEOUT_SECONDS):
                _, writer = await asyncio.open_connection(address[0], address[1], family=family)
        except TimeoutError:
            raise _Failed("timeout", "TCP connect timed out") from None
        except OSError as exc:
            raise _Failed("unreachable", f"TCP connect failed ({type(exc).__name__})") from None
        report["tcp_ms"] = _ms(time.perf_counter() - t)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        t = time.perf_counter()
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
                note = await _AUTH_PROBES[provider](settings)
        except TimeoutError:
            raise _Failed("timeout", "authenticated request timed out") from None
        report["auth_ms"] = _ms(time.perf_counter() - t)
        report["status"] = "ok"
        if note:
            report["detail"] = note
    except _Failed as failed:
        report["status"] = failed.status
        if failed.detail:
            report["detail"] = failed.detail
    except asyncio.CancelledError:
        report["status"] = "timeout"
        raise
    except Exception as exc:  # a probe bug must not break the route
        log.exception("probing %s failed", provider)
        report["status"] = f"error: {type(exc).__name__}"


def _from_provider_error(exc: ProviderError) -> _Failed:
    if isinstance(exc, ProviderAuthError):
        return _Failed("auth_failed", f"HTTP {exc.status}" if exc.status else "")
    if isinstance(exc, ProviderTimeout):
        return _Failed("timeout")
    if exc.status is None:
        return _Failed("unreachable", "connection failed")
    return _Failed(f"error: HTTP {exc.status}")


# ---------------------------------------------------------------------- authenticated requests


async def _deepgram(settings: Settings) -> str:
    stt = DeepgramStt(settings)
    try:
        # Tagged, so the probe's socket is told apart from calls in Deepgram's usage reports and logs.
        async with stt.client.listen.v1.connect(model=stt.model, encoding="mulaw", sample_rate=8000,
                                                tag=PROBE_TAG) as conn:
            await conn.send_close_stream()
    except DeepgramApiError as exc:
        if exc.status_code in (401, 403):
            raise _Failed("auth_failed", f"HTTP {exc.status_code}") from None
        raise _Failed(f"error: HTTP {exc.status_code}") from None
    except OSError as exc:
        raise _Failed("unreachable", f"WebSocket connect failed ({type(exc).__name__})") from None
    return ""


async def _openai(settings: Settings) -> str:
    llm = OpenAiLlm(settings)
    try:
        await llm.client.models.list()
    except openai.OpenAIError as exc:
        raise _from_provider_error(map_error(exc)) from None
    finally:
        await llm.aclose()
    return ""


async def _elevenlabs(settings: Settings) -> str:
    http = httpx.AsyncClient(timeout=AUTH_TIMEOUT_SECONDS)
    client = AsyncElevenLabs(api_key=settings.elevenlabs_api_key.strip(),
                             base_url=settings.elevenlabs_base_url.strip() or None, timeout=AUTH_TIMEOUT_SECONDS,
                             httpx_client=http)
    try:
        await client.user.get(request_options={"max_retries": 0})
        return ""
    except ElevenLabsApiError as exc:
        status = exc.status_code
        if status in (401, 403):
            raise _Failed("auth_failed", f"HTTP {status}") from None
        if status != 404:
            raise _Failed(f"error: HTTP {status}") from None
    except Exception as exc:  # httpx.ConnectError and friends
        raise _Failed("unreachable", f"HTTP request failed ({type(exc).__name__})") from None
    finally:
        with contextlib.suppress(Exception):
            await http.aclose()
    # No /v1/user here (an emulator or a proxy): the stream-input handshake checks the key instead.
    tts = ElevenLabsWsTts(settings, multi_context=False, prewarm=False)
    try:
        ws = await tts.connect()
    except ProviderError as exc:
        raise _from_provider_error(exc) from None
    with contextlib.suppress(Exception):
        await ws.close()
    return "no /v1/user endpoint; key accepted by the stream-input handshake"


async def _twilio(settings: Settings) -> str:
    rest = TwilioRest(settings, timeout=AUTH_TIMEOUT_SECONDS)
    try:
        await rest.probe()
    except ProviderError as exc:
        raise _from_provider_error(exc) from None
    finally:
        await rest.close()
    return ""


_AUTH_PROBES: dict[str, Callable[[Settings], Awaitable[str]]] = {
    "deepgram": _deepgram, "openai": _openai, "elevenlabs": _elevenlabs, "twilio": _twilio,
}


# ---------------------------------------------------------------------- no secrets out


def _secrets(settings: Settings) -> list[str]:
    values = [str(getattr(settings, name, "") or "").strip() for name in SECRET_FIELDS]
    return sorted((v for v in values if v), key=len, reverse=True)


def scrub(value: Any, secrets: list[str]) -> Any:
    """`value` with every occurrence of every secret replaced (recursively through dicts/lists)."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


# ---------------------------------------------------------------------- the cache


class ProbeCache:
    """Reuses a probe result for `ttl` seconds; concurrent callers share the probe in flight."""

    def __init__(self, ttl: float = PROBE_CACHE_TTL_SECONDS,
                 probe: Callable[[Settings], Awaitable[dict[str, Any]]] = probe_all,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._probe = probe
        self._clock = clock
        self._key: Settings | None = None
        self._result: dict[str, Any] | None = None
        self._at = 0.0
        self._inflight: asyncio.Task[dict[str, Any]] | None = None
        self.probes_run = 0

    async def get(self, settings: Settings) -> dict[str, Any]:
        if self._key is not settings and self._key != settings:
            self._key, self._result, self._inflight = settings, None, None
        if self._result is not None and self._clock() - self._at < self.ttl:
            return self._result
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._run(settings))
        # Shielded: one caller going away must not cancel the probe the others are waiting for.
        return await asyncio.shield(self._inflight)

    async def _run(self, settings: Settings) -> dict[str, Any]:
        self.probes_run += 1
        try:
            result = await self._probe(settings)
            if self._key == settings:
                self._result, self._at = result, self._clock()
            return result
        finally:
            if self._key == settings:
                self._inflight = None
