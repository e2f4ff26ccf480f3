"""Twilio REST through the gateway, against the Twilio REST emulator: an outbound call placed with
POST /api/calls, a transfer when the dialog hands off, and a refused key shown on /readyz."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs

import pytest

from loadgen.simcaller import CallerTurn, run_call
from tests.support import run_emulators, run_gateway

pytestmark = pytest.mark.timeout(240)

ACCOUNT = "AC" + "1" * 32
TOKEN = "twilio-test-token"
DASHBOARD = "dashboard-secret-token"


@pytest.fixture(scope="module")
def stack():
    with run_emulators("--transcript", "purple monkey dishwasher") as emulators:
        env = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "TWILIO_ACCOUNT_SID": ACCOUNT,
               "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_API_BASE_URL": emulators.url, "TWILIO_VALIDATE_SIGNATURES": "false",
               "DASHBOARD_TOKEN": DASHBOARD, "TRANSFER_NUMBER": "+15550009999", "TWILIO_CALLER_ID": "+15550001000"}
        with run_gateway(env=env) as gateway:
            yield emulators, gateway


def _post_json(url: str, body: dict, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_outbound_call_connects_back_to_the_media_stream(stack):
    emulators, gateway = stack
    assert _post_json(gateway.url + "/api/calls", {"to": "+15550002222"}, None)[0] == 401
    assert _post_json(gateway.url + "/api/calls", {"to": "not a number"}, DASHBOARD)[0] == 400
    status, body = _post_json(gateway.url + "/api/calls", {"to": "+15550002222"}, DASHBOARD)
    assert status == 201 and body["call_sid"].startswith("CA")
    (create,) = [r for r in emulators.log()["twilio"] if r["method"] == "POST" and r["path"].endswith("/Calls.json")]
    form = create["form"]
    assert form["To"] == "+15550002222" and form["From"] == "+15550001000"
    assert f"wss://127.0.0.1:{gateway.port}/twilio/media" in form["Twiml"] and "outbound" in form["Twiml"]


async def test_handoff_transfers_the_call_through_rest(stack):
    emulators, gateway = stack
    # Nothing the caller says is understood: after the re-asks, the dialog hands off to a person.
    turns = [CallerTurn(text="purple monkey dishwasher") for _ in range(4)]
    report = await run_call(gateway.media_url, turns, max_call_s=120)
    updates = [r for r in emulators.log()["twilio"] if r["method"] == "POST" and report.call_sid in r["path"]]
    assert updates, emulators.log()["twilio"]
    assert "<Dial>+15550009999</Dial>" in updates[-1]["form"]["Twiml"]
    call = gateway.stored_call(report.call_sid)
    assert call["end_reason"] == "hangup:dialog"
    assert "put you through" in call["turns"][-1]["agent_text"]


def test_refused_key_is_a_readiness_error():
    with run_emulators("--openai-bad-key", "sk-wrong") as emulators:
        env = {**emulators.gateway_env(), "OPENAI_API_KEY": " sk-wrong\n", "VOICEGATE_LOCAL_ENGINES": "0"}
        with run_gateway(env=env, ready=False) as gateway:
            for _ in range(100):
                status, body = gateway.get("/readyz")
                ready = json.loads(body)
                if ready.get("loaded"):
                    break
                time.sleep(0.1)
            assert status == 503 and "refused" in ready["problems"]["openai"]
            assert "sk-wrong" not in body.decode() and "sk-wrong" not in gateway.logs()
            assert "openai refused the configured credentials" in gateway.logs()
