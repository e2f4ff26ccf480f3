"""The agent's echo: what played, by the playout clock, and taking it out of the inbound audio."""

from __future__ import annotations

import numpy as np
import pytest

from audio import mulaw
from audio.echo import PlayoutHistory, cancel_echo


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Voiced, syllable-modulated, with its own pitch track: correlates with itself only at lag 0."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    t = np.arange(n) / 8000
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(pitch) / 8000
    voiced = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.3 * rng.standard_normal(n)
    envelope = 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * (3 + seed % 3) * t))
    return (voiced * envelope * 6000).astype(np.int16)


def level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, float) ** 2) + 1e-9)


def test_history_keeps_runs_by_time_and_fills_gaps_with_silence():
    h = PlayoutHistory()
    h.add(10.0, b"\x01" * 800)  # 100 ms
    h.add(10.1, b"\x02" * 800)  # continues the same run
    h.add(10.5, b"\x03" * 80)  # a gap, then 10 ms
    assert h.playing_until() == pytest.approx(10.51)
    seg = h.segment(9.95, 8000 * 60 // 100)  # 600 ms from 9.95
    assert seg[:400] == b"\xff" * 400
    assert seg[400:1200] == b"\x01" * 800 and seg[1200:2000] == b"\x02" * 800
    assert seg[2000:4400] == b"\xff" * 2400 and seg[4400:4480] == b"\x03" * 80


def test_history_truncate_drops_what_never_played_after_a_clear():
    h = PlayoutHistory()
    h.add(0.0, b"\x01" * 8000)
    h.truncate(0.25)
    assert h.playing_until() == pytest.approx(0.25)
    assert h.segment(0.2, 800) == b"\x01" * 400 + b"\xff" * 400


def test_history_forgets_old_audio():
    h = PlayoutHistory(seconds=1.0)
    for i in range(10):
        h.add(i * 1.0, b"\x01" * 8000)
        h.add(i * 1.0 + 0.5, b"\x02")  # a new run each time
    assert h.segment(0.0, 8000) == b"\xff" * 8000  # long gone


@pytest.mark.parametrize("delay_ms", [60, 150, 300])
@pytest.mark.parametrize("gain_db", [-10, -20])
def test_echo_is_found_and_taken_out(delay_ms, gain_db):
    agent = speechlike(3.0, seed=1).astype(float)
    d = delay_ms * 8
    path = np.convolve(agent, [0.2, 0.5, 0.3], mode="full")[: agent.size]  # a handset's colouring
    echo = np.zeros(agent.size)
    echo[d:] = path[: agent.size - d] * 10 ** (gain_db / 20)
    start, n, max_lag = 12000, 4800, 3200
    inbound = mulaw.decode(mulaw.encode(echo[start:start + n].astype(np.int16)))
    reference = agent[start - max_lag:start + n].astype(np.int16)
    est = cancel_echo(inbound, reference, max_lag)
    assert est.delay_ms == pytest.approx(delay_ms, abs=1.0)
    assert est.erle_db > 20.0
    assert level_db(est.residual) < level_db(inbound) - 20.0


def test_the_callers_voice_survives_the_echo_removal():
    agent = speechlike(3.0, seed=1).astype(float)
    caller = speechlike(0.3, seed=5).astype(float)
    d = 100 * 8
    echo = np.zeros(agent.size)
    echo[d:] = agent[: agent.size - d] * 10 ** (-10 / 20)
    start, n, max_lag = 12000, 4800, 3200
    mixed = echo[start:start + n].copy()
    mixed[:caller.size] += caller
    inbound = mulaw.decode(mulaw.encode(mixed.astype(np.int16)))
    est = cancel_echo(inbound, agent[start - max_lag:start + n].astype(np.int16), max_lag)
    # The caller's part keeps nearly all its energy; the echo-only part goes.
    assert level_db(est.residual[: caller.size]) > level_db(caller) - 2.0
    assert level_db(est.residual[caller.size + 200:]) < level_db(inbound[caller.size + 200:]) - 15.0


def test_nothing_playing_means_nothing_to_take_out():
    inbound = speechlike(0.5, seed=2)
    est = cancel_echo(inbound, np.zeros(inbound.size + 800, dtype=np.int16), 800)
    assert est.erle_db == 0.0 and np.array_equal(est.residual, inbound)


@pytest.mark.parametrize("voice", ["allison_please_hold", "librivox_0880", "cards_002", "no_allison"])
def test_a_callers_voice_on_a_line_with_no_echo_is_left_as_it_came(recordings, piper, voice):
    """The agent talks (Piper's voice) and the caller speaks over it on a line with no echo at all. A
    least-squares fit of the agent's voice to theirs finds a chance correlation (0.1-0.4) and takes a few
    dB out of some frames; that thinned a real caller's onset enough to delay a barge-in by 400 ms. No
    frame of their voice may be changed: only a frame the agent's echo explains is."""
    agent = mulaw.decode(piper.synthesize_mulaw(
        "Hi, thanks for calling the clinic. Would you like to book an appointment? We are open every weekday."))
    caller = mulaw.decode(recordings.audio(voice))
    n, max_lag = 3360, 1200  # an onset's look: 420 ms, against what played up to 150 ms before it
    changed = looks = 0
    for k, start in enumerate(range(max_lag, agent.size - n, 1700)):
        offset = (k * 2300) % max(1, caller.size - n)
        inbound = caller[offset:offset + n]
        est = cancel_echo(inbound, agent[start - max_lag:start + n], max_lag)
        looks += 1
        changed += not np.array_equal(est.residual, inbound)
    assert looks >= 10 and changed == 0, (changed, looks)
