"""OpenAI (or any OpenAI-compatible server) Chat Completions streaming, on the official SDK (§2).

The SDK's own retries are off (`max_retries=0`): the gateway's fallback chain decides what to try
next, and a retry after the caller heard half a reply would repeat it. This client only
classifies failures into the `ProviderError` tree:

| failure | raised |
|---|---|
| 401 / 403 | `ProviderAuthError` (not retryable) |
| 429 | `ProviderError(retryable, status=429, retry_after=retry-after-ms / retry-after)` |
| 408, 409, 5xx, connection failures | `ProviderError(retryable)` |
| other 4xx (bad request, unknown model) | `ProviderError(not retryable)` |
| no first token in `first_token_timeout`, a stall between chunks past the read timeout | `ProviderTimeout` |
| any failure after text was yielded | the same, with `heard_anything=True` (and not retryable) |

Phase timeouts: connect (`openai.Timeout.connect`), first token (an `asyncio.timeout` around the
request, then a `ReadDeadline` on the wait for the first chunk that carries content, a tool call or
a finish), between chunks (the same `ReadDeadline`, `between_tokens` after each read).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, Sequence

import aiohttp  # the transport of the SDK's DefaultAioHttpClient
import anyio
import httpx2  # the openai SDK's HTTP client (pinned with it)
import openai
import orjson
from openai._vendor.httpx_aiohttp.transport import AiohttpTransport  # the transport DefaultAioHttpClient builds
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.settings import Settings
from providers.base import LlmChunk, ProviderAuthError, ProviderError, ProviderTimeout, ToolCall, ToolCallStarted
from providers.deadline import ReadDeadline
from providers.http_pool import SparePool
from providers.retry import ProviderCounters
from providers.sse import SseDataDecoder

log = logging.getLogger("voicegate.llm.openai")

PROVIDER = "openai"

# TCP + TLS to a cloud API is ~100-300 ms; 2 s means the host is not answering.
CONNECT_TIMEOUT_SECONDS = 2.0
# A voice turn cannot wait longer for the first word; gpt-4o-mini's p99 time-to-first-token is ~1.5 s.
FIRST_TOKEN_TIMEOUT_SECONDS = 3.0  # twice that p99: past it, the fallback answers sooner
# Tokens arrive every ~20-50 ms; 3 s of silence mid-reply is a stalled stream.
BETWEEN_TOKENS_TIMEOUT_SECONDS = 3.0
# The request body is a few kB.
WRITE_TIMEOUT_SECONDS = 5.0
# Waiting for a pooled connection: only under heavy concurrency, and then failing over is better.
POOL_TIMEOUT_SECONDS = 2.0
# warm(): one GET /models at startup; never hold startup up longer than this.
WARM_TIMEOUT_SECONDS = 3.0
# What `chat.completions.create` passes to the request: the key as a bearer token.
_REQUEST_OPTIONS: openai.RequestOptions = {"security": {"bearer_auth": True}}
# A server that speaks the OpenAI protocol without keys (vLLM, Ollama) still needs a non-empty one.
NO_KEY = "no-key"


@dataclass(frozen=True)
class LlmTimeouts:
    connect: float = CONNECT_TIMEOUT_SECONDS
    first_token: float = FIRST_TOKEN_TIMEOUT_SECONDS
    between_tokens: float = BETWEEN_TOKENS_TIMEOUT_SECONDS
    write: float = WRITE_TIMEOUT_SECONDS
    pool: float = POOL_TIMEOUT_SECONDS

    def sdk(self) -> openai.Timeout:
        # httpx applies `read` to every socket read, the wait for the first chunk included: it must not
        # be shorter than the first-token budget. The between-token budget is enforced per chunk in
        # `OpenAiLlm.stream`; this is only the backstop.
        read = max(self.first_token, self.between_tokens) + 1.0
        return openai.Timeout(connect=self.connect, read=read, write=self.write, pool=self.pool)


class OpenAiLlm:
    """The `LanguageModel` role on `chat.completions.create(stream=True)`."""

    def __init__(self, settings: Settings, *, model: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, timeouts: LlmTimeouts | None = None) -> None:
        self.model = model or settings.openai_model
        self.name = self.model
        self.timeouts = timeouts or LlmTimeouts()
        key = (api_key if api_key is not None else settings.openai_api_key).strip()
        url = (base_url if base_url is not None else settings.openai_base_url).strip()
        self.base_url = url
        # The SDK's aiohttp transport: its C HTTP parser reads an SSE body for about 45 % less CPU than the
        # default httpx one, which wraps every socket read in anyio cancel scopes (bench/PROFILE.md).
        # Its aiohttp session is ours (`SparePool`), so a reply never waits for a connection handshake.
        timeout = self.timeouts.sdk()
        self.pool = SparePool(connect_timeout=self.timeouts.connect, ssl=httpx2.create_ssl_context())
        http_client = openai.DefaultAioHttpClient(timeout=timeout, transport=AiohttpTransport(client=self.pool))
        self.client = openai.AsyncOpenAI(api_key=key or NO_KEY, base_url=url or None, max_retries=0, timeout=timeout,
                                         http_client=http_client)
        self.pool.base_url = str(self.client.base_url)  # the SDK's resolution: the argument, OPENAI_BASE_URL, its default
        # Labelled by model like the chain's GuardedLlm, which reports the retries and fallbacks.
        self.counters = ProviderCounters(self.name, "llm")

    @classmethod
    def fallback(cls, settings: Settings, *, base_url: str | None = None,
                 api_key: str | None = None) -> "OpenAiLlm | None":
        """The OPENAI_FALLBACK_MODEL client (optionally on another server), or None if unset."""
        if not settings.openai_fallback_model:
            return None
        return cls(settings, model=settings.openai_fallback_model, base_url=base_url, api_key=api_key)

    async def warm(self) -> bool:
        """Open the HTTP connection (GET /models) and the pool's spares, so the first turns skip the
        TCP/TLS handshake. Returns whether it worked; never raises."""
        try:
            async with asyncio.timeout(WARM_TIMEOUT_SECONDS):
                await self.client.models.list()
                self.pool.top_up()  # and the spares, for the first replies
                await self.pool.settled()
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("warming the %s connection failed: %s", self.name, type(exc).__name__)
            return False

    async def aclose(self) -> None:
        try:
            await self.pool.aclose()  # first: a top-up under way stops before its session closes
            await self.client.close()
        except Exception:
            log.exception("closing the OpenAI client failed")

    async def stream(self, messages: Sequence[Mapping[str, object]], *, tools: Sequence[Mapping[str, object]] = (),
                     max_tokens: int = 150) -> AsyncIterator[LlmChunk]:
        kwargs: dict[str, Any] = {
            "model": self.model, "messages": list(messages), "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": max_tokens,
        }
        if tools:
            kwargs["tools"] = list(tools)
        self.counters.count("request")
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + self.timeouts.first_token
        heard = False
        started = False  # a chunk with content, a tool call or a finish arrived
        calls: dict[int, _PartialCall] = {}
        response: Any = None
        deadline = ReadDeadline()
        try:
            try:
                async with asyncio.timeout_at(first_deadline):
                    # `post` is `chat.completions.create` without its parameter transform, which walks
                    # every message and tool schema through type hints on each request (~4 % of the
                    # gateway's CPU at 100 calls); our messages are plain JSON already.
                    response = await self.client.post(
                        "/chat/completions", body=kwargs, cast_to=ChatCompletion, stream=True,
                        stream_cls=openai.AsyncStream[ChatCompletionChunk], options=_REQUEST_OPTIONS)
            except TimeoutError:
                raise ProviderTimeout(PROVIDER, f"no first token within {self.timeouts.first_token:g} s") from None
            # The SDK made the request and mapped its errors; the body is read here. Its per-chunk
            # model parsing cost more CPU than the rest of a turn (bench/PROFILE.md), and a chunk
            # needs three fields: the text, the tool-call pieces, the finish.
            body = response.response.aiter_bytes()
            sse = SseDataDecoder()
            done = False
            while True:
                try:
                    when = loop.time() + self.timeouts.between_tokens if started else first_deadline
                    raw = await deadline.read(anext(body, None), when)
                except TimeoutError:
                    if not started:
                        raise ProviderTimeout(PROVIDER, f"no first token within {self.timeouts.first_token:g} s"
                                              ) from None
                    raise ProviderTimeout(PROVIDER, f"stream stalled for {self.timeouts.between_tokens:g} s "
                                                    "between tokens") from None
                events = sse.feed(raw) if raw is not None else sse.close()
                for data in events:
                    if done:
                        continue  # past [DONE]: read to the end so the connection goes back to the pool
                    if data.startswith(b"[DONE]"):
                        done = True
                        continue
                    for choice in _choices(data):
                        delta = choice.get("delta") or {}
                        text = delta.get("content")
                        pieces = delta.get("tool_calls")
                        finish = choice.get("finish_reason")
                        if text or pieces or finish:
                            started = True
                        for piece in pieces or ():
                            started_call = _merge(calls, piece)
                            if started_call is not None:
                                yield started_call  # not heard: the caller hears nothing of a call
                        if text:
                            heard = True
                            yield text
                        if finish and calls:
                            for call in _complete(calls):
                                heard = True
                                yield call
                if raw is None:
                    break
            for call in _complete(calls):  # a server that ended without a finish_reason
                heard = True
                yield call
        except ProviderError as exc:
            exc.heard_anything = exc.heard_anything or heard
            if heard:
                exc.retryable = False
            self.counters.count("error")
            if isinstance(exc, ProviderTimeout):
                self.pool.connection_failed()  # silence on a pooled connection: its idle peers may be dead too
            raise
        except openai.OpenAIError as exc:
            self.counters.count("error")
            if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
                self.pool.connection_failed()
            raise map_error(exc, heard) from exc
        except httpx2.TimeoutException:
            self.counters.count("error")
            self.pool.connection_failed()
            raise _after(ProviderTimeout(PROVIDER, "request timed out (between chunks)"), heard) from None
        except (httpx2.HTTPError, aiohttp.ClientError, OSError, anyio.EndOfStream) as exc:
            self.counters.count("error")
            self.pool.connection_failed()
            raise _after(ProviderError(PROVIDER, f"stream failed: {type(exc).__name__}"), heard) from None
        finally:
            deadline.close()
            if response is not None:
                try:
                    await response.close()
                except Exception:
                    log.debug("closing the OpenAI stream failed", exc_info=True)


def _choices(data: bytes) -> list[dict]:
    """The `choices` of one chunk; an error event mid-stream raises like the SDK's `APIError`."""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError(PROVIDER, "stream failed: a chunk is not JSON") from None
    if not isinstance(chunk, dict):
        raise ProviderError(PROVIDER, "stream failed: a chunk is not a JSON object")
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        raise ProviderError(PROVIDER, f"stream failed: {str(message or 'error event')[:120]}")
    choices = chunk.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _after(error: ProviderError, heard_anything: bool) -> ProviderError:
    """A failure after the caller heard part of the reply is not retried: a retry would repeat it."""
    if heard_anything:
        error.heard_anything = True
        error.retryable = False
    return error


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""
    done: bool = False


def _merge(calls: dict[int, _PartialCall], piece: Any) -> ToolCallStarted | None:
    """Tool-call deltas arrive in pieces keyed by `index`; ids and names once, arguments in parts.
    Returns the call's start when this piece named it."""
    if not isinstance(piece, dict):
        return None
    index = piece.get("index")
    if not isinstance(index, int):
        index = len(calls)
    call = calls.setdefault(index, _PartialCall())
    if piece.get("id"):
        call.id = str(piece["id"])
    function = piece.get("function")
    started = None
    if isinstance(function, dict):
        if function.get("name"):
            started = None if call.name else ToolCallStarted(call.id, str(function["name"]))
            call.name = str(function["name"])
        if function.get("arguments"):
            call.arguments += str(function["arguments"])
    return started


def _complete(calls: dict[int, _PartialCall]) -> list[ToolCall]:
    out: list[ToolCall] = []
    for index in sorted(calls):
        call = calls[index]
        if not call.done and call.name:
            call.done = True
            out.append(ToolCall(id=call.id, name=call.name, arguments=call.arguments or "{}"))
    return out


def map_error(exc: openai.OpenAIError, heard_anything: bool = False) -> ProviderError:
    """The SDK's exception as a `ProviderError`. Messages carry status and type, never the key."""
    error: ProviderError
    if isinstance(exc, openai.APITimeoutError):
        error = ProviderTimeout(PROVIDER, "request timed out (between chunks or before headers)")
    elif isinstance(exc, openai.APIConnectionError):
        error = ProviderError(PROVIDER, "connection failed")
    elif isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            return ProviderAuthError(PROVIDER, f"key refused (HTTP {status})", status=status)
        if status == 429:
            error = ProviderError(PROVIDER, "rate limited (HTTP 429)", status=429,
                                  retry_after=retry_after_seconds(exc.response.headers))
        elif status in (408, 409) or status >= 500:
            error = ProviderError(PROVIDER, f"server error (HTTP {status})", status=status,
                                  retry_after=retry_after_seconds(exc.response.headers))
        else:
            error = ProviderError(PROVIDER, f"request rejected (HTTP {status}: {_short(exc)})", retryable=False,
                                  status=status)
    elif isinstance(exc, openai.APIError):  # an error event in the middle of the stream
        error = ProviderError(PROVIDER, f"stream failed: {_short(exc)}")
    else:
        error = ProviderError(PROVIDER, type(exc).__name__)
    return _after(error, heard_anything)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """`retry-after-ms` (OpenAI's, milliseconds) or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(exc: openai.OpenAIError, limit: int = 120) -> str:
    message = getattr(exc, "message", None) or type(exc).__name__
    return str(message)[:limit]
