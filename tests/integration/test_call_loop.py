"""The call loop end to end: the real server on 127.0.0.1, offline engines, a simulated Twilio caller."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from loadgen.simcaller import CallerTurn, run_call

pytestmark = pytest.mark.timeout(180)


def post_form(url: str, fields: dict[str, str]) -> tuple[int, str]:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=10) as resp:
        return resp.status, resp.read().decode()


def test_voice_webhook_answers_connect_stream_then_redirect(offline_gateway):
    status, body = post_form(offline_gateway.url + "/twilio/voice", {"CallSid": "CA123", "From": "+15550001111"})
    assert status == 200
    root = ET.fromstring(body)
    assert [child.tag for child in root] == ["Connect", "Redirect"]
    stream = root.find("Connect/Stream")
    assert stream.get("url") == f"wss://127.0.0.1:{offline_gateway.port}/twilio/media"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["callSid"] == "CA123" and params["caller"] == "+15550001111"


def test_health_readiness_and_metrics(offline_gateway):
    assert offline_gateway.get("/healthz")[0] == 200
    status, body = offline_gateway.get("/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["stt"] == "whisper" and ready["tts"] == "piper"
    status, body = offline_gateway.get("/metrics")
    text = body.decode()
    for name in ("voicegate_active_calls", "voicegate_calls_total", "voicegate_turns_total",
                 "voicegate_stt_latency_seconds", "voicegate_llm_first_token_seconds",
                 "voicegate_tts_first_byte_seconds", "voicegate_voice_to_voice_seconds", "voicegate_errors_total",
                 "voicegate_gc_pause_seconds"):
        assert name in text


async def test_offline_call_hears_the_agent(offline_gateway, whisper):
    report = await run_call(offline_gateway.media_url, [CallerTurn(text="Hello, I would like to book an appointment")],
                            parameters={"caller": "+15550001111"}, max_call_s=60)
    assert report.error is None and report.completed, report
    # Every reply message was valid 8 kHz mu-law in 20 ms frames.
    assert report.received and len(report.received) % 160 == 0
    turn = report.turns[0]
    assert turn.latency_ms is not None and turn.latency_ms > 0
    # What the caller heard, transcribed by the local STT, is the agent's words.
    heard = whisper.transcribe_mulaw(report.heard).lower()
    assert "appointment" in heard  # the greeting
    assert re.search(r"what day|which day", heard), heard  # the reply to the caller's turn
    # The transcript is stored, turn by turn, with timings.
    status, body = offline_gateway.get(f"/api/calls/{report.call_sid}")
    call = json.loads(body)
    user_turns = [t for t in call["turns"] if t["user_text"]]
    assert status == 200 and "appointment" in user_turns[0]["user_text"].lower()
    assert user_turns[0]["timings"]["voice_to_voice_ms"] > 0


async def test_barge_in_clears_and_keeps_only_what_was_heard(offline_gateway):
    # The greeting is ~4 s long: the caller talks over it 500 ms in.
    report = await run_call(offline_gateway.media_url,
                            [CallerTurn(text="I want to book an appointment", barge_in_ms=500)],
                            max_call_s=60)
    assert report.error is None, report
    assert report.clears >= 1
    assert report.turns[0].clear_ms is not None and report.turns[0].clear_ms < 1000
    status, body = offline_gateway.get(f"/api/calls/{report.call_sid}")
    greeting = json.loads(body)["turns"][0]
    assert greeting["interrupted"] is True
    assert len(greeting["heard_text"]) < len(greeting["agent_text"])
    assert greeting["agent_text"].startswith(greeting["heard_text"].rstrip(".,"))

