"""The Deepgram emulator transcribing by the audio (voiceprints), and its "flap" fault."""

from __future__ import annotations

import pytest
from emu_helpers import piper_speech, silence

from emulators.config import DeepgramConfig, EmulatorConfig
from emulators.deepgram import Drop, ListenOptions, ListenSession, Send, voiceprint

pytestmark = pytest.mark.timeout(30)

OPTIONS = ListenOptions(encoding="mulaw", sample_rate=8000, interim_results=True, endpointing_ms=300,
                        punctuate=True)
FIRST = "I would like to book an appointment"
SECOND = "next Tuesday at three"


def frames(audio: bytes) -> bytes:
    return audio + b"\xff" * (-len(audio) % 160)


def session(cfg: DeepgramConfig, script: list[str] | None = None) -> ListenSession:
    return ListenSession(OPTIONS, cfg, script or ["scripted words"], 0.0, "req")


def finals(actions) -> list[dict]:
    return [a.message for a in actions if isinstance(a, Send) and a.message.get("type") == "Results"
            and a.message["is_final"]]


def transcript(message: dict) -> str:
    return message["channel"]["alternatives"][0]["transcript"]


def test_known_audio_gets_its_words_on_any_connection_and_unknown_audio_the_script() -> None:
    first, second = frames(piper_speech(FIRST)), frames(piper_speech(SECOND))
    cfg = DeepgramConfig(voiceprints={FIRST: voiceprint(first), SECOND: voiceprint(second)})
    # Two connections hear the same call: the second (a reconnect) starts with the second utterance.
    a, b = session(cfg), session(cfg)
    said_a = finals(a.on_audio(first + silence(600)))
    said_b = finals(b.on_audio(second + silence(600)))
    assert [transcript(m) for m in said_a] == [FIRST]
    assert [transcript(m) for m in said_b] == [SECOND]  # not the script's first entry again
    words = said_b[0]["channel"]["alternatives"][0]["words"]
    assert [w["punctuated_word"] for w in words] == SECOND.split()
    assert all(0 <= w["start"] < w["end"] <= said_b[0]["start"] + said_b[0]["duration"] + 0.021 for w in words)
    # Audio no voiceprint knows takes the script, as without voiceprints.
    c = session(cfg, ["from the script"])
    assert [transcript(m) for m in finals(c.on_audio(frames(piper_speech("good morning")) + silence(600)))] == [
        "from the script"]


def test_a_replay_of_part_of_an_utterance_gets_the_words_of_that_part() -> None:
    first = frames(piper_speech(FIRST))
    prints = voiceprint(first)
    cfg = DeepgramConfig(voiceprints={FIRST: prints})
    voiced = [i for i, h in enumerate(prints) if h]
    half = voiced[len(voiced) // 2] * 160  # the second half of the utterance, from a frame boundary
    (final,) = finals(session(cfg).on_audio(first[half:] + silence(600)))
    said = transcript(final).split()
    assert said and said == FIRST.split()[-len(said):] and len(said) < len(FIRST.split())
    # Timed where that audio lies on this connection: from its start.
    assert final["channel"]["alternatives"][0]["words"][0]["start"] < 0.5


def test_the_flap_fault_takes_its_delays_in_turn() -> None:
    config = EmulatorConfig()
    config.merge({"deepgram": {"fault": "flap", "fault_count": 0, "flap_after": [0.5, 1.5]}})
    assert [config.deepgram.next_flap_after() for _ in range(3)] == [0.5, 1.5, 0.5]
    assert Drop(0.0)  # what a flap queues: the connection cut with no close frame
