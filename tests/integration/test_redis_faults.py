"""Redis faults through the real server: a real `redis-server` the test stops and starts again.

- Down at startup: the gateway starts, says so (/readyz "degraded", `voicegate_redis_up` 0, one log
  line), takes calls on in-process state, and uses Redis as soon as it is up.
- Killed in the middle of a call: the call goes on and every utterance is answered once; when Redis
  comes back (restarted empty), the worker's registry entry and the call's context are written back
  by themselves, and the metrics count the outage and the failed operations.
- A resumed call whose context cannot be found starts a fresh conversation, and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.integration import fault_table, spoken
from tests.integration.handover import follow_call
from tests.support import eventually, free_port, run_emulators, run_gateway, stop_process

pytestmark = pytest.mark.timeout(300)

SCRIPT = ("I would like to book an appointment", "next Wednesday", "at 11 am", "yes please")
RECOVERY_S = 5.0  # REDIS_RETRY_SECONDS is 1: Redis back is noticed within a couple of seconds


class RedisServer:
    """A redis-server on a fixed port that can be killed and started again (empty: no persistence)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="voicegate-redis-")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: what an OOM kill or a lost node looks like (nothing flushed, connections reset)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=1)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture
def redis_server():
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def emulators():
    with run_emulators("--stt-final-delay", "0.15", "--tts-first-byte", "0.15") as emu:
        emu.configure({"deepgram": {"voiceprints": spoken.voiceprints(SCRIPT)}})
        yield emu


def env_for(emu, redis_url: str, **extra: str) -> dict[str, str]:
    return {**emu.gateway_env(), "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "REDIS_URL": redis_url,
            "VOICEGATE_LOCAL_ENGINES": "0", **extra}


def readiness(gateway) -> tuple[int, dict]:
    status, body = gateway.get("/readyz")
    return status, json.loads(body)


def metric(gateway, name: str) -> float:
    text = gateway.get("/metrics")[1].decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


async def test_redis_down_at_startup_then_back(emulators, redis_server):
    with run_gateway(env=env_for(emulators, redis_server.url)) as gateway:
        status, body = await asyncio.to_thread(readiness, gateway)
        assert status == 200 and body["shared_state"]["status"] == "degraded", body  # degraded, not unready
        assert await asyncio.to_thread(metric, gateway, "voicegate_redis_up") == 0
        sid = "CA" + os.urandom(16).hex()
        followed = await follow_call(gateway, [gateway], spoken.turns(SCRIPT[:2]), sid, max_call_s=60)
        assert followed.completed and not followed.handed_over, [leg.error for leg in followed.legs]

        redis_server.start()
        await eventually(lambda: readiness(gateway)[1]["shared_state"]["status"] == "ok", "Redis back", RECOVERY_S)
        assert await asyncio.to_thread(metric, gateway, "voicegate_redis_up") == 1
        # Used again at once: a new call is in the registry in Redis while it runs.
        sid2 = "CA" + os.urandom(16).hex()
        task = asyncio.create_task(follow_call(gateway, [gateway], spoken.turns(SCRIPT[:1]), sid2, max_call_s=60))
        client = redis_server.client()
        await eventually(lambda: any(client.hexists(k, sid2) for k in client.keys("voicegate:worker:*:calls")),
                         "the new call in Redis' registry", 15)
        assert (await task).completed
        logs = gateway.logs()
    assert logs.count("redis unavailable") == 1 and "redis is back" in logs


async def test_redis_killed_mid_call_the_call_goes_on_and_state_comes_back(emulators, redis_server):
    redis_server.start()
    with run_gateway(env=env_for(emulators, redis_server.url)) as gateway:
        sid = "CA" + os.urandom(16).hex()
        task = asyncio.create_task(follow_call(gateway, [gateway], spoken.turns(SCRIPT), sid, max_call_s=90))
        client = redis_server.client()
        # After the first turn the call's context is in Redis; then Redis dies.
        await eventually(lambda: client.exists(f"voicegate:ctx:{sid}") and b"book" in (client.get(
            f"voicegate:ctx:{sid}") or b""), "the first turn's context in Redis", 40)
        redis_server.kill()
        killed_at = time.monotonic()
        await eventually(lambda: readiness(gateway)[1]["shared_state"]["status"] == "degraded", "degraded", 15)
        status, body = await asyncio.to_thread(readiness, gateway)
        assert status == 200, body
        await asyncio.sleep(3)  # a turn or so without Redis
        redis_server.start()  # empty: no persistence
        restarted_at = time.monotonic()
        client = redis_server.client()
        # By themselves: the worker's registry entry and the live call's context are written back.
        await eventually(lambda: client.exists(f"voicegate:ctx:{sid}"), "the call's context back in Redis", RECOVERY_S)
        await eventually(lambda: any(client.hexists(k, sid) for k in client.keys("voicegate:worker:*:calls")),
                         "the call back in the registry", RECOVERY_S)
        recovered_s = time.monotonic() - restarted_at
        followed = await task
        stored = await asyncio.to_thread(gateway.stored_call, sid)
        outages = await asyncio.to_thread(metric, gateway, "voicegate_redis_outages_total")
        errors = await asyncio.to_thread(metric, gateway, "voicegate_redis_errors_total")
        up = await asyncio.to_thread(metric, gateway, "voicegate_redis_up")
        logs = gateway.logs()

    counts = spoken.utterance_counts(stored, SCRIPT)
    fault_table.save("redis-killed", fault_table.FaultRow(
        fault="Redis killed mid-call (SIGKILL), restarted empty 3 s later", worst_ms=max(followed.latencies_ms()),
        calls=1, dropped=0 if followed.completed else 1, lost=sum(1 for n in counts.values() if n == 0),
        twice=sum(1 for n in counts.values() if n > 1),
        detail=f"context and registry back {recovered_s:.1f} s after the restart; outages {outages:g}, "
               f"failed or skipped operations {errors:g}; Redis down for {restarted_at - killed_at:.1f} s"))
    assert followed.completed and not followed.handed_over, [leg.error for leg in followed.legs]
    assert all(n == 1 for n in counts.values()), counts
    assert outages == 1 and errors >= 1 and up == 1
    assert logs.count("redis unavailable") == 1 and "redis is back" in logs


async def test_a_resume_whose_context_is_lost_starts_afresh_politely(emulators, redis_server):
    redis_server.start()
    with run_gateway(env=env_for(emulators, redis_server.url)) as gateway:
        # Twilio's <Redirect> after a stream that died, for a call whose context nobody has (Redis lost it).
        sid = "CA" + os.urandom(16).hex()
        leg = await asyncio.wait_for(_resumed_call(gateway, sid), 60)
        stored = await asyncio.to_thread(gateway.stored_call, sid)
    assert leg.error is None and leg.completed, leg.error
    first = stored["turns"][0]["agent_text"]
    assert "lost my place" in first and "Would you like to book an appointment?" in first, first
    assert spoken.utterance_counts(stored, SCRIPT[:1]) == {SCRIPT[0]: 1}


async def _resumed_call(gateway, sid: str):
    from loadgen.simcaller import run_call

    params = {"callSid": sid, "caller": "+15550004321", "direction": "inbound", "attempt": "1"}
    return await run_call(gateway.media_url, spoken.turns(SCRIPT[:1]), call_sid=sid, parameters=params,
                          max_call_s=60)
