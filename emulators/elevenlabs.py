"""ElevenLabs text-to-speech emulator (PROTOCOLS.md §3).

Routes:
- `POST /v1/text-to-speech/{voice_id}/stream`: chunked audio body (`audio/basic` for ulaw_8000).
- `POST /v1/text-to-speech/{voice_id}`: the same audio in one body.
- `WS /v1/text-to-speech/{voice_id}/stream-input`: text in, `{"audio": b64, ...}` out, then
  `{"isFinal": true}` after `{"text": ""}`.
- `WS /v1/text-to-speech/{voice_id}/multi-stream-input`: the same keyed by `context_id`; server
  messages carry `contextId`.

The audio is real and checkable: `expected_audio(text)` is a deterministic "speech-like" signal
(a 300-3000 Hz sweep with a 4 Hz syllable envelope at about -20 dBFS, its phase seeded from the
text) lasting 65 ms per character. Each generation (a flush, a chunk_length_schedule threshold, or
the end of input) is rendered as `expected_audio(<the text generated>)`, so a client can compare
what it played with what it asked for.
"""

from __future__ import annotations

import asyncio
import base64
import math
import uuid
import warnings
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from emulators.arrival import received_at
from emulators.common import (
    EmulatorState,
    IdleTimer,
    Receive,
    Scope,
    Send,
    abort_connection,
    deny_websocket,
    end_stream,
    header,
    hold,
    loop_time_at,
    now,
    read_body,
    recorded_headers,
    send_chunk,
    send_json,
    sleep_until,
    start_stream,
    state_of,
)

with warnings.catch_warnings():  # stdlib audioop warns of its removal in 3.13 (audioop-lts there)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

MS_PER_CHAR = 65  # ~15 characters per second, the pace of conversational English
MIN_AUDIO_MS = 200
MAX_AUDIO_MS = 30_000  # a 460-character sentence; longer text is truncated audio, not longer
LEVEL_DBFS = -20.0
DEFAULT_SCHEDULE = (120, 160, 250, 290)  # ElevenLabs' default chunk_length_schedule
SECRET_HEADERS = (b"xi-api-key", b"authorization")

_CONTENT_TYPES = {"ulaw_8000": "audio/basic", "alaw_8000": "audio/x-alaw-basic"}

# ElevenLabs' models as the API reference describes them: which speak more than English, and which
# honour `language_code` ("for Turbo v2.5 and Flash v2.5 models only"; a model that does not support the
# code given ignores it). Each request's record says what the model made of its language (`language_of`).
MULTILINGUAL_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2",
                                 "eleven_multilingual_v1", "eleven_v3"})
LANGUAGE_CODE_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5"})


def language_of(model_id: str | None, language_code: str | None) -> dict[str, Any]:
    """What a request's model and language code amount to, for the request log."""
    model = model_id or "eleven_multilingual_v2"  # the API's default model
    applied = bool(language_code) and model in LANGUAGE_CODE_MODELS
    return {"model_id": model, "language_code": language_code or None, "multilingual": model in MULTILINGUAL_MODELS,
            "language_code_applied": applied}


# ---------------------------------------------------------------- the audio


def normalized(text: str) -> str:
    return " ".join(text.split())


def audio_duration_ms(text: str) -> int:
    """Duration of the audio for `text`: 65 ms per character, clamped, in whole 20 ms frames."""
    chars = len(normalized(text))
    if chars == 0:
        return 0
    ms = min(max(chars * MS_PER_CHAR, MIN_AUDIO_MS), MAX_AUDIO_MS)
    return -(-ms // 20) * 20


def output_sample_rate(output_format: str) -> int | None:
    """Sample rate of a supported output format, None if the emulator cannot produce it."""
    kind, _, rate = output_format.partition("_")
    if output_format in ("ulaw_8000", "alaw_8000"):
        return 8000
    if kind == "pcm" and rate.isdigit():
        return int(rate)
    return None


def _pcm16_span(text: str, sample_rate: int, lo: int, hi: int) -> bytes:
    """Samples `lo`..`hi` of the rendering of `text` (16-bit little-endian). Each sample depends only
    on its index, so a generation is rendered a chunk at a time as it is sent: one 6 s reply rendered
    whole held the emulator's loop for about 2 ms, and the gateway's other calls' text arriving then
    was stamped late by as much."""
    n = sample_rate * audio_duration_ms(text) // 1000
    hi = min(hi, n)
    if lo >= hi:
        return b""
    seed = zlib.crc32(text.encode())
    phi1 = (seed & 0xFFFF) / 65536.0 * 2 * math.pi
    phi2 = (seed >> 16) / 65536.0 * 2 * math.pi
    k = np.arange(lo, hi, dtype=np.float64)
    t = k / sample_rate
    # The phase of a tone sweeping 300..3000 Hz (1650 + 1350 sin(2 pi 0.9 t + phi1)), integrated in closed form.
    sweep = 2 * math.pi * 0.9
    phase = 2 * math.pi * (1650.0 * t + 1350.0 / sweep * (math.cos(phi1) - np.cos(sweep * t + phi1)))
    envelope = 0.75 + 0.25 * np.sin(2 * math.pi * 4.0 * t + phi2)  # ~4 syllables per second
    ramp = min(sample_rate // 100, n // 4)  # 10 ms fades: no click at either end
    if ramp > 0:
        envelope *= np.minimum(np.minimum(k, n - 1 - k) / max(ramp - 1, 1), 1.0)
    peak = 32767.0 * 10 ** (LEVEL_DBFS / 20) * math.sqrt(2)  # sine RMS at LEVEL_DBFS
    return np.round(peak * envelope * np.sin(phase)).astype("<i2").tobytes()


def _encode(pcm: bytes, output_format: str) -> bytes:
    if output_format == "ulaw_8000":
        return audioop.lin2ulaw(pcm, 2)
    if output_format == "alaw_8000":
        return audioop.lin2alaw(pcm, 2)
    return pcm


def _sample_rate(output_format: str) -> int:
    rate = output_sample_rate(output_format)
    if rate is None:
        raise ValueError(f"unsupported output_format {output_format!r}")
    return rate


def audio_chunks(text: str, output_format: str, chunk_ms: int) -> Iterator[bytes]:
    """The audio of one generation of `text` in `chunk_ms` pieces, each rendered when it is asked for;
    together exactly `expected_audio(text, output_format)`."""
    text = normalized(text)
    rate = _sample_rate(output_format)
    width = 1 if output_format in _CONTENT_TYPES else 2  # bytes a sample
    per_chunk = max(1, int(rate / 1000 * width * chunk_ms) // width)
    total = rate * audio_duration_ms(text) // 1000
    for lo in range(0, total, per_chunk):
        yield _encode(_pcm16_span(text, rate, lo, lo + per_chunk), output_format)


@lru_cache(maxsize=1024)
def _encoded(text: str, output_format: str) -> bytes:
    rate = _sample_rate(output_format)
    return _encode(_pcm16_span(text, rate, 0, rate * audio_duration_ms(text) // 1000), output_format)


def expected_audio(text: str, output_format: str = "ulaw_8000") -> bytes:
    """The exact bytes the emulator produces for one generation of `text` (whitespace-normalized)."""
    return _encoded(normalized(text), output_format)


def _alignment(text: str, chunk_index: int, chunk_ms: float, total_ms: int) -> dict[str, list[Any]]:
    """Characters whose start falls in this chunk, times relative to the chunk (as the SDK documents)."""
    chars = list(text)
    if not chars:
        return {"charStartTimesMs": [], "charDurationsMs": [], "chars": []}
    per = total_ms / len(chars)
    lo, hi = chunk_index * chunk_ms, (chunk_index + 1) * chunk_ms
    first = math.ceil(lo / per) if lo > 0 else 0
    last = min(len(chars), math.ceil(hi / per))
    dur = max(1, int(per))
    return {
        "charStartTimesMs": [int(i * per - lo) for i in range(first, last)],
        "charDurationsMs": [dur] * (last - first),
        "chars": chars[first:last],
    }


# ---------------------------------------------------------------- HTTP


def _detail(status: str, message: str) -> dict[str, Any]:
    return {"detail": {"status": status, "message": message}}


class TextToSpeechHttp:
    """`POST /v1/text-to-speech/{voice_id}[/stream]` as a raw ASGI app (see common.py for why)."""

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = state_of(scope)
        cfg = state.config
        el = cfg.elevenlabs
        t0 = loop_time_at(received_at(scope))  # first byte counts from the request's arrival
        query = dict(_query(scope))
        record = state.log.add("elevenlabs", {
            "kind": "http", "path": scope["path"], "voice_id": scope["path_params"].get("voice_id"),
            "streaming": self.streaming, "query": query, "headers": recorded_headers(scope, SECRET_HEADERS),
            "t": received_at(scope), "body": None, "status": None, "fault": None,
            "first_byte_at": None, "last_byte_at": None, "audio_bytes": 0,
        })
        raw = await read_body(receive)
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = None
        record["body"] = body
        if isinstance(body, dict):
            record.update(language_of(body.get("model_id"), body.get("language_code")))

        async def fail(status: int, payload: Any) -> None:
            record["status"] = status
            await send_json(send, status, payload, {"request-id": uuid.uuid4().hex})

        if not el.key_accepted(header(scope, b"xi-api-key"), el.api_key, el.bad_keys):
            return await fail(401, _detail("invalid_api_key", "Invalid API key"))
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return await fail(422, {"detail": [{"loc": ["body", "text"], "msg": "field required",
                                                "type": "value_error.missing"}]})
        output_format = query.get("output_format", "mp3_44100_128")
        if output_sample_rate(output_format) is None:
            message = f"the emulator produces ulaw_8000, alaw_8000 and pcm_*, not {output_format}"
            return await fail(400, _detail("unsupported_output_format", message))
        fault = record["fault"] = el.take_fault()
        if fault == "error5xx":
            return await fail(500, _detail("internal_server_error", "An internal server error occurred"))

        content_type = _CONTENT_TYPES.get(output_format, "audio/pcm")
        headers = {"request-id": uuid.uuid4().hex, "history-item-id": uuid.uuid4().hex}
        first_at = t0 + cfg.tts_first_byte
        record["status"] = 200
        if fault == "stall":
            await sleep_until(first_at)
            await start_stream(send, 200, content_type, headers)
            await hold(receive, state, el.stall_seconds)
            return
        if not self.streaming:
            audio = expected_audio(body["text"], output_format)
            duration = audio_duration_ms(body["text"]) / 1000
            await sleep_until(first_at + duration / max(cfg.tts_realtime_factor, 1e-6))
            headers["content-length"] = str(len(audio))
            await start_stream(send, 200, content_type, headers)
            await send({"type": "http.response.body", "body": audio})
            record["first_byte_at"] = record["last_byte_at"] = now()
            record["audio_bytes"] = len(audio)
            return
        step = el.chunk_ms / 1000 / max(cfg.tts_realtime_factor, 1e-6)
        await sleep_until(first_at)
        await start_stream(send, 200, content_type, headers)
        for i, chunk in enumerate(audio_chunks(body["text"], output_format, el.chunk_ms)):
            await sleep_until(first_at + i * step)
            await send_chunk(send, chunk)
            record["last_byte_at"] = now()
            if record["first_byte_at"] is None:
                record["first_byte_at"] = record["last_byte_at"]
            record["audio_bytes"] += len(chunk)
            if fault == "drop":
                if await abort_connection(scope, receive):
                    return
                raise ConnectionAbortedError("emulated drop")  # uvicorn cuts the body
        await end_stream(send)


def _query(scope: Scope) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


# ---------------------------------------------------------------- WebSocket


@dataclass
class _Context:
    id: str | None
    buffer: str = ""
    generations: int = 0
    schedule: tuple[int, ...] = DEFAULT_SCHEDULE


@dataclass
class _Job:
    kind: str  # "gen" | "final" | "close"
    context: str | None = None
    text: str = ""
    at: float = 0.0  # loop time the job was triggered
    record: dict[str, Any] = field(default_factory=dict)


class TtsSocket:
    """One stream-input (multi=False) or multi-stream-input (multi=True) connection."""

    def __init__(self, ws: WebSocket, state: EmulatorState, multi: bool) -> None:
        self.ws = ws
        self.state = state
        self.cfg = state.config
        self.multi = multi
        self.loop = asyncio.get_running_loop()
        self.query = dict(_query(ws.scope))
        self.output_format = self.query.get("output_format", "mp3_44100_128")
        self.contexts: dict[str | None, _Context] = {}
        self.jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self.fault: str | None = None
        self.ending = False
        self.record = state.log.add("elevenlabs", {
            "kind": "multi-stream-input" if multi else "stream-input", "path": ws.scope["path"],
            "voice_id": ws.path_params.get("voice_id"), "query": self.query,
            "headers": recorded_headers(ws.scope, SECRET_HEADERS), "opened_at": now(), "closed_at": None,
            "close_code": None, "closed_by": None, "status": None, "fault": None, "init": None, "messages": [],
            "generations": [], "first_audio_at": None, "audio_bytes": 0,
            **language_of(self.query.get("model_id"), self.query.get("language_code")),
        })

    async def run(self) -> None:
        el = self.cfg.elevenlabs
        header_key = header(self.ws.scope, b"xi-api-key")
        if header_key is not None and not el.key_accepted(header_key, el.api_key, el.bad_keys):
            return await self._deny(401, _detail("invalid_api_key", "Invalid API key"))
        if output_sample_rate(self.output_format) is None:
            return await self._deny(400, _detail("unsupported_output_format", self.output_format))
        self.fault = self.record["fault"] = el.take_fault()
        if self.fault == "error5xx":
            return await self._deny(500, _detail("internal_server_error", "An internal server error occurred"))
        await self.ws.accept()
        self.record["status"] = 101
        timeout = float(self.query.get("inactivity_timeout") or el.inactivity_timeout)
        timer = IdleTimer(timeout, self._on_idle)
        sender = asyncio.create_task(self._send_loop())
        authed = header_key is not None
        flap: asyncio.Task | None = None
        if self.fault == "flap":
            # Cut the socket this long after it opened, whatever it is doing (no close frame).
            self.record["flap_after"] = el.flap_after
            flap = asyncio.create_task(self._flap(el.flap_after))
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    self.record["close_code"] = message.get("code")
                    break
                timer.touch()
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", "replace")
                try:
                    data = orjson.loads(text)
                except orjson.JSONDecodeError:
                    data = None
                if not isinstance(data, dict):
                    await self._error_close(1008, "invalid_message", "messages must be JSON objects")
                    continue
                if not authed:
                    key = data.get("xi-api-key") or data.get("xi_api_key")
                    if not el.key_accepted(key, el.api_key, el.bad_keys):
                        await self._error_close(1008, "invalid_api_key", "Invalid API key")
                        continue
                    authed = True
                self._on_message(data, received_at(message))
        except WebSocketDisconnect as exc:
            self.record["close_code"] = exc.code
        finally:
            timer.cancel()
            sender.cancel()
            if flap is not None:
                flap.cancel()
            self.record["closed_at"] = now()

    async def _flap(self, after: float) -> None:
        await asyncio.sleep(after)
        self.record["closed_by"] = "server-drop"
        if not await abort_connection(self.ws.scope):
            await self.ws.close(1011, "emulated drop")

    async def _deny(self, status: int, body: Any) -> None:
        self.record["status"] = status
        self.record["closed_at"] = now()
        await deny_websocket(self.ws, Response(orjson.dumps(body), status, media_type="application/json"))

    async def _error_close(self, code: int, error: str, message: str) -> None:
        if self.ending:
            return
        self.ending = True
        payload = orjson.dumps({"message": message, "error": error, "code": code}).decode()
        await self.jobs.put(_Job("error", text=payload, record={"code": code, "reason": error}))

    def _on_idle(self) -> None:
        if not self.ending:
            self.ending = True
            self.jobs.put_nowait(_Job("error", text="", record={
                "code": 1008, "reason": "Have not received new text for a while. Closing the connection."}))

    # -- the protocol: text in, jobs out

    def _on_message(self, data: dict[str, Any], arrived: float) -> None:
        t = loop_time_at(arrived)  # first byte counts from the text's arrival, not from this handler
        ctx_id = (data.get("context_id") or "default") if self.multi else None
        entry = {"t": arrived}
        for k in ("text", "flush", "try_trigger_generation", "context_id", "close_context", "close_socket"):
            if k in data:
                entry[k] = data[k]
        if self.record["init"] is None:
            init = {k: ("<redacted>" if k in ("xi-api-key", "xi_api_key", "authorization") else v)
                    for k, v in data.items()}
            self.record["init"] = init
        self.record["messages"].append(entry)
        if self.ending:
            return

        if self.multi and data.get("close_socket"):
            for cid in list(self.contexts):
                self._close_context(cid, t)
            self._end(t)
            return
        if self.multi and data.get("close_context"):
            if ctx_id in self.contexts:
                self._close_context(ctx_id, t)
            return

        ctx = self.contexts.get(ctx_id)
        text = data.get("text")
        if ctx is None:
            ctx = self.contexts[ctx_id] = _Context(ctx_id, schedule=_schedule(data))
            if text == " ":
                return  # the initializing message
        if text == "":
            if self.multi:
                return  # KeepContextAlive: resets the inactivity clock only
            if ctx.buffer.strip():
                self._generate(ctx, t, "end")
            self._end(t)
            return
        if isinstance(text, str):
            ctx.buffer += text
        if data.get("flush"):
            if ctx.buffer.strip():
                self._generate(ctx, t, "flush")
            return
        threshold = ctx.schedule[min(ctx.generations, len(ctx.schedule) - 1)]
        if len(ctx.buffer) >= threshold:
            self._generate(ctx, t, "schedule")

    def _generate(self, ctx: _Context, t: float, reason: str) -> None:
        text, ctx.buffer = ctx.buffer, ""
        ctx.generations += 1
        # "t": when the text that completed it arrived (`t` is that moment on the loop clock).
        gen = {"t": now() - (self.loop.time() - t), "context_id": ctx.id, "text": text, "reason": reason,
               "first_byte_at": None, "last_byte_at": None, "audio_bytes": 0}
        self.record["generations"].append(gen)
        self.jobs.put_nowait(_Job("gen", ctx.id, text, t, gen))

    def _close_context(self, ctx_id: str | None, t: float) -> None:
        # Per the SDK's CloseContext doc: text already flushed is still generated, the rest is dropped.
        self.contexts.pop(ctx_id, None)
        self.jobs.put_nowait(_Job("final", ctx_id, at=t))

    def _end(self, t: float) -> None:
        self.ending = True
        if not self.multi:
            self.jobs.put_nowait(_Job("final", None, at=t))
        self.jobs.put_nowait(_Job("close", at=t))

    # -- the sender: one job at a time, so audio stays in order

    async def _send_loop(self) -> None:
        try:
            while True:
                job = await self.jobs.get()
                if job.kind == "error":
                    if job.text:
                        await self.ws.send_text(job.text)
                    await self.ws.close(job.record["code"], job.record["reason"])
                    return
                if self.fault == "stall":
                    continue
                if job.kind == "gen":
                    if not await self._send_generation(job):
                        return
                elif job.kind == "final":
                    msg: dict[str, Any] = {"isFinal": True}
                    if self.multi:
                        msg["contextId"] = job.context
                    await self.ws.send_text(orjson.dumps(msg).decode())
                elif job.kind == "close":
                    await self.ws.close(1000)
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client went away; the receive loop records it

    async def _send_generation(self, job: _Job) -> bool:
        cfg = self.cfg
        text = normalized(job.text)
        total_ms = audio_duration_ms(text)
        chunk_ms = cfg.elevenlabs.chunk_ms
        step = chunk_ms / 1000 / max(cfg.tts_realtime_factor, 1e-6)
        start = max(job.at + cfg.tts_first_byte, self.loop.time())
        gen = job.record
        for i, chunk in enumerate(audio_chunks(text, self.output_format, chunk_ms)):
            await sleep_until(start + i * step)
            align = _alignment(text, i, chunk_ms, total_ms)
            msg: dict[str, Any] = {"audio": base64.b64encode(chunk).decode(), "isFinal": False,
                                   "normalizedAlignment": align, "alignment": align}
            if self.multi:
                msg["contextId"] = job.context
            t = now()  # stamped as it goes out, like the other emulators
            await self.ws.send_text(orjson.dumps(msg).decode())
            if gen["first_byte_at"] is None:
                gen["first_byte_at"] = t
                if self.record["first_audio_at"] is None:
                    self.record["first_audio_at"] = t
            gen["last_byte_at"] = t
            gen["audio_bytes"] += len(chunk)
            self.record["audio_bytes"] += len(chunk)
            if self.fault == "drop":
                if not await abort_connection(self.ws.scope):
                    await self.ws.close(1011, "emulated drop")
                return False
        return True


def _schedule(init: dict[str, Any]) -> tuple[int, ...]:
    config = init.get("generation_config")
    schedule = config.get("chunk_length_schedule") if isinstance(config, dict) else None
    if isinstance(schedule, list) and schedule and all(isinstance(x, (int, float)) for x in schedule):
        return tuple(int(x) for x in schedule)
    return DEFAULT_SCHEDULE


async def stream_input(ws: WebSocket) -> None:
    await TtsSocket(ws, state_of(ws.scope), multi=False).run()


async def multi_stream_input(ws: WebSocket) -> None:
    await TtsSocket(ws, state_of(ws.scope), multi=True).run()
