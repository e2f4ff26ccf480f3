"""Hostile input: the parser and the call core under fuzzing, and the real server under garbage.

Each hostile input is either ignored (and counted) or answered by closing that one socket with a
clear code; the process and every other call keep working, and the transcript so far is stored.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid

import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway import twilio_protocol as tp
from dialog.events import (
    AudioReceived, CallEnded, CallStarted, DtmfReceived, MarkEchoed, ProviderFailed, ReplyDelta, ReplyDone,
    SendMedia, SpeechAudio, SpeechDone, Tick, TranscriptReceived,
)
from gateway.session import CallSession, Phase
from loadgen.simcaller import CallerTurn, run_call

# ------------------------------------------------------------------ property-based fuzzing

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
                           max_leaves=12)
events = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", "bogus", None, 5])


@st.composite
def twilio_like_messages(draw) -> str:
    message = {"event": draw(events)}
    for key in draw(st.lists(st.sampled_from(["streamSid", "media", "start", "mark", "dtmf", "stop", "sequenceNumber"]),
                             max_size=4)):
        message[key] = draw(json_values)
    if draw(st.booleans()):
        message["media"] = {"payload": draw(st.text(max_size=40) | st.just(base64.b64encode(b"\xff" * 160).decode())),
                            "timestamp": draw(json_values)}
    return orjson.dumps(message).decode()


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), twilio_like_messages()))
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_parser_returns_a_message_or_a_protocol_error(raw):
    try:
        message = tp.parse(raw, max_payload_bytes=1000)
    except tp.ProtocolError as exc:
        assert exc.reason in {"invalid_json", "bad_field", "bad_base64", "unknown_event", "payload_too_large"}
    else:
        assert isinstance(message, (tp.Connected, tp.Start, tp.Media, tp.Dtmf, tp.Mark, tp.Clear, tp.Stop))


core_events = st.one_of(
    st.builds(lambda p: ("audio", p), st.binary(max_size=400)),
    st.builds(lambda t, f, e: ("transcript", t, f, e), st.text(max_size=30), st.booleans(), st.booleans()),
    st.builds(lambda t, x: ("delta", t, x), st.integers(-1, 6), st.text(max_size=30)),
    st.builds(lambda t, h: ("done", t, h), st.integers(-1, 6), st.booleans()),
    st.builds(lambda t, s, a: ("speech", t, s, a), st.integers(-1, 6), st.integers(-1, 4), st.binary(max_size=900)),
    st.builds(lambda t, s: ("speech_done", t, s), st.integers(-1, 6), st.integers(-1, 4)),
    st.builds(lambda n: ("mark", n), st.text(max_size=8) | st.from_regex(r"t[0-6]s[0-4]", fullmatch=True)),
    st.builds(lambda d: ("dtmf", d), st.sampled_from(list("0123456789*#"))),
    st.builds(lambda r, t: ("fail", r, t), st.sampled_from(["stt", "llm", "tts"]), st.integers(-1, 6)),
    st.builds(lambda dt: ("tick", dt), st.floats(0, 3)),
)


@given(st.lists(core_events, max_size=80), st.booleans())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_call_core_never_raises_and_keeps_its_invariants(script, forward):
    session = CallSession()
    session.forward_audio = forward
    now = 10.0
    session.handle(CallStarted(now, "CA", "MZ"))
    for item in script:
        now += 0.02
        match item:
            case ("audio", payload):
                event = AudioReceived(now, payload)
            case ("transcript", text, final, end):
                event = TranscriptReceived(now, text, final, end)
            case ("delta", turn, text):
                event = ReplyDelta(now, turn, text)
            case ("done", turn, hang_up):
                event = ReplyDone(now, turn, hang_up=hang_up)
            case ("speech", turn, sentence, audio):
                event = SpeechAudio(now, turn, sentence, audio)
            case ("speech_done", turn, sentence):
                event = SpeechDone(now, turn, sentence)
            case ("mark", name):
                event = MarkEchoed(now, name)
            case ("dtmf", digit):
                event = DtmfReceived(now, digit)
            case ("fail", role, turn):
                event = ProviderFailed(now, role, turn, "fuzz")
            case ("tick", dt):
                now += dt
                event = Tick(now)
        for action in session.handle(event):
            if isinstance(action, SendMedia):
                assert len(action.payload) == 160
        deadline = session.next_deadline()
        assert deadline is None or deadline == deadline  # never NaN
    session.handle(CallEnded(now + 1, "stop"))
    assert session.phase is Phase.ENDED
    assert session.handle(AudioReceived(now + 2, b"\x00" * 160)) == []
    # Every caller turn that was committed is in the transcript, whatever happened to its reply.
    said = [t.user_text for t in session.turns if t.user_text]
    assert len(said) == len([m for m in session.history if m["role"] == "user" and not m["content"].startswith("[")])


# ------------------------------------------------------------------ the real server under garbage


def _start(stream_sid: str, call_sid: str) -> str:
    return tp.start_message(stream_sid, call_sid)


async def _connect(url: str):
    return await websockets.connect(url, max_size=2**22)


async def _expect_open(ws, seconds: float = 0.3) -> None:
    """The server keeps the socket: reading yields messages or times out, but does not close."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    except TimeoutError:
        return


def _protocol_errors(gateway) -> dict[str, float]:
    text = gateway.get("/metrics")[1].decode()
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r'voicegate_protocol_errors_total\{reason="([a-z0-9_]+)"\} ([0-9.e+]+)', text)}


HOSTILE = [
    ("invalid_json", ["{not json", "[]", "null"]),
    ("unknown_event", ['{"event":"hello"}', '{"event":"clear","streamSid":"MZx"}']),
    ("bad_base64", ['{"event":"media","streamSid":"%s","media":{"payload":"!!!"}}']),
    ("wrong_stream_sid", ['{"event":"media","streamSid":"MZnot-mine","media":{"payload":"/w=="}}']),
    ("second_start", [tp.start_message("MZsecond", "CAsecond")]),
    ("payload_too_large", ['{"event":"media","streamSid":"%s","media":{"payload":"' + base64.b64encode(b"\xff" * 40_000).decode() + '"}}']),
    ("bad_field", ['{"event":"dtmf","streamSid":"%s","dtmf":{"digit":"ZZ"}}', '{"event":"mark","mark":7}']),
]


@pytest.mark.timeout(120)
async def test_each_hostile_input_is_counted_and_ignored(offline_gateway):
    before = _protocol_errors(offline_gateway)
    for reason, messages in HOSTILE:
        stream_sid, call_sid = f"MZ{uuid.uuid4().hex}", f"CA{uuid.uuid4().hex}"
        async with await _connect(offline_gateway.media_url) as ws:
            await ws.send(tp.connected_message())
            await ws.send(_start(stream_sid, call_sid))
            for message in messages:
                await ws.send(message.replace("%s", stream_sid) if "%s" in message else message)
            await ws.send(b"\x00\x01binary")  # binary frames are noise, not a reason to drop a call
            # Odd-length audio is still audio: mu-law is one byte a sample.
            await ws.send(tp.inbound_media_message(stream_sid, b"\xff" * 161, 9, 1, 20))
            await _expect_open(ws)
            await ws.send(tp.stop_message(stream_sid, call_sid, 99))
    await asyncio.sleep(0.3)
    after = _protocol_errors(offline_gateway)
    for reason, _ in HOSTILE:
        assert after.get(reason, 0) > before.get(reason, 0), reason
    assert after.get("binary_frame", 0) > before.get("binary_frame", 0)
    assert offline_gateway.get("/healthz")[0] == 200


@pytest.mark.timeout(60)
async def test_media_before_start_and_oversized_messages(offline_gateway):
    before = _protocol_errors(offline_gateway)
    async with await _connect(offline_gateway.media_url) as ws:
        await ws.send(tp.inbound_media_message("MZ0", b"\xff" * 160, 1, 1, 0))
        await _expect_open(ws, 0.2)
    assert _protocol_errors(offline_gateway).get("media_before_start", 0) > before.get("media_before_start", 0)
    # Bigger than the server's maximum message size: that socket is closed (1009), nothing else is.
    async with await _connect(offline_gateway.media_url) as ws:
        await ws.send("x" * 200_000)
        with pytest.raises(websockets.ConnectionClosed) as info:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        assert info.value.rcvd.code == 1009
    assert offline_gateway.get("/healthz")[0] == 200


@pytest.mark.timeout(120)
async def test_flooded_call_is_closed_while_another_call_completes_a_turn(offline_gateway):
    flood_sid = f"CA{uuid.uuid4().hex}"

    async def flood() -> int | None:
        stream_sid, call_sid = f"MZ{uuid.uuid4().hex}", flood_sid
        frame = base64.b64encode(bytes(range(0, 256, 2)) * 5).decode()  # loud, 640 bytes
        media = '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (stream_sid, frame)
        garbage = ["{bad", '{"event":"nope"}', media, media, media, media]
        async with await _connect(offline_gateway.media_url) as ws:
            await ws.send(_start(stream_sid, call_sid))
            try:
                async with asyncio.timeout(30):
                    i = 0
                    while True:
                        await ws.send(garbage[i % len(garbage)])
                        i += 1
                        if i % 50 == 0:
                            await asyncio.sleep(0)  # let the normal call's task run in this process too
            except websockets.ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    flood_task = asyncio.create_task(flood())
    report = await run_call(offline_gateway.media_url, [CallerTurn(text="Hello, I would like to book an appointment")],
                            max_call_s=60)
    code = await flood_task
    # The flooding socket was closed with the flood code. (A client busy flooding may not read the close
    # frame before the server gives up waiting for the handshake and drops the TCP connection.)
    assert code in (4008, None)
    assert offline_gateway.stored_call(flood_sid)["end_reason"] == "flood"
    assert report.error is None and report.completed, report
    assert report.turns[0].latency_ms is not None
    status, body = offline_gateway.get(f"/api/calls/{report.call_sid}")
    assert any("appointment" in (t["user_text"] or "").lower() for t in json.loads(body)["turns"])
