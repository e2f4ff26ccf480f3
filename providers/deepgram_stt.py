"""Deepgram live speech-to-text through the official SDK (deepgram-sdk 7, PROTOCOLS.md §1).

One WebSocket per call, opened in `start()` and kept for the whole call (not one per turn): a
handshake costs a round trip or two, and Deepgram's endpointing works best on one continuous stream.

How the stream stays alive and loses nothing:

- The gateway forwards audio only while the caller speaks, and Deepgram closes a socket that hears
  neither audio nor a KeepAlive for 10 s (NET-0001). SDK 7 has no automatic KeepAlive, so a
  watchdog task sends one whenever `keepalive_seconds` passed without audio.
- `send_audio` never blocks: frames go into a `ReplayBuffer` and one sender task drains it. The
  buffer keeps every byte not yet covered by a final transcript (bounded), so when the socket drops
  the stream reconnects after a capped, jittered backoff and replays that audio: the caller's words
  in flight are transcribed on the new socket instead of being lost.
- A Finalize (the local VAD ended the turn) left unanswered for `result_timeout` by a server that
  also ignored the audio sent before it means a stalled socket: it is treated like a drop
  (reconnect, replay, Finalize again).
- A refused key (HTTP 401/403 at the handshake) is not retried. When the stream gives up, for that
  or after too many reconnects, it reports one `SttResult(error=...)` so the call can apologise.

Deepgram's audio clock restarts at zero on every socket; `conn_base` maps a result's audio time
back to a byte offset of the call's stream, which is how a final result trims the replay buffer.

No second answer from a replay. The buffer is trimmed in whole chunks, so a replay can start a little
before the end of the last final, and a replay after a drop during the reply re-sends the tail of
words already answered: a real engine transcribes that tail again ("appointment"), and it would be
answered as a new turn and cut off the reply the caller is hearing. The stream remembers how far the
finals it delivered reach in the call's own stream (`_covered_upto`); on a new socket, the words of
a result (final or interim) that lie before that point are dropped, and a result left with no words
is not delivered at all (an interim of it would also have been taken for a barge-in).

A socket that keeps dropping is bounded twice. Per call: more than `reconnects_per_window`
reconnects within `reconnect_window` seconds and the stream gives up, so the call moves to the next
engine (whisper) for the rest of the call. Across calls: the chain's breaker hears every drop
(`on_health("dropped")`) and every connection that proved itself (`on_health("stable")`: a final
result, or `stable_seconds` alive), so new calls skip a flapping provider (`providers.chain`).
WebSocket pings (`WS_PING_INTERVAL_SECONDS`) find a socket whose peer stopped answering while the
caller is silent, when no Finalize is waiting to reveal it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import orjson

with warnings.catch_warnings():
    # deepgram-sdk 7 imports websockets.legacy names that websockets >= 14 deprecates (PROTOCOLS §1).
    # Harmless and raised only at import: the listen client module is imported here, once, for that.
    warnings.simplefilter("ignore", DeprecationWarning)
    from deepgram import AsyncDeepgramClient
    from deepgram.core.api_error import ApiError
    from deepgram.environment import DeepgramClientEnvironment
    from deepgram.listen.v1 import client as _listen_client
    from deepgram.listen.v1 import raw_client as _listen_raw_client
    from websockets.legacy.exceptions import InvalidStatusCode as _SdkInvalidStatus  # what the SDK catches

import websockets.asyncio.client
import websockets.exceptions
from websockets.frames import DATA_OPCODES, Frame, Opcode

from providers.settings import Settings
from providers.ws_direct import can_send_now, write_now
from providers.base import CallInfo, ProviderAuthError, ProviderError, SttCallback, SttResult
from providers.retry import ProviderCounters, backoff_delay

log = logging.getLogger("voicegate.stt.deepgram")


@contextlib.asynccontextmanager
async def _connect(uri: str, *, extra_headers: Mapping[str, str] | None = None):
    """The socket under the SDK's `listen.v1.connect`, which builds the URL and headers, wraps the
    socket in its `AsyncV1SocketClient` and maps a refused handshake to `ApiError`.

    Two things differ from the SDK's own `websockets.legacy.client.connect`:
    - websockets' asyncio implementation instead of the legacy one. The legacy client reads every
      message in a background task that hands it to `recv()` through a queue: two event-loop turns
      between a result's bytes and its handler, each one a wait behind whatever else is ready (at
      100 calls, the end of a turn waited there up to 2.6 ms at p99). The asyncio one parses frames
      in `data_received` and wakes the reader once.
    - No offer of permessage-deflate: with websockets' defaults zlib ran on every 100 ms of caller
      audio (mu-law barely shrinks) and on every result, on both ends, for a few hundred bytes a
      second (tests/providers/test_deepgram_stt.py checks the handshake).
    A refused handshake is raised as the legacy exception the SDK catches, so its error mapping
    (401 -> "invalid credentials") still runs."""
    try:
        conn = await websockets.asyncio.client.connect(uri, additional_headers=extra_headers, compression=None,
                                                       create_connection=DispatchingConnection,
                                                       ping_interval=WS_PING_INTERVAL_SECONDS,
                                                       ping_timeout=WS_PING_TIMEOUT_SECONDS)
    except websockets.exceptions.InvalidStatus as exc:
        raise _SdkInvalidStatus(exc.response.status_code, exc.response.headers) from None
    async with conn:
        yield conn


class DispatchingConnection(websockets.asyncio.client.ClientConnection):
    """A client socket that hands each text message to `on_text` as its bytes are parsed, in
    `data_received`, once one is set. Read through `recv()`, a Deepgram final would wait a loop turn
    for the reader task to wake, behind everything else ready; this way the LLM request for the turn
    goes out in the turn its transcript arrived. A message in fragments, and anything while one is
    being reassembled, still goes through `recv()`, in order."""

    on_text: Callable[[str], None] | None = None
    _fragmented = False

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and self.response is not None:
            if self.on_text is not None and event.opcode is Opcode.TEXT and event.fin and not self._fragmented:
                try:
                    text = event.data.decode()
                except UnicodeDecodeError:
                    pass  # recv() raises it, as for any peer sending invalid UTF-8
                else:
                    self.on_text(text)
                    return
            if event.opcode in DATA_OPCODES:
                self._fragmented = not event.fin
        super().process_event(event)


# (`listen.v1.connect` and its raw form each import the connect function under this name.)
_listen_client.websockets_client_connect = _listen_raw_client.websockets_client_connect = _connect


def _fix_headers(client: AsyncDeepgramClient) -> None:
    """Compute the client's request headers once.

    The SDK's client wrapper rebuilds them for every socket it opens, and its User-Agent comes from
    `importlib.metadata.version("deepgram-sdk")`: a scan of sys.path and an email-format parse of the
    package's METADATA file, 1-2 ms of blocking file I/O on the event loop at every call's start
    (more than half of opening the socket). The headers (SDK name and version, platform, the key)
    never change for a client. If a future SDK moves the wrapper, it keeps its own behaviour."""
    wrapper = getattr(client, "_client_wrapper", None)
    get_headers = getattr(wrapper, "get_headers", None)
    if get_headers is None:
        return
    fixed = dict(get_headers())
    wrapper.get_headers = lambda: dict(fixed)  # a copy: the SDK adds to what it gets


PROVIDER = "deepgram"
BYTES_PER_SECOND = 8000  # mu-law, 8 kHz, mono: one byte per sample

# Deepgram closes after 10 s without audio or KeepAlive; its docs ask for one every 3-5 s.
KEEPALIVE_SECONDS = 4.0
# A handshake to a healthy region takes 100-300 ms; 3 s means the endpoint is not answering.
CONNECT_TIMEOUT_SECONDS = 3.0
# close(): CloseStream makes Deepgram flush its last results and a Metadata summary, then close.
CLOSE_TIMEOUT_SECONDS = 1.5
# After Finalize a final result normally follows within ~100-300 ms; 3 s without one is a stall...
RESULT_TIMEOUT_SECONDS = 3.0
# ...but only if the server also ignored this much audio: Deepgram answers a Finalize only "when
# there is a noticeable amount of audio buffered", so silence after a Finalize that followed its
# own speech_final is normal, and must not cost a reconnect.
STALL_MIN_AUDIO_BYTES = BYTES_PER_SECOND // 2
# Connect attempts in a row that may fail (refused, timed out, dropped early) before the stream gives
# up; the waits between them grow ~0.15, 0.3, 0.6 s (providers.retry.backoff_delay).
MAX_CONNECT_ATTEMPTS = 4
# Reconnects over a whole call: a socket that keeps dying is worse than falling back.
MAX_RECONNECTS_PER_CALL = 20
# ...and within a window (the defaults of Settings.provider_reconnects_per_window and _window_seconds):
# past 3 in 30 s the provider is flapping, and whisper for the rest of the call beats more replays.
RECONNECTS_PER_WINDOW = 3
RECONNECT_WINDOW_SECONDS = 30.0
# WebSocket pings: a peer that stopped answering (a half-open connection: no FIN, no RST) is found
# within interval + timeout even while nothing else is sent or awaited. A pong comes back in one round
# trip (<0.3 s to any region); 5 s without one is a dead path, not a slow one. websockets' defaults
# (20 + 20 s) would leave a caller's next utterance to find it, 3 s after its Finalize.
WS_PING_INTERVAL_SECONDS = 5.0
WS_PING_TIMEOUT_SECONDS = 5.0
# A socket that delivered a final result or lived this long was healthy: its drop starts a fresh count.
STABLE_CONNECTION_SECONDS = 10.0
# Audio kept for replay: an utterance longer than this without any final result is cut at its
# start on reconnect. 30 s matches max_utterance_seconds; 240 kB per call.
REPLAY_SECONDS = 30.0
# A dropped socket's close handshake runs in the background for at most this long.
SOCKET_CLOSE_SECONDS = 2.0
# Replayed audio goes out in messages of up to this much (fewer frames than 20 ms each).
REPLAY_MESSAGE_BYTES = BYTES_PER_SECOND // 2

LISTEN_OPTIONS: Mapping[str, Any] = {
    "encoding": "mulaw", "sample_rate": 8000, "channels": 1, "interim_results": True,
    "endpointing": 300,  # ms of silence Deepgram waits before speech_final
    "utterance_end_ms": 1000,  # UtteranceEnd after 1 s without words: a backstop for noisy lines
    "vad_events": True, "smart_format": True, "punctuate": True, "language": "en-US",
}


def language_options(languages: tuple[str, ...]) -> dict[str, Any]:
    """The listen parameters for the call languages. One: that language (English as it always was,
    en-US). More: nova-3's multilingual mode, `language=multi`, which transcribes each word in the
    language it was spoken in and labels it (`words[].language`, and the alternative's `languages`
    by word count), biased toward the configured ones with `language_hint`. Deepgram's
    `detect_language` is for pre-recorded audio only: the SDK's live `connect` has no such parameter."""
    if len(languages) > 1:
        return {"language": "multi", "language_hint": list(languages)}
    return {"language": "en-US" if languages in ((), ("en",)) else languages[0]}


def result_language(alternative: Any) -> str:
    """The language most of a result's words were in: the alternative's `languages` (sorted by word
    count), else the words' own `language` tags; "" when the result carries none (monolingual mode)."""
    tags = _get(alternative, "languages")
    if isinstance(tags, (list, tuple)) and tags and isinstance(tags[0], str):
        return tags[0]
    counts: dict[str, int] = {}
    for word in _get(alternative, "words") or ():
        tag = _get(word, "language")
        if isinstance(tag, str) and tag:
            counts[tag] = counts.get(tag, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else ""


def deepgram_environment(base_url: str) -> DeepgramClientEnvironment:
    """The SDK environment for `base_url` (any of ws/wss/http/https): both forms from one URL."""
    if not base_url.strip():
        return DeepgramClientEnvironment.PRODUCTION
    parts = urlsplit(base_url.strip())
    secure = parts.scheme in ("https", "wss")
    rest = parts.netloc + parts.path.rstrip("/")
    http = ("https://" if secure else "http://") + rest
    ws = ("wss://" if secure else "ws://") + rest
    return DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)


class ReplayBuffer:
    """Caller audio not yet covered by a final transcript, and how much of it this socket has sent.

    Offsets count bytes from the start of the call's audio. `rewind()` (a new socket) marks all of
    it unsent again; `finalize_upto(offset)` drops what a final result covered. Bounded: past
    `limit` bytes the oldest audio is dropped, sent or not."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self.start = 0  # offset of the first byte held
        self.size = 0  # bytes held
        self._unsent = 0  # index into _chunks of the first chunk this socket has not sent
        self.dropped = 0  # bytes lost to the bound

    @property
    def end(self) -> int:
        return self.start + self.size

    def append(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self.size += len(data)
        while self.size > self.limit and len(self._chunks) > 1:
            self._pop_left()

    def has_unsent(self) -> bool:
        return self._unsent < len(self._chunks)

    def take_unsent(self, max_bytes: int) -> bytes:
        """The next unsent audio (one chunk, or several joined up to `max_bytes`), marked sent."""
        if not self.has_unsent():
            return b""
        parts = [self._chunks[self._unsent]]
        self._unsent += 1
        total = len(parts[0])
        while self._unsent < len(self._chunks) and total + len(self._chunks[self._unsent]) <= max_bytes:
            parts.append(self._chunks[self._unsent])
            total += len(parts[-1])
            self._unsent += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def rewind(self) -> None:
        self._unsent = 0

    def finalize_upto(self, offset: int) -> None:
        """Drop whole chunks that end at or before `offset` (a final result covered them)."""
        while self._chunks and self.start + len(self._chunks[0]) <= offset:
            self._pop_left(count_dropped=False)

    def clear(self) -> None:
        self.start = self.end
        self._chunks.clear()
        self.size = 0
        self._unsent = 0

    def _pop_left(self, count_dropped: bool = True) -> None:
        chunk = self._chunks.popleft()
        self.start += len(chunk)
        self.size -= len(chunk)
        if self._unsent > 0:
            self._unsent -= 1
        elif count_dropped:
            self.dropped += len(chunk)


@dataclass(frozen=True)
class DeepgramOptions:
    keepalive_seconds: float = KEEPALIVE_SECONDS
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS
    close_timeout: float = CLOSE_TIMEOUT_SECONDS
    result_timeout: float = RESULT_TIMEOUT_SECONDS
    max_connect_attempts: int = MAX_CONNECT_ATTEMPTS
    max_reconnects: int = MAX_RECONNECTS_PER_CALL
    reconnects_per_window: int = RECONNECTS_PER_WINDOW
    reconnect_window: float = RECONNECT_WINDOW_SECONDS
    stable_seconds: float = STABLE_CONNECTION_SECONDS
    replay_seconds: float = REPLAY_SECONDS
    # Extra query parameters (e.g. the emulator's `emulator_script`), merged into the listen URL.
    extra_query: Mapping[str, str] = field(default_factory=dict)


class DeepgramStt:
    """The `SpeechToText` role on Deepgram's live streaming API."""

    name = "deepgram"

    def __init__(self, settings: Settings, options: DeepgramOptions | None = None) -> None:
        key = settings.deepgram_api_key.strip()
        if not key:
            raise ProviderAuthError(PROVIDER, "DEEPGRAM_API_KEY is not set", status=None)
        self.options = options or DeepgramOptions(
            reconnects_per_window=settings.provider_reconnects_per_window,
            reconnect_window=settings.provider_reconnect_window_seconds)
        self.model = settings.deepgram_model or "nova-3"
        self.languages = settings.call_languages  # more than one: multilingual mode (language_options)
        self.client = AsyncDeepgramClient(api_key=key, environment=deepgram_environment(settings.deepgram_base_url))
        _fix_headers(self.client)
        # The fallback chain reports each stream's request and failure; only the reconnects inside a
        # stream are this client's own to report.
        self.counters = ProviderCounters(PROVIDER, "stt", forward=frozenset({"retry"}))

    def listen_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, **LISTEN_OPTIONS, **language_options(self.languages)}
        if self.options.extra_query:
            kwargs["request_options"] = {"additional_query_parameters": dict(self.options.extra_query)}
        return kwargs

    def open_stream(self, call: CallInfo, on_result: SttCallback) -> "DeepgramStream":
        return DeepgramStream(self, call, on_result)


# Background close handshakes of dropped sockets, referenced until done (asyncio keeps weak refs).
_CLOSING: set[asyncio.Task[None]] = set()


class _Dropped(Exception):
    """The socket failed or ended unasked: reconnect (with backoff) and replay."""


_FINALIZE = "finalize"
_CLOSE = "close"


class DeepgramStream:
    streaming = True

    def __init__(self, owner: DeepgramStt, call: CallInfo, on_result: SttCallback) -> None:
        self._owner = owner
        self._opts = owner.options
        self._call = call
        self._on_result = on_result
        self._buffer = ReplayBuffer(int(self._opts.replay_seconds * BYTES_PER_SECOND))
        self._controls: deque[str] = deque()
        self._wake = asyncio.Event()  # the sender: audio or a control message is waiting
        self._watch_wake = asyncio.Event()  # the watchdog: a Finalize went out, a new deadline
        self._sender_idle = False  # the sender waits on `_wake` with nothing to send: see send_audio
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._conn: Any = None
        self._conn_base = 0  # call-stream offset where the current socket's audio clock starts
        self._last_activity = 0.0  # loop time of the last audio or KeepAlive sent
        self._finalize_sent_at: float | None = None  # awaiting a from_finalize result since then
        self._last_message_at = 0.0  # loop time of the last message from the server
        self._audio_since_message = 0  # bytes sent since then: a server that ignores audio is stalled
        self._healthy = False  # the current socket delivered a final result, or lived stable_seconds
        self._opened_at: float | None = None  # loop time the current socket opened (None: none open)
        self._covered_upto = 0  # call-stream offset up to which delivered finals reach
        self._replay_covered = 0  # _covered_upto when the current socket opened: replayed words before it are old
        self._reconnect_times: deque[float] = deque()  # within reconnect_window
        self._closing = False
        self._closed = False
        self._gave_up = False
        self.reconnects = 0
        self.keepalives_sent = 0
        self.replayed_words_dropped = 0  # words of replayed audio that finals had already delivered
        self.error = ""
        # Set by the fallback chain: "dropped" / "stable" for its breaker (providers.chain).
        self.on_health: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ the SttStream protocol

    async def start(self) -> None:
        """Open the socket (retrying with backoff). Raises the error the stream gave up on."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._supervise(), name=f"deepgram-{self._call.call_sid}")
        await asyncio.shield(self._ready)

    def send_audio(self, mulaw: bytes) -> None:
        if self._closing:
            return
        buffer = self._buffer
        # Nothing ahead of it: the frame may go out now rather than from the sender a loop turn
        # later (the frame that completes the caller's pause is what lets Deepgram end the turn).
        direct = self._sender_idle and not self._controls and not buffer.has_unsent()
        buffer.append(mulaw)
        if not (direct and self._send_directly()):
            self._wake.set()

    def _send_directly(self) -> bool:
        """What the sender would send next, sent in this call if the socket takes it at once
        (`ws_direct`: the SDK's `send_media` is the socket's `send` of the same bytes)."""
        ws = getattr(self._conn, "_websocket", None)
        if not isinstance(ws, DispatchingConnection) or not can_send_now(ws):
            return False
        audio = self._buffer.take_unsent(REPLAY_MESSAGE_BYTES)
        write_now(ws, audio, binary=True)
        self._last_activity = asyncio.get_running_loop().time()
        self._audio_since_message += len(audio)
        return True

    def end_of_speech(self, utterance: bytes) -> None:
        # Deepgram already has the audio; Finalize flushes what it buffered into a final result.
        if self._closing or _FINALIZE in self._controls:
            return
        self._controls.append(_FINALIZE)
        self._wake.set()

    async def close(self) -> None:
        """CloseStream, a short wait for the last results, then the socket closes. Never raises."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        task = self._task
        try:
            if task is None or task.done():
                return
            if self._conn is not None:
                self._controls.append(_CLOSE)
                self._wake.set()
                await asyncio.wait({task}, timeout=self._opts.close_timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except asyncio.CancelledError:
            if task is not None:
                task.cancel()
            raise
        except Exception:
            log.exception("closing the Deepgram stream failed (call %s)", self._call.call_sid)
        finally:
            self._buffer.clear()

    # ------------------------------------------------------------------ connection supervision

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        counters = self._owner.counters
        try:
            while not self._closing:
                opened_at = loop.time()
                try:
                    await self._run_connection()
                    if self._closing:
                        return
                    reason = "socket closed by the server"
                except ProviderAuthError as exc:
                    counters.count("error")
                    self._give_up(str(exc), exc)
                    return
                except _Dropped as exc:
                    reason = str(exc)
                if self._closing:
                    return
                counters.count("error")
                if self._opened_at is not None:  # a connection that had opened was lost
                    self._opened_at = None
                    self._health("dropped")
                if self._healthy or loop.time() - opened_at >= self._opts.stable_seconds:
                    failures = 0
                failures += 1
                if failures >= self._opts.max_connect_attempts or self.reconnects >= self._opts.max_reconnects:
                    self._give_up(f"gave up after {failures} failed attempts: {reason}",
                                  ProviderError(PROVIDER, reason))
                    return
                now, recent, window = loop.time(), self._reconnect_times, self._opts.reconnect_window
                while recent and now - recent[0] > window:
                    recent.popleft()
                if len(recent) >= self._opts.reconnects_per_window:
                    # Flapping: the next engine for the rest of the call beats another replay.
                    self._give_up(f"flapping: {len(recent)} reconnects within {window:g} s, then lost again "
                                  f"({reason})", ProviderError(PROVIDER, "connection flapping", retryable=False))
                    return
                recent.append(now)
                delay = backoff_delay(failures)
                log.warning("Deepgram socket lost (%s); reconnecting in %.2f s (call %s)", reason, delay,
                            self._call.call_sid)
                await asyncio.sleep(delay)
                counters.count("retry")
                self.reconnects += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the call without its error result
            log.exception("Deepgram stream failed (call %s)", self._call.call_sid)
            self._give_up(f"internal error: {type(exc).__name__}", ProviderError(PROVIDER, type(exc).__name__))
        finally:
            self._conn = None
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)  # closed before it ever connected: nothing to report

    async def _run_connection(self) -> None:
        self._owner.counters.count("request")
        self._healthy = False
        stack = contextlib.AsyncExitStack()
        try:
            try:
                async with asyncio.timeout(self._opts.connect_timeout):
                    conn = await stack.enter_async_context(
                        self._owner.client.listen.v1.connect(**self._owner.listen_kwargs()))
            except TimeoutError:
                raise _Dropped(f"connect timed out after {self._opts.connect_timeout:g} s") from None
            except ApiError as exc:
                if exc.status_code in (401, 403):
                    raise ProviderAuthError(PROVIDER, f"key refused (HTTP {exc.status_code})",
                                            status=exc.status_code) from None
                raise _Dropped(f"handshake refused (HTTP {exc.status_code})") from None
            except OSError as exc:
                raise _Dropped(f"connect failed: {type(exc).__name__}") from None
            except Exception as exc:  # websockets' InvalidHandshake / InvalidURI and the like
                raise _Dropped(f"connect failed: {type(exc).__name__}") from None
            self._conn = conn
            self._opened_at = asyncio.get_running_loop().time()
            self._buffer.rewind()
            self._conn_base = self._buffer.start
            self._replay_covered = self._covered_upto
            self._last_activity = self._last_message_at = asyncio.get_running_loop().time()
            self._audio_since_message = 0
            if self._finalize_sent_at is not None:
                self._finalize_sent_at = None  # set again when it is re-sent
                if _FINALIZE not in self._controls:
                    self._controls.append(_FINALIZE)  # the drop ate its answer: ask again after the replay
            self._wake.set()
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            try:
                await self._pump(conn)
            finally:
                self._conn = None
        except BaseException:
            # A dropped, stalled or cancelled socket: its close handshake (up to the SDK's 10 s
            # close timeout against a dead peer) runs in the background, so neither the reconnect
            # nor close() waits for it.
            self._close_later(stack)
            raise
        await stack.aclose()  # the server closed it cleanly: nothing to wait for

    def _close_later(self, stack: contextlib.AsyncExitStack) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SOCKET_CLOSE_SECONDS):
                    await stack.aclose()

        task = asyncio.get_running_loop().create_task(close())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def _pump(self, conn: Any) -> None:
        receiver = asyncio.create_task(self._receive(conn))
        others = [asyncio.create_task(self._send(conn)), asyncio.create_task(self._watch(conn))]
        tasks = [receiver, *others]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # The receiver's view wins: a send that failed because the socket closed is the same event.
        for t in tasks:
            if t.cancelled():
                continue
            exc = t.exception()
            if exc is not None:
                if isinstance(exc, _Dropped):
                    raise exc
                raise _Dropped(f"{type(exc).__name__}") from exc
            if t is receiver:
                return

    async def _receive(self, conn: Any) -> None:
        """Every message until the socket ends. Returns on a clean close, raises _Dropped otherwise."""
        # The SDK socket's own connection, read as text: the SDK builds a pydantic model per message
        # (2 % of the gateway's CPU at 100 calls), where three fields of a dict are all we read.
        source = getattr(conn, "_websocket", None) or conn
        if isinstance(source, DispatchingConnection):
            source.on_text = self._on_message  # most messages: handled as they arrive
        try:
            async for message in source:  # the rest, and the end of the socket
                self._on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ConnectionClosedError and friends: the socket died
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            raise _Dropped(f"socket lost ({type(exc).__name__}{f', code {code}' if code else ''})") from None
        finally:
            if isinstance(source, DispatchingConnection):
                source.on_text = None  # this stream is done with the socket

    def _on_message(self, message: Any) -> None:
        self._last_message_at = asyncio.get_running_loop().time()
        self._audio_since_message = 0
        try:
            self._handle(message)
        except Exception:  # a malformed result must not take the socket (or its data_received) down
            log.exception("Deepgram message handling failed (call %s)", self._call.call_sid)

    async def _send(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        buffer = self._buffer
        while True:
            if buffer.has_unsent():
                audio = buffer.take_unsent(REPLAY_MESSAGE_BYTES)
                await conn.send_media(audio)
                self._last_activity = loop.time()
                self._audio_since_message += len(audio)
                continue
            if self._controls:
                kind = self._controls[0]
                if kind == _FINALIZE:
                    await conn.send_finalize()
                    self._finalize_sent_at = loop.time()
                    self._watch_wake.set()
                else:
                    await conn.send_close_stream()
                self._controls.popleft()
                continue
            self._wake.clear()
            self._sender_idle = True
            try:
                await self._wake.wait()
            finally:
                self._sender_idle = False

    async def _watch(self, conn: Any) -> None:
        """KeepAlive whenever no audio went out for `keepalive_seconds`. A Finalize left unanswered
        for `result_timeout`, by a server that said nothing at all since and also ignored the audio
        sent before it, is a stalled socket."""
        loop = asyncio.get_running_loop()
        interval = self._opts.keepalive_seconds
        while True:
            now = loop.time()
            if now - self._last_activity >= interval and not self._closing:
                await conn.send_keep_alive()
                self._last_activity = now
                self.keepalives_sent += 1
            if not self._healthy and self._opened_at is not None and now - self._opened_at >= self._opts.stable_seconds:
                self._healthy = True  # alive this long: the connection holds, even with nothing said
                self._health("stable")
            due = self._last_activity + interval
            sent = self._finalize_sent_at
            if sent is not None and now - sent >= self._opts.result_timeout:
                if self._last_message_at < sent and self._audio_since_message >= STALL_MIN_AUDIO_BYTES:
                    raise _Dropped(f"no final result {self._opts.result_timeout:g} s after Finalize")
                self._finalize_sent_at = sent = None  # nothing was left to finalize: no answer is due
            if sent is not None:
                due = min(due, sent + self._opts.result_timeout)
            self._watch_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, due - loop.time())):
                    await self._watch_wake.wait()

    # ------------------------------------------------------------------ messages

    def _handle(self, message: Any) -> None:
        """One server message: JSON text off the socket, or an SDK model (the SDK iterator's fallback).
        Both carry Deepgram's `type`."""
        if isinstance(message, str):
            try:
                message = orjson.loads(message)
            except orjson.JSONDecodeError:
                log.warning("Deepgram sent a message that is not JSON (call %s)", self._call.call_sid)
                return
        elif isinstance(message, bytes):
            return
        kind = _get(message, "type")
        if kind == "Results":
            self._on_results(message)
        elif kind == "UtteranceEnd":
            self._emit(SttResult("", True, True))
        elif kind == "Error":
            log.warning("Deepgram error message: %s (call %s)", _get(message, "description") or
                        _get(message, "message"), self._call.call_sid)
        # Metadata (the summary after CloseStream), SpeechStarted (interim transcripts drive
        # barge-in), unknown types: nothing to do

    def _on_results(self, message: Any) -> None:
        is_final = bool(_get(message, "is_final"))
        from_finalize = bool(_get(message, "from_finalize"))
        end_of_turn = is_final and (bool(_get(message, "speech_final")) or from_finalize)
        alternatives = _get(_get(message, "channel"), "alternatives")
        first = alternatives[0] if isinstance(alternatives, (list, tuple)) and alternatives else None
        text = str(_get(first, "transcript") or "").strip()
        start, duration = _get(message, "start"), _get(message, "duration")
        span_end = (self._conn_base + int((start + duration) * BYTES_PER_SECOND)
                    if isinstance(start, (int, float)) and isinstance(duration, (int, float)) else None)
        if text and self._replay_covered > self._conn_base:
            text = self._unanswered_words(first, text, span_end)  # this socket replays answered audio
        if is_final:
            if not self._healthy:
                self._healthy = True
                self._health("stable")
            if span_end is not None:
                self._buffer.finalize_upto(span_end)
                self._covered_upto = max(self._covered_upto, span_end)
        if from_finalize:
            self._finalize_sent_at = None
        if not text and not end_of_turn:
            return  # silence: an empty interim or an empty mid-turn final says nothing
        self._emit(SttResult(text, is_final, end_of_turn, language=result_language(first) if text else ""))

    def _unanswered_words(self, alternative: Any, text: str, span_end: int | None) -> str:
        """The words of a result on a replaying socket that lie past what delivered finals covered
        (module doc): "" if none; `text` unchanged if every word is new."""
        limit = self._replay_covered
        words = _get(alternative, "words")
        if not isinstance(words, (list, tuple)) or not words:
            # No word timings: the result as a whole is old if it ends within the covered audio.
            return "" if span_end is not None and span_end <= limit else text
        base = self._conn_base
        kept = []
        # A word whose middle lies before the limit was answered. The middle, not its end: an engine
        # times the same audio a few tens of ms differently on a second hearing.
        for word in words:
            start, end = _get(word, "start"), _get(word, "end")
            if (isinstance(start, (int, float)) and isinstance(end, (int, float))
                    and base + (start + end) / 2 * BYTES_PER_SECOND < limit):
                continue
            kept.append(word)
        if len(kept) == len(words):
            return text
        self.replayed_words_dropped += len(words) - len(kept)
        log.info("dropped %d replayed word(s) already answered (call %s)", len(words) - len(kept),
                 self._call.call_sid)
        return " ".join(str(_get(w, "punctuated_word") or _get(w, "word") or "") for w in kept).strip()

    def _health(self, event: str) -> None:
        if self.on_health is not None:
            try:
                self.on_health(event)
            except Exception:  # the chain's bookkeeping must not take the socket down
                log.exception("STT health callback failed (call %s)", self._call.call_sid)

    def _emit(self, result: SttResult) -> None:
        try:
            self._on_result(result)
        except Exception:  # the call's handler failing must not kill the socket
            log.exception("STT result handler failed (call %s)", self._call.call_sid)

    def _give_up(self, reason: str, exc: ProviderError) -> None:
        if self._gave_up:
            return
        self._gave_up = True
        self._closing = True
        self.error = reason
        self._buffer.clear()
        log.error("Deepgram stream gave up: %s (call %s)", reason, self._call.call_sid)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc)
        self._emit(SttResult("", True, True, error=reason))


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK model or a plain dict; None when missing (SDK construction is unchecked)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)
