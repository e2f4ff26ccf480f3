"""Signatures, rate limits, headers: unit tests, then the real server refusing what does not belong."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websockets
from twilio.request_validator import RequestValidator

from gateway.security import TokenBuckets, TwilioSignatures
from tests.support import run_gateway

TOKEN = "test-auth-token-0123456789"


def test_token_bucket_allows_burst_then_rate():
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=2, clock=lambda: now[0])
    assert [buckets.allow("a") for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert buckets.allow("a") and not buckets.allow("a")
    assert buckets.allow("b")  # other IPs are independent
    buckets.allow("c")  # bounded: "a" is forgotten, and starts with a full bucket again
    assert buckets.allow("a")


def test_signature_checks_url_and_params():
    sig = TwilioSignatures(TOKEN, True)
    validator = RequestValidator(TOKEN)
    url = "https://gw.example.com/twilio/voice"
    params = {"CallSid": "CA1", "From": "+15550001111"}
    good = validator.compute_signature(url, params)
    assert sig.check_http(url, params, good)
    assert not sig.check_http(url, {**params, "From": "+15559999999"}, good)
    assert not sig.check_http("https://other.example/twilio/voice", params, good)
    assert not sig.check_http(url, params, None)
    stream = "wss://gw.example.com/twilio/media"
    ws_good = validator.compute_signature(stream, {})
    assert sig.check_media_upgrade(stream, ws_good) and not sig.check_media_upgrade(stream, "forged")
    assert not sig.check_media_upgrade("wss://other.example/twilio/media", ws_good)
    # Without a token there is nothing to check against; explicitly disabled means disabled.
    assert TwilioSignatures("", True).check_media_upgrade("wss://x/twilio/media", None)
    assert TwilioSignatures(TOKEN, False).check_http(url, params, None)


@pytest.fixture(scope="module")
def signed_gateway():
    env = {"TWILIO_AUTH_TOKEN": TOKEN, "VOICEGATE_LOCAL_ENGINES": "0", "PUBLIC_URL": "https://gw.example.com",
           "CORS_ORIGINS": "https://ops.example.com", "HTTP_RATE_PER_IP": "200"}
    with run_gateway(env=env, ready=False) as gateway:
        yield gateway


def _post(url: str, fields: dict[str, str], headers: dict[str, str]) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), dict(exc.headers)


def test_forged_or_missing_webhook_signature_is_403(signed_gateway):
    fields = {"CallSid": "CA1", "From": "+15550001111"}
    url = signed_gateway.url + "/twilio/voice"
    assert _post(url, fields, {})[0] == 403
    assert _post(url, fields, {"X-Twilio-Signature": "Zm9yZ2Vk"})[0] == 403
    # Signed over the PUBLIC URL (what Twilio sees), not the local address.
    good = RequestValidator(TOKEN).compute_signature("https://gw.example.com/twilio/voice", fields)
    status, body, _ = _post(url, fields, {"X-Twilio-Signature": good})
    assert status == 200 and "<Response>" in body  # past the signature check (engines are not loaded here)
    status_url = signed_gateway.url + "/twilio/status"
    assert _post(status_url, {"CallSid": "CA1"}, {})[0] == 403
    good = RequestValidator(TOKEN).compute_signature("https://gw.example.com/twilio/status", {"CallSid": "CA1"})
    assert _post(status_url, {"CallSid": "CA1"}, {"X-Twilio-Signature": good})[0] == 204


async def test_media_upgrade_needs_the_signature(signed_gateway):
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(signed_gateway.media_url):
            pass
    assert info.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(signed_gateway.media_url, additional_headers={"X-Twilio-Signature": "x"}):
            pass
    good = RequestValidator(TOKEN).compute_signature("wss://gw.example.com/twilio/media", {})
    # A good signature passes the handshake (101). This gateway has no engines loaded, so it then closes
    # the stream with 1013 "try again later" — past the signature check, which is what is tested here.
    async with websockets.connect(signed_gateway.media_url, additional_headers={"X-Twilio-Signature": good}) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1013


def test_security_headers_and_cors(signed_gateway):
    req = urllib.request.Request(signed_gateway.url + "/healthz", headers={"Origin": "https://ops.example.com"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        headers = resp.headers
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Strict-Transport-Security"].startswith("max-age=")  # PUBLIC_URL is https
    assert headers["Access-Control-Allow-Origin"] == "https://ops.example.com"
    req = urllib.request.Request(signed_gateway.url + "/healthz", headers={"Origin": "https://evil.example"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers
    preflight = urllib.request.Request(signed_gateway.url + "/api/calls", method="OPTIONS",
                                       headers={"Origin": "https://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(preflight, timeout=5)
    with info.value:
        assert info.value.code == 403


def test_http_rate_limit_answers_429():
    with run_gateway(env={"VOICEGATE_LOCAL_ENGINES": "0", "HTTP_RATE_PER_IP": "5"}, ready=False) as gateway:
        statuses = [gateway.get("/healthz")[0] for _ in range(40)]
        assert 429 in statuses and statuses[0] == 200
        assert gateway.process.poll() is None
