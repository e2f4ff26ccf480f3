"""OpenTelemetry traces of calls: one trace per call, a span per turn with the turn's stages under it.

Turned on by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
keep it off. The rest is the SDK's own reading of `OTEL_*`: `OTEL_SERVICE_NAME` (default here
"voicegate"), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER`,
`OTEL_BSP_*`. Spans leave over OTLP/HTTP (protobuf) from the SDK's batch processor thread, never
from the event loop.

Off, which is the default, nothing of OpenTelemetry is imported, the HTTP clients are not
instrumented and a call has no trace: the per-frame path does not know tracing exists, and each turn
pays an `is None` test.

On, spans are built after the fact. The call core is sans-I/O with its own clock: at each turn's end
it hands the driver a `TurnTimings` holding the loop-monotonic time of each stage, and `CallTrace.turn`
makes spans with those start and end times (loop seconds turned into wall-clock nanoseconds through
the loop clock's offset from `time.time_ns()` when the call began, one mapping for all its spans).
Nothing is timed twice and nothing runs per frame. A call's tree:

    call              SERVER; the socket's accept to the call's end: call sid, direction, engines, end reason
      turn            first stamp of the turn to its last: call sid, turn id, the latency split (ms)
        end_of_speech     the caller's last word -> the VAD's decision
        stt_final         the VAD's decision (or the last word, when the STT was first) -> the final transcript
        llm_first_token   the reply asked for -> its first token
        llm_first_phrase  the reply asked for -> its first speakable phrase
        tts_first_byte    the first phrase -> its first audio
        playback          the first reply frame sent -> the reply played out (or cut off)
        POST              the turn's LLM request (aiohttp instrumentation)
      GET / POST      the call's other HTTP requests (ElevenLabs' HTTP stream, Twilio REST)

Provider requests are spans where an instrumentation package exists for the SDKs' HTTP clients:
aiohttp (the transport under the OpenAI SDK, whose own `httpx2` has none, and Twilio REST) and httpx
(ElevenLabs' HTTP stream, the connectivity probes). Deepgram's and ElevenLabs' streaming sockets use
`websockets`, which has none: their share of a turn is its stt_final and tts_first_byte spans.

A request is the child of the span current in the task that makes it (context variables). The call
span is made current in the call's task when the call starts, so every task the call starts inherits
it. An LLM request belongs under its turn, but the turn span is only built when the turn ends: so the
turn's span id is drawn when its reply starts, the reply task starts under a placeholder span with
that id, and the turn span is created with that very id later (`_PresetIds`, the SDK's id-generator
hook). A reply that never completes a turn (dropped before it was heard) still gets its turn span,
closed when the next reply starts or the call ends, so no request is left pointing at a missing parent.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import time
from typing import Iterator, Mapping

from gateway.logs import trace_id_var

log = logging.getLogger("voicegate.tracing")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
DEFAULT_SERVICE_NAME = "voicegate"
FLUSH_TIMEOUT_MS = 5000  # at shutdown: the last calls' spans, without holding a deploy for long
_NO_CONTEXT = contextlib.nullcontext()
_PROCESS_TRACER: "CallTracer | None" = None  # the SDK's providers are process-wide: configured once


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (an OTLP endpoint, and not disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def from_environment() -> "CallTracer | None":
    """The process's call tracer, set up on first use; None when tracing is off (nothing imported)."""
    global _PROCESS_TRACER
    if not enabled(os.environ):
        return None
    if _PROCESS_TRACER is None:
        _PROCESS_TRACER = CallTracer.configure(os.environ)
    return _PROCESS_TRACER


def reply_context(trace: "CallTrace | None", turn_id: int):
    """For the driver, around starting a reply's task: with tracing on, the task's HTTP requests become
    children of the turn's span. Off, a shared no-op context."""
    return _NO_CONTEXT if trace is None else trace.reply_context(turn_id)


class _PresetIds:
    """The SDK's id generator (random ids, as its RandomIdGenerator), except that a span started inside
    `preset(span_id)` gets that id: how a turn's span takes the id its requests were parented to."""

    def __init__(self) -> None:
        self._preset: contextvars.ContextVar[int | None] = contextvars.ContextVar("preset_span_id", default=None)

    def generate_span_id(self) -> int:
        preset = self._preset.get()
        if preset is not None:
            return preset
        span_id = random.getrandbits(64)
        while span_id == 0:  # the invalid span id
            span_id = random.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = random.getrandbits(128)
        while trace_id == 0:
            trace_id = random.getrandbits(128)
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True

    @contextlib.contextmanager
    def preset(self, span_id: int | None) -> Iterator[None]:
        token = self._preset.set(span_id)
        try:
            yield
        finally:
            self._preset.reset(token)


class CallTracer:
    """The process's tracer provider (OTLP/HTTP exporter, batch processor), with the SDKs' HTTP
    clients instrumented. Made by `from_environment`; calls get a `CallTrace` from `start_call`."""

    def __init__(self, provider, ids: _PresetIds) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("voicegate")
        self._ids = ids

    @classmethod
    def configure(cls, environ: Mapping[str, str]) -> "CallTracer":
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", ""))
        if exporter not in ("", "otlp") or protocol.strip() not in ("", "http/protobuf"):
            log.warning("traces go out over OTLP/HTTP with protobuf (http/protobuf): OTEL_TRACES_EXPORTER=%s and "
                        "OTEL_EXPORTER_OTLP_PROTOCOL=%s are not supported here", exporter, protocol)
        named = "OTEL_SERVICE_NAME" in environ or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
        resource = Resource.create({} if named else {"service.name": DEFAULT_SERVICE_NAME})
        ids = _PresetIds()
        provider = TracerProvider(resource=resource, id_generator=ids)  # OTEL_TRACES_SAMPLER is read here
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_*, OTEL_BSP_*
        trace.set_tracer_provider(provider)  # anything else using the OpenTelemetry API lands here too
        _instrument_http_clients(provider)
        return cls(provider, ids)

    def start_call(self, loop, call_sid: str, stream_sid: str, direction: str, started_wall: float,
                   resumed: bool, engines: object) -> "CallTrace":
        """The call's span, made current in the calling task (the call's): the tasks it starts inherit it."""
        from opentelemetry import context, trace

        attributes = {"voicegate.call_sid": call_sid, "voicegate.stream_sid": stream_sid,
                      "voicegate.direction": direction, "voicegate.resumed": resumed}
        for role in ("stt", "tts"):
            name = getattr(getattr(engines, role, None), "name", None)
            if name:
                attributes[f"voicegate.{role}"] = str(name)
        llms = getattr(engines, "llms", None)
        if llms:
            attributes["voicegate.llm"] = ">".join(str(getattr(llm, "name", "?")) for llm in llms)
        span = self._tracer.start_span("call", context=context.Context(), kind=trace.SpanKind.SERVER,
                                       attributes=attributes, start_time=int(started_wall * 1e9))
        call = CallTrace(self._tracer, self._ids, loop, span, call_sid)
        # For this task, and every task and callback it starts from now on: requests' parent, log lines' id.
        context.attach(call.context)
        trace_id_var.set(call.trace_id)
        return call

    def flush(self) -> None:
        self._provider.force_flush(FLUSH_TIMEOUT_MS)


class CallTrace:
    """One call's trace. `turn` at each turn's end; `end` when the call is over.

    The driver calls these inside a core step, and a turn's end can share its step with a barge-in's
    `clear`, which goes out when the step is done: so they only take the times and the ids, and the spans
    are built in a loop callback of their own, after that step's frames are written (in order: a call's
    turns, then its end)."""

    def __init__(self, tracer, ids: _PresetIds, loop, span, call_sid: str) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self._ids = ids
        self._loop = loop
        self._span = span
        self._call_sid = call_sid
        self.context = trace.set_span_in_context(span)
        span_context = span.get_span_context()
        self._span_context = span_context
        self.trace_id = format(span_context.trace_id, "032x")
        # One loop-clock -> wall-clock mapping for the whole call: mapped afresh at each step, the two
        # clocks' drift (NTP slewing the wall clock) put a turn's end after its call's by a few hundred µs.
        self._to_ns = _clock(loop.time())
        # Replies started and not yet ended as a turn: turn id -> (its span id, loop time it started).
        self._open: dict[int, tuple[int, float]] = {}

    @contextlib.contextmanager
    def reply_context(self, turn_id: int) -> Iterator[None]:
        from opentelemetry import context, trace

        now = self._loop.time()
        for earlier in [t for t in self._open if t != turn_id]:
            self._unfinished(earlier, now)  # a reply dropped before it was heard: it gets no TurnTimings
        span_id, _ = self._open.setdefault(turn_id, (self._ids.generate_span_id(), now))
        placeholder = trace.NonRecordingSpan(trace.SpanContext(
            self._span_context.trace_id, span_id, is_remote=False, trace_flags=self._span_context.trace_flags))
        token = context.attach(trace.set_span_in_context(placeholder, self.context))
        try:
            yield
        finally:
            context.detach(token)

    def turn(self, timings) -> None:
        """One finished turn (a `dialog.events.TurnTimings`): its spans, with the times the core stamped."""
        opened = self._open.pop(timings.turn_id, None)
        now = self._loop.time()
        self._loop.call_soon(self._turn_spans, timings, opened[0] if opened else None, self._to_ns, now)

    def end(self, reason: str, turns: int) -> None:
        now = self._loop.time()
        for turn_id in list(self._open):
            self._unfinished(turn_id, now)
        self._loop.call_soon(self._end_span, reason, turns, self._to_ns(now))

    def _turn_spans(self, t, span_id: int | None, to_ns, now: float) -> None:
        from opentelemetry import trace

        stamps = [x for x in (t.speech_ended_at, t.vad_end_at, t.transcript_at, t.reply_started_at, t.first_token_at,
                              t.first_sentence_at, t.first_audio_at, t.first_frame_at, t.reply_done_at) if x is not None]
        start, end = (min(stamps), max(stamps)) if stamps else (now, now)
        ids = {"voicegate.call_sid": self._call_sid, "voicegate.turn_id": t.turn_id}
        attributes: dict[str, object] = {**ids, "voicegate.interrupted": t.interrupted,
                                         "voicegate.backchannel": t.backchannel, "voicegate.dtmf": bool(t.dtmf),
                                         "voicegate.caller_spoke": t.user_text is not None,
                                         "voicegate.turn_completed": True}
        split = t.split()
        attributes.update({f"voicegate.{name}": value for name, value in split.items() if value is not None})
        with self._ids.preset(span_id):
            span = self._tracer.start_span("turn", context=self.context, attributes=attributes,
                                           start_time=to_ns(start))
        parent = trace.set_span_in_context(span)
        stt_from = t.vad_end_at if (t.vad_end_at is not None and t.transcript_at is not None
                                    and t.transcript_at >= t.vad_end_at) else t.speech_ended_at
        for name, begin, finish, figure in (
            ("end_of_speech", t.speech_ended_at, t.vad_end_at, "vad_ms"),
            ("stt_final", stt_from, t.transcript_at, "stt_ms"),
            ("llm_first_token", t.reply_started_at, t.first_token_at, "llm_first_token_ms"),
            ("llm_first_phrase", t.reply_started_at, t.first_sentence_at, "llm_first_sentence_ms"),
            ("tts_first_byte", t.first_sentence_at, t.first_audio_at, "tts_first_byte_ms"),
            ("playback", t.first_frame_at, t.reply_done_at, ""),
        ):
            if begin is None or finish is None or finish < begin:
                continue
            stage = {**ids, "voicegate.duration_ms": round((finish - begin) * 1000.0, 1)}
            if figure and split.get(figure) is not None:
                stage[f"voicegate.{figure}"] = split[figure]
            child = self._tracer.start_span(name, context=parent, attributes=stage, start_time=to_ns(begin))
            child.end(end_time=to_ns(finish))
        span.end(end_time=to_ns(end))

    def _unfinished(self, turn_id: int, now: float) -> None:
        span_id, started = self._open.pop(turn_id)
        self._loop.call_soon(self._unfinished_span, turn_id, span_id, started, self._to_ns, now)

    def _unfinished_span(self, turn_id: int, span_id: int, started: float, to_ns, now: float) -> None:
        with self._ids.preset(span_id):
            span = self._tracer.start_span("turn", context=self.context, start_time=to_ns(started), attributes={
                "voicegate.call_sid": self._call_sid, "voicegate.turn_id": turn_id,
                "voicegate.turn_completed": False})
        span.end(end_time=to_ns(now))

    def _end_span(self, reason: str, turns: int, end_ns: int) -> None:
        self._span.set_attribute("voicegate.end_reason", reason)
        self._span.set_attribute("voicegate.turns", turns)
        self._span.end(end_time=end_ns)


def _clock(loop_now: float):
    """Loop-monotonic seconds -> wall-clock nanoseconds, by the offset between the clocks now."""
    offset = time.time_ns() - int(loop_now * 1e9)
    return lambda seconds: int(seconds * 1e9) + offset


def _instrument_http_clients(provider) -> None:
    """Spans for the SDKs' HTTP requests, where an instrumentation package exists (see the module's note)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    for instrumentor in (AioHttpClientInstrumentor(), HTTPXClientInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
