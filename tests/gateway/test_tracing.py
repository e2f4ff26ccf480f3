"""OpenTelemetry traces: off by default with nothing of OpenTelemetry imported; on, a real call through the
real server exports one trace (an OTLP/HTTP receiver here decodes the exporter's real protobuf payloads)
with a span per turn, the turn's stages under it, the provider requests under their turn, and the trace id
in the call's log lines."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest

from gateway import tracing
from loadgen.simcaller import CallerTurn, run_call
from tests.support import ROOT, run_emulators, run_gateway

pytestmark = pytest.mark.timeout(240)

SAID = "Hello, I would like to book an appointment"
STAGES = {"end_of_speech", "stt_final", "llm_first_token", "llm_first_phrase", "tts_first_byte", "playback"}
SPLIT = ("vad_ms", "stt_ms", "llm_first_token_ms", "llm_first_sentence_ms", "tts_first_byte_ms",
         "gateway_overhead_ms", "voice_to_voice_ms")


def test_tracing_is_on_only_with_an_otlp_endpoint_and_not_disabled():
    assert not tracing.enabled({})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"})


# A whole call through the call driver and its core, in a fresh interpreter without OTEL_* variables: the
# gateway's tracer is None, the call never has a trace, and not one OpenTelemetry module was imported.
OFF_SCRIPT = r"""
import asyncio, base64, json, os, sys, tempfile
from types import SimpleNamespace
from starlette.websockets import WebSocketState
from gateway import tracing
from gateway.app import Gateway
from gateway.call import CallServices, MediaCall
from gateway.session import SessionSettings
from providers.base import SttResult
from providers.settings import Settings

assert not any(k.startswith("OTEL_") for k in os.environ)
gateway = Gateway(Settings(local_engines=False, model_vad=False,
                           voicegate_db=os.path.join(tempfile.mkdtemp(), "v.db")))
assert gateway.tracer is None and gateway.services.tracer is None and tracing.from_environment() is None

class Socket:
    application_state = WebSocketState.CONNECTED
    scope = {}
    def __init__(self, messages):
        self.messages = messages
        self.sent = []
    async def receive(self):
        await asyncio.sleep(0.001)
        return self.messages.pop(0) if self.messages else {"type": "websocket.disconnect", "code": 1000}
    async def send_text(self, text):
        self.sent.append(text)
    async def close(self, code, reason=""):
        pass

class Stt:
    streaming = False
    def __init__(self, on_result):
        self.on_result = on_result
    async def start(self):
        pass
    def send_audio(self, audio):
        pass
    def end_of_speech(self, audio):
        self.on_result(SttResult(text="hello there", is_final=True, end_of_turn=True))
    async def close(self):
        pass

class Tts:
    async def synthesize(self, text):
        yield b"\xff" * 1600
    async def close(self):
        pass

class Responder:
    async def reply(self, request):
        yield "Hello, how can I help?"
    def snapshot(self):
        return {}
    def rollback(self, turn_id):
        pass

def message(data):
    return {"type": "websocket.receive", "text": json.dumps(data)}

def media(n, loud):
    frame = bytes([0x00, 0x80]) * 80 if loud else b"\xff" * 160
    return message({"event": "media", "streamSid": "MZ1",
                    "media": {"chunk": str(n), "payload": base64.b64encode(frame).decode()}})

async def main():
    engines = SimpleNamespace(stt=SimpleNamespace(open_stream=lambda info, on_result: Stt(on_result)),
                              tts=SimpleNamespace(open_stream=lambda info: Tts()), speech=None)
    services = CallServices(settings=Settings(), engines=engines, make_responder=lambda call, snapshot=None: Responder(),
                            tracer=gateway.tracer)
    frames = [media(n, loud=20 <= n < 60) for n in range(200)]
    start = message({"event": "start", "streamSid": "MZ1",
                     "start": {"callSid": "CA1", "streamSid": "MZ1", "customParameters": {}}})
    call = MediaCall(Socket([start, *frames, message({"event": "stop", "streamSid": "MZ1"})]), services,
                     SessionSettings(model_vad=False))
    await call.run()
    return call

call = asyncio.run(main())
assert call._trace is None
assert len(call.turns) >= 2, call.turns  # the greeting and the caller's turn: turns went through their hooks
print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry") or m == "wrapt")))
"""


def test_with_tracing_off_a_call_imports_and_calls_nothing_of_opentelemetry():
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", OFF_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------------------------------------- OTLP receiver


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict
    resource: dict = field(default_factory=dict)


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """An OTLP/HTTP collector's traces endpoint on 127.0.0.1: POST /v1/traces, protobuf in, protobuf out."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest, ExportTraceServiceResponse)

        self.spans: list[Span] = []
        self.paths: list[str] = []
        self.content_types: list[str] = []
        lock = self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    receiver.paths.append(self.path)
                    receiver.content_types.append(self.headers.get("Content-Type", ""))
                    for resource_spans in request.resource_spans:
                        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            for s in scope_spans.spans:
                                receiver.spans.append(Span(
                                    s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, s.kind,
                                    s.start_time_unix_nano, s.end_time_unix_nano,
                                    {a.key: _value(a.value) for a in s.attributes}, resource))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, done: Callable[[list[Span]], bool], timeout: float = 30.0) -> list[Span]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans never complete: {[(s.name, s.attributes) for s in spans]}")
            time.sleep(0.1)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def tracing_env(otlp: OtlpReceiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


def call_spans(otlp: OtlpReceiver, call_sid: str) -> list[Span]:
    """Every span of the call's trace, once its call span (ended last) has arrived."""
    def ended(spans: list[Span]) -> bool:
        return any(s.name == "call" and s.attributes.get("voicegate.call_sid") == call_sid for s in spans)

    spans = otlp.wait_for(ended)
    (call,) = [s for s in spans if s.name == "call" and s.attributes["voicegate.call_sid"] == call_sid]
    time.sleep(0.5)  # anything exported in the same batch as the call span's is in by now
    return [s for s in otlp.wait_for(ended) if s.trace_id == call.trace_id]


def tree(spans: list[Span]) -> tuple[Span, dict[int, Span], dict[str, list[Span]]]:
    """The call span, its turn spans by turn id, and every span's children by parent span id."""
    (call,) = [s for s in spans if s.name == "call"]
    turns = {s.attributes["voicegate.turn_id"]: s for s in spans if s.name == "turn"}
    children: dict[str, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent_id, []).append(s)
    return call, turns, children


async def test_a_real_call_is_one_trace_with_a_span_per_turn_and_its_stages(otlp):
    with run_gateway(env=tracing_env(otlp)) as gateway:
        before_ns = time.time_ns()
        report = await run_call(gateway.media_url, [CallerTurn(text=SAID)], max_call_s=90)
        assert report.ok and report.completed, report.to_json()
        spans = await asyncio.to_thread(call_spans, otlp, report.call_sid)
        stored = await asyncio.to_thread(gateway.stored_call, report.call_sid)
        logs = gateway.logs()
    after_ns = time.time_ns()
    assert set(otlp.paths) == {"/v1/traces"} and set(otlp.content_types) == {"application/x-protobuf"}

    call, turns, children = tree(spans)
    assert call.parent_id == "" and call.kind == 2  # SPAN_KIND_SERVER: the root of its own trace
    assert call.resource["service.name"] == "voicegate"
    assert call.attributes["voicegate.call_sid"] == report.call_sid
    assert call.attributes["voicegate.stt"] == "whisper" and call.attributes["voicegate.tts"] == "piper"
    assert call.attributes["voicegate.end_reason"] == stored["end_reason"]
    assert before_ns - 2e9 < call.start_ns < call.end_ns < after_ns  # wall-clock nanoseconds

    # A span per turn, under the call, within it; the greeting (0) and the caller's turn (1).
    assert sorted(turns) == [t["turn_id"] for t in stored["turns"]] and {0, 1} <= set(turns)
    assert {s.span_id for s in children[call.span_id]} >= {t.span_id for t in turns.values()}
    for turn_id, turn in turns.items():
        assert turn.parent_id == call.span_id and turn.attributes["voicegate.call_sid"] == report.call_sid
        assert call.start_ns <= turn.start_ns <= turn.end_ns <= call.end_ns
    # The latency figures on the turn span are the ones stored with the turn.
    stored_turn = next(t for t in stored["turns"] if t["turn_id"] == 1)
    caller_turn = turns[1]
    for name in SPLIT:
        if stored_turn["timings"].get(name) is not None:
            assert caller_turn.attributes[f"voicegate.{name}"] == stored_turn["timings"][name], name
    assert caller_turn.attributes["voicegate.voice_to_voice_ms"] > 0
    assert caller_turn.attributes["voicegate.caller_spoke"] is True

    # The caller's turn: its stages as children, each inside the turn and carrying its own figure.
    stages = {s.name: s for s in children[caller_turn.span_id]}
    assert set(stages) == STAGES, set(stages)
    for stage in stages.values():
        assert caller_turn.start_ns <= stage.start_ns <= stage.end_ns <= caller_turn.end_ns, stage.name
        assert stage.attributes["voicegate.call_sid"] == report.call_sid
        assert stage.attributes["voicegate.turn_id"] == 1
        assert abs((stage.end_ns - stage.start_ns) / 1e6 - stage.attributes["voicegate.duration_ms"]) < 0.2
    assert stages["end_of_speech"].attributes["voicegate.vad_ms"] == stored_turn["timings"]["vad_ms"]
    assert stages["tts_first_byte"].attributes["voicegate.tts_first_byte_ms"] == \
        stored_turn["timings"]["tts_first_byte_ms"]
    assert stages["end_of_speech"].start_ns <= stages["llm_first_token"].start_ns <= stages["playback"].start_ns
    # The greeting had no caller speech: only the agent's stages.
    greeting = {s.name for s in children[turns[0].span_id]}
    assert "end_of_speech" not in greeting and {"llm_first_phrase", "tts_first_byte", "playback"} <= greeting

    # The trace id is on the call's log lines from its start on.
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("call_sid") == report.call_sid]
    started = next(i for i, line in enumerate(mine) if line["msg"] in ("call started", "call resumed"))
    assert {line.get("trace_id") for line in mine[started:]} == {call.trace_id}
    assert any(line["msg"] == "turn" and line.get("trace_id") == call.trace_id for line in mine)


REPLY = "Sure, I can help you book that. Which day would suit you best?"


async def test_the_llm_request_is_a_span_under_its_turn(otlp):
    """The cloud path, emulated: the OpenAI SDK's request (its aiohttp transport, instrumented) is a child of
    the turn it answered, with the HTTP attributes of the instrumentation."""
    with run_emulators("--transcript", SAID, "--llm-reply", REPLY, "--llm-first-token", "0.1") as emulators:
        env = {**emulators.gateway_env(), **tracing_env(otlp), "VOICEGATE_LOCAL_ENGINES": "0", "MODEL_VAD": "false",
               "LATENCY_OPTIMIZATION_MODE": "disabled", "OTEL_SERVICE_NAME": "voicegate-test"}
        with run_gateway(env=env) as gateway:
            report = await run_call(gateway.media_url, [CallerTurn(text=SAID)], max_call_s=60)
            assert report.ok and report.completed, report.to_json()
            spans = await asyncio.to_thread(call_spans, otlp, report.call_sid)
            requests = [r for r in emulators.log()["openai"] if r["path"].endswith("/chat/completions")]
    call, turns, children = tree(spans)
    assert call.resource["service.name"] == "voicegate-test"  # OTEL_SERVICE_NAME is the SDK's, and wins
    assert call.attributes["voicegate.stt"] and call.attributes["voicegate.llm"]
    posts = [s for s in spans if s.name == "POST" and "/chat/completions" in
             str(s.attributes.get("url.full", s.attributes.get("http.url", "")))]
    assert posts and len(posts) == len(requests), (len(posts), len(requests))
    by_span = {t.span_id: turn_id for turn_id, t in turns.items()}
    assert all(post.parent_id in by_span for post in posts), [(p.parent_id, by_span) for p in posts]
    caller_posts = [p for p in posts if by_span[p.parent_id] == 1]
    assert caller_posts, "the caller's turn made an LLM request under its span"
    post = caller_posts[0]
    turn = turns[1]
    assert turn.start_ns <= post.start_ns <= turn.end_ns
    assert post.attributes.get("http.response.status_code", post.attributes.get("http.status_code")) == 200
    # The request began when the reply did (the LLM first-token stage starts with the reply request).
    first_token = next(s for s in children[turn.span_id] if s.name == "llm_first_token")
    assert abs(post.start_ns - first_token.start_ns) < 50e6
