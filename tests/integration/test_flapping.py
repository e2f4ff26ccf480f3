"""Flapping providers through the real server (issue 23, items 2 and 3).

A provider flapping behind a bad load balancer accepts every connection and cuts it seconds later
(the emulators' "flap" fault: no close frame, at a different delay each time, so the cuts land in
the middle of utterances, of replies and of the silences between).

- Deepgram flapping, reconnects allowed: the call stays on Deepgram through every cut, each replay
  is transcribed again, and still each caller utterance is answered exactly once (no `clear`, no
  extra turn) and stored once.
- Deepgram flapping, the default bound (3 reconnects in 30 s): past it the call moves to whisper
  for the rest of the call and loses nothing; the breaker has counted the drops, so the next call
  starts on whisper without trying Deepgram; once Deepgram is healthy again a half-open trial call
  holds and closes the breaker.
- ElevenLabs flapping: the call's socket is reopened for the next sentence until the bound, then the
  call moves to the HTTP engine; every reply is heard.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from tests.integration import fault_table, spoken
from tests.integration.handover import follow_call
from tests.support import eventually, run_emulators, run_gateway

pytestmark = pytest.mark.timeout(600)

SCRIPT = ("I would like to book an appointment", "next Thursday", "at two in the afternoon", "no not that day",
          "next Friday instead", "yes please")
# Cut each connection this long after it opens, in turn: mid-greeting, mid-utterance, mid-reply.
FLAPS = [2.7, 4.3, 1.9, 3.6, 5.1, 2.2, 4.8, 3.1]
CALL_LIMIT_S = 150
BREAKER_RESET_S = 15  # longer than the rest of the flapping call once its breaker opens


@pytest.fixture(scope="module")
def emulators():
    with run_emulators("--stt-final-delay", "0.15", "--tts-first-byte", "0.15") as emu:
        yield emu


def base_env(emu, **extra: str) -> dict[str, str]:
    return {**emu.gateway_env(), "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", **extra}


def transcribed_counts(stored: dict, script=SCRIPT) -> dict[str, int]:
    """Like `spoken.utterance_counts`, for transcripts by whisper too, whose words may differ a little
    ("Next birthday." for "next Thursday"): the stored caller turns, in order, each matched to the
    utterance it shares at least half its words with. An extra turn, or one matching twice, counts 2."""
    said = [set(spoken.words(t.get("user_text") or "")) for t in stored.get("turns", []) if t.get("user_text")]
    counts = dict.fromkeys(script, 0)
    for words in said:
        share, best = max((len(words & set(spoken.words(t))) / len(set(spoken.words(t))), t) for t in script)
        if share >= 0.5:
            counts[best] += 1
    return counts


def readiness(gateway) -> dict:
    return json.loads(gateway.get("/readyz")[1])


async def test_deepgram_cut_again_and_again_answers_each_utterance_once(emulators):
    emu = emulators
    emu.reset()
    emu.configure({"deepgram": {"voiceprints": spoken.voiceprints(SCRIPT), "fault": "flap", "fault_count": 0,
                                "flap_after": FLAPS}})
    env = base_env(emu, VOICEGATE_LOCAL_ENGINES="0", PROVIDER_RECONNECTS_PER_WINDOW="50")
    with run_gateway(env=env) as gateway:
        sid = "CA" + os.urandom(16).hex()
        followed = await follow_call(gateway, [gateway], spoken.turns(SCRIPT), sid, max_call_s=CALL_LIMIT_S)
        stored = await asyncio.to_thread(gateway.stored_call, sid)
        logs = gateway.logs()
    emu.configure({"deepgram": {"fault": None}})
    connections = emu.log()["deepgram"]
    (leg,) = followed.legs
    counts = spoken.utterance_counts(stored, SCRIPT)
    cut_mid_speech = [c for c in connections if c["closed_by"] == "server-drop" and c["speech"]
                      and c["speech"][-1]["end_at"] is None]
    cut_in_silence = [c for c in connections if c["closed_by"] == "server-drop" and c not in cut_mid_speech]
    fault_table.save("deepgram-flapping-replays", fault_table.FaultRow(
        fault="Deepgram cut every 2-5 s, reconnecting through it (replays)", worst_ms=max(followed.latencies_ms()),
        calls=1, dropped=0 if followed.completed else 1, lost=sum(1 for n in counts.values() if n == 0),
        twice=sum(1 for n in counts.values() if n > 1) + leg.clears,
        detail=f"{len(connections)} connections, {len(cut_mid_speech)} cut mid-utterance, {len(cut_in_silence)} "
               f"in a reply or a pause; clears {leg.clears}; "
               f"{logs.count('replayed word(s) already answered')} replayed finals trimmed"))
    assert followed.completed, leg.error
    assert cut_mid_speech and cut_in_silence, "the cuts hit utterances and the time between them"
    assert all(n == 1 for n in counts.values()), counts
    assert len([t for t in stored["turns"] if t.get("user_text")]) == len(SCRIPT), stored["turns"]
    assert leg.clears == 0, "no reply was cut off by a second answer to the same words"
    assert all(t.latency_ms is not None for t in leg.turns), [t.latency_ms for t in leg.turns]
    assert stored["turns"][-1]["agent_text"].startswith("You're booked")


async def test_deepgram_flapping_moves_the_call_to_whisper_and_new_calls_skip_it(emulators, whisper):
    emu = emulators
    emu.reset()
    emu.configure({"deepgram": {"voiceprints": spoken.voiceprints(SCRIPT), "fault": "flap", "fault_count": 0,
                                "flap_after": [2.0]}})
    env = base_env(emu, BREAKER_RESET_SECONDS=str(BREAKER_RESET_S))  # local engines on: whisper is next
    with run_gateway(env=env) as gateway:
        before = len(emu.log()["deepgram"])  # the startup probe's
        sid = "CA" + os.urandom(16).hex()
        task = asyncio.create_task(follow_call(gateway, [gateway], spoken.turns(SCRIPT), sid, max_call_s=CALL_LIMIT_S))
        # The drops opened Deepgram's breaker; once this call has left Deepgram, a call that starts
        # does not try Deepgram at all.
        await eventually(lambda: "gave up: flapping" in gateway.logs(), "the call to give Deepgram up", 40)
        assert readiness(gateway)["breakers"].get("deepgram") == "open"
        opened = len(emu.log()["deepgram"])
        quick = await follow_call(gateway, [gateway], spoken.turns(SCRIPT[:1]), "CA" + os.urandom(16).hex(),
                                  max_call_s=60)
        skipped = len(emu.log()["deepgram"]) == opened
        followed = await task
        stored = await asyncio.to_thread(gateway.stored_call, sid)
        logs = gateway.logs()
        flapping_connections = len(emu.log()["deepgram"]) - before
        # Deepgram healthy again: after the reset a half-open trial call is let through, holds, and closes it.
        emu.configure({"deepgram": {"fault": None}})
        await eventually(lambda: readiness(gateway)["breakers"].get("deepgram") == "half_open", "half-open",
                         BREAKER_RESET_S + 5)
        trial = await follow_call(gateway, [gateway], spoken.turns(SCRIPT[:2]), "CA" + os.urandom(16).hex(),
                                  max_call_s=60)
        trial_stored = await asyncio.to_thread(gateway.stored_call, trial.call_sid)
        closed = readiness(gateway)["breakers"].get("deepgram")
    counts = transcribed_counts(stored)
    (leg,) = followed.legs
    fault_table.save("deepgram-flapping", fault_table.FaultRow(
        fault="flapping Deepgram (every connection cut 2 s after it opens)", worst_ms=max(followed.latencies_ms()),
        calls=1, dropped=0 if followed.completed else 1, lost=sum(1 for n in counts.values() if n == 0),
        twice=sum(1 for n in counts.values() if n > 1) + leg.clears,
        detail=f"{flapping_connections} Deepgram connections, then whisper; the next call skipped Deepgram: {skipped}"))
    assert followed.completed, leg.error
    assert all(n == 1 for n in counts.values()), (counts, [t.get("user_text") for t in stored["turns"]])
    assert leg.clears == 0
    assert "gave up: flapping" in logs and "STT engine gave up mid-call; falling back" in logs
    # The per-call bound: the first connection and three reconnects, not one reconnect every 2 s.
    assert flapping_connections == 4, flapping_connections
    assert quick.completed and skipped
    assert trial.completed and closed == "closed", closed
    assert spoken.utterance_counts(trial_stored, SCRIPT[:2]) == dict.fromkeys(SCRIPT[:2], 1)  # Deepgram's words


async def test_elevenlabs_flapping_moves_the_call_to_the_http_engine(emulators):
    emu = emulators
    emu.reset()
    replies = [f"The flapping test reply number {n} is here." for n in
               ("one", "two", "three", "four", "five", "six", "seven", "eight")]
    emu.configure({"deepgram": {"voiceprints": spoken.voiceprints(SCRIPT), "fault": None},
                   "openai": {"script": replies, "default_reply": replies[-1], "rules": {}}})
    env = {**emu.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "LATENCY_OPTIMIZATION_MODE": "disabled",
           "OPENAI_FALLBACK_MODEL": ""}
    with run_gateway(env=env) as gateway:
        # The fixed prompts are rendered at startup on a healthy ElevenLabs; then it starts flapping.
        await eventually(lambda: '"msg":"engines ready"' in gateway.logs(), "the prompts rendered", 60)
        emu.reset()
        emu.configure({"elevenlabs": {"fault": "flap", "fault_count": 0, "flap_after": 1.5}})
        sid = "CA" + os.urandom(16).hex()
        followed = await follow_call(gateway, [gateway], spoken.turns(SCRIPT[:4]), sid, max_call_s=CALL_LIMIT_S)
        stored = await asyncio.to_thread(gateway.stored_call, sid)
        breaker = readiness(gateway)["breakers"].get("elevenlabs-ws")
        logs = gateway.logs()
    emu.configure({"elevenlabs": {"fault": None}, "openai": {"script": []}})
    log = emu.log()["elevenlabs"]
    sockets = [r for r in log if r["kind"] == "multi-stream-input"]
    http = [r for r in log if r["kind"] == "http"]
    (leg,) = followed.legs
    counts = spoken.utterance_counts(stored, SCRIPT[:4])
    fault_table.save("elevenlabs-flapping", fault_table.FaultRow(
        fault="flapping ElevenLabs (every socket cut 1.5 s after it opens)", worst_ms=max(followed.latencies_ms()),
        calls=1, dropped=0 if followed.completed else 1, lost=sum(1 for n in counts.values() if n == 0),
        twice=sum(1 for n in counts.values() if n > 1),
        detail=f"{len(sockets)} sockets, then {len(http)} sentences over HTTP; breaker {breaker}"))
    assert followed.completed, leg.error
    assert all(n == 1 for n in counts.values()), counts
    assert all(t.latency_ms is not None for t in leg.turns) and leg.greeting_latency_ms is not None
    # At most the first socket and three reopenings (a drop mid-sentence moves on at once), then HTTP.
    assert 2 <= len(sockets) <= 4 and http, (len(sockets), len(http))
    assert all(s["closed_by"] == "server-drop" for s in sockets)
    assert breaker == "open", breaker  # its drops were counted: new calls skip the socket
    assert "ElevenLabs socket dropped" in logs
