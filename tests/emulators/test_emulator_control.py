"""The control routes, the config merge and fault bookkeeping, and the pure cores (no sockets)."""

from __future__ import annotations

import httpx
import pytest

from emulators.config import ConfigError, DeepgramConfig, EmulatorConfig
from emulators.deepgram import End, EnergyDetector, Interim, ListenOptions, ListenSession, Onset, Send
from emulators.elevenlabs import expected_audio
from emulators.openai import tokenize
from emulators.server import EmulatorServer

pytestmark = pytest.mark.timeout(20)


def test_merge_validates_before_changing_anything() -> None:
    cfg = EmulatorConfig()
    cfg.merge({"stt_final_delay": 0.1, "openai": {"fault": "error429", "fault_count": 2},
               "deepgram": {"script": ["a", "b"], "onset_ms": 40.0}})
    assert cfg.stt_final_delay == 0.1 and cfg.deepgram.script == ["a", "b"] and cfg.deepgram.onset_ms == 40
    for bad in ({"nope": 1}, {"openai": {"fault": "explode"}}, {"llm_token_rate": "fast"},
                {"deepgram": {"onset_ms": 1.5}}, {"tts_first_byte": -1}, {"stt_final_delay": 9, "twilio": 3}):
        with pytest.raises(ConfigError):
            cfg.merge(bad)
    assert cfg.stt_final_delay == 0.1  # the last bad merge changed nothing, not even its valid part


def test_fault_count_is_consumed_per_request() -> None:
    cfg = EmulatorConfig()
    cfg.merge({"openai": {"fault": "error500", "fault_count": 2}})
    assert [cfg.openai.take_fault() for _ in range(3)] == ["error500", "error500", None]
    cfg.merge({"openai": {"fault": "stall", "fault_count": 0}})
    assert [cfg.openai.take_fault() for _ in range(3)] == ["stall"] * 3


def test_tokenize_keeps_every_character() -> None:
    text = "Hello there, it's 3 o'clock!  Okay?"
    assert tokenize(text)[:4] == ["Hello", " there", ",", " it's"]
    assert "".join(tokenize(text)) == text


def _mulaw_options(**kw: object) -> ListenOptions:
    return ListenOptions(**{"encoding": "mulaw", "sample_rate": 8000, "endpointing_ms": 300, **kw})  # type: ignore[arg-type]


def test_energy_detector_finds_onset_interims_and_end_in_audio_time() -> None:
    det = EnergyDetector(_mulaw_options(), -40.0, 60, 0.3, 300)
    speech = expected_audio("one two three four")  # 18 chars -> 1.18 s
    events = det.feed(b"\xff" * 1600) + det.feed(speech) + det.feed(b"\xff" * 8 * 400)
    onsets = [e for e in events if isinstance(e, Onset)]
    ends = [e for e in events if isinstance(e, End)]
    assert onsets == [Onset(0.2)]
    assert len(ends) == 1 and ends[0].start == 0.2 and ends[0].end == pytest.approx(0.2 + len(speech) / 8000, abs=0.02)
    assert len([e for e in events if isinstance(e, Interim)]) == 3  # every 0.3 s of a 1.18 s utterance
    # Feeding the same audio in odd-sized pieces gives the same events.
    det2 = EnergyDetector(_mulaw_options(), -40.0, 60, 0.3, 300)
    audio = b"\xff" * 1600 + speech + b"\xff" * 8 * 400
    events2 = [e for i in range(0, len(audio), 333) for e in det2.feed(audio[i:i + 333])]
    assert events2 == events


def test_a_click_is_not_speech() -> None:
    det = EnergyDetector(_mulaw_options(), -40.0, 60, 0.3, 300)
    click = expected_audio("x")[:8 * 40]  # 40 ms: shorter than onset_ms
    assert det.feed(b"\xff" * 800 + click + b"\xff" * 8000) == []


def test_listen_session_scripts_and_finalize_once() -> None:
    cfg = DeepgramConfig(script=["first one", "second"], repeat_last=True)
    s = ListenSession(_mulaw_options(interim_results=True, utterance_end_ms=1000, vad_events=True, punctuate=True),
                      cfg, cfg.script, 0.15, "req")
    out = s.on_audio(b"\xff" * 800 + expected_audio("first one said"))
    kinds = [a.message["type"] for a in out if isinstance(a, Send)]
    assert kinds[0] == "SpeechStarted" and "Results" in kinds
    fin = s.on_finalize()
    assert len(fin) == 1 and fin[0].message["from_finalize"] and fin[0].delay == 0.15
    assert fin[0].message["channel"]["alternatives"][0]["transcript"] == "first one"
    end = s.on_audio(b"\xff" * 8 * 400)
    assert [a.message["type"] for a in end if isinstance(a, Send)] == ["UtteranceEnd"]  # no second final
    s.on_audio(expected_audio("two") + b"\xff" * 8 * 400)
    s.on_audio(expected_audio("three") + b"\xff" * 8 * 400)
    finals = [a.message for a in s.on_close_stream() if isinstance(a, Send)]
    assert finals[-1]["type"] == "Metadata" and finals[-1]["duration"] > 1.0


async def test_control_routes(emu: EmulatorServer) -> None:
    async with httpx.AsyncClient(base_url=emu.url) as http:
        r = await http.post("/_emulator/config", json={"openai": {"fault": "error429", "fault_count": 1},
                                                       "stt_final_delay": 0.1, "deepgram": {"script": ["hello"]}})
        assert r.status_code == 200 and r.json()["openai"]["fault"] == "error429"
        assert emu.config.stt_final_delay == 0.1 and emu.config.deepgram.script == ["hello"]
        assert (await http.post("/_emulator/config", json={"bogus": 1})).status_code == 400
        r = await http.post("/v1/chat/completions", headers={"Authorization": "Bearer sk"},
                            json={"model": "m", "messages": []})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        log = (await http.get("/_emulator/log")).json()
        assert set(log) == {"deepgram", "openai", "elevenlabs", "twilio"}
        assert log["openai"][0]["status"] == 429 and log["openai"][0]["fault"] == "error429"
        emu.config.merge({"elevenlabs": {"fault": "stall"}})
        assert (await http.post("/_emulator/reset")).status_code == 200
        assert (await http.get("/_emulator/log")).json()["openai"] == []
        cfg = (await http.get("/_emulator/config")).json()
        assert cfg["elevenlabs"]["fault"] is None and cfg["deepgram"]["script"] == ["hello"]  # settings survive
