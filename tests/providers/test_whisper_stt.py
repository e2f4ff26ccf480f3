"""The offline whisper engine's guards: what it must not pass on as the caller's words.

The verdict functions are tested on text and decoder statistics; the engine itself on real audio
(silence, line noise, a clipped click, speech) through the same telephone path as a call.
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from audio import mulaw
from providers.base import CallInfo, SttResult
from providers.local_models import ModelFileError, PinnedFile, load_whisper_model, verify_files
from providers.settings import ConfigError, Settings
from providers.whisper_stt import (
    COMPRESSION, HALLUCINATION, LOW_CONFIDENCE, NO_SPEECH, REJECT_REASONS, REPETITION, TOKEN_LIMIT,
    TOO_SHORT, UNCLEAR_SPEECH, LocalWhisperStt, WhisperEngine, judge, repeated_ngram,
)
from tests.dialog.corpus.voices import BY_NAME, Synthesizer

RATE = 8000
GOOD = (-0.2, 1.0, 0.05)  # (avg_log_prob, compression_ratio, no_speech_prob) of a clean window


@pytest.mark.parametrize("text", [
    "Come on, " * 30,  # the loop of issue 22, stored as the caller's words before
    "Half half half half half in the morning.",
    "at three at three at three at three",
    "I'd like to book I'd like to book I'd like to book I'd like to book",
])
def test_loops_are_repeated_ngrams(text: str) -> None:
    assert repeated_ngram(text)


@pytest.mark.parametrize("text", [
    "No, no, no.", "Yes yes yes, book it.", "Two thirty in the afternoon would be great.",
    "I'd like to book an appointment for next Tuesday at three p.m. please.", "bye bye", "",
    "That's that, that's all.",
])
def test_people_repeat_less(text: str) -> None:
    assert not repeated_ngram(text)


@pytest.mark.parametrize(("text", "windows", "hit_limit", "reason"), [
    ("230 in the afternoon would be great.", [GOOD], False, ""),
    ("Come on, " * 30, [(-0.3, 12.3, 0.1)], False, COMPRESSION),
    ("Half half half half half in the morning.", [GOOD], False, REPETITION),
    ("I'm out for an amen.", [(-1.7, 0.9, 0.3)], False, LOW_CONFIDENCE),
    ("2.30", [(-1.2, 0.5, 0.3)], False, ""),  # unsure, and right: robotic voices score like this
    ("Thank you.", [GOOD], False, HALLUCINATION),
    ("you", [GOOD], False, HALLUCINATION),
    ("", [], False, NO_SPEECH),  # faster-whisper dropped every window as silence
    ("...", [GOOD], False, NO_SPEECH),
    ("and then and then we went", [GOOD], True, TOKEN_LIMIT),
])
def test_judge(text: str, windows: list, hit_limit: bool, reason: str) -> None:
    assert judge(text, windows, hit_limit) == reason
    assert reason == "" or reason in REJECT_REASONS


def _noise(seconds: float, dbfs: float, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    amplitude = 32768 * 10 ** (dbfs / 20)
    return mulaw.encode(np.clip(rng.normal(0, amplitude, int(seconds * RATE)), -32768, 32767).astype(np.int16))


def test_silence_is_not_words(whisper) -> None:
    result = whisper.transcribe_checked(mulaw.silence(2 * RATE))
    assert result.text == "" and result.rejected in REJECT_REASONS


@pytest.mark.parametrize("dbfs", [-45.0, -25.0])
def test_line_noise_is_not_words(whisper, dbfs: float) -> None:
    result = whisper.transcribe_checked(_noise(2.0, dbfs))
    assert result.text == "", result
    assert result.rejected in REJECT_REASONS


def test_a_click_is_too_short_to_transcribe(whisper) -> None:
    result = whisper.transcribe_checked(_noise(0.1, -10.0))
    assert (result.text, result.rejected) == ("", TOO_SHORT)


def test_speech_passes_the_guards(whisper) -> None:
    audio = Synthesizer().telephone(BY_NAME["piper-joe-1.0"], "I'd like to book an appointment for tomorrow.")
    result = whisper.transcribe_checked(audio)
    assert result.rejected == "" and "appointment" in result.text.lower()
    assert result.avg_log_prob > -1.0 and result.compression_ratio < 2.4
    assert whisper.transcribe_mulaw(audio) == result.text


async def test_the_stream_hands_on_the_reason_and_no_words(whisper) -> None:
    results: list[SttResult] = []
    with ThreadPoolExecutor(1) as pool:
        stream = LocalWhisperStt(whisper, pool).open_stream(CallInfo("CA1", "MZ1"), results.append)
        stream.end_of_speech(_noise(2.0, -25.0))
        for _ in range(200):
            if results:
                break
            await asyncio.sleep(0.05)
        await stream.close()
    assert len(results) == 1
    assert results[0].text == "" and results[0].rejected in REJECT_REASONS and results[0].end_of_turn
    assert not results[0].unclear  # noise: nothing to re-ask


# ---------------------------------------------------------------- the model files


def test_a_swapped_model_file_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not the weights")
    good = hashlib.sha256(b"not the weights").hexdigest()
    verify_files(tmp_path, (PinnedFile("model.bin", good),))
    with pytest.raises(ModelFileError, match="sha256"):
        verify_files(tmp_path, (PinnedFile("model.bin", "0" * 64),))
    with pytest.raises(ModelFileError, match="missing"):
        verify_files(tmp_path, (PinnedFile("config.json", good),))


def test_an_unknown_model_name_is_refused() -> None:
    with pytest.raises(ModelFileError, match="tiny.en"):
        load_whisper_model("large-v3")


def test_the_model_is_a_setting() -> None:
    assert Settings.from_env({}).whisper_model == "tiny.en"  # the default stays the fast one
    assert Settings.from_env({"WHISPER_MODEL": " base "}).whisper_model == "base"
    with pytest.raises(ConfigError, match="WHISPER_MODEL"):
        Settings.from_env({"WHISPER_MODEL": "base.en"})


def test_whisper_base_loads_offline_from_its_pinned_packages() -> None:
    engine = WhisperEngine(workers=1, model="base")  # both halves sha256-checked, joined in memory
    audio = Synthesizer().telephone(BY_NAME["piper-joe-1.0"], "I'd like to book an appointment for tomorrow.")
    result = engine.transcribe_checked(audio)
    assert result.rejected == "" and "appointment for tomorrow" in result.text.lower()


def test_loops_are_unclear_speech_and_noise_is_not() -> None:
    assert {COMPRESSION, REPETITION, TOKEN_LIMIT, LOW_CONFIDENCE} == UNCLEAR_SPEECH
    assert not {NO_SPEECH, TOO_SHORT, HALLUCINATION} & UNCLEAR_SPEECH


@pytest.mark.parametrize(("voice", "spoken"), [
    ("espeak-en-gb-x-gbclan-klatt", "Friday at half past two."),  # "Friday, hot hot, hot, hot, hot,"
    ("espeak-en-gb-x-rp-m3", "December third at eleven a.m."),  # "November, November, November, November."
])
def test_a_real_whisper_loop_is_caught(whisper, voice: str, spoken: str) -> None:
    """Two corpus utterances on which tiny.en loops; the loop never reaches the dialog as words."""
    result = whisper.transcribe_checked(Synthesizer().telephone(BY_NAME[voice], spoken))
    assert result.heard and result.text == ""
    assert result.rejected in UNCLEAR_SPEECH, result


# Real recordings of what a phone line carries besides the caller (loadgen.recordings: Debian
# packages, pinned). crowd_oooh is a crowd's voice, not noise: whisper may write "Whoa!" for it.
NOT_SPEECH = ("noise_bed", "transient", "tone", "music")
UTTERANCE_SECONDS = 8  # what the VAD would hand over at most for a bout of noise


def test_noise_music_and_tones_from_real_recordings_never_reach_the_dialog_as_words(whisper) -> None:
    from loadgen.recordings import fetch

    cat = fetch()
    passed = {}
    for category in NOT_SPEECH:
        for name in cat.names(category):
            if name == "crowd_oooh":
                continue
            result = whisper.transcribe_checked(cat.audio(name)[:UTTERANCE_SECONDS * RATE])
            if result.text:
                passed[name] = result.text
    assert passed == {}  # before these guards: babble_3 "Thank you for watching this channel.", car_horn "beep" x20


def test_subtitle_credits_are_hallucinations() -> None:
    assert judge("Thank you for watching this channel.", [GOOD], False) == HALLUCINATION
    assert judge("Thanks for watching!", [GOOD], False) == HALLUCINATION
    assert judge("Thank you, that works.", [GOOD], False) == ""
