"""Callers in other languages, questions answered from the business's files, and a long call's prompt,
through the real server (issue 25).

Cloud path: Deepgram, OpenAI and ElevenLabs through their official SDKs against the emulators. The
caller speaks Spanish with espeak-ng's Spanish voice and English with Piper's; the Deepgram emulator
knows each utterance by its audio (voiceprints) and answers as nova-3's multilingual mode does, each
word with its language. Offline path: whisper, the rule-based dialog and Piper, English only.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import wave
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import soxr

from emulators.deepgram import voiceprint
from emulators.elevenlabs import expected_audio
from loadgen.simcaller import CallerTurn, run_call
from tests.integration import spoken
from tests.support import ROOT, run_emulators, run_gateway

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.timeout(400)

KNOWLEDGE = str(ROOT / "examples" / "knowledge")
TOOL = "record_booking_details"
# What the caller says, and the language the Deepgram emulator labels its words with.
SPANISH = ["Hola, quiero pedir una cita, por favor", "¿Tienen aparcamiento para coches?"]
ENGLISH = ["Actually, can we speak English? Next Tuesday at 3 pm please", "Do you take walk-ins?",
           "Do you have a dentist?"]
PARKING_ES = "Sí, hay aparcamiento gratuito detrás del edificio."
WALK_INS = "No, every visit is by appointment."
DONT_KNOW = "I'm sorry, I don't know that."
RULES = {
    "quiero pedir una cita": {"tool": TOOL, "arguments": {"intent": "book"}},
    "aparcamiento": PARKING_ES,
    "walk-ins": WALK_INS,
    "dentist": DONT_KNOW,
}


@lru_cache(maxsize=16)
def espeak(text: str, voice: str = "es") -> bytes:
    """`text` in espeak-ng's `voice`, as a phone sends it: 8 kHz mu-law."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text], check=True,
                         capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    resampled = soxr.resample(pcm, rate, 8000)
    audio = audioop.lin2ulaw((np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes(), 2)
    return audio + b"\xff" * (-len(audio) % 160)


def audio_of(text: str) -> bytes:
    return espeak(text) if text in SPANISH else spoken.audio(text)


def tagged(text: str) -> str:
    return f"[{'es' if text in SPANISH else 'en'}] {text}"


def chats(log: dict) -> list[dict]:
    return [r for r in log["openai"] if r["path"].endswith("/chat/completions")]


def system_text(request: dict) -> str:
    return "\n".join(m["content"] for m in request["body"]["messages"] if m["role"] == "system")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "rules.json"
    rules.write_text(json.dumps(RULES))
    with run_emulators("--stt-final-delay", "0.15", "--llm-first-token", "0.1", "--tts-first-byte", "0.05",
                       "--tts-realtime-factor", "20", "--llm-token-rate", "50", "--llm-rules", str(rules),
                       "--llm-reply", "Sure.") as emulators:
        # ELEVENLABS_MODEL speaks English only: a Spanish sentence must go to the multilingual model.
        env = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "LATENCY_OPTIMIZATION_MODE": "enabled",
               "LANGUAGES": "en,es,fr,de,it", "KNOWLEDGE_DIR": KNOWLEDGE, "ELEVENLABS_MODEL": "eleven_flash_v2"}
        with run_gateway(env=env) as gateway:
            yield emulators, gateway


async def test_a_spanish_caller_is_answered_in_spanish_and_followed_back_into_english(cloud) -> None:
    emulators, gateway = cloud
    deadline = time.monotonic() + 120
    while '"engines ready"' not in gateway.logs():  # /readyz is 200 before the prompts are pre-rendered
        assert time.monotonic() < deadline, "the fixed prompts were not pre-rendered"
        await asyncio.sleep(0.5)
    status, body = gateway.get("/readyz")
    ready = json.loads(body)
    assert ready["languages"]["available"] == ["en", "es", "fr", "de", "it"] and ready["knowledge"]["passages"] > 0
    startup = emulators.log()
    emulators.reset()
    lines = SPANISH + ENGLISH
    emulators.configure({"deepgram": {"voiceprints": {tagged(t): voiceprint(audio_of(t)) for t in lines}}})
    turns = [CallerTurn(text=t, audio=audio_of(t)) for t in lines]
    report = await run_call(gateway.media_url, turns, max_call_s=150)
    assert report.error is None, report
    log = emulators.log()
    call = gateway.stored_call(report.call_sid)
    said = [t for t in call["turns"] if t["user_text"]]
    assert [t["user_text"] for t in said] == lines, said

    # STT: nova-3 multilingual, each final labelled with its language.
    (listen,) = [c for c in log["deepgram"] if c.get("status") == 101]
    assert listen["query"]["language"] == "multi"
    finals = [t for t in listen["transcripts"] if t["is_final"] and t["transcript"]]
    assert [t["languages"] for t in finals[:2]] == [["es"], ["es"]] and finals[2]["languages"] == ["en"]

    # The dialog: Spanish prompts, a Spanish answer from the Spanish files, then English again.
    agent = [t["agent_text"] for t in said]
    assert agent[0] == "Vale. Claro. ¿Qué día le gustaría venir?"
    assert agent[1] == f"{PARKING_ES} ¿Qué día le gustaría?"
    assert "So that's Tuesday" in agent[2] and "at 3 pm" in agent[2]  # English again, read by the rules
    asked = chats(log)
    spanish = [r for r in asked if "always reply in Spanish" in system_text(r)]
    assert len(spanish) == 2, [system_text(r)[:200] for r in asked]
    assert "aparcamiento gratuito" in system_text(spanish[1])  # the Spanish file's passage, in the one request

    # TTS: the Spanish sentences went to the multilingual model with language_code=es, the English ones
    # to the English model; the Spanish prompts had been pre-rendered at startup the same way.
    sockets = [s for s in log["elevenlabs"] if s.get("kind") == "multi-stream-input"]
    es_sockets = [s for s in sockets if s["query"].get("language_code") == "es"]
    assert es_sockets and all(s["model_id"] == "eleven_flash_v2_5" and s["language_code_applied"] for s in es_sockets)
    assert any(g["text"].strip() == PARKING_ES for s in es_sockets for g in s["generations"])
    assert all(s["query"]["model_id"] == "eleven_flash_v2" and "language_code" not in s["query"]
               for s in sockets if s not in es_sockets)
    prerendered = [g["text"] for s in startup["elevenlabs"] if s["query"].get("language_code") == "es"
                   for g in s.get("generations", [])]
    assert "¿Qué día le gustaría venir?" in [t.strip() for t in prerendered]
    # What the caller heard: the Spanish prompt's audio, byte for byte.
    assert expected_audio("¿Qué día le gustaría venir?") in report.heard
    assert expected_audio(PARKING_ES) in report.heard


async def test_questions_are_answered_from_the_files_and_an_uncovered_one_declined(cloud) -> None:
    emulators, gateway = cloud
    emulators.reset()
    lines = ["I'd like to book an appointment", "Do you take walk-ins?", "Do you have a dentist?"]
    emulators.configure({"deepgram": {"voiceprints": {tagged(t): voiceprint(audio_of(t)) for t in lines}}})
    report = await run_call(gateway.media_url, [CallerTurn(text=t, audio=audio_of(t)) for t in lines],
                            max_call_s=90)
    assert report.error is None, report
    said = [t for t in gateway.stored_call(report.call_sid)["turns"] if t["user_text"]]
    assert [t["agent_text"] for t in said[1:]] == [f"{WALK_INS} What day would you like?",
                                                   f"{DONT_KNOW} What day would you like?"]
    asked = chats(emulators.log())
    assert len(asked) == 2, "one request for each question, none for the line the rules read"
    assert "don't take walk-ins" in system_text(asked[0])
    assert "the only facts about it you may state" not in system_text(asked[1])  # nothing covers a dentist


# ---------------------------------------------------------------------- a long call


@pytest.fixture(scope="module")
def long_call_gateway():
    with run_emulators("--stt-final-delay", "0.1", "--llm-first-token", "0.05", "--tts-first-byte", "0.05",
                       "--llm-token-rate", "200", "--llm-reply", "Sure.") as emulators:
        # A small verbatim window, so a minute of short "*" turns is a long call to the summarizer.
        env = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "LATENCY_OPTIMIZATION_MODE": "disabled",
               "HISTORY_RECENT_CHARS": "400", "HISTORY_SUMMARY_CHARS": "300"}
        with run_gateway(env=env) as gateway:
            yield emulators, gateway


async def test_a_sixty_turn_call_keeps_its_prompt_short_and_its_slots(long_call_gateway) -> None:
    emulators, gateway = long_call_gateway
    emulators.reset()
    lines = ["I'd like to book an appointment", "Next Tuesday please"]
    emulators.configure({"deepgram": {"voiceprints": {t: voiceprint(spoken.audio(t)) for t in lines}}})
    # Two spoken turns, then 58 "*" (repeat), each phrased by the LLM with the history so far.
    turns = [CallerTurn(text=t, audio=spoken.audio(t)) for t in lines]
    turns += [CallerTurn(dtmf="*", gap_ms=100) for _ in range(58)]
    report = await run_call(gateway.media_url, turns, max_call_s=300, reply_quiet_ms=500)
    assert report.error is None and report.completed, report
    asked = chats(emulators.log())
    phrasing = [r for r in asked if not system_text(r).startswith("Summarize this earlier part")]
    summaries = [r for r in asked if r not in phrasing]
    assert len(phrasing) >= 60 and summaries, (len(phrasing), len(summaries))
    sizes = [sum(len(str(m["content"])) for m in r["body"]["messages"]) for r in phrasing]
    # The prompt stops growing once the window is full: the last turns' are no longer than the 20th's.
    assert max(sizes[-10:]) <= max(sizes[15:25]) + 100, sizes
    assert max(sizes) < 400 + 300 + 1500, sizes  # window + summary + the system prompt and the instruction
    last = phrasing[-1]["body"]["messages"]
    assert "The booking so far: date " in last[0]["content"], "the slots are never summarized away"
    assert any(str(m["content"]).startswith("Earlier in this call") for m in last)
    call = gateway.stored_call(report.call_sid)
    assert len([t for t in call["turns"] if t["user_text"] or t["dtmf"]]) == 60  # the transcript keeps every turn


# ---------------------------------------------------------------------- offline


@pytest.fixture(scope="module")
def offline():
    env = {"LANGUAGES": "en,es", "KNOWLEDGE_DIR": KNOWLEDGE}
    with run_gateway(env=env) as gateway:
        yield gateway


async def test_offline_the_files_are_read_and_the_call_stays_english(offline) -> None:
    status, body = offline.get("/readyz")
    languages = json.loads(body)["languages"]
    assert languages["available"] == ["en"] and "English only" in languages["note"]
    assert "calls are held in English only" in offline.logs()
    # (whisper tiny.en writes Piper's "Do you have a dentist?" as "Do you have...": a question with no topic)
    lines = ["I'd like to book an appointment", "Is there parking?", "Can I bring my dog?"]
    report = await run_call(offline.media_url, [CallerTurn(text=t) for t in lines], max_call_s=120)
    assert report.error is None, report
    said = [t for t in offline.stored_call(report.call_sid)["turns"] if t["user_text"]]
    assert "free parking" in said[1]["agent_text"] and said[1]["agent_text"].endswith("What day would you like?")
    assert said[2]["agent_text"] == "I'm sorry, I don't have that information. What day would you like?"
