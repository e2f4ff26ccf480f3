"""Slow and broken networks between the gateway and its providers, through a real TCP proxy process
(`emulators/netproxy.py`) on each provider's path: latency, throttled bandwidth, and connections cut
half-open (the proxy stops reading and writing them, and never closes them: no FIN, no RST).

- A slow network (latency each way, bandwidth capped): the calls go on, on the primary providers.
- A half-open LLM connection: the pooled connections the next reply would use are dead. The reply's
  first-token timeout fires, the dialog's own words answer that turn, the pool lets go of its other
  idle connections, and the next turn's reply comes from the LLM again on a fresh connection.
- A half-open Deepgram socket: the caller's words go into a dead socket; its unanswered Finalize (or
  its WebSocket ping) finds it, the stream reconnects and replays, and the words are answered.
- A half-open ElevenLabs socket: the sentence's first-byte timeout fires and the HTTP engine says it.

Nothing waits on a dead socket for longer than its timeout, and every utterance is answered once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from providers.deepgram_stt import RESULT_TIMEOUT_SECONDS
from providers.elevenlabs_tts import FIRST_BYTE_TIMEOUT_SECONDS
from providers.openai_llm import FIRST_TOKEN_TIMEOUT_SECONDS
from tests.integration import fault_table, spoken
from tests.integration.handover import follow_call
from tests.support import ROOT, eventually, run_emulators, run_gateway, stop_process

pytestmark = pytest.mark.timeout(600)

SCRIPT = ("I would like to book an appointment", "next Thursday", "at two in the afternoon")
GREETING = "Hello, how can I help?"
TAG = "network"
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def replies_for(key: str) -> list[str]:
    """Replies no other test says: rendered sentences are cached, and a cached one never reaches TTS."""
    return [f"The {TAG} {key.replace('-', ' ')} reply number {n}." for n in NUMBERS]
SLOW = {"latency_ms": 80, "bandwidth_bps": 40_000}
# A turn that meets a dead connection: the timeout of the phase, then the next engine (about 1 s).
HALF_OPEN_BOUND_S = max(FIRST_TOKEN_TIMEOUT_SECONDS, RESULT_TIMEOUT_SECONDS, FIRST_BYTE_TIMEOUT_SECONDS) + 3.0
HEALTHY_BOUND_S = 3.0


class NetProxy:
    def __init__(self, process: subprocess.Popen, routes: dict[str, int], control: int) -> None:
        self.process, self.routes, self.control = process, routes, control

    def configure(self, change: dict) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.control}/config", data=json.dumps(change).encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/state", timeout=5) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        self.configure({name: {"latency_ms": 0, "bandwidth_bps": 0, "freeze": None} for name in self.routes})


@contextlib.contextmanager
def run_netproxy(target_port: int, names=("stt", "llm", "tts")):
    args = [arg for name in names for arg in ("--route", f"{name}=127.0.0.1:{target_port}")]
    process = subprocess.Popen([sys.executable, "-m", "emulators.netproxy", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        ready = json.loads(process.stdout.readline())
        yield NetProxy(process, ready["routes"], ready["control"])
    finally:
        stop_process(process)
        process.stdout.close()


@pytest.fixture(scope="module")
def stack():
    with run_emulators("--stt-final-delay", "0.15", "--llm-first-token", "0.3", "--tts-first-byte", "0.15") as emu:
        emu.configure({"deepgram": {"voiceprints": spoken.voiceprints(SCRIPT)}})
        with run_netproxy(emu.port) as proxy:
            r = proxy.routes
            env = {"DEEPGRAM_API_KEY": "dg-test-key", "DEEPGRAM_BASE_URL": f"http://127.0.0.1:{r['stt']}",
                   "OPENAI_API_KEY": "sk-test-key", "OPENAI_BASE_URL": f"http://127.0.0.1:{r['llm']}/v1",
                   "ELEVENLABS_API_KEY": "xi-test-key", "ELEVENLABS_BASE_URL": f"http://127.0.0.1:{r['tts']}",
                   "VOICEGATE_LOCAL_ENGINES": "0", "LATENCY_OPTIMIZATION_MODE": "disabled", "OPENAI_FALLBACK_MODEL": "",
                   # A breaker opened by one test must not carry into the next.
                   "BREAKER_RESET_SECONDS": "1"}
            with run_gateway(env=env) as gateway:
                yield emu, proxy, gateway


def prepare(emu, proxy, key: str) -> None:
    proxy.reset()
    emu.reset()
    replies = replies_for(key)
    emu.configure({"openai": {"rules": {"just connected": GREETING}, "script": replies, "default_reply": replies[-1]},
                   "deepgram": {"voiceprints": spoken.voiceprints(SCRIPT)}})


async def call_with_fault(stack, key: str, label: str, route: str | None, bound_s: float):
    """One call; once its greeting has played, the route's connections are frozen (half-open)."""
    emu, proxy, gateway = stack
    prepare(emu, proxy, key)
    sid = "CA" + os.urandom(16).hex()
    accepted_before = proxy.state()[route]["accepted"] if route else 0
    task = asyncio.create_task(follow_call(gateway, [gateway], spoken.turns(SCRIPT), sid, max_call_s=120))
    if route is None:
        proxy.configure({name: SLOW for name in proxy.routes})
    else:
        if route == "tts":
            # A sentence has been spoken over the call's socket (the greeting comes from the cache of
            # rendered sentences): the socket is open and idle, and the next sentence goes to it.
            await eventually(lambda: any(s["generations"] for s in emu.log()["elevenlabs"]
                                         if s["kind"] == "multi-stream-input"), "a sentence over the socket", 60,
                             poll_s=0.05)
        else:
            # The greeting has been phrased and is playing: the LLM pool and the Deepgram socket are open
            # and idle, and the caller's first turn comes next.
            await eventually(lambda: any(r["last_chunk_at"] for r in emu.log()["openai"]
                                         if r["path"].endswith("/chat/completions")), "the greeting", 30,
                             poll_s=0.05)
        await asyncio.sleep(1.0)
        proxy.configure({route: {"freeze": "existing"}})
    followed = await task
    state = proxy.state()
    stored = await asyncio.to_thread(gateway.stored_call, sid)
    counts = spoken.utterance_counts(stored, SCRIPT)
    (leg,) = followed.legs
    fault_table.save(key, fault_table.FaultRow(
        fault=label, worst_ms=max(followed.latencies_ms(), default=None), calls=1, dropped=0 if followed.completed else 1,
        lost=sum(1 for n in counts.values() if n == 0), twice=sum(1 for n in counts.values() if n > 1) + leg.clears,
        detail=f"replies {[round(t.latency_ms or -1) for t in leg.turns]} ms; proxy {state.get(route) if route else state}"))
    assert followed.completed, leg.error
    assert all(n == 1 for n in counts.values()), counts
    latencies = [leg.greeting_latency_ms, *(t.latency_ms for t in leg.turns)]
    assert None not in latencies and max(latencies) <= bound_s * 1000, latencies
    if route is not None:
        assert state[route]["frozen"] >= 1, state  # the fault really hit a connection the call used
        assert state[route]["accepted"] > accepted_before, "a fresh connection replaced the dead one"
    return stored, leg, state


async def test_slow_network_calls_go_on_on_the_primary_providers(stack):
    stored, leg, state = await call_with_fault(stack, "net-slow", "slow network (80 ms each way, 40 kB/s)",
                                               None, HEALTHY_BOUND_S + 1)
    replies = [t["agent_text"] for t in stored["turns"] if t.get("user_text")]
    assert all(TAG in r for r in replies), replies  # the LLM phrased every reply: no fallback was needed


async def test_half_open_llm_connection(stack):
    stored, leg, state = await call_with_fault(stack, "net-half-open-llm", "half-open LLM connection", "llm",
                                               HALF_OPEN_BOUND_S)
    emu, proxy, gateway = stack
    replies = [t["agent_text"] for t in stored["turns"] if t.get("user_text")]
    assert TAG not in replies[0], replies  # the first turn after the freeze: the dialog's own words
    assert all(TAG in r for r in replies[1:]), replies  # then the LLM again, on a fresh connection
    assert leg.turns[0].latency_ms >= FIRST_TOKEN_TIMEOUT_SECONDS * 1000 * 0.9
    assert "idle LLM connection(s) after a failed request" in gateway.logs()


async def test_half_open_deepgram_socket(stack):
    stored, leg, state = await call_with_fault(stack, "net-half-open-deepgram", "half-open Deepgram socket", "stt",
                                               HALF_OPEN_BOUND_S + 2)
    emu, proxy, gateway = stack
    assert "Deepgram socket lost" in gateway.logs()


async def test_half_open_elevenlabs_socket(stack):
    stored, leg, state = await call_with_fault(stack, "net-half-open-elevenlabs", "half-open ElevenLabs socket", "tts",
                                               HALF_OPEN_BOUND_S)
    emu, proxy, gateway = stack
    http = [r for r in emu.log()["elevenlabs"] if r["kind"] == "http"]
    assert http, "the HTTP engine said the sentence the dead socket did not"
