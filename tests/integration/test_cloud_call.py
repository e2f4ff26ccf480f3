"""The cloud path: Deepgram, OpenAI and ElevenLabs through their official SDKs, pointed at the local
emulators (which speak the real wire protocols), in a full call through the real server."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from emulators.elevenlabs import expected_audio
from loadgen.simcaller import CallerTurn, run_call
from tests.support import run_emulators, run_gateway

pytestmark = pytest.mark.timeout(240)

SAID = "Hello, I would like to book an appointment"
REPLY = "Sure, I can help you book that. Which day would suit you best? We are open every weekday."


@pytest.fixture(scope="module")
def cloud():
    with run_emulators("--stt-final-delay", "0.15", "--llm-first-token", "0.3", "--tts-first-byte", "0.15",
                       "--llm-token-rate", "20", "--transcript", SAID, "--llm-reply", REPLY) as emulators:
        env = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "LATENCY_OPTIMIZATION_MODE": "disabled"}
        with run_gateway(env=env) as gateway:
            yield emulators, gateway


async def test_cloud_call_uses_each_sdk_as_documented(cloud):
    emulators, gateway = cloud
    emulators.reset()
    report = await run_call(gateway.media_url, [CallerTurn(text=SAID), CallerTurn(wait_ms=6000)],
                            max_call_s=90)
    assert report.error is None, report
    log = emulators.log()

    (deepgram,) = [c for c in log["deepgram"] if c.get("status") == 101]
    query = deepgram["query"]
    assert query["encoding"] == "mulaw" and query["sample_rate"] == "8000"  # no transcoding
    assert query["interim_results"] == "true" and query["vad_events"] == "true" and "utterance_end_ms" in query
    assert deepgram["keepalives"], "KeepAlive while no audio is sent"
    assert deepgram["finalizes"], "Finalize at the end of the caller's turn"
    # Only speech went (with pre-roll): far less than the call's length of audio.
    assert 0 < deepgram["audio_bytes"] < 8000 * report.duration_s / 2

    chats = [r for r in log["openai"] if r["path"].endswith("/chat/completions")]
    assert chats and all(r["body"]["stream"] is True for r in chats)
    answered = [r for r in chats if any(m["role"] == "user" and "appointment" in str(m.get("content", "")).lower()
                                        for m in r["body"]["messages"])]
    assert answered, "the caller's transcript reached the LLM"
    history = answered[0]["body"]["messages"]
    assert any(m["role"] == "assistant" for m in history), "the conversation so far (the greeting) went along"

    sockets = [s for s in log["elevenlabs"] if "stream-input" in s.get("kind", "")]
    assert len(sockets) == 1, "one TTS socket for the whole call"
    assert sockets[0]["query"]["output_format"] == "ulaw_8000"
    assert any(m.get("flush") for m in sockets[0]["messages"])
    # The caller heard the emulated TTS audio, byte for byte, for a sentence of the reply.
    assert expected_audio("Which day would suit you best?") in report.heard


async def test_first_tts_request_starts_before_the_llm_stream_ends(cloud):
    emulators, gateway = cloud
    emulators.reset()
    # A reply of its own: rendered sentences are cached, and this one must reach ElevenLabs.
    emulators.configure({"openai": {"default_reply": "Of course, I will help you book a visit today. "
                                                     "What day and time would you like?"}})
    report = await run_call(gateway.media_url, [CallerTurn(text=SAID)], max_call_s=60)
    assert report.error is None, report
    log = emulators.log()
    chat = [r for r in log["openai"] if r["path"].endswith("/chat/completions")
            and any("appointment" in str(m.get("content", "")).lower() for m in r["body"]["messages"])][0]
    generations = [g for s in log["elevenlabs"] for g in s.get("generations", []) if "help you book a visit" in g["text"]]
    assert generations, log["elevenlabs"]
    # The first sentence was being synthesized while the LLM was still streaming the rest.
    assert generations[0]["t"] < chat["last_chunk_at"]
    assert report.turns[0].latency_ms is not None
