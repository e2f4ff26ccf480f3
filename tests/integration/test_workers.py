"""Several workers on a real Redis: shared call registry and metrics, and a call that survives the death
of the worker serving it (Twilio's <Redirect> brings it back to another worker, which resumes it)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest
import redis

from loadgen.simcaller import CallerTurn, run_call
from tests.support import run_gateway, run_redis

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def cluster():
    with run_redis() as redis_url:
        with run_gateway(env={"REDIS_URL": redis_url}, args=("--workers", "2")) as gateway:
            # /readyz answered 200 from one worker; the other may still be loading its models (and would
            # refuse a call with 1013). Wait until a run of answers, spread over both, all say ready.
            deadline = time.monotonic() + 120
            streak = 0
            while streak < 20 and time.monotonic() < deadline:
                streak = streak + 1 if gateway.get("/readyz")[0] == 200 else 0
                time.sleep(0.05)
            yield gateway, redis_url


def _metric(gateway, name: str) -> float:
    text = gateway.get("/metrics")[1].decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


def _live(gateway) -> list[dict]:
    return json.loads(gateway.get("/api/calls")[1])["live"]


async def test_workers_share_the_call_registry_and_metrics(cluster):
    gateway, redis_url = cluster
    before = _metric(gateway, "voicegate_calls_total")
    calls = [asyncio.create_task(run_call(gateway.media_url, [CallerTurn(text="Hello, I would like to book"),
                                                            CallerTurn(wait_ms=4000)], max_call_s=90))
             for _ in range(4)]
    seen: set[str] = set()
    workers: set[str] = set()
    hashes: set[str] = set()
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while len(seen) < 4 and time.monotonic() < deadline:
        for call in _live(gateway):  # whichever worker answers, it lists every worker's calls
            seen.add(call["call_sid"])
            workers.add(str(call["worker"]))
        # The registry lives in Redis, one hash per worker process.
        hashes |= {k.decode().split(":")[2] for k in client.keys("voicegate:worker:*:calls")}
        await asyncio.sleep(0.3)
    reports = await asyncio.gather(*calls)
    assert all(r.error is None and r.turns[0].latency_ms for r in reports), reports
    assert seen == {r.call_sid for r in reports}
    assert hashes and workers <= hashes
    deadline = time.monotonic() + 15  # ended calls leave the registry (a racing heartbeat: one beat later)
    while client.keys("voicegate:worker:*:calls") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert client.keys("voicegate:worker:*:calls") == []
    # Metrics add up across workers, whichever worker serves the scrape.
    readings = {_metric(gateway, "voicegate_calls_total") - before for _ in range(6)}
    assert readings == {4.0}


def _post_voice(gateway, call_sid: str, attempt: int) -> ET.Element:
    data = urllib.parse.urlencode({"CallSid": call_sid, "From": "+15550007777"}).encode()
    req = urllib.request.Request(f"{gateway.url}/twilio/voice?attempt={attempt}", data=data)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return ET.fromstring(resp.read())


async def test_call_resumes_on_another_worker_after_its_worker_is_killed(cluster, whisper):
    gateway, _ = cluster
    call_sid = "CA" + os.urandom(16).hex()
    first = asyncio.create_task(run_call(
        gateway.media_url,
        [CallerTurn(text="Hello, I would like to book an appointment"), CallerTurn(text="Next Tuesday"),
         CallerTurn(wait_ms=20000)],
        call_sid=call_sid, parameters={"callSid": call_sid, "caller": "+15550007777"}, max_call_s=120))
    # Wait until the agent has asked for the time (the caller said the day), then kill that worker.
    deadline = time.monotonic() + 90
    worker = None
    while time.monotonic() < deadline:
        call = gateway.stored_call(call_sid, until=lambda c: True, timeout=1)
        if any("tuesday" in (t.get("user_text") or "").lower() for t in call.get("turns", [])):
            worker = next((c["worker"] for c in _live(gateway) if c["call_sid"] == call_sid), None)
            if worker:
                break
        await asyncio.sleep(0.3)
    assert worker, "the call never reached the second turn"
    os.kill(int(worker), signal.SIGKILL)
    cut = await first
    assert cut.error is not None or cut.close_code not in (1000,)  # the stream died with its worker

    # Twilio now runs the TwiML after <Connect>: a <Redirect> back to /twilio/voice, which answers a new stream.
    twiml = _post_voice(gateway, call_sid, attempt=1)
    stream = twiml.find("Connect/Stream")
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["attempt"] == "1" and params["callSid"] == call_sid

    resumed = await run_call(gateway.media_url, [CallerTurn(text="At 3 pm")], call_sid=call_sid,
                             parameters=params, max_call_s=90)
    assert resumed.error is None and resumed.turns[0].latency_ms, resumed
    call = gateway.stored_call(call_sid, until=lambda c: any("3" in (t.get("agent_text") or "")
                                                             for t in c.get("turns", [])))
    agent = [t["agent_text"] for t in call["turns"]]
    assert any("cut off" in a and "what time" in a.lower() for a in agent), agent  # picked up the question
    confirm = [a for a in agent if "3 pm" in a]
    assert confirm and "Tuesday" in confirm[-1], agent  # the day from before the crash is still there
    heard = whisper.transcribe_mulaw(resumed.heard).lower()
    assert "cut off" in heard and "tuesday" in heard
