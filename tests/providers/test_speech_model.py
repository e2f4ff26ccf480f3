"""The model VAD on real model weights: Silero v6 from faster-whisper's wheel, checked by sha256, on a
real voice (Piper) against noise, tones and clicks, and with the agent's echo taken out first."""

from __future__ import annotations

import numpy as np
import pytest

from audio import mulaw
from providers.local_models import ModelFileError
from providers.speech_model import SILERO_FILE, SpeechDetector, SpeechModel, silero_model_dir

pytest.importorskip("faster_whisper")


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector(SpeechModel.shared())


@pytest.fixture(scope="module")
def voice(piper) -> bytes:
    return piper.synthesize_mulaw("No wait, I need to change the time to four in the afternoon please.")


def speech_windows(analysis, threshold: float = 0.5) -> int:
    return sum(1 for p in analysis.probabilities if p >= threshold)


def test_a_swapped_model_file_is_refused(tmp_path):
    (tmp_path / SILERO_FILE.name).write_bytes((silero_model_dir() / SILERO_FILE.name).read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelFileError):
        SpeechModel(tmp_path)


def test_a_voice_is_speech(detector, voice):
    analysis = detector.analyze(voice)
    assert len(analysis.probabilities) == len(voice) // 256
    assert speech_windows(analysis) > 0.4 * len(analysis.probabilities)
    assert len(analysis.levels_dbfs) == len(analysis.probabilities)


@pytest.mark.parametrize("kind", ["white", "hum", "tone", "click", "silence"])
def test_noise_tones_and_clicks_are_not(detector, kind):
    rng = np.random.default_rng(1)
    t = np.arange(8000) / 8000
    signal = {
        "white": rng.standard_normal(8000) * 3000,
        "hum": np.sin(2 * np.pi * 60 * t) * 8000 + np.sin(2 * np.pi * 180 * t) * 3000,
        "tone": np.sin(2 * np.pi * 440 * t) * 8000 + np.sin(2 * np.pi * 480 * t) * 8000,  # a ring-back tone
        "click": np.concatenate([np.zeros(3000), rng.standard_normal(400) * 20000 * np.exp(-np.arange(400) / 100),
                                 np.zeros(4600)]),
        "silence": np.zeros(8000),
    }[kind]
    analysis = detector.analyze(mulaw.encode(np.clip(signal, -32768, 32767).astype(np.int16)))
    assert speech_windows(analysis) == 0


def test_the_agents_echo_is_not_speech_once_taken_out_but_the_caller_is(detector, piper, voice):
    agent = mulaw.decode(piper.synthesize_mulaw("Sure, I can help you book that. Which day would suit you best?"))
    delay, max_lag = 120 * 8, 400 * 8
    echo = np.zeros(agent.size)
    echo[delay:] = agent[:-delay] * 10 ** (-10 / 20)
    start, n = max_lag + 4000, 8000
    inbound = mulaw.encode(echo[start:start + n].astype(np.int16))
    reference = mulaw.encode(agent[start - max_lag:start + n])
    without = detector.analyze(inbound)
    assert speech_windows(without) > 3  # to the model alone, the echo is speech
    taken_out = detector.analyze(inbound, reference, max_lag)
    assert taken_out.echo_erle_db > 15.0
    assert speech_windows(taken_out) <= 1
    # The caller over the first half: the echo is taken out only of frames it removes 10 dB from (the
    # second half's), so a caller over the whole second left it in every frame in some of Piper's renderings.
    caller = mulaw.decode(voice)[:n // 2].astype(float)
    mixed = echo[start:start + n] + np.pad(caller, (0, n - caller.size))
    both = detector.analyze(mulaw.encode(np.clip(mixed, -32768, 32767).astype(np.int16)), reference, max_lag)
    assert both.echo_erle_db > 0.0  # the echo, a small part of the energy under the caller, came out
    assert speech_windows(both) >= 5  # well past an onset's 3 windows


@pytest.mark.parametrize("clip", ["door", "thud", "clatter", "busy_tone", "ringback_twinkle", "burp"])
def test_a_noise_while_the_agent_talks_is_not_made_speech_by_the_echo_removal(detector, piper, recordings, clip):
    """No echo on this line: the agent's audio is only the reference. A least-squares fit of it to a door
    slam must not put the agent's voice into the residual (it once did, and the model heard speech)."""
    agent = piper.synthesize_mulaw("Sure, I can help you book that. Which day would suit you best?")
    max_lag = 400 * 8
    noise = recordings.audio(clip)[:4000]
    inbound = mulaw.silence(2400) + noise + mulaw.silence(800)
    start = max_lag + 4000
    reference = agent[start - max_lag:start + len(inbound)]
    analysis = detector.analyze(inbound, reference, max_lag)
    assert speech_windows(analysis) == 0, analysis.probabilities


def test_a_calls_stream_goes_on_from_its_last_analysis_and_scores_each_window_once(detector, recordings):
    """The core asks about overlapping stretches: an onset with the 300 ms before it, the same 60 ms later,
    then the last 0.9 s every 200 ms while a noise bed holds the line open. A call's stream runs the model
    only over audio it has not scored, from the recurrent states its last run ended in: its scores are
    those of one run over the whole stretch (the resampler's seams aside), at about a quarter of the cost
    of running each request cold."""
    from loadgen.recordings import loop_to, overlay
    from providers.speech_model import SpeechStream

    line = overlay(loop_to(recordings.audio("train_passby"), 6.0), recordings.audio("allison_please_hold"), at_s=2.0)
    stream = SpeechStream(detector)
    whole = np.array(detector.analyze(line).probabilities)
    first = stream.analyze(line[:4000], b"", 0, 0)
    assert first == detector.analyze(line[:4000])  # a new chain is a cold run
    requests = [(0, 5600)]
    end = 5600
    while end + 1600 <= len(line):
        end += 1600
        start = max(0, end - 7200)
        requests.append((start - start % 256, end))
    cold_windows = 4000 // 256
    for start, end in requests:
        got = np.array(stream.analyze(line[start:end], b"", 0, start).probabilities)
        k = start // 256
        # Every window but the first and the last, whose second look is half of what it is in the middle.
        assert np.abs(got[1:-1] - whole[k + 1:k + len(got) - 1]).max() < 0.02, (start, end)
        cold_windows += len(got)
    assert stream.windows_run <= len(line) // 256 + len(requests) + 1  # a request's last window again in the next
    assert stream.windows_run * 3 < cold_windows
    # A request off the chain's grid, or before what it keeps, starts a new chain: a cold run again.
    assert stream.analyze(line[1000:9000], b"", 0, 1000) == detector.analyze(line[1000:9000])
