"""The dashboard's HTTP and WebSocket surface on a real gateway: page, login, guarded API, live feed,
and the softphone's token on /twilio/media."""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.auth import issue_token, verify_token
from loadgen.simcaller import CallerTurn, run_call
from tests.web.web_helpers import DASHBOARD_TOKEN, http, login, ws_url

SENTENCE = "Hello, I would like to book an appointment"


def test_page_and_its_assets_are_served_locally(dashboard_gateway):
    status, headers, body = http(dashboard_gateway.url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    html = body.decode()
    assert "Call the agent" in html and 'data-testid="transcript"' in html
    assert "http://" not in html and "https://" not in html  # no CDN: every asset is ours
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    for asset, kind in (("dashboard.js", "javascript"), ("softphone.js", "javascript"),
                        ("capture-worklet.js", "javascript"), ("dashboard.css", "text/css")):
        status, headers, body = http(f"{dashboard_gateway.url}/static/{asset}")
        assert status == 200 and kind in headers["content-type"], asset
        assert b"https://" not in body and b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")


def test_login_issues_short_lived_scoped_tokens(dashboard_gateway):
    url = dashboard_gateway.url + "/api/token"
    tokens = login(dashboard_gateway)
    assert verify_token(DASHBOARD_TOKEN, tokens["dashboard"], "dashboard")
    assert verify_token(DASHBOARD_TOKEN, tokens["softphone"], "softphone")
    assert not verify_token(DASHBOARD_TOKEN, tokens["softphone"], "dashboard")
    assert tokens["mode"] == "token" and 0 < tokens["softphone_expires_in"] <= tokens["expires_in"] <= 3600
    assert DASHBOARD_TOKEN not in json.dumps(tokens)
    # The secret as a form field, or as JSON, works as well as the Bearer header.
    form = http(url, "POST", f"token={DASHBOARD_TOKEN}".encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    assert form[0] == 200
    as_json = http(url, "POST", json.dumps({"token": DASHBOARD_TOKEN}).encode(), {"Content-Type": "application/json"})
    assert as_json[0] == 200
    # The page refreshes with its dashboard token; a softphone token cannot log in.
    assert http(url, "POST", b"", {"Authorization": f"Bearer {tokens['dashboard']}"})[0] == 200
    assert http(url, "POST", b"", {"Authorization": f"Bearer {tokens['softphone']}"})[0] == 401
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {DASHBOARD_TOKEN}"}):
        status, response_headers, body = http(url, "POST", b"", headers)
        assert status == 401 and "bearer" in response_headers["www-authenticate"].lower()
        assert DASHBOARD_TOKEN.encode() not in body
    assert http(url)[0] == 405  # GET: never a token from a link


def test_the_call_api_needs_a_dashboard_token(dashboard_gateway):
    tokens = login(dashboard_gateway)
    base = dashboard_gateway.url
    for path in ("/api/calls", "/api/calls/CAnothing", "/api/bookings", "/api/status"):
        assert http(base + path)[0] == 401, path  # even from 127.0.0.1: a token is configured
        assert http(base + path, headers={"Authorization": f"Bearer {tokens['softphone']}"})[0] == 401, path
    ok = {"Authorization": f"Bearer {tokens['dashboard']}"}
    status, _, body = http(base + "/api/calls", headers=ok)
    assert status == 200 and "calls" in json.loads(body)
    assert http(base + "/api/calls/CAnothing", headers=ok)[0] == 404
    status, _, body = http(base + "/api/status", headers=ok)
    status_body = json.loads(body)
    assert status == 200 and status_body["ready"] is True
    assert status_body["engines"]["stt"] and status_body["engines"]["tts"]
    assert {"problems", "breakers", "provider_errors", "active_calls"} <= status_body.keys()
    # Health and metrics stay open for load balancers and Prometheus.
    assert http(base + "/healthz")[0] == 200 and http(base + "/metrics")[0] == 200


async def _refused(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5):
            pass
    return refused.value.response.status_code


async def test_the_dashboard_feed_refuses_bad_tokens(dashboard_gateway):
    tokens = login(dashboard_gateway)
    expired = issue_token(DASHBOARD_TOKEN, "dashboard", ttl_seconds=60, now=time.time() - 120)
    forged = issue_token("not-the-secret", "dashboard")
    for token in ("", "garbage", tokens["softphone"], expired, forged):
        assert await _refused(ws_url(dashboard_gateway, f"/ws/dashboard?token={token}")) == 403
    assert await _refused(ws_url(dashboard_gateway, "/ws/dashboard")) == 403


async def test_the_media_endpoint_refuses_a_bad_softphone_token(dashboard_gateway):
    tokens = login(dashboard_gateway)
    expired = issue_token(DASHBOARD_TOKEN, "softphone", ttl_seconds=60, now=time.time() - 120)
    for token in ("", "garbage", tokens["dashboard"], expired):
        assert await _refused(ws_url(dashboard_gateway, f"/twilio/media?token={token}")) == 403


async def _feed_until(ws, predicate, timeout: float) -> list[dict]:
    seen: list[dict] = []
    async with asyncio.timeout(timeout):
        while not seen or not predicate(seen[-1]):
            seen.append(orjson.loads(await ws.recv()))
    return seen


async def test_the_live_feed_follows_a_softphone_call(dashboard_gateway):
    tokens = login(dashboard_gateway)
    async with connect(ws_url(dashboard_gateway, f"/ws/dashboard?token={tokens['dashboard']}")) as feed:
        snapshot = orjson.loads(await asyncio.wait_for(feed.recv(), 5))
        assert snapshot["type"] == "snapshot" and snapshot["status"]["ready"] is True
        media = ws_url(dashboard_gateway, f"/twilio/media?token={tokens['softphone']}")
        report = await run_call(media, [CallerTurn(text=SENTENCE)], max_call_s=90,
                                parameters={"caller": "softphone", "direction": "browser"})
        assert report.ok and report.completed, report.to_json()
        events = await _feed_until(feed, lambda m: m["type"] == "call_ended" and m["call_sid"] == report.call_sid, 30)

    mine = [e for e in events if report.call_sid in (e.get("call_sid"), e.get("call", {}).get("call_sid"))]
    assert [e["type"] for e in mine][0] == "call_started" and mine[-1]["type"] == "call_ended"
    started = mine[0]["call"]
    assert started["direction"] == "browser" and started["caller"] == "***"  # masked, like every caller
    turns = [e["turn"] for e in mine if e["type"] == "turn"]
    greeting, answer = turns[0], turns[-1]
    assert greeting["user_text"] is None and greeting["agent_text"]
    assert "appointment" in answer["user_text"].lower()
    assert answer["agent_text"] and answer["heard_text"]  # the caller's mark echoes reached the gateway
    assert answer["interrupted"] is False
    timings = answer["timings"]
    assert {"vad_ms", "stt_ms", "llm_first_sentence_ms", "tts_first_byte_ms", "gateway_overhead_ms",
            "voice_to_voice_ms"} <= timings.keys()
    assert timings["voice_to_voice_ms"] > 0

    # The same transcript is in the store, behind the dashboard token.
    status, _, body = http(f"{dashboard_gateway.url}/api/calls/{report.call_sid}",
                           headers={"Authorization": f"Bearer {tokens['dashboard']}"})
    stored = json.loads(body)
    assert status == 200 and stored["end_reason"] == "stop"
    assert [t["user_text"] or "" for t in stored["turns"]] == [t["user_text"] or "" for t in turns]


def test_without_a_dashboard_token_only_local_requests_get_in(offline_gateway):
    base = offline_gateway.url
    status, _, body = http(base + "/api/token", "POST", b"")
    assert status == 200 and json.loads(body)["mode"] == "local"
    assert http(base + "/api/calls")[0] == 200
    assert http(base + "/")[0] == 200
    relayed = {"X-Forwarded-For": "198.51.100.7"}  # what a reverse proxy in front would add
    for method, path in (("POST", "/api/token"), ("GET", "/api/calls"), ("GET", "/")):
        status, _, body = http(base + path, method, b"" if method == "POST" else None, relayed)
        assert status == 403 and b"DASHBOARD_TOKEN" in body, path


async def test_without_a_dashboard_token_foreign_pages_cannot_reach_the_feed(offline_gateway):
    # Open mode trusts this machine, not every web page open in a browser on it: WebSockets are not
    # subject to CORS, so the Origin is checked, and the Host (against DNS rebinding).
    feed = ws_url(offline_gateway, "/ws/dashboard")
    async with connect(feed, origin=f"http://127.0.0.1:{offline_gateway.port}") as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
    with pytest.raises(InvalidStatus):
        async with connect(feed, origin="https://evil.example", open_timeout=5):
            pass
    with pytest.raises(InvalidStatus):
        media = ws_url(offline_gateway, "/twilio/media?token=x")
        async with connect(media, origin="https://evil.example", open_timeout=5):
            pass
    rebound = {"Host": f"rebound.example:{offline_gateway.port}"}
    status, _, body = http(offline_gateway.url + "/api/calls", headers=rebound)
    assert status == 403 and b"DASHBOARD_TOKEN" in body
