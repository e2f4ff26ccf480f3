"""An off-script caller through the real server on the cloud path (issue 21): Deepgram, OpenAI and
ElevenLabs through their official SDKs against the emulators, the OpenAI emulator scripted per
caller line by the off-script conversation's rule table (loadgen/conversations.py)."""

from __future__ import annotations

import json

import pytest

from emulators.elevenlabs import expected_audio
from loadgen.conversations import OFF_SCRIPT, off_script_rules
from loadgen.simcaller import CallerTurn, run_call
from tests.support import run_emulators, run_gateway

pytestmark = pytest.mark.timeout(240)

LINES = [text for text, _ in OFF_SCRIPT[:3]]  # an answer, a line the rules read, a tool call


@pytest.fixture(scope="module")
def off_script(tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "rules.json"
    rules.write_text(json.dumps(off_script_rules()))
    with run_emulators("--stt-final-delay", "0.15", "--llm-first-token", "0.3", "--tts-first-byte", "0.15",
                       "--llm-rules", str(rules), *[a for line in LINES for a in ("--transcript", line)]) as emulators:
        env = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "LATENCY_OPTIMIZATION_MODE": "enabled"}
        with run_gateway(env=env) as gateway:
            yield emulators, gateway


async def test_an_off_script_call_answers_each_turn_after_one_request(off_script):
    emulators, gateway = off_script
    report = await run_call(gateway.media_url, [CallerTurn(text=line) for line in LINES], max_call_s=90)
    assert report.error is None, report
    assert all(t.latency_ms is not None for t in report.turns), report.turns

    call = gateway.stored_call(report.call_sid)
    said = [t for t in call["turns"] if t["user_text"]]
    assert [t["user_text"] for t in said] == LINES, said
    # What the first audio of each turn waited for, as the gateway recorded it.
    assert [t["timings"].get("reply_kind") for t in said] == ["llm", "quick", "llm_tool"], said
    assert said[0]["agent_text"].startswith("I'm sorry, I can't help with deliveries")
    assert said[2]["agent_text"].startswith("Okay. Great, Wednesday,"), said[2]

    chats = [r for r in emulators.log()["openai"] if r["path"].endswith("/chat/completions")]
    asked = [next(m["content"] for m in reversed(r["body"]["messages"]) if m["role"] == "user") for r in chats]
    # One request for each off-script line, with the tool on offer; none for the line the rules read.
    assert asked == [LINES[0], LINES[2]], asked
    assert all(r["body"]["tools"][0]["function"]["name"] == "record_booking_details" for r in chats)
    assert chats[1]["reply"]["tool"] == "record_booking_details"
    # The caller heard the model's answer to what they asked, not a re-ask of the question.
    assert expected_audio("Would you like to book one?") in report.heard
