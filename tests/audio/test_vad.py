"""audio.vad: energy VAD with adaptive floor and hysteresis, on synthetic and real speech."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audio import mulaw
from audio.vad import EnergyVad, SpeechEnded, SpeechStarted, VadConfig, VadEvent

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz, the default analysis window
CFG = VadConfig()
MIN_SPEECH = CFG.min_speech_ms * RATE // 1000
END_SILENCE = CFG.end_silence_ms * RATE // 1000

Signal = npt.NDArray[np.float64]


# ------------------------------------------------------------------ signal helpers


def amp(dbfs: float) -> float:
    """RMS amplitude (int16 scale) of a signal at `dbfs`."""
    return 32768.0 * 10.0 ** (dbfs / 20.0)


def quiet(seconds: float) -> Signal:
    return np.zeros(round(seconds * RATE))


def noise(seconds: float, dbfs: float, seed: int = 0) -> Signal:
    """White Gaussian noise at an RMS level of `dbfs`."""
    return np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * amp(dbfs)


def speechlike(seconds: float, loud: float = -15.0, soft: float = -30.0, seed: int = 1) -> Signal:
    """Noise whose level alternates loud/soft at a syllabic 4 Hz rate: never silent or steady."""
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    envelope = np.where(np.sin(2 * np.pi * 4 * t) >= 0, amp(loud), amp(soft))
    return np.random.default_rng(seed).standard_normal(n) * envelope


def to_int16(x: Signal) -> npt.NDArray[np.int16]:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def through_the_phone(x: Signal) -> npt.NDArray[np.int16]:
    """What the VAD really sees: the signal encoded to mu-law by the carrier and decoded by us."""
    return mulaw.decode(mulaw.encode(to_int16(x)))


def run(
    x: npt.NDArray[np.int16], vad: EnergyVad | None = None, chunk: int = FRAME
) -> list[tuple[int, VadEvent]]:
    """Feed `x` in chunks; (position when the event came out, event) for every event."""
    vad = vad or EnergyVad()
    out: list[tuple[int, VadEvent]] = []
    for i in range(0, x.size, chunk):
        for event in vad.process(x[i : i + chunk]):
            out.append((vad.position, event))
    return out


def events(x: npt.NDArray[np.int16], vad: EnergyVad | None = None) -> list[VadEvent]:
    return [e for _, e in run(x, vad)]


# ------------------------------------------------------------------ silence and onsets


def test_digital_silence_is_never_speech() -> None:
    vad = EnergyVad()
    x = mulaw.decode(mulaw.silence(RATE * 10))  # 0xFF decodes to exactly 0
    assert not x.any()
    assert events(x, vad) == []
    assert not vad.speaking
    assert vad.noise_floor_dbfs == CFG.min_level_dbfs  # the floor stops at the absolute floor


def test_line_hiss_below_min_level_is_never_speech() -> None:
    # Hiss at -60 dBFS that suddenly jumps to -52: below min_level, never speech.
    x = to_int16(np.concatenate([noise(3, -60), noise(3, -52, seed=2)]))
    assert events(x) == []


def test_burst_onset_and_end_positions() -> None:
    onset = RATE + 37  # not on a frame boundary
    burst = speechlike(0.8, seed=3)
    x = to_int16(np.concatenate([quiet(onset / RATE), burst, quiet(1.5)]))
    truth_end = onset + burst.size
    got = run(x)
    assert [type(e) for _, e in got] == [SpeechStarted, SpeechEnded]
    (at_start, started), (at_end, ended) = got
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    # The onset frame is the one containing the truth.
    assert onset - FRAME < started.start <= onset
    assert started.confirmed == started.start + MIN_SPEECH
    assert at_start == started.confirmed  # emitted when confirmed, not later
    # The end is the end of the frame holding the last voiced sample.
    assert truth_end <= ended.end < truth_end + FRAME
    assert ended.reason == "silence"
    assert at_end == ended.end + END_SILENCE


def test_loud_onset_after_silence_is_detected_within_min_speech_plus_a_frame() -> None:
    for offset in (0, 1, 80, 159):
        onset = 2 * RATE + offset
        x = to_int16(np.concatenate([quiet(onset / RATE), noise(0.5, -10, seed=offset)]))
        ((at, started),) = run(x)
        assert isinstance(started, SpeechStarted)
        assert at - onset <= MIN_SPEECH + FRAME


@pytest.mark.parametrize("ms", [20, 60, 100])
def test_short_click_is_not_speech(ms: int) -> None:
    x = to_int16(np.concatenate([quiet(1), noise(ms / 1000, -6), quiet(1)]))
    assert events(x) == []


def test_just_over_min_speech_is_speech() -> None:
    x = to_int16(np.concatenate([quiet(1), noise(0.14, -20), quiet(1)]))
    assert [type(e) for e in events(x)] == [SpeechStarted, SpeechEnded]


# ------------------------------------------------------------------ pauses and hysteresis


@pytest.mark.parametrize("gap_s", [0.1, 0.3, 0.45])
def test_pause_shorter_than_end_silence_does_not_split(gap_s: float) -> None:
    x = to_int16(
        np.concatenate(
            [quiet(1), speechlike(0.4), quiet(gap_s), speechlike(0.4, seed=5), quiet(1)]
        )
    )
    got = events(x)
    assert [type(e) for e in got] == [SpeechStarted, SpeechEnded]


def test_pause_longer_than_end_silence_splits() -> None:
    x = to_int16(np.concatenate([quiet(1), speechlike(0.4), quiet(0.6), speechlike(0.4), quiet(1)]))
    got = events(x)
    assert [type(e) for e in got] == [SpeechStarted, SpeechEnded] * 2
    assert all(e.reason == "silence" for e in got if isinstance(e, SpeechEnded))


def test_hysteresis_dip_between_stop_and_start_does_not_end_speech() -> None:
    # Floor is min_level (-50) on a silent line: start at -41 dBFS, stop at -46 dBFS.
    dip = CFG.min_level_dbfs + (CFG.start_margin_db + CFG.stop_margin_db) / 2  # -43.5
    x = to_int16(
        np.concatenate([quiet(1), speechlike(0.6), noise(1.2, dip), speechlike(0.6), quiet(1)])
    )
    assert [type(e) for e in events(x)] == [SpeechStarted, SpeechEnded]


def test_dip_below_stop_threshold_ends_speech() -> None:
    below = CFG.min_level_dbfs + CFG.stop_margin_db - 3  # -49: silence as far as speech goes
    x = to_int16(
        np.concatenate([quiet(1), speechlike(0.6), noise(1.2, below), speechlike(0.6), quiet(1)])
    )
    assert [type(e) for e in events(x)] == [SpeechStarted, SpeechEnded] * 2


def test_level_between_thresholds_cannot_start_speech() -> None:
    between = CFG.min_level_dbfs + (CFG.start_margin_db + CFG.stop_margin_db) / 2
    x = to_int16(np.concatenate([quiet(1), noise(0.3, between)]))
    assert events(x) == []


# ------------------------------------------------------------------ max length


def test_max_utterance_cut_and_restart() -> None:
    cfg = VadConfig(max_utterance_ms=3000)
    vad = EnergyVad(cfg)
    x = to_int16(np.concatenate([quiet(1), speechlike(7.5), quiet(1)]))
    got = events(x, vad)
    kinds = [(type(e).__name__, getattr(e, "reason", "")) for e in got]
    assert kinds == [
        ("SpeechStarted", ""),
        ("SpeechEnded", "max_length"),
        ("SpeechStarted", ""),
        ("SpeechEnded", "max_length"),
        ("SpeechStarted", ""),
        ("SpeechEnded", "silence"),
    ]
    first, cut1, second, cut2, third, end = got
    assert isinstance(first, SpeechStarted) and isinstance(cut1, SpeechEnded)
    assert isinstance(second, SpeechStarted) and isinstance(cut2, SpeechEnded)
    assert isinstance(third, SpeechStarted) and isinstance(end, SpeechEnded)
    max_samples = cfg.max_utterance_ms * RATE // 1000
    assert cut1.end == first.start + max_samples
    # The caller is still talking: the next utterance starts exactly at the cut, no gap.
    assert second.start == second.confirmed == cut1.end
    assert cut2.end == second.start + max_samples
    assert third.start == cut2.end
    assert end.end == pytest.approx(RATE + 7.5 * RATE, abs=FRAME)


def test_max_length_during_a_pause_does_not_restart() -> None:
    cfg = VadConfig(max_utterance_ms=1000)
    # 0.9 s of speech, then silence across the 1 s mark: cut, and nothing new starts.
    x = to_int16(np.concatenate([quiet(1), speechlike(0.9), quiet(1)]))
    got = events(x, EnergyVad(cfg))
    assert [type(e) for e in got] == [SpeechStarted, SpeechEnded]
    ended = got[1]
    assert isinstance(ended, SpeechEnded) and ended.reason == "max_length"
    assert ended.end == pytest.approx(RATE + 0.9 * RATE, abs=FRAME)


# ------------------------------------------------------------------ noise


def test_steady_noise_at_the_floor_is_never_speech() -> None:
    vad = EnergyVad()
    x = through_the_phone(noise(20, -45))
    assert events(x, vad) == []
    assert vad.noise_floor_dbfs == pytest.approx(-45, abs=1.5)


@pytest.mark.parametrize("start_s", [0.0, 3.0])
def test_loud_steady_noise_is_learned(start_s: float) -> None:
    # A fan / TV / street noise 20 dB above the floor appears (at the call's start or mid-call)
    # and stays. It looks like an onset at first; it must stop being "speech" quickly.
    vad = EnergyVad()
    x = through_the_phone(np.concatenate([quiet(start_s), noise(20, -30, seed=7)]))
    got = run(x, vad)
    assert len(got) <= 2
    if got:
        (_, started), (at, ended) = got
        assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
        assert ended.reason == "noise"
        assert at - start_s * RATE <= 3 * RATE  # learned within 3 s
    assert not vad.speaking
    assert vad.noise_floor_dbfs == pytest.approx(-30, abs=2)
    # Speech over the learned noise is still heard.
    more = through_the_phone(speechlike(1.0, loud=-12, soft=-20) + noise(1.0, -30, seed=8))
    assert [type(e) for e in events(more, vad)] == [SpeechStarted]


def test_the_ambient_level_of_a_line_loud_from_its_first_frame_is_known_at_once() -> None:
    # A café from the first frame: a fluctuating bed (talk around the caller) 15-20 dB above the starting
    # floor, so no frame counts as quiet; the call's first frames still give the line's level.
    vad = EnergyVad()
    events(through_the_phone(speechlike(0.4, loud=-28, soft=-34)), vad)
    assert vad.ambient_dbfs == pytest.approx(-31, abs=1.5)
    # A quiet line keeps its quiet level, and a caller who speaks later does not move it.
    vad = EnergyVad()
    events(through_the_phone(np.concatenate([noise(0.5, -48), speechlike(2.0, loud=-15, soft=-30)])), vad)
    assert vad.ambient_dbfs == pytest.approx(-48, abs=1.5)


@pytest.mark.parametrize("db_per_s", [1.0, 2.0])
def test_slowly_rising_noise_floor_is_tracked(db_per_s: float) -> None:
    seconds = 20 / db_per_s  # from -50 to -30 dBFS
    n = round(seconds * RATE)
    level_db = -50 + db_per_s * np.arange(n) / RATE
    white = np.random.default_rng(3).standard_normal(n)
    x = through_the_phone(white * amp(0) * 10 ** (level_db / 20))
    vad = EnergyVad()
    assert events(x, vad) == []
    assert vad.noise_floor_dbfs == pytest.approx(-30, abs=db_per_s * 2 + 1.5)


def test_floor_follows_noise_down_quickly() -> None:
    vad = EnergyVad()
    events(through_the_phone(noise(5, -30)), vad)
    assert vad.noise_floor_dbfs == pytest.approx(-30, abs=1.5)
    events(through_the_phone(noise(0.5, -45, seed=4)), vad)
    assert vad.noise_floor_dbfs == pytest.approx(-45, abs=1.5)


def test_floor_does_not_rise_while_speaking() -> None:
    vad = EnergyVad()
    events(through_the_phone(noise(3, -45)), vad)
    floor = vad.noise_floor_dbfs
    events(through_the_phone(speechlike(5, loud=-10, soft=-25)), vad)
    assert vad.speaking
    assert vad.noise_floor_dbfs <= floor


# ------------------------------------------------------------------ chunking and state


def _mixed_signal() -> npt.NDArray[np.int16]:
    parts = [
        noise(1, -48),
        speechlike(0.7) + noise(0.7, -48, seed=1),
        noise(0.3, -48, seed=2),
        speechlike(0.5, seed=9) + noise(0.5, -48, seed=3),
        noise(0.9, -48, seed=4),
        noise(0.06, -10, seed=5),  # a click
        noise(0.8, -48, seed=6),
        speechlike(1.2, seed=10) + noise(1.2, -48, seed=7),
        noise(1, -48, seed=8),
    ]
    return through_the_phone(np.concatenate(parts))


MIXED = _mixed_signal()
MIXED_EVENTS = events(MIXED)


def test_mixed_signal_reference_events() -> None:
    assert [type(e) for e in MIXED_EVENTS] == [SpeechStarted, SpeechEnded] * 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=12))
def test_arbitrary_chunk_lengths_give_the_same_events(sizes: list[int]) -> None:
    vad = EnergyVad()
    got: list[VadEvent] = []
    i = 0
    for size in itertools.cycle(sizes):
        if i >= MIXED.size:
            break
        got += vad.process(MIXED[i : i + size])
        i += size
    assert got == MIXED_EVENTS
    assert vad.position == MIXED.size


def test_one_sample_at_a_time() -> None:
    vad = EnergyVad()
    x = MIXED[: 3 * RATE]
    got = [e for s in range(x.size) for e in vad.process(x[s : s + 1])]
    assert got == events(x)


def test_position_speaking_and_reset() -> None:
    vad = EnergyVad()
    assert vad.position == 0
    vad.process(np.zeros(100, dtype=np.int16))  # a partial frame counts as received
    assert vad.position == 100
    vad.process(np.zeros(0, dtype=np.int16))
    assert vad.position == 100
    vad.process(to_int16(noise(0.5, -10)))
    assert vad.speaking
    vad.reset()
    assert vad.position == 0
    assert not vad.speaking
    assert vad.noise_floor_dbfs == CFG.initial_floor_dbfs
    # After reset, positions restart: the same input gives the same events as a fresh VAD.
    x = to_int16(np.concatenate([quiet(0.5), speechlike(0.5), quiet(1)]))
    assert events(x, vad) == events(x)


def test_last_voiced_tracks_the_end_of_speech_before_the_end_event() -> None:
    vad = EnergyVad()
    assert vad.last_voiced == 0
    vad.process(to_int16(np.concatenate([quiet(1), noise(0.5, -20)])))
    assert vad.speaking
    assert vad.last_voiced == vad.position  # talking right now
    vad.process(to_int16(quiet(0.3)))
    assert vad.speaking  # end_silence not reached yet...
    assert vad.position - vad.last_voiced == pytest.approx(0.3 * RATE, abs=FRAME)  # ...but quiet


def test_rejects_non_int16_samples() -> None:
    with pytest.raises(TypeError):
        EnergyVad().process(np.zeros(160, dtype=np.float32))  # type: ignore[arg-type]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        VadConfig(stop_margin_db=10.0, start_margin_db=9.0)
    with pytest.raises(ValueError):
        VadConfig(frame_ms=0)
    with pytest.raises(ValueError):
        VadConfig(min_speech_ms=5)
    with pytest.raises(ValueError):
        VadConfig(floor_rise_ms=0)
    assert VadConfig().frame_samples == FRAME


def test_other_frame_sizes() -> None:
    vad = EnergyVad(VadConfig(frame_ms=10))
    x = to_int16(np.concatenate([quiet(1), speechlike(0.6), quiet(1)]))
    got = events(x, vad)
    assert [type(e) for e in got] == [SpeechStarted, SpeechEnded]
    started = got[0]
    assert isinstance(started, SpeechStarted)
    assert started.start == pytest.approx(RATE, abs=80)


# ------------------------------------------------------------------ real speech


def speech_truth(speech: npt.NDArray[np.int16]) -> tuple[int, int]:
    """First and last sample of the clean sentence above ~-50 dBFS (|x| >= 100)."""
    loud = np.nonzero(np.abs(speech.astype(np.int32)) >= 100)[0]
    return int(loud[0]), int(loud[-1]) + 1


@pytest.mark.parametrize(
    ("noise_dbfs", "gain_db"),
    [(None, 0.0), (-55.0, 0.0), (-45.0, 0.0), (-45.0, -10.0), (-38.0, 0.0)],
    ids=["silence", "hiss", "noise-45", "quiet-talker-in-noise", "noise-38"],
)
def test_real_speech_is_one_utterance(
    speech_8k: npt.NDArray[np.int16], noise_dbfs: float | None, gain_db: float
) -> None:
    lead_s, tail_s = 2.0, 1.5
    speech = speech_8k.astype(np.float64) * 10 ** (gain_db / 20)
    x = np.concatenate([quiet(lead_s), speech, quiet(tail_s)])
    if noise_dbfs is not None:
        x = x + noise(x.size / RATE, noise_dbfs, seed=11)
    start_truth, end_truth = speech_truth(to_int16(speech))
    start_truth += round(lead_s * RATE)
    end_truth += round(lead_s * RATE)

    got = run(through_the_phone(x))
    # One utterance: the comma pause and the word gaps do not split it.
    assert [type(e) for _, e in got] == [SpeechStarted, SpeechEnded]
    (at_start, started), (at_end, ended) = got
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert ended.reason == "silence"
    tolerance = 2 * FRAME if noise_dbfs is None or noise_dbfs <= -45 else 4 * FRAME
    assert abs(started.start - start_truth) <= tolerance
    assert abs(ended.end - end_truth) <= tolerance
    assert at_start - started.start <= MIN_SPEECH + FRAME
    assert at_end == ended.end + END_SILENCE


def test_real_speech_twice_with_a_pause_is_two_utterances(
    speech_8k: npt.NDArray[np.int16],
) -> None:
    s = speech_8k.astype(np.float64)
    x = np.concatenate([quiet(1), s, quiet(0.8), s, quiet(1)]) + noise(
        2 + 0.8 + 2 * s.size / RATE, -50
    )[: 2 * RATE + round(0.8 * RATE) + 2 * s.size]
    assert [type(e) for e in events(through_the_phone(x))] == [SpeechStarted, SpeechEnded] * 2


def test_mulaw_fast_path_gives_the_same_events_as_decoded_samples(speech_8k):
    from audio import mulaw
    from audio.vad import EnergyVad

    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(8000 * 2) * 150).astype(np.int16)
    pcm = np.concatenate([noise, speech_8k, noise, speech_8k[: len(speech_8k) // 2], noise])
    data = mulaw.encode(pcm)
    slow, fast = EnergyVad(), EnergyVad()
    events_slow, events_fast = [], []
    for i in range(0, len(data), 160):
        events_slow += slow.process(mulaw.decode(data[i:i + 160]))
        events_fast += fast.process_mulaw(data[i:i + 160])
    assert events_fast == events_slow and len(events_fast) >= 4
    # Odd chunk lengths fall back to the array path and still agree.
    odd = EnergyVad()
    events_odd = []
    for i in range(0, len(data), 97):
        events_odd += odd.process_mulaw(data[i:i + 97])
    assert events_odd == events_slow
