"""ElevenLabs text-to-speech: WebSocket input streaming and HTTP streaming (PROTOCOLS.md §3).

Audio is requested as `ulaw_8000`, exactly what Twilio plays, so no transcoding happens here.

`ElevenLabsWsTts` (name "elevenlabs-ws"). `AsyncElevenLabs` has no WebSocket client, so this is a
small one on `websockets.asyncio.client`, speaking with the SDK's message types. Two modes:

- multi-context (default): `/multi-stream-input`, one socket per call, opened when the call's stream
  is opened and reused by every sentence of every turn. Each sentence is its own `context_id`:
  initialise, text + flush, close_context; the server answers with that context's audio and then
  `isFinal`. A barge-in (the consumer's task cancelled) marks the context discarded: its late audio
  is dropped as it arrives and the socket stays up for the next sentence.
- single-context: `/stream-input` knows no per-sentence end marker except the end of input, so each
  sentence uses its own socket (init, text + flush, `{"text": ""}`, audio until `isFinal`). The next
  sentence's socket is opened while the current one speaks, which hides the handshake.

`ElevenLabsHttpTts` (name "elevenlabs-http"): `text_to_speech.stream` on the SDK, one request per
sentence, re-chunked by the SDK into 20 ms frames.

Both bound every phase: connect, the first audio byte, the gap between chunks (`ProviderTimeout`).
A failure after audio was yielded carries `heard_anything=True`: the caller heard part of it.

Languages. Each sentence is spoken in the call's language as it stands (`CallInfo.language`, set by
the dialog when the caller changes language): English as configured (`ELEVENLABS_MODEL`, no language
code); another language with a multilingual model (`ELEVENLABS_MODEL` when it is one, else
`ELEVENLABS_MULTILINGUAL_MODEL`) and, for the models that take one (Flash and Turbo v2.5),
`language_code`, which fixes the language and its text normalization ("15:30" read in Spanish). On
the WebSockets both are query parameters of the socket, so a call that changes language changes
socket (once: callers rarely switch back and forth); over HTTP they go with each request.

A multi-context socket that drops between sentences is reopened for the next one, unseen by the
caller; one that keeps dropping is a provider flapping. Each drop is reported to the chain's breaker
(`on_health("dropped")`, so new calls skip the provider), and past `reconnects_per_window` reopenings
within `reconnect_window` seconds the stream refuses to reopen: the sentence fails over to the next
engine, where the call then stays (`providers.chain.FallbackTts`). WebSocket pings find a socket whose
peer stopped answering (no FIN, no RST) between sentences, before a sentence waits on it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import typing
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
from elevenlabs import VoiceSettings
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError
from elevenlabs.types import (
    CloseConnection,
    CloseContext,
    InitializeConnection,
    InitializeConnectionMulti,
    RealtimeVoiceSettings,
    SendText,
    SendTextMulti,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from providers.settings import Settings
from providers.base import CallInfo, ProviderAuthError, ProviderError, ProviderTimeout, SpokenLanguage
from providers.deadline import ReadDeadline
from providers.retry import ProviderCounters

log = logging.getLogger("voicegate.tts.elevenlabs")

PROVIDER = "elevenlabs"
OUTPUT_FORMAT = "ulaw_8000"  # what Twilio plays: no transcoding on the way out
DEFAULT_BASE_URL = "https://api.elevenlabs.io"

# A WebSocket/TLS handshake to a healthy region is 100-300 ms.
CONNECT_TIMEOUT_SECONDS = 3.0
# Flash models answer in ~75-150 ms plus network; 3 s without audio is a stall, and silence that
# long on a phone call is already a failure.
FIRST_BYTE_TIMEOUT_SECONDS = 3.0
# Chunks come every ~100-200 ms, faster than real time; 3 s between them is a stall.
BETWEEN_CHUNKS_TIMEOUT_SECONDS = 3.0
# close(): the close handshake of a socket, at most.
CLOSE_TIMEOUT_SECONDS = 1.0
# WebSocket pings (as for Deepgram): a pong takes one round trip; none in 5 s is a dead path, found
# between sentences instead of by the next sentence's first-byte timeout. websockets' default is 20 + 20 s.
WS_PING_INTERVAL_SECONDS = 5.0
WS_PING_TIMEOUT_SECONDS = 5.0
# A socket the server closed after this long without our text was closed for inactivity (it does so at
# INACTIVITY_TIMEOUT_SECONDS), not dropped; a few seconds short of it, for the clocks' slack.
IDLE_CLOSE_SLACK_SECONDS = 5.0
# The server closes a socket that receives no text this long; a call's turns can be further apart
# than the 20 s default, and 180 s is the maximum it allows. An idle-closed socket is reopened.
INACTIVITY_TIMEOUT_SECONDS = 180
# Small first chunk sizes make the first audio come sooner; each sentence is flushed anyway.
CHUNK_LENGTH_SCHEDULE = (50, 90, 120)
# HTTP: the SDK re-chunks the body to this many bytes: 20 ms of 8 kHz mu-law, one Twilio frame.
HTTP_CHUNK_BYTES = 160
# 0-4: higher is faster first byte at some quality cost; 3 is ElevenLabs' "max latency optimization"
# without the text-normalizer bypass of 4 (which mispronounces numbers and dates, bad for bookings).
OPTIMIZE_STREAMING_LATENCY = 3


@dataclass(frozen=True)
class TtsTimeouts:
    connect: float = CONNECT_TIMEOUT_SECONDS
    first_byte: float = FIRST_BYTE_TIMEOUT_SECONDS
    between_chunks: float = BETWEEN_CHUNKS_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Voice:
    stability: float = 0.5
    similarity_boost: float = 0.8
    speed: float = 1.0


# Models that speak English only: a call in another language uses ELEVENLABS_MULTILINGUAL_MODEL instead.
ENGLISH_ONLY_MODELS = frozenset({"eleven_flash_v2", "eleven_turbo_v2", "eleven_monolingual_v1",
                                 "eleven_english_sts_v2"})
# Models that take `language_code` (the API reference: "for Turbo v2.5 and Flash v2.5 models only";
# eleven_multilingual_v2 does not support it and detects the language from the text).
LANGUAGE_CODE_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5"})


def model_and_code(model: str, multilingual_model: str, language: str) -> tuple[str, str | None]:
    """(model_id, language_code or None) for a sentence in `language` (module doc)."""
    if language == "en":
        return model, None
    chosen = multilingual_model if model in ENGLISH_ONLY_MODELS else model
    return chosen, language if chosen in LANGUAGE_CODE_MODELS else None


def ws_base_url(base_url: str) -> str:
    """`ws(s)://host[/prefix]` from an http(s) or ws(s) base URL (empty: ElevenLabs' cloud)."""
    parts = urlsplit((base_url or DEFAULT_BASE_URL).strip())
    secure = parts.scheme in ("https", "wss")
    return ("wss://" if secure else "ws://") + parts.netloc + parts.path.rstrip("/")


def _key(settings: Settings) -> str:
    key = settings.elevenlabs_api_key.strip()
    if not key:
        raise ProviderAuthError(PROVIDER, "ELEVENLABS_API_KEY is not set", status=None)
    return key


# ====================================================================== WebSocket


class ElevenLabsWsTts:
    """The `TextToSpeech` role on ElevenLabs' WebSocket input streaming."""

    name = "elevenlabs-ws"

    def __init__(self, settings: Settings, *, multi_context: bool = True, timeouts: TtsTimeouts | None = None,
                 voice: Voice | None = None, prewarm: bool = True) -> None:
        self._key = _key(settings)
        self.voice_id = settings.elevenlabs_voice_id
        self.model = settings.elevenlabs_model
        self.multi_context = multi_context
        self.timeouts = timeouts or TtsTimeouts()
        self.voice = voice or Voice()
        self.prewarm = prewarm
        # Reopenings after drops, per call, within the window: past it the call moves to the next engine.
        self.reconnects_per_window = settings.provider_reconnects_per_window
        self.reconnect_window = settings.provider_reconnect_window_seconds
        self._init_fields: dict[bool, dict[str, Any]] = {}  # init_message's fields, by multi-context or not
        self.counters = ProviderCounters(PROVIDER, "tts", forward=frozenset())  # the chain reports each attempt
        self.multilingual_model = settings.elevenlabs_multilingual_model
        endpoint = "multi-stream-input" if multi_context else "stream-input"
        self._endpoint = f"{ws_base_url(settings.elevenlabs_base_url)}/v1/text-to-speech/{self.voice_id}/{endpoint}"
        self.url = self.url_for("en")

    def url_for(self, language: str) -> str:
        """The socket URL for sentences in `language`: its model and language code (module doc)."""
        model, code = model_and_code(self.model, self.multilingual_model, language)
        query = {"model_id": model, "output_format": OUTPUT_FORMAT, "inactivity_timeout": INACTIVITY_TIMEOUT_SECONDS}
        if code is not None:
            query["language_code"] = code
        return f"{self._endpoint}?{urlencode(query)}"

    def open_stream(self, call: CallInfo) -> "ElevenLabsMultiStream | ElevenLabsSingleStream":
        stream: ElevenLabsMultiStream | ElevenLabsSingleStream
        stream = ElevenLabsMultiStream(self, call) if self.multi_context else ElevenLabsSingleStream(self, call)
        if self.prewarm:
            stream.prewarm()
        return stream

    async def connect(self, language: str = "en") -> ClientConnection:
        """One socket, with the key in the header (never in a message, so never in a server log)."""
        try:
            return await connect(self.url_for(language), additional_headers={"xi-api-key": self._key},
                                 compression=None,
                                 open_timeout=self.timeouts.connect, close_timeout=CLOSE_TIMEOUT_SECONDS,
                                 ping_interval=WS_PING_INTERVAL_SECONDS, ping_timeout=WS_PING_TIMEOUT_SECONDS)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise ProviderAuthError(PROVIDER, f"key refused (HTTP {status})", status=status) from None
            raise ProviderError(PROVIDER, f"handshake refused (HTTP {status})", status=status,
                                retryable=status >= 500 or status == 429) from None
        except TimeoutError:
            raise ProviderTimeout(PROVIDER, f"connect timed out after {self.timeouts.connect:g} s") from None
        except Exception as exc:  # refused, reset, InvalidHandshake, InvalidURI
            raise ProviderError(PROVIDER, f"connect failed: {type(exc).__name__}") from None

    def init_message(self, context_id: str | None = None) -> str:
        """The first message of a socket (stream-input) or of a context (multi-stream-input)."""
        multi = context_id is not None
        fields = self._init_fields.get(multi)
        if fields is None:  # built through the SDK's models once: they cost ~100 µs a message
            voice = RealtimeVoiceSettings(stability=self.voice.stability,
                                          similarity_boost=self.voice.similarity_boost, speed=self.voice.speed)
            model = (InitializeConnectionMulti(context_id=_CONTEXT_SLOT, voice_settings=voice) if multi
                     else InitializeConnection(voice_settings=voice))
            # generation_config as a plain dict: the SDK's GenerationConfig sends the schedule as floats.
            fields = self._init_fields[multi] = _fields(
                model, generation_config={"chunk_length_schedule": list(CHUNK_LENGTH_SCHEDULE)})
        if multi:
            fields = {k: (context_id if v == _CONTEXT_SLOT else v) for k, v in fields.items()}
        return orjson.dumps(fields).decode()


# Stands for the context id in the cached first message of a context.
_CONTEXT_SLOT = "\x00context-id"


class _Final:
    """Queue marker: the context's audio is complete."""


class _Failure:
    def __init__(self, reason: str) -> None:
        self.reason = reason


_FINAL = _Final()


class _Context:
    __slots__ = ("queue", "discard")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | _Final | _Failure] = asyncio.Queue()
        self.discard = False  # cancelled: drop late audio until isFinal


async def _next_item(queue: asyncio.Queue[Any], deadline: ReadDeadline, timeout: float, what: str,
                     heard: bool) -> Any:
    if not queue.empty():
        return queue.get_nowait()  # the reader delivered several chunks in one go: no wait, no deadline
    try:
        return await deadline.read(queue.get(), asyncio.get_running_loop().time() + timeout)
    except TimeoutError:
        error = ProviderTimeout(PROVIDER, f"no {what} within {timeout:g} s", heard_anything=heard)
        if heard:
            error.retryable = False
        raise error from None


def _decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _audio_of(data: dict[str, Any]) -> bytes:
    """The audio of an `AudioOutput` / `AudioOutputMulti` message (the SDK's `audio` field, base64).

    Read from the dict rather than through the SDK's `construct_type`: that builds a pydantic model
    per message (type hints resolved each time), which was 11 % of the gateway's CPU at 50 calls."""
    audio = data.get("audio")
    if not isinstance(audio, str) or not audio:
        return b""
    try:
        return base64.b64decode(audio)
    except (ValueError, TypeError):
        return b""


def _server_error(data: dict[str, Any]) -> str | None:
    """ElevenLabs reports a refused message as `{"message", "error", "code"}` before closing."""
    if "audio" in data or "isFinal" in data:
        return None
    if "error" in data or "message" in data:
        return str(data.get("error") or data.get("message"))[:120]
    return None


class ElevenLabsMultiStream:
    """One multi-stream-input socket for a call; one context per sentence."""

    def __init__(self, owner: ElevenLabsWsTts, call: CallInfo) -> None:
        self._owner = owner
        self._call = call
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[ClientConnection] | None = None
        self._ws_language = ""  # the language the socket was opened for (its model and language_code)
        self._contexts: dict[str, _Context] = {}
        self._ids = itertools.count(1)
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._retired: set[ClientConnection] = set()  # sockets we closed ourselves: their end is no drop
        self._last_sent = 0.0  # loop time text last went out (a socket idle long enough may be closed)
        self._dropped = False  # the last socket was lost unasked: the next one is a reconnect
        self._reconnects: deque[float] = deque()  # reopenings after a drop, within reconnect_window
        self.connections = 0
        self.drops = 0
        # Set by the fallback chain: "dropped" for its breaker (providers.chain).
        self.on_health: Callable[[str], None] | None = None

    def prewarm(self) -> None:
        """Start the handshake now, so the greeting's first sentence does not wait for it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start_connect()

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if self._closed:
            raise ProviderError(PROVIDER, "stream is closed", retryable=False)
        text = text.strip()
        if not text:
            return
        owner = self._owner
        owner.counters.count("request")
        ctx_id = f"s{next(self._ids)}"
        ctx = _Context()
        heard = False
        finished = False
        closed_context = False
        ws: ClientConnection | None = None
        deadline = ReadDeadline()
        try:
            for attempt in (1, 2):
                ws = await self._socket()
                self._contexts[ctx_id] = ctx
                try:
                    self._last_sent = asyncio.get_running_loop().time()
                    await ws.send(owner.init_message(ctx_id))
                    await ws.send(_json(SendTextMulti(text=text + " ", context_id=ctx_id, flush=True)))
                    await ws.send(_json(CloseContext(context_id=ctx_id, close_context=True)))
                    closed_context = True
                    break
                except ConnectionClosed:
                    # Most likely the server closed the idle socket as we wrote: one fresh socket.
                    self._contexts.pop(ctx_id, None)
                    self._forget(ws)
                    if attempt == 2:
                        raise ProviderError(PROVIDER, "socket closed while sending text") from None
            timeout, what = owner.timeouts.first_byte, "first audio"
            while True:
                item = await _next_item(ctx.queue, deadline, timeout, what, heard)
                if item is _FINAL:
                    finished = True
                    return
                if isinstance(item, _Failure):
                    error = ProviderError(PROVIDER, item.reason, heard_anything=heard)
                    if heard:
                        error.retryable = False
                    raise error
                heard = True
                yield item
                timeout, what = owner.timeouts.between_chunks, "audio between chunks"
        except ProviderError as exc:
            owner.counters.count("error")
            if isinstance(exc, ProviderTimeout) and ws is not None:
                self._forget(ws, close=True)  # a stalled socket: the next sentence opens another
            raise
        finally:
            deadline.close()
            if finished:
                self._contexts.pop(ctx_id, None)
            elif ctx_id in self._contexts:
                ctx.discard = True  # cancelled or failed: its late audio is dropped on arrival
                if not closed_context and ws is not None and ws.state is State.OPEN:
                    self._spawn(_send_quietly(ws, _json(CloseContext(context_id=ctx_id, close_context=True))))

    async def close(self) -> None:
        """Close the socket (no close_socket: that would flush every context). Never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._connecting is not None and not self._connecting.done():
                self._connecting.cancel()
            ws = self._ws
            if ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_SECONDS)
            for task in [self._reader, *self._background]:
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(t for t in [self._reader, self._connecting, *self._background] if t is not None),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("closing the ElevenLabs socket failed (call %s)", self._call.call_sid)
        finally:
            self._ws = None
            self._contexts.clear()

    # ------------------------------------------------------------------ the socket

    def _start_connect(self) -> asyncio.Task[ClientConnection]:
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(_consume)  # its awaiter may have been cancelled meanwhile
        return task

    async def _socket(self) -> ClientConnection:
        ws = self._ws
        if ws is not None and ws.state is State.OPEN:
            if self._ws_language == self._call.language.code:
                return ws
            self._forget(ws, close=True)  # the call changed language: a socket for the new one (module doc)
        if self._dropped and (self._connecting is None or self._connecting.done()):
            # Reopening after a drop: bounded per call (module doc).
            owner, now = self._owner, asyncio.get_running_loop().time()
            recent = self._reconnects
            while recent and now - recent[0] > owner.reconnect_window:
                recent.popleft()
            if len(recent) >= owner.reconnects_per_window:
                raise ProviderError(PROVIDER, f"connection flapping: {len(recent)} reconnects within "
                                              f"{owner.reconnect_window:g} s", retryable=False)
            recent.append(now)
            self._dropped = False
        # A connect in flight is shared; a finished one (failed, or its socket since lost) is redone.
        # Shielded: a sentence cancelled during the handshake must not abort the call's socket.
        return await asyncio.shield(self._start_connect())

    async def _open(self) -> ClientConnection:
        language = self._call.language.code
        ws = await self._owner.connect(language)
        if self._closed:
            await ws.close()
            raise ProviderError(PROVIDER, "stream is closed", retryable=False)
        self.connections += 1
        self._ws = ws
        self._ws_language = language
        self._reader = asyncio.get_running_loop().create_task(self._read(ws))
        return ws

    def _forget(self, ws: ClientConnection, close: bool = False) -> None:
        if self._ws is ws:
            self._ws = None
        self._retired.add(ws)
        if close:
            self._spawn(_close_quietly(ws))

    async def _read(self, ws: ClientConnection) -> None:
        reason = "socket closed"
        try:
            async for raw in ws:
                data = _decode(raw)
                if data is None:
                    continue
                ctx_id = data.get("contextId") or data.get("context_id")
                if audio := _audio_of(data):
                    ctx = self._contexts.get(str(ctx_id))
                    if ctx is not None and not ctx.discard:
                        ctx.queue.put_nowait(audio)
                elif data.get("isFinal") is True:
                    ctx = self._contexts.get(str(ctx_id))
                    if ctx is not None:
                        if ctx.discard:
                            self._contexts.pop(str(ctx_id), None)
                        else:
                            ctx.queue.put_nowait(_FINAL)
                else:
                    error = _server_error(data)
                    if error is not None:
                        reason = f"server error: {error}"  # the close that follows keeps this reason
                        log.warning("ElevenLabs error message: %s (call %s)", error, self._call.call_sid)
        except ConnectionClosed as exc:
            if not reason.startswith("server error"):
                code = exc.rcvd.code if exc.rcvd is not None else None
                reason = f"socket lost (code {code})" if code else "socket lost"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"socket failed: {type(exc).__name__}"
        finally:
            if self._ws is ws:
                self._ws = None
            idle = asyncio.get_running_loop().time() - self._last_sent >= INACTIVITY_TIMEOUT_SECONDS - IDLE_CLOSE_SLACK_SECONDS
            if not self._closed and ws not in self._retired and not idle:
                self._on_drop(reason)
            self._retired.discard(ws)
            # Every sentence waiting on this socket fails; discarded ones are simply forgotten.
            for ctx_id, ctx in list(self._contexts.items()):
                if not ctx.discard:
                    ctx.queue.put_nowait(_Failure(reason))
                self._contexts.pop(ctx_id, None)

    def _on_drop(self, reason: str) -> None:
        self.drops += 1
        self._dropped = True
        log.warning("ElevenLabs socket dropped (%s) (call %s)", reason, self._call.call_sid)
        if self.on_health is not None:
            try:
                self.on_health("dropped")
            except Exception:  # the chain's bookkeeping must not break the reader
                log.exception("TTS health callback failed (call %s)", self._call.call_sid)

    def _spawn(self, coro: typing.Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class ElevenLabsSingleStream:
    """stream-input: one socket per sentence, the next one opened while the current one speaks."""

    def __init__(self, owner: ElevenLabsWsTts, call: CallInfo) -> None:
        self._owner = owner
        self._call = call
        self._spare: asyncio.Task[ClientConnection] | None = None
        self._spare_language = ""  # the language the spare socket is being opened for
        self._live: set[ClientConnection] = set()
        self._closed = False
        self.connections = 0

    def prewarm(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._prepare_spare()

    def _prepare_spare(self) -> None:
        if self._closed or self._spare is not None:
            return
        self._spare_language = self._call.language.code
        self._spare = asyncio.get_running_loop().create_task(self._owner.connect(self._spare_language))
        self._spare.add_done_callback(_consume)

    async def _take_socket(self) -> ClientConnection:
        spare = self._spare
        if spare is not None:
            # Shielded: if this sentence is cancelled meanwhile, the spare stays for the next one.
            try:
                ws: ClientConnection | None = await asyncio.shield(spare)
            except ProviderAuthError:
                self._spare = None
                raise
            except ProviderError:
                ws = None  # the spare failed to open: try once more, now
            self._spare = None
            if ws is not None and ws.state is State.OPEN:
                if self._spare_language == self._call.language.code:
                    self.connections += 1
                    return ws
                _close_soon(ws)  # opened for the language the call has since left
        ws = await self._owner.connect(self._call.language.code)
        self.connections += 1
        return ws

    async def _open_and_send(self, text: str) -> ClientConnection:
        """A socket with the sentence sent: the spare, or a fresh one if the spare was closed
        (the server closes idle sockets) by the time it was used."""
        owner = self._owner
        for attempt in (1, 2):
            try:
                ws = await self._take_socket()
            except ProviderError:
                owner.counters.count("error")
                raise
            self._prepare_spare()
            try:
                await ws.send(owner.init_message())
                await ws.send(_json(SendText(text=text + " ", flush=True)))
                await ws.send(_json(CloseConnection()))
                self._live.add(ws)
                return ws
            except ConnectionClosed:
                if attempt == 2:
                    owner.counters.count("error")
                    raise ProviderError(PROVIDER, "socket closed while sending text") from None
            except BaseException:
                _close_soon(ws)
                raise
        raise AssertionError("unreachable")

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if self._closed:
            raise ProviderError(PROVIDER, "stream is closed", retryable=False)
        text = text.strip()
        if not text:
            return
        owner = self._owner
        owner.counters.count("request")
        heard = False
        ws = await self._open_and_send(text)
        try:
            timeout, what = owner.timeouts.first_byte, "first audio"
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        raw = await ws.recv()
                except TimeoutError:
                    error = ProviderTimeout(PROVIDER, f"no {what} within {timeout:g} s", heard_anything=heard)
                    error.retryable = not heard
                    raise error from None
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    error = ProviderError(PROVIDER, f"socket lost before the end of the sentence (code {code})",
                                          heard_anything=heard, retryable=not heard)
                    raise error from None
                data = _decode(raw)
                if data is None:
                    continue
                if audio := _audio_of(data):
                    heard = True
                    yield audio
                    timeout, what = owner.timeouts.between_chunks, "audio between chunks"
                elif data.get("isFinal") is True:
                    return
                elif (error_text := _server_error(data)) is not None:
                    raise ProviderError(PROVIDER, f"server error: {error_text}", heard_anything=heard,
                                        retryable=not heard)
        except ProviderError:
            owner.counters.count("error")
            raise
        finally:
            self._live.discard(ws)
            _close_soon(ws)  # cancelled mid-sentence or done: this socket is spent either way

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            spare = self._spare
            self._spare = None
            sockets = list(self._live)
            if spare is not None:
                if not spare.done():
                    spare.cancel()
                (opened,) = await asyncio.gather(spare, return_exceptions=True)
                if isinstance(opened, ClientConnection):
                    sockets.append(opened)
            await asyncio.gather(*(_close_quietly(ws) for ws in sockets),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("closing the ElevenLabs stream failed (call %s)", self._call.call_sid)


def _fields(model: Any, **extra: Any) -> dict[str, Any]:
    """An SDK message model's wire fields (aliases, no nulls), with `extra` fields added."""
    data = model.dict(by_alias=True, exclude_none=True)
    data.update(extra)
    return data


def _json(model: Any, **extra: Any) -> str:
    """An SDK message model as JSON text."""
    return orjson.dumps(_fields(model, **extra)).decode()


async def _send_quietly(ws: ClientConnection, message: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send(message)


async def _close_quietly(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_SECONDS)


def _close_soon(ws: ClientConnection) -> None:
    if ws.state is not State.CLOSED:
        task = asyncio.get_running_loop().create_task(_close_quietly(ws))
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)


# Background closes, referenced until done (the event loop keeps only weak references to tasks).
_CLOSING: set[asyncio.Task[None]] = set()


def _consume(task: asyncio.Task[Any]) -> None:
    """Done callback: fetch a background task's exception so asyncio does not log it as unretrieved."""
    if not task.cancelled():
        task.exception()


# ====================================================================== HTTP


class ElevenLabsHttpTts:
    """The `TextToSpeech` role on `POST /v1/text-to-speech/{voice_id}/stream` through the SDK."""

    name = "elevenlabs-http"

    def __init__(self, settings: Settings, *, timeouts: TtsTimeouts | None = None, voice: Voice | None = None,
                 chunk_size: int = HTTP_CHUNK_BYTES) -> None:
        key = _key(settings)
        self.voice_id = settings.elevenlabs_voice_id
        self.model = settings.elevenlabs_model
        self.multilingual_model = settings.elevenlabs_multilingual_model
        self.timeouts = timeouts or TtsTimeouts()
        self.voice = voice or Voice()
        self.chunk_size = chunk_size
        self.counters = ProviderCounters(PROVIDER, "tts", forward=frozenset())  # the chain reports each attempt
        # The SDK passes one float per request (connect, read, write, pool alike); the first-byte and
        # between-chunk budgets are enforced around each chunk below, this is the backstop.
        backstop = max(self.timeouts.connect, self.timeouts.between_chunks)
        self._http = httpx.AsyncClient(timeout=backstop)
        self.client = AsyncElevenLabs(api_key=key, base_url=settings.elevenlabs_base_url.strip() or None,
                                      timeout=backstop, httpx_client=self._http)

    def open_stream(self, call: CallInfo) -> "ElevenLabsHttpStream":
        return ElevenLabsHttpStream(self, call)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._http.aclose()


class ElevenLabsHttpStream:
    def __init__(self, owner: ElevenLabsHttpTts, call: CallInfo | None = None) -> None:
        self._owner = owner
        self._language = call.language if call is not None else SpokenLanguage()  # read at each sentence

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        owner = self._owner
        text = text.strip()
        if not text:
            return
        owner.counters.count("request")
        model, code = model_and_code(owner.model, owner.multilingual_model, self._language.code)
        language = {"language_code": code} if code is not None else {}  # left out, it is not sent at all
        chunks = owner.client.text_to_speech.stream(
            owner.voice_id, text=text, model_id=model, output_format=OUTPUT_FORMAT, **language,
            optimize_streaming_latency=OPTIMIZE_STREAMING_LATENCY,
            voice_settings=VoiceSettings(stability=owner.voice.stability,
                                         similarity_boost=owner.voice.similarity_boost, speed=owner.voice.speed),
            request_options={"chunk_size": owner.chunk_size, "max_retries": 0},
        ).__aiter__()
        heard = False
        timeout, what = owner.timeouts.first_byte, "first audio"
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await anext(chunks, None)
                except TimeoutError:
                    raise ProviderTimeout(PROVIDER, f"no {what} within {timeout:g} s", heard_anything=heard) from None
                if chunk is None:
                    return
                if chunk:
                    heard = True
                    yield chunk
                    timeout, what = owner.timeouts.between_chunks, "audio between chunks"
        except ProviderError as exc:
            owner.counters.count("error")
            if heard:
                exc.heard_anything, exc.retryable = True, False
            raise
        except ApiError as exc:
            owner.counters.count("error")
            raise _http_error(exc.status_code, heard) from None
        except httpx.TimeoutException:
            owner.counters.count("error")
            raise ProviderTimeout(PROVIDER, "HTTP timeout", heard_anything=heard) from None
        except httpx.HTTPError as exc:
            owner.counters.count("error")
            error = ProviderError(PROVIDER, f"HTTP stream failed: {type(exc).__name__}", heard_anything=heard)
            error.retryable = not heard
            raise error from None
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]


def _http_error(status: int | None, heard: bool) -> ProviderError:
    if status in (401, 403):
        return ProviderAuthError(PROVIDER, f"key refused (HTTP {status})", status=status)
    retryable = status is None or status >= 500 or status in (408, 409, 429)
    error = ProviderError(PROVIDER, f"HTTP {status}", status=status, retryable=retryable and not heard,
                          heard_anything=heard)
    return error
